"""Data that observe a function of the states: ``y = observe(x, p)``.

A :class:`UniversalODERegressor` with ``observe`` writes its physics in states ``x``
(amounts, compartments) while ``y`` holds what was measured (a concentration, the sum
of two compartments). The training problem then carries two scalings: the observed
quantities keep the scaling ``build_problem`` computed from ``y`` (every loss compares
scaled observations), and the states get one of their own, around zero with the
magnitude of their (known or first-guessed) initial values, as hidden states do.

No state has a smoothed estimate or a derivative estimate here, so the collocation
stages have nothing to regress on and skip; the stages that integrate (shooting,
polish) learn the states through the observation map
(:meth:`~skneuralode._vector_fields.ODEModel.observation`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ._hybrid_field import check_finite_output, check_returned_tensor
from ._problem import TrainingProblem
from ._scaling import Scaling

#: How the number of states is set, for errors about what ``observe`` receives.
_STATES_HINT = (
    " The model has as many states as y0 has columns (NaN entries are learned), or as "
    "y has columns without y0."
)

#: L-BFGS iterations of the first guess of unknown initial states.
_GUESS_ITERATIONS = 50


def check_observe(observe: Any) -> None:
    """``observe`` is None or callable (a ``TypeError`` naming it otherwise)."""
    if observe is not None and not callable(observe):
        raise TypeError(
            f"observe must be a callable observe(y, p) -> observed quantities, or None; got "
            f"{type(observe).__name__}."
        )


def n_model_states(y0: Any, n_observed: int) -> int:
    """Number of states of a model that observes a function of them: the width of ``y0``
    (shape ``(n_states,)`` or ``(n_traj, n_states)``) when given, else ``n_observed``."""
    if y0 is None:
        return n_observed
    shape = np.shape(y0)
    if len(shape) not in (1, 2) or shape[-1] < 1:
        raise ValueError(
            f"y0 must have shape (n_states,) or (n_traj, n_states), got shape {shape}."
        )
    return int(shape[-1])


def check_quantities_measured(hidden_columns: tuple[int, ...]) -> None:
    """With ``observe``, every column of ``y`` must be measured somewhere (the states are
    what is hidden, not the observed quantities)."""
    if hidden_columns:
        raise ValueError(
            f"y: column(s) {list(hidden_columns)} are never observed (all NaN). With observe, "
            "y holds only what was measured: drop those columns from y and from what "
            "observe returns (the states need no column of their own)."
        )


def model_hidden_states(
    hidden_columns: tuple[int, ...], problem: TrainingProblem
) -> tuple[int, ...]:
    """States never observed directly: the all-NaN columns of ``y``, or every state when
    the data observe a function of them."""
    if problem.observation_scaling is None:
        return hidden_columns
    return tuple(range(problem.n_states))


def observed_quantities(
    observe: Callable[..., Any],
    states: torch.Tensor,
    parameters: Mapping[str, torch.Tensor],
    n_observed: int,
) -> torch.Tensor:
    """``observe(states, parameters)``, checked: a finite tensor of shape
    ``states.shape[:-1] + (n_observed,)``, or an error naming ``observe``."""
    try:
        observed = observe(states, parameters)
    except Exception as error:
        raise ValueError(
            f"observe(y, p) raised {type(error).__name__}: {error} when called with y of "
            f"shape {tuple(states.shape)} (the initial states) and p with keys "
            f"{sorted(parameters)}.{_STATES_HINT}"
        ) from error
    check_returned_tensor("observe(y, p)", observed, "y[..., 1:2] / p['V']")
    expected = (*states.shape[:-1], n_observed)
    if tuple(observed.shape) != expected:
        raise ValueError(
            f"observe(y, p) must return what y measured, shape (..., {n_observed}) for the "
            f"{n_observed} column(s) of y; at the initial states of shape "
            f"{tuple(states.shape)} it returned shape {tuple(observed.shape)}.{_STATES_HINT}"
        )
    check_finite_output("observe(y, p)", observed, states)
    return observed


def guess_initial_states(
    observe: Callable[..., Any],
    parameters: Mapping[str, float],
    targets: np.ndarray,
    spread: np.ndarray,
    known: np.ndarray,
    magnitude: float,
) -> np.ndarray:
    """Physical initial states whose observation matches the first observations.

    The known entries are kept; the unknown ones start at zero and are fitted by a short
    L-BFGS least-squares fit of ``observe(x0, p)`` to ``targets`` (a minimal-norm answer
    where the observations do not determine them).

    Parameters
    ----------
    observe : callable
    parameters : mapping of str to float
        Starting values of every parameter ``observe`` reads.
    targets : ndarray of shape (n_traj, n_observed)
        First (smoothed) observations.
    spread : ndarray of shape (n_observed,)
        Typical size of each observed quantity (the misfit is measured in it).
    known : ndarray of shape (n_traj, n_states)
        Known initial states, NaN where unknown.
    magnitude : float
        Typical size of a state: the unknown entries are fitted in units of it.

    Returns
    -------
    ndarray of shape (n_traj, n_states)
    """
    n_traj, n_observed = targets.shape
    p = {
        name: torch.tensor(float(value), dtype=torch.float64) for name, value in parameters.items()
    }
    fixed = torch.as_tensor(np.nan_to_num(known, nan=0.0), dtype=torch.float64)
    unknown = torch.as_tensor(np.isnan(known))
    target = torch.as_tensor(targets, dtype=torch.float64)
    size = torch.as_tensor(spread, dtype=torch.float64)
    observed_quantities(observe, fixed, p, n_observed)  # checks the output once
    if not bool(unknown.any()):
        return fixed.numpy().copy()
    free = torch.zeros_like(fixed, requires_grad=True)
    optimiser = torch.optim.LBFGS([free], max_iter=_GUESS_ITERATIONS, line_search_fn="strong_wolfe")

    def states() -> torch.Tensor:
        return torch.where(unknown, free * magnitude, fixed)

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = (((observe(states(), p) - target) / size) ** 2).sum() / (n_traj * n_observed)
        loss.backward()
        return loss

    try:
        optimiser.step(closure)
    except (RuntimeError, ValueError):  # an unhelpful guess is not an error: start at zero
        with torch.no_grad():
            free.zero_()
    guess = states().detach()
    if not bool(torch.isfinite(guess).all()):
        guess = fixed
    return guess.numpy().copy()


def state_scaling(initial_states: np.ndarray, time_scaling: Scaling) -> Scaling:
    """The states' scaling: around zero, by the largest magnitude of each state's initial
    values (by the largest of any state where a state starts at zero everywhere, by 1
    where all do), with the time scaling of ``time_scaling``."""
    magnitude = np.max(np.abs(initial_states), axis=0)
    fallback = float(magnitude.max(initial=0.0)) or 1.0
    scale = np.where(magnitude > 0, magnitude, fallback)
    return Scaling(np.zeros_like(scale), scale, time_scaling.time_origin, time_scaling.time_scale)


def observation_problem(
    problem: TrainingProblem,
    observe: Callable[..., Any],
    parameters: Mapping[str, float],
    known: np.ndarray | None,
    n_states: int,
    scaling: Scaling | None = None,
) -> TrainingProblem:
    """The training problem of a model whose data observe a function of its states.

    Parameters
    ----------
    problem : TrainingProblem
        Built from the observations (its scaling is the observation scaling).
    observe : callable
    parameters : mapping of str to float
        Starting values of the physical parameters (learned and fixed).
    known : ndarray of shape (n_traj, n_states) or None
        Known initial states, NaN where learned.
    n_states : int
    scaling : Scaling, optional
        The states' scaling to keep (``warm_start``); computed from the initial states
        if None.

    Returns
    -------
    TrainingProblem
        Observations as given; smoothed states holding each trajectory's first guess
        of its initial state (constant in time), no derivative estimates (zero
        collocation weight), the states' scaling and the observation scaling.
    """
    observation_scaling = problem.scaling
    if known is None:
        known = np.full((problem.n_traj, n_states), np.nan)
    first = problem.smoothed_states[:, 0].detach().cpu().numpy().astype(np.float64)
    targets = first * observation_scaling.state_scale + observation_scaling.state_offset
    magnitude = (
        float(np.nanmax(np.abs(known), initial=0.0))
        or float(np.nanmax(np.abs(targets), initial=0.0))
        or 1.0
    )
    initial = guess_initial_states(
        observe, parameters, targets, observation_scaling.state_scale, known, magnitude
    )
    if scaling is None:
        scaling = state_scaling(initial, observation_scaling)
    scaled = torch.as_tensor(scaling.scale_states(initial), dtype=problem.times.dtype)
    scaled = scaled.to(problem.times.device)
    n_max = problem.times.shape[1]
    smoothed = scaled[:, None, :].expand(problem.n_traj, n_max, n_states).contiguous()
    return replace(
        problem,
        smoothed_states=smoothed,
        smoothed_derivatives=torch.zeros_like(smoothed),
        smoothing_weight=torch.zeros_like(smoothed),
        scaling=scaling,
        observation_scaling=observation_scaling,
    )
