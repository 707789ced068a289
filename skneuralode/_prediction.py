"""Prediction: integrate a fitted model from initial states to the requested times.

Times before a trajectory's initial time are reached by integrating backwards, times
after it forwards; each direction is one batched solve over all trajectories.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._solve import SolverSettings, solve
from ._vector_fields import ODEModel


def _integrate_one_direction(
    model: ODEModel,
    initial_states: torch.Tensor,
    initial_times: np.ndarray,
    targets: list[np.ndarray],
    solver: SolverSettings,
    signal: nn.Module | None,
) -> list[np.ndarray]:
    """States (scaled, all dims) at ``targets[i]`` (ordered away from ``initial_times[i]``)."""
    counts = np.array([target.size for target in targets])
    if counts.max(initial=0) == 0:
        return [np.empty((0, model.n_total_states)) for _ in targets]
    width = int(counts.max()) + 1
    grid = np.empty((len(targets), width))
    for row, (start, target) in enumerate(zip(initial_times, targets, strict=True)):
        padded = np.concatenate([[start], target])
        grid[row, : padded.size] = padded
        grid[row, padded.size :] = padded[-1]
    shared = bool(np.all(grid == grid[:1]))
    scaled_grid = torch.as_tensor(
        model.scaling.scale_times(grid),
        dtype=initial_states.dtype,
        device=initial_states.device,
    )
    members = torch.arange(len(targets), device=initial_states.device)
    field = model.forced(signal, members)
    result = solve(field, initial_states, scaled_grid, solver, shared_grid=shared)
    if not result.ok:
        nan = np.full((width, model.n_total_states), np.nan)
        return [nan[1 : count + 1] for count in counts]
    states = result.states.detach().cpu().numpy()
    return [states[row, 1 : count + 1] for row, count in enumerate(counts)]


def integrate(
    model: ODEModel,
    initial_states: np.ndarray,
    initial_times: np.ndarray,
    sorted_times: list[np.ndarray],
    solver: SolverSettings,
    signal: nn.Module | None = None,
    *,
    observed: bool = False,
) -> list[np.ndarray]:
    """Physical states (or observed quantities) of every trajectory at its sorted times.

    Parameters
    ----------
    model : ODEModel
    initial_states : ndarray of shape (n_traj, n_total_states)
        Scaled initial states (augmented dimensions included).
    initial_times : ndarray of shape (n_traj,)
        Physical times at which the initial states hold.
    sorted_times : list of ndarray
        Ascending physical output times of each trajectory.
    solver : SolverSettings
    signal : nn.Module, optional
        External inputs of these trajectories, ``signal(times, trajectory)`` in scaled
        time (required when the model has inputs).
    observed : bool, default=False
        Return what the data measure (:meth:`ODEModel.physical_observations`) instead
        of the states; the same unless the model observes a function of its states.

    Returns
    -------
    list of ndarray of shape (n_times_i, n_states) or (n_times_i, n_observed)
    """
    parameter = next(model.parameters())
    z0 = torch.as_tensor(initial_states, dtype=parameter.dtype, device=parameter.device)
    forward = [
        times[times > start] for times, start in zip(sorted_times, initial_times, strict=True)
    ]
    backward = [
        times[times < start][::-1] for times, start in zip(sorted_times, initial_times, strict=True)
    ]
    with torch.no_grad():
        after = _integrate_one_direction(model, z0, initial_times, forward, solver, signal)
        before = _integrate_one_direction(model, z0, initial_times, backward, solver, signal)
    outputs = []
    for row, times in enumerate(sorted_times):
        at_start = np.repeat(
            initial_states[row : row + 1], int(np.sum(times == initial_times[row])), 0
        )
        scaled = np.concatenate([before[row][::-1], at_start, after[row]])
        if observed:
            outputs.append(model.physical_observations(scaled))
        else:
            outputs.append(model.scaling.unscale_states(scaled[:, : model.n_states]))
    return outputs
