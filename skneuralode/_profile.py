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
threshold is crossed (a re-fit whose increase jumps above the quadratic expectation is
tried again from the linear prediction of the others); the bound is then found on the
signed root of the increase, which is nearly linear in the parameter, by regula falsi.
A profile that stays below the threshold for ``MAX_PROFILE_STEPS`` steps leaves that
side unbounded. A parameter at the boundary of its constraint has its interval start at
the bound, and its other end searched in decades from the boundary's edge. Functions of
the parameters (``_derived``) are profiled alike, their value held by a penalty.

The profile needs the data, which a fitted model does not keep: pass the training data
again.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ._data import validate_trajectories
from ._derived import DerivedQuantity
from ._parameter_uncertainty import (
    BOUNDARY_RAW,
    parameters_at_bounds,
    physical_values,
    warn_parameters_at_bounds,
)
from ._profile_problem import Constraint, ProfileProblem, refit
from ._uncertainty import inverse_information, student_quantile

MAX_PROFILE_STEPS = 12
_RETRY_ABOVE = 2.0  # a re-fit whose increase exceeds this times the quadratic one is retried
_ROOT_TOLERANCE = 0.01  # of sqrt(threshold), where the crossing is accepted
_MAX_ROOT_ITERATIONS = 4  # re-fits spent on locating one crossing, at most
_SLOW_FACTOR = 10.0  # the profile warns once it has run this many times the fit
_WALD_TOLERANCE = 0.5  # relative difference of half-widths above which they disagree
_CONSTRAINT_TOLERANCE = 1e-4  # of a derived quantity's std, how closely it is held


class _Profile:
    """The increase of the re-fitted misfit with one parameter held at a value; each side
    of the optimum starts from the last solution found on that side.

    A re-fit from the neighbouring point can stop in a worse local minimum (an
    oscillation that slips a period, a solver that fails part of the way); that shows as
    an increase well above the quadratic expectation ``((value - centre) / std)^2``.
    There the re-fit is tried again from the linear prediction of the other parameters
    (the optimum moved along the covariance's column), and the smaller misfit is kept.
    """

    def __init__(
        self,
        problem: ProfileProblem,
        optimum: np.ndarray,
        minimum: float,
        covariance: np.ndarray,
        profiled: int | DerivedQuantity,
    ) -> None:
        self.problem, self.minimum, self.optimum = problem, minimum, optimum
        n_physical = problem.n_physical
        if isinstance(profiled, DerivedQuantity):
            self.index, self.quantity = None, profiled
            value, gradient = profiled.value_and_gradient(optimum[:n_physical])
        else:
            self.index, self.quantity = profiled, None
            value, gradient = float(optimum[profiled]), np.eye(n_physical)[profiled]
        self.centre = value
        self.std = math.sqrt(max(float(gradient @ covariance @ gradient), 1e-300))
        #: How the physical parameters move, per unit of the profiled one (linearised).
        self.regression = covariance @ gradient / self.std**2
        self.warm = {1.0: optimum.copy(), -1.0: optimum.copy()}

    def increase(self, value: float) -> float:
        side = 1.0 if value >= self.centre else -1.0
        chi2, solution = self._refit_from(self.warm[side], value)
        expected = ((value - self.centre) / self.std) ** 2
        if not math.isfinite(chi2) or chi2 - self.minimum > _RETRY_ABOVE * expected + 1.0:
            predicted = self.optimum.copy()
            n_physical = self.problem.n_physical
            predicted[:n_physical] += self.regression * (value - self.centre)
            other_chi2, other = self._refit_from(predicted, value)
            if other_chi2 < chi2 or not math.isfinite(chi2):
                chi2, solution = other_chi2, other
        if math.isfinite(chi2):
            self.warm[side] = solution
        return chi2 - self.minimum

    def _refit_from(self, start: np.ndarray, value: float) -> tuple[float, np.ndarray]:
        if self.quantity is not None:
            constraint = Constraint(self.quantity, value, _CONSTRAINT_TOLERANCE * self.std)
            return refit(self.problem, start, None, constraint)
        vector = start.copy()
        vector[self.index] = value
        return refit(self.problem, vector, self.index)


@dataclass
class _ProfileEnd:
    """One end of one parameter's profile interval, on the raw scale."""

    value: float
    unbounded: bool = False  # no crossing within MAX_PROFILE_STEPS steps
    out_of_time: bool = False  # not profiled: the time budget ran out (the Wald end)


