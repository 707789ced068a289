"""Shared systems and settings of the test-suite: small problems, tiny networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skneuralode import NeuralODERegressor
from skneuralode.datasets import (
    damped_oscillator_rhs,
    make_damped_oscillator,
    make_spiral,
)

# Tiny networks train fastest on one thread, and the suite shares a small machine.
torch.set_num_threads(1)

#: Settings that fit the damped oscillator to R^2 > 0.99 in a few seconds.
FAST = {"hidden_layer_sizes": (16,), "max_iter": 100, "random_state": 0}
#: The same with a fixed-step solver, for tests about layouts rather than accuracy.
FASTEST = {**FAST, "solver": "rk4"}

OSCILLATOR_STARTS = ((1.0, 0.0), (0.0, 1.0), (-0.7, 0.5))


def oscillator_rates(states: np.ndarray) -> np.ndarray:
    """True ``dy/dt`` of the damped oscillator at states of shape (n, 2)."""
    return np.array([damped_oscillator_rhs(0.0, state) for state in states])


def oscillator_at(times: np.ndarray) -> np.ndarray:
    """Exact states, at ``times > 0`` in any order, of the oscillator at (1, 0) at t = 0."""
    order = np.argsort(times)
    _, sorted_states = make_damped_oscillator(np.r_[0.0, times[order]])
    states = np.empty((times.size, 2))
    states[order] = sorted_states[1:]
    return states


def r2(observed: np.ndarray, predicted: np.ndarray) -> float:
    """R^2 averaged over the last axis, on all leading axes together."""
    observed = observed.reshape(-1, observed.shape[-1])
    predicted = predicted.reshape(-1, predicted.shape[-1])
    residual = ((observed - predicted) ** 2).sum(axis=0)
    total = ((observed - observed.mean(axis=0)) ** 2).sum(axis=0)
    return float(np.mean(1.0 - residual / total))


@pytest.fixture(scope="session")
def oscillator() -> tuple[np.ndarray, np.ndarray]:
    """Damped oscillator from (1, 0): t of shape (40,), y of shape (40, 2)."""
    return make_damped_oscillator(n_times=40, t_end=6.0)


@pytest.fixture(scope="session")
def oscillators() -> tuple[np.ndarray, np.ndarray]:
    """Three damped oscillators on one grid: t (30,), y (3, 30, 2)."""
    t = np.linspace(0.0, 6.0, 30)
    y = np.stack([make_damped_oscillator(t, y0=start)[1] for start in OSCILLATOR_STARTS])
    return t, y


@pytest.fixture(scope="session")
def spiral() -> tuple[np.ndarray, np.ndarray]:
    """A short stretch of the cubic spiral: t (60,), y (60, 2)."""
    return make_spiral(n_times=60, t_end=5.0)


@pytest.fixture(scope="session")
def fitted_oscillator(oscillator: tuple[np.ndarray, np.ndarray]) -> NeuralODERegressor:
    """An estimator fitted on ``oscillator`` with the default solver (shared, do not refit)."""
    t, y = oscillator
    return NeuralODERegressor(**FAST).fit(t, y)
