"""The full-trajectory misfit: the runner's yardstick and the polish stage's objective."""

from __future__ import annotations

import math

import torch

from .._losses import masked_mean_squared_error
from .._problem import TrainingProblem
from .._solve import SolverSettings, solve
from .._vector_fields import ODEModel


def trajectory_misfit(
    problem: TrainingProblem,
    model: ODEModel,
    solver: SolverSettings,
    max_points: int | None = None,
    record_steps: list[int] | None = None,
    members: torch.Tensor | None = None,
) -> tuple[torch.Tensor, str | None]:
    """Masked mean squared error of whole trajectories from the model's initial values.

    Parameters
    ----------
    max_points : int, optional
        Compare at most about this many time points per trajectory, evenly strided (the
        first and last always among them): the solver returns every output time through
        a Python loop, which dominates on very long series. All of them by default.
    record_steps : list of int, optional
        The solver's step count is appended to it.
    members : Tensor of shape (n_members,), optional
        Compare only these trajectories (all of them by default).

    Returns the loss (inf when the solve failed) and the failure, if any.
    """
    times, observations, observed = problem.times, problem.observations, problem.observed
    initial_values, index = model.initial_values(), problem.trajectory_index()
    if members is not None:
        times, observations, observed = times[members], observations[members], observed[members]
        initial_values, index = initial_values[members], members
    n_max = times.shape[1]
    if max_points is not None and n_max > max_points:
        columns = torch.unique(
            torch.cat(
                [
                    torch.arange(0, n_max, -(-n_max // max_points), device=times.device),
                    torch.tensor([n_max - 1], device=times.device),
                ]
            )
        )
        times, observations, observed = (
            times[:, columns],
            observations[:, columns],
            observed[:, columns],
        )
    result = solve(
        model.forced(problem.inputs, index),
        initial_values,
        times,
        solver,
        shared_grid=problem.shared_grid,
    )
    if record_steps is not None:
        record_steps.append(result.n_steps)
    if not result.ok:
        infinite = torch.full((), float("inf"), dtype=problem.times.dtype)
        return infinite.to(problem.times.device), result.failure
    predicted = model.observation(result.states)
    misfit = masked_mean_squared_error(predicted, observations, observed)
    return misfit, None


#: Time points per trajectory at which models are compared (evenly strided on longer
#: series): enough to rank fits, and a fixed cost on a series of 10^6 points.
EVALUATION_POINTS = 10_000


def evaluate_model(
    problem: TrainingProblem, model: ODEModel, solver: SolverSettings
) -> tuple[float, str | None]:
    """The misfit by which fits are ranked (inf when the solve failed) and the failure."""
    with torch.no_grad():
        loss, failure = trajectory_misfit(problem, model, solver, EVALUATION_POINTS)
    value = float(loss)
    return (value if math.isfinite(value) else math.inf), failure


def misfit_the_noise_allows(problem: TrainingProblem) -> float:
    """The largest misfit the noise-free truth itself plausibly shows on ``problem``.

    With independent noise of variance ``s2`` on ``n`` observed values, the truth's
    mean squared error is ``s2 chi2_n / n``: mean ``s2``, standard deviation
    ``s2 sqrt(2 / n)``. This is its mean plus two standard deviations (0 without a
    noise estimate).
    """
    n_observed = max(float(problem.observed.sum()), 1.0)
    return problem.noise_variance * (1.0 + 2.0 * math.sqrt(2.0 / n_observed))
