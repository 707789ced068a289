"""Helpers shared by the whole test-suite, in one module.

The systems we test on, the settings that fit them fast, the callables used as ``known``
or ``feature_map`` (some of them broken on purpose), the means to compare a fitted
estimator before and after, and counters of solver work. Test modules import what they
need from here; ``conftest.py`` only turns some of it into fixtures.

Callables used as ``known`` or ``feature_map`` live here at module level so that pickle
and the safe format find them again by import path. Saved models refer to them as
``sklearn_helpers:spring`` and so on, which is why the module keeps this name although
it serves more than the scikit-learn integration tests.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import sklearn
import torch
from sklearn.metrics import r2_score

import skneuralode
import skneuralode._solve
from skneuralode import NeuralODERegressor, UniversalODERegressor
from skneuralode.datasets import damped_oscillator_rhs, make_damped_oscillator

# ---------------------------------------------------------------------------- systems
OSCILLATOR_STARTS = ((1.0, 0.0), (0.0, 1.0), (-0.7, 0.5))


def oscillator(n_times: int = 30, t_end: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """One trajectory of the damped oscillator from (1, 0): t (n_times,), y (n_times, 2)."""
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
    n_states = observed.shape[-1]
    return float(r2_score(observed.reshape(-1, n_states), predicted.reshape(-1, n_states)))


#: The reliability battery's data: a short stretch of the oscillator, t (20,), y (20, 2).
T, Y = oscillator(n_times=20, t_end=4.0)

# --------------------------------------------------------------------------- settings
#: Settings that fit the damped oscillator to R^2 > 0.99 in a few seconds.
FAST: dict[str, Any] = {"hidden_layer_sizes": (16,), "max_iter": 100, "random_state": 0}
#: The same with a fixed-step solver, for tests about layouts rather than accuracy.
FASTEST: dict[str, Any] = {**FAST, "solver": "rk4"}
#: Tiny networks and budgets for tests about the scikit-learn integration, not fit quality.
INTEGRATION: dict[str, Any] = {**FAST, "shooting": False, "device": "cpu"}
#: A quick, fully valid fit (collocation only, fixed-step solver): the estimator that
#: the bad-input battery throws bad input at.
QUICK: dict[str, Any] = {
    "hidden_layer_sizes": (8,),
    "max_iter": 20,
    "shooting": False,
    "solver": "rk4",
    "random_state": 0,
}
#: A fit with every stage that matters for recovery and interrupts, still a few seconds.
STAGED: dict[str, Any] = {
    "hidden_layer_sizes": (8,),
    "max_iter": 40,
    "solver": "rk4",
    "random_state": 0,
}


def fast_neural(**overrides: Any) -> NeuralODERegressor:
    """A NeuralODERegressor that fits in about a second."""
    return NeuralODERegressor(**{**INTEGRATION, **overrides})


def fast_universal(**overrides: Any) -> UniversalODERegressor:
    """A UniversalODERegressor (spring + network on the velocity) that fits fast."""
    settings = {
        **INTEGRATION,
        "known": spring,
        "params": {"omega2": 3.0},
        "network_outputs": [1],
        "polish": False,
    }
    return UniversalODERegressor(**{**settings, **overrides})


# ------------------------------------------------- known physics and feature maps
def spring(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Undamped spring ``x' = v, v' = -omega2 x``: the known part of the oscillator."""
    return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)


def decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``dy/dt = -k y`` for any number of states."""
    return -p["k"] * y


def damped_known(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The damped oscillator's physics with an unknown stiffness ``k``."""
    return torch.stack([y[..., 1], -p["k"] * y[..., 0] - 0.4 * y[..., 1]], dim=-1)


def cube(y: torch.Tensor) -> torch.Tensor:
    """A feature map (structural prior) ``y -> y**3``."""
    return y**3


#: A known-only fit of the oscillator (collocation, fixed-step solver).
QUICK_UDE: dict[str, Any] = {
    "known": damped_known,
    "params": {"k": 3.0},
    "hidden_layer_sizes": (),
    "max_iter": 20,
    "shooting": False,
    "polish": False,
    "solver": "rk4",
    "random_state": 0,
}