def _bound(
    increase: Callable[[float], float],
    centre: float,
    direction: float,
    step: float,
    threshold: float,
) -> _ProfileEnd:
    """Where the profile's increase reaches ``threshold`` on one side of ``centre``.

    The increase is bracketed in steps of ``step``, then its signed root
    (``sqrt(increase) - sqrt(threshold)``, nearly linear in the parameter) is found by
    regula falsi (Illinois), to within ``_ROOT_TOLERANCE`` of the threshold.
    """
    root = math.sqrt(threshold)
    previous_value, previous_root = centre, 0.0
    for count in range(1, MAX_PROFILE_STEPS + 1):
        value = centre + direction * count * step
        current_root = math.sqrt(max(increase(value), 0.0))
        if current_root >= root:
            return _ProfileEnd(
                _crossing(increase, (previous_value, previous_root), (value, current_root), root)
            )
        previous_value, previous_root = value, current_root
    return _ProfileEnd(direction * math.inf, unbounded=True)


def _crossing(
    increase: Callable[[float], float],
    inside: tuple[float, float],
    outside: tuple[float, float],
    root: float,
) -> float:
    """Regula falsi (Illinois) on ``sqrt(increase) - root`` between a point below the
    threshold and one above it, each given as (value, sqrt(increase))."""
    (low_value, low_root), (high_value, high_root) = inside, outside
    low_gap, high_gap = low_root - root, high_root - root
    guess = low_value
    for iteration in range(_MAX_ROOT_ITERATIONS):
        guess = low_value - low_gap * (high_value - low_value) / (high_gap - low_gap)
        if iteration == _MAX_ROOT_ITERATIONS - 1:
            break
        gap = math.sqrt(max(increase(guess), 0.0)) - root
        if abs(gap) <= _ROOT_TOLERANCE * root:
            break
        if gap < 0:
            low_value, low_gap = guess, gap
            high_gap /= 2.0
        else:
            high_value, high_gap = guess, gap
            low_gap /= 2.0
    return guess


class _Clock:
    """The profile's time: progress bar, a warning once it passes ``_SLOW_FACTOR`` times
    the fit, and the caller's ``max_seconds``."""

    def __init__(self, n_ends: int, fit_seconds: float, max_seconds: float | None, verbose: int):
        self.started = time.perf_counter()
        self.fit_seconds, self.max_seconds = fit_seconds, max_seconds
        self.warned = False
        self.bar = tqdm(total=n_ends, desc="    profile", disable=verbose <= 0, leave=True)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        return self.max_seconds is not None and self.seconds > self.max_seconds

    def tick(self, name: str, remaining: int) -> None:
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.update()
        slow = _SLOW_FACTOR * max(self.fit_seconds, 1.0)
        if not self.warned and remaining and self.seconds > slow:
            self.warned = True
            warnings.warn(
                f"The profile has run {self.seconds:.0f} s, over {_SLOW_FACTOR:g} times the "
                f"fit's {self.fit_seconds:.1f} s, with {remaining} interval end(s) to go; "
                "pass max_seconds to param_intervals to cap it (ends beyond the cap take "
                "the Wald value), or verbose=1 on the estimator to watch it.",
                UserWarning,
                stacklevel=4,
            )


