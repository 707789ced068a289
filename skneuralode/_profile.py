"""Profile-likelihood intervals of physical parameters.

For the small, nonlinear cases where the quadratic (Wald) approximation fails, the
interval of a parameter is the set of its values at which the data, with every other
physical parameter and every initial state re-fitted, fit no significantly worse than
at the optimum (Venzon and Moolgavkar 1988; Raue et al. 2009):

    chi2(p) = sum over observations of (residual / sigma_state)^2,   re-optimised,
    interval = { p : chi2(p) - chi2_min <= F(1, dof) quantile },

with ``sigma`` each state's noise level from the fit and the F(1, dof) quantile (the
square of Student's t, the likelihood-ratio threshold when the noise level is estimated;
chi-square(1) for many observations). The network, when there is one, is held fixed,
as for the Wald intervals.

The profile walks away from the optimum in steps of the Wald half-width on the
parameter's raw scale (log for positive ones), re-fitting the rest by Gauss-Newton
(``scipy.optimize.least_squares``, Levenberg-Marquardt, with the Jacobian from the
sensitivities of ``_sensitivity``) from the previous step's solution, until the
threshold is crossed; the bound is then found on the signed root of the increase,
which is nearly linear in the parameter, and refined once. A profile that stays below
the threshold for ``MAX_PROFILE_STEPS`` steps leaves that side unbounded.

The profile needs the data, which a fitted model does not keep: pass the training data
again.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import least_squares

from ._data import TrajectoryBatch, validate_trajectories
from ._parameter_uncertainty import physical_values
from ._prediction import integrate
from ._sensitivity import parameter_layout, trajectory_sensitivities
from ._uncertainty import inverse_information, student_quantile
from ._vector_fields import ODEModel

MAX_PROFILE_STEPS = 12
_STEP_FRACTION = 1.0  # of the Wald half-width, per profile step
_FAILED_RESIDUAL = 1e6  # weighted residual shown to the optimiser where a solve failed


@dataclass
class _ProfileProblem:
    """Weighted residuals of the data as a function of (physical, initial states)."""

    model: ODEModel
    batch: TrajectoryBatch
    noise_std: np.ndarray  # (n_observed,) scaled
    signal: torch.nn.Module | None = None  # the training inputs of a forced model

    def __post_init__(self) -> None:
        self.layout = parameter_layout(self.model, include_output_layer=False)
        self.sorted_times = [
            self.batch.times[row, :length] for row, length in enumerate(self.batch.lengths)
        ]
        self.starts = self.batch.times[:, 0]
        self.observed = [
            self.batch.observed[row, :length] for row, length in enumerate(self.batch.lengths)
        ]
        scaling = self.model.spec.observed_scaling  # what y holds
        self.targets = [
            scaling.scale_states(self.batch.states[row, :length])[mask]
            for row, (length, mask) in enumerate(
                zip(self.batch.lengths, self.observed, strict=True)
            )
        ]
        self.weights = [1.0 / self.noise_std[np.nonzero(mask)[1]] for mask in self.observed]
        fitted = self.model.initial_values().detach().cpu().numpy().astype(np.float64)
        self.fitted_initial = fitted
        known = self.model.known_initial_mask.cpu().numpy()[:, : self.n_states]
        #: Entries of the vector that are fitted (initial states given in fit are not).
        self.free = np.concatenate([np.ones(self.n_physical, dtype=bool), ~known.ravel()])

    @property
    def n_physical(self) -> int:
        return self.layout.n_physical

    @property
    def n_states(self) -> int:
        return self.model.n_states

    def start(self) -> np.ndarray:
        """The fitted (raw physical, observed initial states) as one vector."""
        raw = self.model.field.physical_parameters.raw.detach().cpu().numpy()
        return np.concatenate([raw, self.fitted_initial[:, : self.n_states].ravel()])

    def _initial_states(self, vector: np.ndarray) -> np.ndarray:
        initial = self.fitted_initial.copy()
        initial[:, : self.n_states] = vector[self.n_physical :].reshape(-1, self.n_states)
        return initial

    def _set_physical(self, vector: np.ndarray) -> None:
        raw = self.model.field.physical_parameters.raw
        with torch.no_grad():
            raw.copy_(torch.as_tensor(vector[: self.n_physical], dtype=raw.dtype))

    def residuals(self, vector: np.ndarray) -> np.ndarray:
        self._set_physical(vector)
        with torch.no_grad():
            states = integrate(
                self.model,
                self._initial_states(vector),
                self.starts,
                self.sorted_times,
                self.model.spec.solver,
                self.signal,
                observed=True,
            )
        parts = []
        for fitted, mask, target, weight in zip(
            states, self.observed, self.targets, self.weights, strict=True
        ):
            scaled = self.model.spec.observed_scaling.scale_states(fitted)[mask]
            parts.append((scaled - target) * weight)
        residual = np.concatenate(parts)
        return np.where(np.isfinite(residual), residual, _FAILED_RESIDUAL)

    def jacobian(self, vector: np.ndarray) -> np.ndarray:
        self._set_physical(vector)
        sensitivities = trajectory_sensitivities(
            self.model,
            self.layout,
            self._initial_states(vector),
            self.starts,
            self.sorted_times,
            local=True,
            signal=self.signal,
        )
        n_traj = len(self.sorted_times)
        width = self.n_physical + n_traj * self.n_states
        rows = []
        for row, (mask, weight) in enumerate(zip(self.observed, self.weights, strict=True)):
            block = np.zeros((int(mask.sum()), width))
            if sensitivities is not None:
                local = sensitivities.jacobians[row][mask] * weight[:, None]
                block[:, : self.n_physical] = local[:, : self.n_physical]
                columns = slice(
                    self.n_physical + row * self.n_states,
                    self.n_physical + (row + 1) * self.n_states,
                )
                block[:, columns] = local[:, self.n_physical :]
            rows.append(block)
        return np.concatenate(rows)


def _refit(
    problem: _ProfileProblem, vector: np.ndarray, fixed: int | None
) -> tuple[float, np.ndarray]:
    """Minimum of chi2 over the fitted entries of ``vector`` (entry ``fixed`` held)."""
    free = problem.free.copy()
    if fixed is not None:
        free[fixed] = False

    def full(free_values: np.ndarray) -> np.ndarray:
        candidate = vector.copy()
        candidate[free] = free_values
        return candidate

    def residuals(free_values: np.ndarray) -> np.ndarray:
        return problem.residuals(full(free_values))

    def jacobian(free_values: np.ndarray) -> np.ndarray:
        return problem.jacobian(full(free_values))[:, free]

    n_residuals = residuals(vector[free]).size
    method = "lm" if n_residuals >= int(free.sum()) else "trf"
    solution = least_squares(
        residuals, vector[free], jac=jacobian, method=method, x_scale="jac", ftol=1e-6, xtol=1e-6
    )
    return float(np.sum(solution.fun**2)), full(solution.x)


class _Profile:
    """The increase of the re-fitted misfit with one parameter held at a value; each side
    of the optimum starts from the last solution found on that side."""

    def __init__(
        self, problem: _ProfileProblem, optimum: np.ndarray, index: int, minimum: float
    ) -> None:
        self.problem, self.index, self.minimum = problem, index, minimum
        self.centre = float(optimum[index])
        self.warm = {1.0: optimum.copy(), -1.0: optimum.copy()}

    def increase(self, value: float) -> float:
        side = 1.0 if value >= self.centre else -1.0
        vector = self.warm[side].copy()
        vector[self.index] = value
        chi2, solution = _refit(self.problem, vector, self.index)
        if math.isfinite(chi2):
            self.warm[side] = solution
        return chi2 - self.minimum


def _bound(
    increase: Callable[[float], float],
    centre: float,
    direction: float,
    step: float,
    threshold: float,
) -> float:
    """Where the profile's increase reaches ``threshold`` on one side of ``centre``."""
    root = math.sqrt(threshold)
    previous_value, previous_root = centre, 0.0
    for count in range(1, MAX_PROFILE_STEPS + 1):
        value = centre + direction * count * step
        current_root = math.sqrt(max(increase(value), 0.0))
        if current_root >= root:
            fraction = (root - previous_root) / max(current_root - previous_root, 1e-300)
            guess = previous_value + fraction * (value - previous_value)
            refined_root = math.sqrt(max(increase(guess), 0.0))
            if refined_root >= root:  # the crossing lies between previous and guess
                value, current_root = guess, refined_root
            else:
                previous_value, previous_root = guess, refined_root
            fraction = (root - previous_root) / max(current_root - previous_root, 1e-300)
            return previous_value + fraction * (value - previous_value)
        previous_value, previous_root = value, current_root
    return direction * math.inf