def known_of_wrong_shape(t: torch.Tensor, y: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return p["k"] * y[..., :1]


def known_returning_numpy(t: torch.Tensor, y: torch.Tensor, p: dict[str, Any]) -> np.ndarray:
    return np.zeros(2)


def known_returning_nan(t: torch.Tensor, y: torch.Tensor, p: dict[str, Any]) -> torch.Tensor:
    return y * p["k"] * math.nan


def feature_map_that_raises(y: torch.Tensor) -> torch.Tensor:
    return y @ torch.ones(5, 5, dtype=y.dtype)


def feature_map_of_wrong_shape(y: torch.Tensor) -> torch.Tensor:
    return y.sum()


def feature_map_returning_numpy(y: torch.Tensor) -> np.ndarray:
    return y.numpy() ** 3


def feature_map_with_nan(y: torch.Tensor) -> torch.Tensor:
    return torch.log(y)  # the oscillator's states go negative


# --------------------------------------------------------- fitted state, before/after
OUR_CODE = Path(skneuralode.__file__).resolve().parent
SKLEARN_VALIDATION = {
    Path(sklearn.__file__).resolve().parent / "utils" / "_param_validation.py",
    Path(sklearn.__file__).resolve().parent / "utils" / "validation.py",
}


def fitted_state(estimator: Any) -> tuple[bytes, dict[str, torch.Tensor]]:
    """Everything ``fit`` sets, comparable bit for bit (wall-clock seconds left out)."""
    attributes = {
        key: value
        for key, value in vars(estimator).items()
        if key.endswith("_") and key != "module_"
    }
    if "history_" in attributes:
        attributes["history_"] = [
            {key: value for key, value in record.items() if key != "seconds"}
            for record in attributes["history_"]
        ]
    module = getattr(estimator, "module_", None)
    weights = {} if module is None else {k: v.clone() for k, v in module.state_dict().items()}
    return pickle.dumps(sorted(attributes.items())), weights


def assert_same_fitted_state(estimator: Any, reference: tuple[bytes, dict]) -> None:
    attributes, weights = fitted_state(estimator)
    assert attributes == reference[0]
    assert weights.keys() == reference[1].keys()
    for name, value in weights.items():
        assert torch.equal(value, reference[1][name]), name


def raised_by_our_validation(error: pytest.ExceptionInfo) -> bool:
    """The frame that raised is skneuralode's or scikit-learn's declared validation."""
    raising_file = Path(str(error.traceback[-1].path)).resolve()
    return OUR_CODE in raising_file.parents or raising_file in SKLEARN_VALIDATION


# ------------------------------------------------------------------ solver work
class SolverWork:
    """What the ODE solves made while it was counting: work, not seconds.

    Attributes
    ----------
    steps : list of int
        Steps each torchdiffeq solve attempted, as its step budget counted them (a solve
        that ran out of budget shows ``max_num_steps + 1``: the attempt that stopped it).
    stiff_evaluations : list of int
        Field evaluations of each fallback solve with scipy's LSODA.
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.stiff_evaluations: list[int] = []

    def counting_odeint(self, odeint: Callable) -> Callable:
        def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return odeint(func, *args, **kwargs)
            finally:
                self.steps.append(func.steps)

        return counted

    def counting_solve_ivp(self, solve_ivp: Callable) -> Callable:
        def counted(fun: Callable, *args: Any, **kwargs: Any) -> Any:
            evaluations = 0

            def counted_fun(*fun_args: Any) -> Any:
                nonlocal evaluations
                evaluations += 1
                return fun(*fun_args)

            try:
                return solve_ivp(counted_fun, *args, **kwargs)
            finally:
                self.stiff_evaluations.append(evaluations)

        return counted


@contextmanager
def counted_solver_work() -> Iterator[SolverWork]:
    """Count the steps of every solve in ``skneuralode._solve``, the one caller of the
    solvers, inside the block."""
    work = SolverWork()
    module = skneuralode._solve
    with (
        mock.patch.object(module, "odeint", work.counting_odeint(module.odeint)),
        mock.patch.object(module, "odeint_adjoint", work.counting_odeint(module.odeint_adjoint)),
        mock.patch.object(module, "solve_ivp", work.counting_solve_ivp(module.solve_ivp)),
    ):
        yield work


# ------------------------------------------------------------------- torch threads
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
