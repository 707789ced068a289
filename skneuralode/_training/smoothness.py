"""A prior on how fast the network's term bends along the data: its curvature in time.

A universal differential equation fitted to a short noisy series has a network term
that the data fix well in the middle and loosely at the ends, where the trajectory
visits states once. There the network can bend to follow a noisy first or last
observation, and the fitted initial state follows it: the trajectory fits the noise
and the learned term is off where the data are thinnest (Lotka-Volterra, 31 points,
5 % noise: 94 % of the missing-term error sits at the first and last five points).

A known physical law is smooth along its trajectory; so the prior penalises the second
time derivative of the network's term along the smoothed data, by finite differences
on each trajectory's own (possibly uneven) times. It leaves a term that changes at the
pace of the dynamics free and costs a kink at one end. Its weight follows the data: a
fraction of the estimated noise variance, so it vanishes on clean data.
"""

from __future__ import annotations

import torch
from torch import nn

#: Weight of the curvature prior relative to the estimated noise variance (scaled
#: units) with ``network_smoothness="auto"``.
AUTO_SMOOTHNESS = 0.1


def smoothness_weight(setting: str | float, noise_variance: float) -> float:
    """The curvature prior's weight: ``AUTO_SMOOTHNESS`` noise variances for "auto"."""
    if setting == "auto":
        return AUTO_SMOOTHNESS * max(noise_variance, 0.0)
    return float(setting)


def curvature_residuals(
    field: nn.Module,
    times: torch.Tensor,
    states: torch.Tensor,
    inputs: torch.Tensor | None,
    weight: float,
) -> torch.Tensor:
    """The curvature prior as least-squares residuals: their sum of squares is
    ``weight`` times the mean squared second time derivative of the network's term.

    Parameters
    ----------
    field : Module
        A hybrid field (``network_rates``, ``has_network``, ``output_mask``); other
        fields give none.
    times : Tensor of shape (n_traj, n_max)
        Scaled times of the grid; padding (a repeated last time) and repeated times
        drop out.
    states : Tensor of shape (n_traj, n_max, n_total_states)
        Scaled states on the grid (the smoothed data).
    inputs : Tensor of shape (n_traj, n_max, n_inputs) or None
    weight : float

    Returns
    -------
    residuals : Tensor of shape (n_residuals,)
        Empty when the weight is 0, the field has no network term or no trajectory has
        three distinct times.
    """
    network_rates = getattr(field, "network_rates", None)
    if weight <= 0.0 or network_rates is None or not getattr(field, "has_network", False):
        return states.new_zeros(0)
    rates = network_rates(times, states, inputs)  # (n_traj, n_max, n_total)
    steps = times.diff(dim=1)  # (n_traj, n_max - 1)
    slopes = rates.diff(dim=1) / steps.clamp_min(torch.finfo(steps.dtype).tiny)[..., None]
    spans = 0.5 * (steps[:, 1:] + steps[:, :-1])
    curvature = slopes.diff(dim=1) / spans.clamp_min(torch.finfo(steps.dtype).tiny)[..., None]
    inside = (steps[:, 1:] > 0) & (steps[:, :-1] > 0)  # (n_traj, n_max - 2)
    if not bool(inside.any()):
        return states.new_zeros(0)
    mask = getattr(field, "output_mask", None)
    n_outputs = float(mask.sum().clamp_min(1.0)) if mask is not None else rates.shape[-1]
    kept = curvature[inside]  # (n_inside, n_total): zero off the output mask
    scale = (weight / (n_outputs * kept.shape[0])) ** 0.5
    return scale * kept.reshape(-1)
