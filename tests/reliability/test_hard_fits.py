"""Promise 2: hard fits end well.

Stiff data, data that blow up, data at 1e-8 and 1e8, ten noisy points and a near-constant
series: the fit ends within a step budget, predictions over the training span are finite,
and a poor fit comes with a ``ConvergenceWarning`` that says what happened and what to try.
The budget is asserted in work (iterations, solves, solver steps), never in seconds: those
depend on the machine and its load. The same cases, as a table, with their timings:
``python benchmarks/hard_fits.py``.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn_helpers import SolverWork, counted_solver_work

import skneuralode
import skneuralode._solve
from skneuralode import NeuralODERegressor, Solver
from skneuralode.datasets import (
    add_noise,
    make_blow_up,
    make_damped_oscillator,
    make_robertson,
    make_van_der_pol,
)

#: One setting for every hard case (as in benchmarks/hard_fits.py): short training, a
#: tight step budget; the point is how the fit ends, not how good it gets.
HARD = {
    "hidden_layer_sizes": (16, 16),
    "max_iter": 100,
    "solver": Solver(max_num_steps=1000),
    "random_state": 0,
}
#: Iterations the stages may take: collocation and shooting, max_iter each (no polish).
HARD_ITERATION_BUDGET = 2 * HARD["max_iter"]
#: Solves per iteration, generously: one per shooting step, and the runner's evaluation
#: of each stage. A fit that took hours would be a loop that never ends, or solves that
#: never end; with both bounded it cannot.
SOLVES_PER_ITERATION = 2


def scaled_oscillator(factor: float) -> tuple[np.ndarray, np.ndarray]:
    t, y = make_damped_oscillator(n_times=60, t_end=6.0)
    return t * factor, y * factor


def ten_noisy_points() -> tuple[np.ndarray, np.ndarray]:
    t, y = make_damped_oscillator(n_times=10, t_end=6.0)
    return t, add_noise(y, 0.1, seed=1)


def near_constant() -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0.0, 10.0, 50)
    noise = np.random.default_rng(0).standard_normal((50, 2))
    return t, np.array([5.0, -2.0]) * (1.0 + 1e-9 * noise)


HARD_CASES: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "van-der-pol-mu-100": lambda: make_van_der_pol(n_times=200, t_end=200.0),
    "robertson-kinetics": lambda: make_robertson(n_times=40),
    "blow-up-near-the-end": lambda: make_blow_up(n_times=40),
    "states-and-times-at-1e-8": lambda: scaled_oscillator(1e-8),
    "states-and-times-at-1e8": lambda: scaled_oscillator(1e8),
    "states-and-times-at-1": lambda: scaled_oscillator(1.0),
    "ten-noisy-points": ten_noisy_points,
    "near-constant-series": near_constant,
}


@dataclass(frozen=True)
class HardFit:
    n_iter: int
    work: SolverWork  # of the fit alone
    r2: float
    dense_prediction: np.ndarray
    warnings: list[str]


@functools.cache
def hard_fit(name: str) -> HardFit:
    t, y = HARD_CASES[name]()
    estimator = NeuralODERegressor(**HARD)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with counted_solver_work() as work:
            estimator.fit(t, y)
        dense = estimator.predict(np.linspace(t.min(), t.max(), 300))
        r2 = estimator.score(t, y)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    return HardFit(estimator.n_iter_, work, r2, dense, messages)


@pytest.mark.parametrize("name", HARD_CASES)
def test_hard_fits_end_in_bounded_time_with_finite_predictions_and_honest_warnings(
    name: str,
) -> None:
    outcome = hard_fit(name)
    assert outcome.n_iter <= HARD_ITERATION_BUDGET
    work = outcome.work
    assert len(work.steps) + len(work.stiff_evaluations) <= SOLVES_PER_ITERATION * (
        outcome.n_iter + 1
    )
    assert max(work.steps, default=0) <= HARD["solver"].max_num_steps + 1  # + the step that ran out
    stiff_budget = skneuralode._solve._STIFF_EVALUATIONS_PER_STEP * HARD["solver"].max_num_steps
    assert max(work.stiff_evaluations, default=0) <= stiff_budget + 1
    assert np.all(np.isfinite(outcome.dense_prediction))
    assert math.isfinite(outcome.r2)
    if outcome.r2 < 0.5:  # a poor fit never passes silently
        assert outcome.warnings, f"R^2 = {outcome.r2:.3f} without a ConvergenceWarning"
        assert any("Try" in message for message in outcome.warnings), outcome.warnings


def test_the_warnings_say_what_happened() -> None:
    near_constant_warnings = hard_fit("near-constant-series").warnings
    assert any("constant up to noise" in message for message in near_constant_warnings)
    for message in hard_fit("robertson-kinetics").warnings:
        if "solver" in message and "diverged" in message:  # a budget ran out: which one
            assert "max_num_steps=1000" in message


@pytest.mark.parametrize("scale", ["1e-8", "1e8"])
def test_states_and_times_at_extreme_scales_fit_as_well_as_at_unit_scale(scale: str) -> None:
    outcome = hard_fit(f"states-and-times-at-{scale}")
    assert outcome.r2 > 0.95
    assert outcome.r2 == pytest.approx(hard_fit("states-and-times-at-1").r2, abs=1e-6)
    assert not outcome.warnings


def test_a_failed_solve_is_retried_with_a_stiff_method_when_no_gradient_is_needed() -> None:
    stiff = StiffRelaxation()
    times = torch.linspace(0.0, 10.0, 20, dtype=torch.float64)[None]
    start = torch.ones(1, 1, dtype=torch.float64)
    settings = skneuralode._solve.SolverSettings(max_num_steps=300)
    with torch.no_grad():
        fallback = skneuralode._solve.solve(stiff, start, times, settings, shared_grid=True)
    assert fallback.ok, fallback.failure
    assert float(fallback.states[0, -1, 0]) == pytest.approx(math.cos(10.0), abs=1e-3)
    with torch.enable_grad():  # training needs gradients: a failure outcome, promptly
        failed = skneuralode._solve.solve(stiff, start, times, settings, shared_grid=True)
    assert not failed.ok
    assert "max_num_steps=300" in failed.failure
    assert stiff.evaluations < 10 * 300  # the budget counts steps over all output times


class StiffRelaxation(torch.nn.Module):
    """``dz/ds = -1e4 (z - cos s)``: stiff, smooth, solution near ``cos s``."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.evaluations += 1
        return -1e4 * (z - torch.cos(s))


def test_a_fixed_step_solve_that_would_exceed_the_budget_fails_before_starting() -> None:
    settings = skneuralode._solve.SolverSettings(method="rk4", step_size=1e-7, max_num_steps=100)
    times = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    field = StiffRelaxation()
    result = skneuralode._solve.solve(
        field,
        torch.ones(1, 1, dtype=torch.float64),
        times,
        settings,
        shared_grid=True,
    )
    assert not result.ok
    assert "max_num_steps=100" in result.failure
    assert field.evaluations == 0  # refused before the first of its 10**7 steps
