"""Reference dynamical systems the tests, examples and benchmarks fit (exact solutions by scipy)."""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

SPIRAL_MATRIX = np.array([[-0.1, 2.0], [-2.0, -0.1]])
LOTKA_VOLTERRA = {"a": 1.3, "b": 0.9, "c": 0.8, "d": 1.8}
LOTKA_VOLTERRA_Y0 = np.array([0.44249296, 4.6280594])


def integrate_exactly(rhs, y0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Reference solution at ``times`` (sorted), shape (n_times, n_states)."""
    solution = solve_ivp(
        rhs, (times[0], times[-1]), y0, t_eval=times, rtol=1e-10, atol=1e-10, method="DOP853"
    )
    return solution.y.T


def spiral_rhs(t: float, u: np.ndarray) -> np.ndarray:
    """The cubic spiral of the DiffEqFlux / torchdiffeq demos: du/dt = (u**3) A."""
    return (u**3) @ SPIRAL_MATRIX


def spiral(times: np.ndarray | None = None, n_times: int = 1000, t_end: float = 25.0):
    """Cubic spiral from u0 = (2, 0); returns (t, y)."""
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, integrate_exactly(spiral_rhs, np.array([2.0, 0.0]), t)


def lotka_volterra_rhs(t: float, u: np.ndarray, p: dict = LOTKA_VOLTERRA) -> np.ndarray:
    x, z = u
    return np.array([p["a"] * x - p["b"] * x * z, p["c"] * x * z - p["d"] * z])


def lotka_volterra(times: np.ndarray | None = None, n_times: int = 31, t_end: float = 3.0):
    """Lotka–Volterra of the UDE paper (Rackauckas et al. 2020); returns (t, y)."""
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, integrate_exactly(lotka_volterra_rhs, LOTKA_VOLTERRA_Y0, t)


def damped_oscillator_rhs(t: float, u: np.ndarray, omega: float = 2.0, zeta: float = 0.1):
    x, v = u
    return np.array([v, -2 * zeta * omega * v - omega**2 * x])


def damped_oscillator(times: np.ndarray | None = None, n_times: int = 60, t_end: float = 6.0,
                      y0=(1.0, 0.0)):
    """Linear damped oscillator x'' + 2 zeta omega x' + omega^2 x = 0; returns (t, y)."""
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, integrate_exactly(damped_oscillator_rhs, np.asarray(y0, float), t)


def add_noise(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise with standard deviation ``fraction`` of each state's standard deviation."""
    rng = np.random.default_rng(seed)
    return y + fraction * y.std(axis=0) * rng.standard_normal(y.shape)
