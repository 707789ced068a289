"""Reference dynamical systems with exact (high-accuracy) solutions, for examples and tests.

Each ``make_*`` function returns ``(t, y)`` ready for ``fit``; noise is added separately
with :func:`add_noise`.

Examples
--------
>>> from skneuralode.datasets import make_spiral, add_noise
>>> t, y = make_spiral(n_times=100)
>>> t.shape, y.shape
((100,), (100, 2))
>>> add_noise(y, 0.05, seed=0).shape
(100, 2)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.integrate import solve_ivp

SPIRAL_MATRIX = np.array([[-0.1, 2.0], [-2.0, -0.1]])
LOTKA_VOLTERRA = {"a": 1.3, "b": 0.9, "c": 0.8, "d": 1.8}
LOTKA_VOLTERRA_Y0 = np.array([0.44249296, 4.6280594])


def integrate_exactly(
    rhs: Callable[[float, np.ndarray], np.ndarray], y0: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """Reference solution at ``times`` (sorted), shape (n_times, n_states)."""
    solution = solve_ivp(
        rhs, (times[0], times[-1]), y0, t_eval=times, rtol=1e-10, atol=1e-10, method="DOP853"
    )
    return solution.y.T


def spiral_rhs(t: float, u: np.ndarray) -> np.ndarray:
    """The cubic spiral of the DiffEqFlux / torchdiffeq demos: du/dt = (u**3) A."""
    return (u**3) @ SPIRAL_MATRIX


def make_spiral(
    times: np.ndarray | None = None, n_times: int = 1000, t_end: float = 25.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cubic spiral from u0 = (2, 0); returns (t, y)."""
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, integrate_exactly(spiral_rhs, np.array([2.0, 0.0]), t)


def lotka_volterra_rhs(t: float, u: np.ndarray, p: dict = LOTKA_VOLTERRA) -> np.ndarray:
    x, z = u
    return np.array([p["a"] * x - p["b"] * x * z, p["c"] * x * z - p["d"] * z])


def make_lotka_volterra(
    times: np.ndarray | None = None, n_times: int = 31, t_end: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Lotka–Volterra of the UDE paper (Rackauckas et al. 2020); returns (t, y)."""
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, integrate_exactly(lotka_volterra_rhs, LOTKA_VOLTERRA_Y0, t)


def damped_oscillator_rhs(
    t: float, u: np.ndarray, omega: float = 2.0, zeta: float = 0.1
) -> np.ndarray:
    x, v = u
    return np.array([v, -2 * zeta * omega * v - omega**2 * x])


def make_damped_oscillator(
    times: np.ndarray | None = None,
    n_times: int = 60,
    t_end: float = 6.0,
    y0: tuple[float, float] = (1.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Linear damped oscillator x'' + 2 zeta omega x' + omega^2 x = 0; returns (t, y)."""
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, integrate_exactly(damped_oscillator_rhs, np.asarray(y0, float), t)


def add_noise(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise with standard deviation ``fraction`` of each state's standard deviation."""
    rng = np.random.default_rng(seed)
    return y + fraction * y.std(axis=0) * rng.standard_normal(y.shape)
