"""Small systems, fast settings and fixtures shared by the scikit-learn integration tests
(test_sklearn_compat, test_model_selection, test_persistence, test_plotting, test_readme).

Functions used as ``known`` live here, at module level, so that pickle and the safe
format can find them again by import path (``sklearn_helpers:spring``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from skneuralode import NeuralODERegressor, UniversalODERegressor
from skneuralode.datasets import make_damped_oscillator

# Tiny networks and budgets: these tests are about the integration, not the fit quality.
FAST: dict[str, Any] = {
    "hidden_layer_sizes": (16,),
    "max_iter": 100,
    "shooting": False,
    "random_state": 0,
    "device": "cpu",
}


def spring(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Undamped spring ``x' = v, v' = -omega2 x``: the known part of the oscillator."""
    return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)


def decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``dy/dt = -k y`` for any number of states."""
    return -p["k"] * y


def cube(y: torch.Tensor) -> torch.Tensor:
    """A feature map (structural prior) ``y -> y**3``."""
    return y**3


def fast_neural(**overrides: Any) -> NeuralODERegressor:
    """A NeuralODERegressor that fits in about a second."""
    return NeuralODERegressor(**{**FAST, **overrides})


def fast_universal(**overrides: Any) -> UniversalODERegressor:
    """A UniversalODERegressor (spring + network on the velocity) that fits fast."""
    settings = {
        **FAST,
        "known": spring,
        "params": {"omega2": 3.0},
        "network_outputs": [1],
        "polish": False,
    }
    return UniversalODERegressor(**{**settings, **overrides})


def oscillator(n_times: int = 30, t_end: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory of the damped oscillator: t (n_times,), y (n_times, 2)."""
    return make_damped_oscillator(n_times=n_times, t_end=t_end)


def oscillator_family(n_traj: int = 6, n_times: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Several trajectories from different initial states, each on its own time grid:
    t (n_traj, n_times), y (n_traj, n_times, 2)."""
    rng = np.random.default_rng(0)
    starts = rng.uniform(-1.0, 1.0, size=(n_traj, 2))
    grids = np.stack([np.linspace(0.0, 4.0, n_times) + 0.05 * i for i in range(n_traj)])
    states = np.stack(
        [
            make_damped_oscillator(grid, y0=(float(a), float(b)))[1]
            for grid, (a, b) in zip(grids, starts, strict=True)
        ]
    )
    return grids, states


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny problems run fastest on one thread, above all on a busy machine (module scope:
    it is in place before module-scoped fixtures fit their models)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class ThreadRecorder:
    """A callback that records torch's thread count at every training record."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, record: dict[str, Any]) -> bool:
        self.seen.append(torch.get_num_threads())
        return False
