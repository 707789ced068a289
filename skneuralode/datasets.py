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

from ._scientific_systems import (  # noqa: F401 (re-exported)
    PHARMACOKINETICS,
    SIR,
    central_concentration,
    make_forced_oscillator,
    make_pharmacokinetics,
    make_sir,
    one_compartment_amounts,
    one_compartment_known,
    sir_known,
    sum_of_sines,
)

SPIRAL_MATRIX = np.array([[-0.1, 2.0], [-2.0, -0.1]])
LOTKA_VOLTERRA = {"a": 1.3, "b": 0.9, "c": 0.8, "d": 1.8}
LOTKA_VOLTERRA_Y0 = np.array([0.44249296, 4.6280594])


def integrate_exactly(
    rhs: Callable[[float, np.ndarray], np.ndarray], y0: np.ndarray, times: np.ndarray
) -> np.ndarray:
    """Reference solution at ``times`` (sorted, >= 0) of the problem with ``y(0) = y0``.

    Returns an array of shape (n_times, n_states).
    """
    if times[0] < 0:
        raise ValueError(f"times must be >= 0 (the initial state holds at t = 0), got {times[0]}.")
    solution = solve_ivp(
        rhs, (0.0, times[-1]), y0, t_eval=times, rtol=1e-10, atol=1e-10, method="DOP853"
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


def pendulum_rhs(
    t: float, u: np.ndarray, frequency: float = 1.0, damping: float = 0.1
) -> np.ndarray:
    """Damped pendulum ``theta'' = -frequency**2 sin(theta) - damping theta'``.

    ``u`` holds ``(theta, omega)`` on its last axis, or several such pairs flattened into
    one vector (as :func:`scipy.integrate.solve_ivp` passes a batch of pendulums).
    """
    pairs = np.reshape(u, (-1, 2))
    angle, velocity = pairs[:, 0], pairs[:, 1]
    rates = np.stack([velocity, -(frequency**2) * np.sin(angle) - damping * velocity], axis=1)
    return rates.reshape(np.shape(u))


def make_pendulum(
    n_trajectories: int = 100,
    times: np.ndarray | None = None,
    n_times: int = 50,
    t_end: float = 10.0,
    y0: np.ndarray | None = None,
    frequency: float = 1.0,
    damping: float = 0.1,
    max_angle: float = np.pi / 2,
    max_velocity: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A family of damped pendulums ``theta'' = -frequency**2 sin(theta) - damping theta'``.

    The states are ``(theta, dtheta/dt)``. Initial angles are drawn uniformly in
    ``[-max_angle, max_angle]`` and velocities in ``[-max_velocity, max_velocity]``; the
    defaults stay well inside the nonlinear but non-rotating regime (energy below the
    separatrix). All pendulums are integrated together in one vectorised solve, so ten
    thousand trajectories take a few seconds.

    Parameters
    ----------
    n_trajectories : int, default=100
        Number of trajectories, each from its own random initial state (ignored when
        ``y0`` is given).
    times : ndarray of shape (n_times,), optional
        Observation times shared by all trajectories (sorted here); the initial states
        hold at the first. Default: ``n_times`` points evenly spaced over ``[0, t_end]``.
    n_times, t_end : int, float, default=50, 10.0
        Grid used when ``times`` is None (about 1.6 periods at the default frequency).
    y0 : array-like of shape (2,) or (n, 2), optional
        Initial states; a single one gives one trajectory of shape (n_times, 2).
    frequency : float, default=1.0
        Small-angle angular frequency ``sqrt(g / L)``.
    damping : float, default=0.1
        Linear damping coefficient.
    max_angle, max_velocity : float, default=pi/2, 1.0
        Ranges of the random initial states.
    seed : int, default=0
        Seed of the random initial states.

    Returns
    -------
    t : ndarray of shape (n_times,)
    y : ndarray of shape (n_trajectories, n_times, 2), or (n_times, 2) for a 1-D ``y0``

    Examples
    --------
    >>> from skneuralode.datasets import make_pendulum
    >>> t, y = make_pendulum(n_trajectories=3, n_times=50)
    >>> t.shape, y.shape
    ((50,), (3, 50, 2))
    >>> make_pendulum(y0=[0.5, 0.0])[1].shape
    (50, 2)
    """
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    if y0 is None:
        rng = np.random.default_rng(seed)
        starts = np.column_stack(
            [
                rng.uniform(-max_angle, max_angle, n_trajectories),
                rng.uniform(-max_velocity, max_velocity, n_trajectories),
            ]
        )
    else:
        starts = np.asarray(y0, dtype=float)
    flat = integrate_exactly(
        lambda time, u: pendulum_rhs(time, u, frequency, damping), starts.reshape(-1), t
    )  # (n_times, 2 n)
    y = flat.reshape(len(t), -1, 2).transpose(1, 0, 2)
    return (t, y[0]) if starts.ndim == 1 else (t, y)


def add_noise(y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise with standard deviation ``fraction`` of each state's standard deviation."""
    rng = np.random.default_rng(seed)
    return y + fraction * y.std(axis=0) * rng.standard_normal(y.shape)


def van_der_pol_rhs(t: float, u: np.ndarray, mu: float = 100.0) -> np.ndarray:
    """Van der Pol oscillator ``x'' = mu (1 - x**2) x' - x``; stiff for large ``mu``."""
    x, v = u
    return np.array([v, mu * (1.0 - x**2) * v - x])


def make_van_der_pol(
    times: np.ndarray | None = None,
    n_times: int = 200,
    t_end: float = 200.0,
    mu: float = 100.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Stiff relaxation oscillations of the Van der Pol oscillator from (2, 0).

    With ``mu = 100`` slow drifts (time scale ``mu``) alternate with jumps that last about
    ``1 / mu``: an even grid samples the jumps with one point or none. Integrated with an
    implicit method (Radau).

    Examples
    --------
    >>> from skneuralode.datasets import make_van_der_pol
    >>> t, y = make_van_der_pol(n_times=50)
    >>> t.shape, y.shape
    ((50,), (50, 2))
    """
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    solution = solve_ivp(
        lambda time, u: van_der_pol_rhs(time, u, mu),
        (t[0], t[-1]),
        np.array([2.0, 0.0]),
        t_eval=t,
        method="Radau",
        rtol=1e-8,
        atol=1e-10,
    )
    return t, solution.y.T


def robertson_rhs(t: float, u: np.ndarray) -> np.ndarray:
    """Robertson's chemical kinetics, the classic stiff test problem (rates 0.04, 1e4, 3e7)."""
    a, b, c = u
    return np.array([-0.04 * a + 1e4 * b * c, 0.04 * a - 1e4 * b * c - 3e7 * b**2, 3e7 * b**2])


def make_robertson(
    times: np.ndarray | None = None, n_times: int = 40, t_end: float = 1e3
) -> tuple[np.ndarray, np.ndarray]:
    """Robertson's kinetics from (1, 0, 0) on log-spaced times in ``[1e-5, t_end]`` (and 0).

    The intermediate species stays near 3e-5 while the others are of order one, and the
    time scales run from 1e-4 to 1e3: stiff in time and badly scaled in state.

    Examples
    --------
    >>> from skneuralode.datasets import make_robertson
    >>> t, y = make_robertson(n_times=20)
    >>> t.shape, y.shape, bool(y[:, 1].max() < 1e-4)
    ((20,), (20, 3), True)
    """
    if times is None:
        t = np.concatenate([[0.0], np.logspace(-5, np.log10(t_end), n_times - 1)])
    else:
        t = np.sort(times)
    solution = solve_ivp(
        robertson_rhs,
        (t[0], t[-1]),
        np.array([1.0, 0.0, 0.0]),
        t_eval=t,
        method="Radau",
        rtol=1e-10,
        atol=1e-14,
    )
    return t, solution.y.T


def make_blow_up(
    times: np.ndarray | None = None, n_times: int = 40, t_end: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``dy/dt = y**2`` from ``y(0) = 1``: ``y = 1 / (1 - t)`` blows up at ``t = 1``.

    Up to ``t_end = 0.95`` the state grows twenty-fold, most of it near the end.

    Examples
    --------
    >>> from skneuralode.datasets import make_blow_up
    >>> t, y = make_blow_up(n_times=5)
    >>> y.shape, round(float(y[-1, 0]), 6)
    ((5, 1), 20.0)
    """
    t = np.linspace(0.0, t_end, n_times) if times is None else np.sort(times)
    return t, (1.0 / (1.0 - t))[:, None]
