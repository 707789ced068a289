"""Promise 3: training recovers from NaN losses, failed solves and step-size underflow.

The failures are injected: the last good parameters come back, the step is lowered and
training goes on; a stage that keeps failing ends as "diverged" with a warning and a usable
estimator.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn_helpers import (
    QUICK,
    STAGED,
    T,
    Y,
)

import skneuralode
import skneuralode._solve
import skneuralode._training.collocation
import skneuralode._training.shooting
from skneuralode import NeuralODERegressor
from skneuralode._solve import SolveResult

#: The quick fits here are deliberately short; their "poor fit" warning is not the point.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The fit is poor:sklearn.exceptions.ConvergenceWarning"
)


class FailingCalls:
    """Wraps a function; the calls whose numbers are in ``failing`` fail instead."""

    def __init__(self, function: Callable, failing: Callable[[int], bool], failure: Any) -> None:
        self.function = function
        self.failing = failing
        self.failure = failure
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.failing(self.calls):
            return self.failure(*args, **kwargs)
        return self.function(*args, **kwargs)


def underflow(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("underflow in dt 1.2e-17")


def test_shooting_recovers_from_step_size_underflow(monkeypatch: pytest.MonkeyPatch) -> None:
    # torchdiffeq reports underflow with an assert; calls 5-7 of the shooting solves hit it.
    odeint = FailingCalls(skneuralode._solve.odeint, lambda n: 5 <= n <= 7, underflow)
    monkeypatch.setattr(skneuralode._solve, "odeint", odeint)
    estimator = NeuralODERegressor(**{**STAGED, "shooting": True})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(T, Y)
    assert not [w for w in caught if "diverged" in str(w.message)]
    losses = [r["loss"] for r in estimator.history_ if r["stage"] == "shooting"]
    failures = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
    assert len(failures) == 3  # each failed solve was seen, acted on at once ...
    assert all(math.isfinite(loss) for loss in losses[failures[-1] + 1 :])  # ... and survived
    assert len(losses) > failures[-1] + 10
    assert estimator.stage_results_[1].status in {"max_iter", "converged"}
    assert np.all(np.isfinite(estimator.predict(T)))


def test_collocation_recovers_from_nan_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    huber = skneuralode._training.collocation.masked_huber
    nan_loss = FailingCalls(
        huber, lambda n: n in {12, 13}, lambda *a, **k: huber(*a, **k) * math.nan
    )
    monkeypatch.setattr(skneuralode._training.collocation, "masked_huber", nan_loss)
    estimator = NeuralODERegressor(**QUICK).set_params(max_iter=60).fit(T, Y)
    losses = [r["loss"] for r in estimator.history_ if r["stage"] == "collocation"]
    failed = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
    # The NaN steps wreck the parameters until the window of ten ends; then the last
    # good parameters come back and training goes on from them.
    assert failed and min(failed) == 11 and max(failed) < 20
    assert all(math.isfinite(loss) for loss in losses[20:])
    assert estimator.stage_results_[0].status != "diverged"
    assert math.isfinite(estimator.loss_)
    assert losses[-1] < losses[10]  # training went on, from the good parameters


def test_a_stage_that_keeps_failing_ends_diverged_with_a_warning_and_a_usable_estimator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    never = SolveResult(None, "injected failure")
    solve = FailingCalls(
        skneuralode._training.shooting.solve, lambda n: True, lambda *a, **k: never
    )
    monkeypatch.setattr(skneuralode._training.shooting, "solve", solve)
    estimator = NeuralODERegressor(**{**STAGED, "shooting": True})
    with pytest.warns(ConvergenceWarning, match=r"Training diverged: .*shooting.*Try"):
        estimator.fit(T, Y)
    shooting = estimator.stage_results_[1]
    assert shooting.status == "diverged"
    assert "injected failure" in shooting.message
    # A failed solve is acted on at once: six attempts, not six windows of ten.
    assert solve.calls == 6
    assert shooting.n_iter == 6
    assert [r["stage"] for r in estimator.history_].count("shooting") == 6
    assert estimator.stage_results_[0].status != "diverged"  # the collocation model is kept
    assert np.all(np.isfinite(estimator.predict(T)))
