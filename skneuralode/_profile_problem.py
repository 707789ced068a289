"""The misfit a profile re-optimises: weighted residuals of the training data as a
function of the raw physical parameters and the fitted initial states, their Jacobian
from the sensitivities (``_sensitivity``), and the re-fit by Levenberg-Marquardt
(``scipy.optimize.least_squares``) with some entries held, or a function of the
parameters held at a value by a stiff penalty residual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares

from ._data import TrajectoryBatch
from ._derived import DerivedQuantity
from ._prediction import integrate
from ._sensitivity import parameter_layout, trajectory_sensitivities
from ._vector_fields import ODEModel

_FAILED_RESIDUAL = 1e6  # weighted residual shown to the optimiser where a solve failed


@dataclass
class ProfileProblem:
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


@dataclass
class Constraint:
    """``g(parameters) = target``, held by a stiff penalty residual
    ``(g - target) / tolerance`` (``tolerance`` a small fraction of g's standard
    deviation, so the data's misfit is that of ``g`` at its target to ~1e-6)."""

    quantity: DerivedQuantity
    target: float
    tolerance: float

    def residual(self, vector: np.ndarray, n_physical: int) -> float:
        value, _ = self.quantity.value_and_gradient(vector[:n_physical])
        return (value - self.target) / self.tolerance

    def row(self, vector: np.ndarray, n_physical: int) -> np.ndarray:
        _, gradient = self.quantity.value_and_gradient(vector[:n_physical])
        row = np.zeros(vector.size)
        row[:n_physical] = gradient / self.tolerance
        return row


def refit(
    problem: ProfileProblem,
    vector: np.ndarray,
    fixed: int | None,
    constraint: Constraint | None = None,
) -> tuple[float, np.ndarray]:
    """Minimum of chi2 over the fitted entries of ``vector`` (entry ``fixed`` held, or a
    function of the parameters held at a value by ``constraint``)."""
    free = problem.free.copy()
    if fixed is not None:
        free[fixed] = False
    n_physical = problem.n_physical

    def full(free_values: np.ndarray) -> np.ndarray:
        candidate = vector.copy()
        candidate[free] = free_values
        return candidate

    def residuals(free_values: np.ndarray) -> np.ndarray:
        data = problem.residuals(full(free_values))
        if constraint is None:
            return data
        return np.append(data, constraint.residual(full(free_values), n_physical))

    def jacobian(free_values: np.ndarray) -> np.ndarray:
        data = problem.jacobian(full(free_values))
        if constraint is not None:
            data = np.vstack([data, constraint.row(full(free_values), n_physical)])
        return data[:, free]

    n_residuals = residuals(vector[free]).size
    method = "lm" if n_residuals >= int(free.sum()) else "trf"
    solution = least_squares(
        residuals, vector[free], jac=jacobian, method=method, x_scale="jac", ftol=1e-6, xtol=1e-6
    )
    data_residuals = solution.fun[: n_residuals - (constraint is not None)]
    return float(np.sum(data_residuals**2)), full(solution.x)