def profile_intervals(
    estimator: Any, t: Any, y: Any, confidence: float, u: Any = None
) -> dict[str, tuple[float, float]]:
    """Profile-likelihood intervals of every learned physical parameter.

    Parameters
    ----------
    estimator : fitted UniversalODERegressor
        With its uncertainty records (``noise_std_``, ``_physical_information_``).
    t, y
        The training data, in any layout ``fit`` accepts.
    confidence : float
    u : optional
        The training inputs of a model fitted with external inputs, as in ``fit``.

    Returns
    -------
    dict of str to (float, float)
    """
    model = copy.deepcopy(estimator._fitted_model())
    batch = validate_trajectories(t, y)
    n_observed = model.spec.n_observed
    if batch.n_states != n_observed or batch.n_traj != model.spec.n_trajectories:
        raise ValueError(
            f"t and y must be the training data: the model was fitted on "
            f"{model.spec.n_trajectories} trajectories of {n_observed} states, got "
            f"{batch.n_traj} of {batch.n_states}."
        )
    noise = estimator.noise_std_ / model.spec.observed_scaling.state_scale
    signal = estimator._input_signal(u, batch.grids)
    problem = _ProfileProblem(model, batch, np.where(noise > 0, noise, 1.0), signal)
    minimum, optimum = _refit(problem, problem.start(), None)
    dof = float(estimator._residual_dof_[0])
    quantile = student_quantile(confidence, dof)
    threshold = quantile**2
    raw_std = np.sqrt(np.diagonal(inverse_information(estimator._physical_information_)))
    parameters = model.field.physical_parameters
    intervals = {}
    for index, name in enumerate(parameters.names):
        step = _STEP_FRACTION * quantile * raw_std[index]
        profile = _Profile(problem, optimum, index, minimum)
        bounds = [
            _bound(profile.increase, float(optimum[index]), direction, step, threshold)
            for direction in (-1.0, 1.0)
        ]
        raw_bounds = np.tile(optimum[: problem.n_physical], (2, 1))
        raw_bounds[:, index] = bounds
        with np.errstate(over="ignore", invalid="ignore"):
            values = physical_values(parameters, raw_bounds)[:, index]
        intervals[name] = (float(values[0]), float(values[1]))
    return intervals
