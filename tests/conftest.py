"""Fixtures of the test-suite; the systems and settings they use live in
``sklearn_helpers``, and the training tests' own helpers in ``training_helpers``."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn_helpers as helpers
import torch

from skneuralode import NeuralODERegressor
from skneuralode._data import validate_trajectories
from skneuralode._problem import TrainingProblem, build_problem
from skneuralode.datasets import make_damped_oscillator, make_spiral

# Tiny networks train fastest on one thread, and the suite shares a small machine.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def oscillator() -> tuple[np.ndarray, np.ndarray]:
    """Damped oscillator from (1, 0): t of shape (40,), y of shape (40, 2)."""
    return helpers.oscillator(n_times=40, t_end=6.0)


@pytest.fixture(scope="session")
def oscillators() -> tuple[np.ndarray, np.ndarray]:
    """Three damped oscillators on one grid: t (30,), y (3, 30, 2)."""
    t = np.linspace(0.0, 6.0, 30)
    y = np.stack([make_damped_oscillator(t, y0=start)[1] for start in helpers.OSCILLATOR_STARTS])
    return t, y


@pytest.fixture(scope="session")
def spiral() -> tuple[np.ndarray, np.ndarray]:
    """A short stretch of the cubic spiral: t (60,), y (60, 2)."""
    return make_spiral(n_times=60, t_end=5.0)


@pytest.fixture(scope="session")
def fitted_oscillator(oscillator: tuple[np.ndarray, np.ndarray]) -> NeuralODERegressor:
    """An estimator fitted on ``oscillator`` with the default solver (shared, do not refit)."""
    t, y = oscillator
    return NeuralODERegressor(**helpers.FAST).fit(t, y)


@pytest.fixture(scope="module")
def problem(oscillator: tuple[np.ndarray, np.ndarray]) -> TrainingProblem:
    """``oscillator`` as a training problem on the CPU in float64, noise estimated."""
    t, y = oscillator
    return build_problem(
        validate_trajectories(t, y),
        device=torch.device("cpu"),
        dtype=torch.float64,
        relative_noise=None,
    )
