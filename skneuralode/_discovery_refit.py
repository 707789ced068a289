"""Refit a discovered term's coefficients so the rebuilt model reproduces the trajectories.

Least squares of the network's term on a few library columns gives biased coefficients
wherever the network is off (it is least accurate where the data say least), and a
biased coefficient compounds along a trajectory. Fitting the coefficients through the
ODE instead — the rebuilt model ``known + discovered`` integrated from each fitted
trajectory's start, against the fitted trajectory — weighs every coefficient by what it
does to the dynamics, as the parameter estimation that follows discovery in the UDE
paper (Rackauckas et al. 2020) does. The misfit that remains says whether the candidate
structure can describe the dynamics at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

Rates = Callable[[np.ndarray], np.ndarray]

# Residual of a trajectory that could not be integrated (blow-up), per value, in units of
# the states' standard deviations: far worse than any candidate that integrates.
_FAILED_RESIDUAL = 1e3
_MAX_EVALUATIONS_PER_COEFFICIENT = 10


@dataclass(frozen=True)
class Refit:
    """Coefficients refitted through the ODE, and how well they reproduce the trajectories.

    Attributes
    ----------
    coefficients : ndarray of shape (n_states, n_terms)
    error : float
        Root-mean-square of (rebuilt - fitted trajectories) over every point and state,
        each state divided by its standard deviation along the trajectories.
    """

    coefficients: np.ndarray
    error: float


def rebuilt_trajectories(
    rates: Rates, states: Sequence[np.ndarray], times: Sequence[np.ndarray]
) -> list[np.ndarray | None]:
    """Integrate ``dy/dt = rates(y)`` from each trajectory's first state over its times.

    A trajectory that cannot be integrated (blow-up, non-finite rates) is None.
    """
    solutions: list[np.ndarray | None] = []
    for start, grid in zip((row[0] for row in states), times, strict=True):
        solution = solve_ivp(
            lambda t, y: rates(y[None, :])[0],
            (float(grid[0]), float(grid[-1])),
            start,
            method="LSODA",  # a wrong candidate may well be stiff
            t_eval=grid,
            rtol=1e-6,
            atol=1e-9,
        )
        complete = solution.success and solution.y.shape[1] == len(grid)
        solutions.append(solution.y.T if complete and np.isfinite(solution.y).all() else None)
    return solutions


def refit_through_trajectories(
    coefficients: np.ndarray,
    free: np.ndarray,
    rebuilt_rates: Callable[[np.ndarray], Rates],
    states: Sequence[np.ndarray],
    times: Sequence[np.ndarray],
) -> Refit:
    """Least squares of the free coefficients on the trajectory misfit.

    Parameters
    ----------
    coefficients : ndarray of shape (n_states, n_terms)
        Starting values (e.g. least squares on the network's term); zero outside ``free``.
    free : ndarray of bool, same shape
        The coefficients to fit (the candidate structure).
    rebuilt_rates : callable
        ``rebuilt_rates(coefficients)`` -> ``rates(y)`` of the rebuilt model, for states
        of shape (n_samples, n_states).
    states, times : lists of ndarray
        The fitted trajectories (n_points, n_states) and their times (n_points,).
    """
    stacked = np.concatenate(states)
    spread = stacked.std(axis=0)
    spread = np.where(spread > 0, spread, 1.0)

    def with_free(values: np.ndarray) -> np.ndarray:
        full = np.zeros_like(coefficients)
        full[free] = values
        return full

    def residuals(values: np.ndarray) -> np.ndarray:
        rebuilt = rebuilt_trajectories(rebuilt_rates(with_free(values)), states, times)
        parts = [
            ((solution - target) / spread).ravel()
            if solution is not None
            else np.full(target.size, _FAILED_RESIDUAL)
            for solution, target in zip(rebuilt, states, strict=True)
        ]
        return np.concatenate(parts)

    start = coefficients[free]
    budget = _MAX_EVALUATIONS_PER_COEFFICIENT * (start.size + 1)
    result = least_squares(residuals, start, x_scale="jac", max_nfev=budget)
    return Refit(with_free(result.x), float(np.sqrt(np.mean(result.fun**2))))
