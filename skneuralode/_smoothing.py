"""Smoothing of observed states and estimation of their time derivatives.

Each observed state of each trajectory gets a cubic smoothing spline
(:func:`scipy.interpolate.make_smoothing_spline`). Its smoothing strength is chosen by
the discrepancy principle: the spline may leave residuals as large as the noise, and no
larger. The noise is estimated from the data (third differences, median absolute
deviation), which keeps clean dense data nearly interpolated — generalised cross
validation over-smooths exactly that case — and noisy data smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_smoothing_spline

_MIN_SPLINE_POINTS = 5
_LOG_LAMBDA_RANGE = (-14.0, 2.0)
_BISECTION_STEPS = 10
_MAD_TO_STD = 1.4826
_THIRD_DIFFERENCE_VARIANCE = 20.0  # Var(y[i+3]-3y[i+2]+3y[i+1]-y[i]) / sigma**2


@dataclass(frozen=True)
class SmoothedTrajectories:
    """Smoothed states and their derivatives at every padded time point.

    Attributes
    ----------
    states : ndarray of shape (n_traj, n_max, n_states)
    derivatives : ndarray of shape (n_traj, n_max, n_states)
        Time derivatives in the units of ``times`` given to :func:`smooth_trajectories`.
    inside : ndarray of shape (n_traj, n_max, n_states)
        True where the time lies within the span of that state's observations, so the
        estimate is an interpolation rather than an extrapolation.
    noise_level : ndarray of shape (n_states,)
        Root-mean-square over trajectories of each state's estimated noise level.
    """

    states: np.ndarray
    derivatives: np.ndarray
    inside: np.ndarray
    noise_level: np.ndarray


def estimate_noise_level(values: np.ndarray) -> float:
    """Robust estimate of the standard deviation of white noise in a smooth series."""
    if values.size < 4:
        return 0.0
    third_differences = np.diff(values, n=3)
    deviation = np.median(np.abs(third_differences - np.median(third_differences)))
    return float(_MAD_TO_STD * deviation / np.sqrt(_THIRD_DIFFERENCE_VARIANCE))


def _spline_with_residual(
    positions: np.ndarray, values: np.ndarray, target_residual: float
) -> object:
    """Smoothest spline whose residual RMS does not exceed ``target_residual``."""
    low, high = _LOG_LAMBDA_RANGE
    best = make_smoothing_spline(positions, values, lam=10.0**low)
    if target_residual <= 0.0:
        return best
    for _ in range(_BISECTION_STEPS):
        middle = 0.5 * (low + high)
        spline = make_smoothing_spline(positions, values, lam=10.0**middle)
        residual = np.sqrt(np.mean((spline(positions) - values) ** 2))
        if residual <= target_residual:
            best, low = spline, middle
        else:
            high = middle
    return best


def _smooth_one_state(
    times: np.ndarray, values: np.ndarray, query_times: np.ndarray, relative_noise: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed values and derivatives of one observed series at ``query_times``."""
    span = times[-1] - times[0]
    positions = (times - times[0]) / span
    query_positions = (query_times - times[0]) / span
    if times.size < _MIN_SPLINE_POINTS:
        smoothed = np.interp(query_positions, positions, values)
        slopes = np.gradient(values, positions)
        return smoothed, np.interp(query_positions, positions, slopes) / span
    if relative_noise is None:
        target = estimate_noise_level(values)
    else:
        target = relative_noise * float(np.std(values))
    spline = _spline_with_residual(positions, values, target)
    return spline(query_positions), spline.derivative()(query_positions) / span


def smooth_trajectories(
    times: np.ndarray,
    states: np.ndarray,
    lengths: np.ndarray,
    relative_noise: float | None = None,
) -> SmoothedTrajectories:
    """Smooth every state of every trajectory and differentiate it.

    Parameters
    ----------
    times : ndarray of shape (n_traj, n_max)
        Sorted times, padded.
    states : ndarray of shape (n_traj, n_max, n_states)
        Observations; ``NaN`` where missing.
    lengths : ndarray of shape (n_traj,)
        Real length of each trajectory.
    relative_noise : float or None
        Residual the smoother may leave, as a fraction of each series' standard
        deviation; ``None`` estimates the noise from the data, ``0`` interpolates.

    Returns
    -------
    SmoothedTrajectories
    """
    smoothed = np.zeros_like(states)
    derivatives = np.zeros_like(states)
    inside = np.zeros(states.shape, dtype=bool)
    noise_variance = np.zeros(states.shape[2])
    for trajectory, length in enumerate(lengths):
        query_times = times[trajectory, :length]
        for state in range(states.shape[2]):
            values = states[trajectory, :length, state]
            seen = ~np.isnan(values)
            if seen.sum() < 2:
                constant = values[seen][0]
                smoothed[trajectory, :length, state] = constant
                continue
            seen_times = query_times[seen]
            noise_variance[state] += estimate_noise_level(values[seen]) ** 2 / len(lengths)
            value_at, slope_at = _smooth_one_state(
                seen_times, values[seen], query_times, relative_noise
            )
            smoothed[trajectory, :length, state] = value_at
            derivatives[trajectory, :length, state] = slope_at
            inside[trajectory, :length, state] = (query_times >= seen_times[0]) & (
                query_times <= seen_times[-1]
            )
    return SmoothedTrajectories(smoothed, derivatives, inside, np.sqrt(noise_variance))