def profile_intervals(
    estimator: Any,
    t: Any,
    y: Any,
    confidence: float,
    u: Any = None,
    max_seconds: float | None = None,
    quantities: dict[str, DerivedQuantity] | None = None,
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
    max_seconds : float, optional
        Wall-clock seconds after which the remaining ends take their Wald value.
    quantities : dict of str to DerivedQuantity, optional
        Functions of the parameters to profile too (each value held by a penalty while
        everything else is re-fitted).

    Returns
    -------
    dict of str to (float, float)
        A side the data do not bound is ``-inf``/``inf`` (or the constraint's bound: 0
        for a positive parameter). Warnings say which sides are unbounded, which
        parameters sit at a boundary, where the profile and Wald intervals disagree and
        which ends ran out of time.
    """
    quantities = quantities or {}
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
    problem = ProfileProblem(model, batch, np.where(noise > 0, noise, 1.0), signal)
    parameters = model.field.physical_parameters
    at_bounds = parameters_at_bounds(parameters)
    # A parameter at its bound stays there while the others are re-fitted: its raw value
    # is far out on the log (logit) scale, where its column of the Jacobian vanishes and
    # the re-fits would wander along it for nothing.
    for name in at_bounds:
        problem.free[parameters.names.index(name)] = False
    names = (*parameters.names, *quantities)
    fit_seconds = float(estimator.history_[-1]["seconds"]) if estimator.history_ else 0.0
    clock = _Clock(2 * len(names), fit_seconds, max_seconds, estimator.verbose)
    minimum, optimum = refit(problem, problem.start(), None)
    quantile = student_quantile(confidence, float(estimator._residual_dof_[0]))
    threshold = quantile**2
    covariance = inverse_information(estimator._physical_information_)
    targets: dict[str, int | DerivedQuantity] = {
        name: index for index, name in enumerate(parameters.names)
    }
    targets.update(quantities)
    profiles = {
        name: _Profile(problem, optimum, minimum, covariance, target)
        for name, target in targets.items()
    }
    ends: dict[str, list[_ProfileEnd]] = {}
    for count, (name, profile) in enumerate(profiles.items()):
        half = quantile * profile.std
        ends[name] = []
        for direction in (-1.0, 1.0):
            if name in at_bounds:
                end = _boundary_end(profile, profile.centre, direction, threshold)
            elif clock.out_of_time():
                end = _ProfileEnd(profile.centre + direction * half, out_of_time=True)
            else:
                end = _bound(profile.increase, profile.centre, direction, half, threshold)
            ends[name].append(end)
            clock.tick(name, 2 * len(names) - 2 * count - len(ends[name]))
    clock.bar.close()
    centres = {name: (profile.centre, quantile * profile.std) for name, profile in profiles.items()}
    _warn_about_profile(ends, centres, at_bounds)
    intervals = {}
    for index, name in enumerate(parameters.names):
        raw_bounds = np.tile(optimum[: problem.n_physical], (2, 1))
        raw_bounds[:, index] = [end.value for end in ends[name]]
        with np.errstate(over="ignore", invalid="ignore"):
            values = physical_values(parameters, raw_bounds)[:, index]
        intervals[name] = (float(values[0]), float(values[1]))
    for name in quantities:
        intervals[name] = (ends[name][0].value, ends[name][1].value)
    return intervals


def _boundary_end(
    profile: _Profile, centre: float, direction: float, threshold: float
) -> _ProfileEnd:
    """An end of a parameter at its boundary: the bound itself on its side; inside,
    the crossing found in decades (raw units of ``log 10``) from the boundary's edge."""
    toward_bound = direction * centre > 0  # raw beyond +-BOUNDARY_RAW on this side
    if toward_bound:
        return _ProfileEnd(direction * math.inf, unbounded=True)
    edge = math.copysign(BOUNDARY_RAW, centre)
    return _bound(profile.increase, edge, direction, math.log(10.0), threshold)


def _warn_about_profile(
    ends: dict[str, list[_ProfileEnd]],
    centres: dict[str, tuple[float, float]],
    at_bounds: dict[str, float],
) -> None:
    """The warnings of :func:`profile_intervals` (one per kind, naming every case)."""
    warn_parameters_at_bounds(at_bounds, "profile")
    unbounded = [
        f"{name} {'below' if side == 0 else 'above'}"
        for name, sides in ends.items()
        for side, end in enumerate(sides)
        if end.unbounded and name not in at_bounds
    ]
    if unbounded:
        warnings.warn(
            f"The data do not bound {', '.join(unbounded)}: the profile stays below the "
            f"threshold for {MAX_PROFILE_STEPS} steps of the Wald half-width, so that side "
            "is unbounded (-inf/inf, or 0 for a positive parameter).",
            UserWarning,
            stacklevel=3,
        )
    out_of_time = [name for name, sides in ends.items() if any(e.out_of_time for e in sides)]
    if out_of_time:
        warnings.warn(
            f"max_seconds ran out before the profile of {', '.join(out_of_time)}: those "
            "ends are the Wald ones.",
            UserWarning,
            stacklevel=3,
        )
    disagree = []
    for name, (centre, wald_half) in centres.items():
        if name in at_bounds:
            continue
        for side, end in enumerate(ends[name]):
            if end.unbounded or end.out_of_time:
                continue
            profiled = abs(end.value - centre)
            if abs(profiled - wald_half) > _WALD_TOLERANCE * wald_half:
                disagree.append(
                    f"{name} {'below' if side == 0 else 'above'} "
                    f"({profiled / wald_half:.2g} x the Wald half-width)"
                )
    if disagree:
        warnings.warn(
            "The profile and Wald intervals disagree for " + ", ".join(disagree) + ": the "
            "misfit is far from quadratic there (a nonlinear model, few data), so the "
            "Wald interval (params_std_, param_intervals()) is not reliable for these; the "
            "profile is.",
            UserWarning,
            stacklevel=3,
        )
