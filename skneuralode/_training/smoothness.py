"""A prior on how fast the network's term bends along the data's path in state space.

A universal differential equation fitted to a short noisy series has a network term
that the data fix well in the middle and loosely at the ends, where the trajectory
visits states once. There the network can bend to follow a noisy first or last
observation, and the fitted initial state follows it: the trajectory fits the noise
and the learned term is off where the data are thinnest (Lotka-Volterra, 31 points,
5 % noise: 94 % of the missing-term error sits at the first and last five points).

The network's term is a function of the state, so the prior penalises its second
derivative along the path the smoothed data trace in state space, per unit of arc
length (by finite differences on each trajectory's own, uneven, path steps). Unlike a
curvature in time, it does not charge a term for the speed at which the system moves
along its path. Arc length is measured in units of the path's mean speed (a path spans
as many units as its trajectory spans scaled time), so the weight does not depend on
the states' units. The weight follows the data: a multiple of the estimated noise
variance, so it vanishes on clean data.
"""

from __future__ import annotations

import torch

#: Weight of the curvature prior relative to the estimated noise variance (scaled
#: units) with ``network_smoothness="auto"``.
AUTO_SMOOTHNESS = 2.0


def smoothness_weight(setting: str | float, noise_variance: float) -> float:
    """The curvature prior's weight: ``AUTO_SMOOTHNESS`` noise variances for "auto"."""
    if setting == "auto":
        return AUTO_SMOOTHNESS * max(noise_variance, 0.0)
    return float(setting)


def relaxed_weight(weight: float, misfit: float, allowed: float) -> float:
    """The prior's weight after a converged fit with data ``misfit``: halved where the
    fit misses the data by more than the noise ``allowed`` (the prior fights the data;
    Morozov's discrepancy principle), else unchanged."""
    return 0.5 * weight if weight > 0.0 and misfit > allowed else weight


def path_parameter(times: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """Arc length along each trajectory's path, in units of its mean speed.

    Parameters
    ----------
    times : Tensor of shape (n_traj, n_max)
        Scaled times; padding repeats the last time and adds no length.
    states : Tensor of shape (n_traj, n_max, n_states)
        Scaled states on those times.

    Returns
    -------
    arc : Tensor of shape (n_traj, n_max)
        0 at the first time; the last real point of a moving trajectory is at its time
        span.
    """
    advances = times.diff(dim=1) > 0  # (n_traj, n_max - 1)
    lengths = states.diff(dim=1).square().sum(-1).sqrt() * advances
    arc = torch.cat([lengths.new_zeros(lengths.shape[0], 1), lengths.cumsum(dim=1)], dim=1)
    span = times[:, -1:] - times[:, :1]
    return arc * (span / arc[:, -1:].clamp_min(torch.finfo(arc.dtype).tiny))


class PathCurvature:
    """The curvature prior on a fixed path: the geometry once, the residuals per call.

    Parameters
    ----------
    times : Tensor of shape (n_traj, n_max)
        Scaled times of the grid; padding (a repeated last time) drops out.
    states : Tensor of shape (n_traj, n_max, n_states)
        Scaled states on the grid (the smoothed data, physical states only); points
        where the path does not move drop out.
    n_outputs : float
        Number of the term's outputs the mean runs over.
    """

    def __init__(self, times: torch.Tensor, states: torch.Tensor, n_outputs: float) -> None:
        steps = path_parameter(times, states).detach().diff(dim=1)  # (n_traj, n_max - 1)
        tiny = torch.finfo(steps.dtype).tiny
        self.steps = steps.clamp_min(tiny)[..., None]
        self.spans = (0.5 * (steps[:, 1:] + steps[:, :-1])).clamp_min(tiny)[..., None]
        self.inside = (steps[:, 1:] > 0) & (steps[:, :-1] > 0)  # (n_traj, n_max - 2)
        self.n_inside = int(self.inside.sum())
        self.n_outputs = max(float(n_outputs), 1.0)

    def residuals(self, rates: torch.Tensor, weight: float) -> torch.Tensor:
        """Least-squares residuals whose sum of squares is ``weight`` times the mean
        squared second derivative of ``rates`` along the path (per unit of
        :func:`path_parameter`).

        Parameters
        ----------
        rates : Tensor of shape (n_traj, n_max, n_outputs_total)
            The network's term on the grid (zero off its outputs).
        weight : float

        Returns
        -------
        residuals : Tensor of shape (n_residuals,)
            Empty when the weight is 0 or no trajectory has three distinct points on
            its path.
        """
        if weight <= 0.0 or self.n_inside == 0:
            return rates.new_zeros(0)
        slopes = rates.diff(dim=1) / self.steps
        curvature = slopes.diff(dim=1) / self.spans
        kept = curvature[self.inside]  # (n_inside, n_outputs_total)
        scale = (weight / (self.n_outputs * self.n_inside)) ** 0.5
        return scale * kept.reshape(-1)
