"""The full-trajectory misfit: the runner's yardstick and the polish stage's objective."""

from __future__ import annotations

import torch

from .._losses import masked_mean_squared_error
from .._problem import TrainingProblem
from .._solve import SolverSettings, solve
from .._vector_fields import ODEModel


def trajectory_misfit(
    problem: TrainingProblem, model: ODEModel, solver: SolverSettings
) -> tuple[torch.Tensor, str | None]:
    """Masked mean squared error of whole trajectories from the model's initial values.

    Returns the loss (inf when the solve failed) and the failure, if any.
    """
    result = solve(
        model.forced(problem.inputs, problem.trajectory_index()),
        model.initial_values(),
        problem.times,
        solver,
        shared_grid=problem.shared_grid,
    )
    if not result.ok:
        infinite = torch.full((), float("inf"), dtype=problem.times.dtype)
        return infinite.to(problem.times.device), result.failure
    predicted = result.states[..., : problem.n_states]
    misfit = masked_mean_squared_error(predicted, problem.observations, problem.observed)
    return misfit, None
