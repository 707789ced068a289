"""Systems with hidden states, known initial states and external inputs (re-exported by
:mod:`skneuralode.datasets`): an epidemic of which only the sick are counted, a drug
absorbed from an unmeasured gut compartment, an oscillator driven by a force."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.integrate import solve_ivp

SIR = {"beta": 1.66, "gamma": 0.45, "population": 763.0}
PHARMACOKINETICS = {"ka": 1.5, "ke": 0.08, "V": 32.0}
_SAMPLING_HOURS = np.array([0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0])


def _solve(rhs: object, y0: Sequence[float], times: np.ndarray) -> np.ndarray:
    solution = solve_ivp(  # type: ignore[call-overload]
        rhs, (0.0, times[-1]), y0, t_eval=times, rtol=1e-10, atol=1e-10, method="LSODA"
    )
    return solution.y.T


# ----------------------------------------------------------------------------- SIR
def sir_known(t: torch.Tensor, y: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """SIR epidemic: ``S' = -beta S I / N``, ``I' = beta S I / N - gamma I``."""
    susceptible, infected = y[..., 0], y[..., 1]
    infections = p["beta"] * susceptible * infected / p["population"]
    return torch.stack([-infections, infections - p["gamma"] * infected], dim=-1)


def make_sir(
    n_days: int = 14, noise: float = 0.1, seed: int = 0, parameters: Mapping[str, float] = SIR
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Daily counts of the infected of an SIR epidemic; the susceptible are never counted.

    The scale of the 1978 boarding-school influenza outbreak (763 boys, one sick on day
    0, 14 days). The infected carry multiplicative Gaussian noise of ``noise``.

    Returns
    -------
    t : ndarray of shape (n_days,)
    y : ndarray of shape (n_days, 2)
        ``[S, I]`` with ``S`` all NaN (a hidden state).
    y0 : ndarray of shape (2,)
        The known initial state ``[N - 1, 1]``.
    """
    beta, gamma, population = parameters["beta"], parameters["gamma"], parameters["population"]

    def rhs(t: float, state: np.ndarray) -> list[float]:
        infections = beta * state[0] * state[1] / population
        return [-infections, infections - gamma * state[1]]

    t = np.arange(float(n_days))
    y0 = np.array([population - 1.0, 1.0])
    infected = _solve(rhs, y0, t)[:, 1]
    rng = np.random.default_rng(seed)
    observed = infected * (1.0 + noise * rng.standard_normal(n_days))
    return t, np.column_stack([np.full(n_days, np.nan), observed]), y0


# ------------------------------------------------------------------ pharmacokinetics
def one_compartment_known(
    t: torch.Tensor, y: torch.Tensor, p: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """Oral dose, first-order absorption: ``gut' = -ka gut``, ``C' = ka gut / V - ke C``."""
    gut, concentration = y[..., 0], y[..., 1]
    absorbed = p["ka"] * gut
    return torch.stack([-absorbed, absorbed / p["V"] - p["ke"] * concentration], dim=-1)


def one_compartment_amounts(
    t: torch.Tensor, y: torch.Tensor, p: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """The same kinetics in amounts: ``gut' = -ka gut``, ``central' = ka gut - ke central``
    (the volume enters only what is measured, :func:`central_concentration`)."""
    gut, central = y[..., 0], y[..., 1]
    absorbed = p["ka"] * gut
    return torch.stack([-absorbed, absorbed - p["ke"] * central], dim=-1)


def central_concentration(y: torch.Tensor, p: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """What a plasma sample measures: the central amount over the volume, (..., 1)."""
    return y[..., 1:2] / p["V"]


def make_pharmacokinetics(
    n_subjects: int = 12,
    noise: float = 0.05,
    seed: int = 0,
    parameters: Mapping[str, float] = PHARMACOKINETICS,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Plasma concentrations after an oral dose, each subject on its own times.

    Each subject gets a dose between 250 and 450 (the initial amount in the gut, never
    measured) and is sampled at 0 (before the dose has reached the plasma) and at ten
    times up to 24 h, each jittered by up to 10 %.

    Returns
    -------
    t : list of ndarray
        Each subject's times.
    y : list of ndarray of shape (n_times_i, 2)
        ``[gut amount, concentration]``, the gut amount all NaN (a hidden state).
    y0 : ndarray of shape (n_subjects, 2)
        The known initial states ``[dose, 0]``.
    """
    ka, ke, volume = parameters["ka"], parameters["ke"], parameters["V"]
    rng = np.random.default_rng(seed)
    times, states, initial = [], [], []
    for _ in range(n_subjects):
        dose = rng.uniform(250.0, 450.0)
        t = np.concatenate([[0.0], np.sort(_SAMPLING_HOURS * rng.uniform(0.9, 1.1, 10))])
        solution = _solve(lambda s, z: [-ka * z[0], ka * z[0] / volume - ke * z[1]], [dose, 0], t)
        concentration = solution[:, 1] * (1.0 + noise * rng.standard_normal(len(t)))
        times.append(t)
        states.append(np.column_stack([np.full(len(t), np.nan), concentration]))
        initial.append([dose, 0.0])
    return times, states, np.array(initial)


# ------------------------------------------------------------------- forced oscillator
def sum_of_sines(
    t: np.ndarray, frequencies: Sequence[float], amplitudes: Sequence[float]
) -> np.ndarray:
    """``sum_k a_k sin(w_k t)`` at ``t``."""
    t = np.asarray(t, dtype=float)
    return sum(a * np.sin(w * t) for w, a in zip(frequencies, amplitudes, strict=True))


def make_forced_oscillator(
    t: np.ndarray,
    frequencies: Sequence[float] = (1.0, 2.7),
    amplitudes: Sequence[float] = (1.0, 0.7),
    omega: float = 2.0,
    zeta: float = 0.1,
    y0: Sequence[float] = (1.0, 0.0),
) -> tuple[np.ndarray, np.ndarray]:
    """A damped oscillator driven by a sum of sines, ``x'' = -w^2 x - 2 zeta w x' + u(t)``.

    Returns
    -------
    y : ndarray of shape (n_times, 2)
        Position and velocity at ``t``.
    u : ndarray of shape (n_times, 1)
        The force at ``t``.
    """

    def rhs(s: float, z: np.ndarray) -> list[float]:
        force = float(sum_of_sines(np.array(s), frequencies, amplitudes))
        return [z[1], -(omega**2) * z[0] - 2.0 * zeta * omega * z[1] + force]

    t = np.asarray(t, dtype=float)
    return _solve(rhs, y0, t), sum_of_sines(t, frequencies, amplitudes)[:, None]
