"""Promise 4: nothing is lost when ``fit`` is interrupted.

An exception or a ``KeyboardInterrupt`` during ``fit`` leaves the estimator unfitted (first
fit) or exactly as it was (refit, ``warm_start``). To keep what training found instead,
construct the estimator with ``on_interrupt="keep_best"``: Ctrl-C then ends training early,
keeps the best model so far and warns; ``fit`` again with ``warm_start=True`` goes on.
"""

from __future__ import annotations

import math
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
    assert_same_fitted_state,
    fitted_state,
)

import skneuralode
import skneuralode._base
from skneuralode import NeuralODERegressor

#: The quick fits here are deliberately short; their "poor fit" warning is not the point.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The fit is poor:sklearn.exceptions.ConvergenceWarning"
)


class Boom(RuntimeError):
    pass


def raise_at(stage: str, iteration: int, error: BaseException) -> Callable[[dict], None]:
    """A callback that raises ``error`` when ``stage`` records ``iteration``."""

    def callback(record: dict) -> None:
        if record["stage"] == stage and record["iteration"] == iteration:
            raise error

    return callback


@pytest.mark.parametrize("error", [Boom("from a callback"), KeyboardInterrupt()])
@pytest.mark.parametrize("stage", ["collocation", "shooting"])
def test_an_interrupted_first_fit_leaves_the_estimator_unfitted(
    error: BaseException, stage: str
) -> None:
    estimator = NeuralODERegressor(
        **{**STAGED, "shooting": True}, callbacks=[raise_at(stage, 15, error)]
    )
    untouched = dict(vars(estimator))
    with pytest.raises(type(error)):
        estimator.fit(T, Y)
    assert vars(estimator) == untouched


@pytest.mark.parametrize("error", [Boom("from a callback"), KeyboardInterrupt()])
def test_an_interrupted_warm_start_refit_leaves_the_previous_fit_exactly(
    error: BaseException,
) -> None:
    estimator = NeuralODERegressor(**{**STAGED, "shooting": True}, warm_start=True).fit(T, Y)
    before, predicted = fitted_state(estimator), estimator.predict(T)
    estimator.set_params(callbacks=[raise_at("shooting", 5, error)])
    with pytest.raises(type(error)):
        estimator.fit(T, 1.1 * Y)
    assert_same_fitted_state(estimator, before)
    np.testing.assert_array_equal(estimator.predict(T), predicted)


def test_an_exception_while_storing_the_fit_rolls_the_estimator_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    estimator = NeuralODERegressor(**QUICK).fit(T, Y)
    before, predicted = fitted_state(estimator), estimator.predict(T)
    attributes = set(vars(estimator))

    def fail_after_fit(self: NeuralODERegressor) -> None:
        raise Boom("while setting fitted attributes")

    monkeypatch.setattr(NeuralODERegressor, "_after_fit", fail_after_fit)
    with pytest.raises(Boom):
        estimator.set_params(random_state=1).fit(T, 2 * Y)
    assert set(vars(estimator)) == attributes
    assert_same_fitted_state(estimator, before)
    np.testing.assert_array_equal(estimator.set_params(random_state=0).predict(T), predicted)


def test_keep_best_on_interrupt_ends_training_with_the_best_model_so_far() -> None:
    """How to keep what training found when you stop it: ``on_interrupt="keep_best"``,
    then Ctrl-C, which Python turns into a ``KeyboardInterrupt`` in the main thread.

    A callback raises that ``KeyboardInterrupt`` at a given step. Sending a real SIGINT
    instead made the test depend on the process: one started with SIGINT ignored (by
    ``nohup``, as a background job of a non-interactive shell, by some CI runners) never
    sees it, and then trains to the end and fails.
    """
    press_ctrl_c = raise_at("shooting", 15, KeyboardInterrupt())
    collocation_only = NeuralODERegressor(**{**STAGED, "shooting": False}).fit(T, Y)
    estimator = NeuralODERegressor(
        **{**STAGED, "shooting": True, "polish": True},
        on_interrupt="keep_best",
        callbacks=[press_ctrl_c],
    )
    with pytest.warns(
        ConvergenceWarning,
        match=r"interrupted .* in the shooting stage.*"
        r"best model so far was kept.*warm_start=True",
    ):
        estimator.fit(T, Y)
    statuses = [result.status for result in estimator.stage_results_]
    assert statuses[1:] == ["interrupted", "skipped"]
    assert estimator.stage_results_[1].n_iter <= 20
    assert estimator.loss_ <= collocation_only.loss_  # never worse than before the stage
    assert np.all(np.isfinite(estimator.predict(T)))
    # ... and training goes on from there.
    estimator.set_params(callbacks=None, warm_start=True, polish=False).fit(T, Y)
    assert estimator.loss_ <= collocation_only.loss_


def test_keep_best_on_interrupt_during_the_first_stage_keeps_its_good_parameters() -> None:
    estimator = NeuralODERegressor(
        **QUICK,
        on_interrupt="keep_best",
        callbacks=[raise_at("collocation", 9, KeyboardInterrupt())],
    )
    with pytest.warns(ConvergenceWarning, match="interrupted"):
        estimator.fit(T, Y)
    assert estimator.stage_results_[0].status == "interrupted"
    assert math.isfinite(estimator.loss_)
    assert np.all(np.isfinite(estimator.predict(T)))


def test_an_interrupt_before_training_starts_is_never_swallowed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(skneuralode._base, "build_problem", interrupted)
    estimator = NeuralODERegressor(**QUICK, on_interrupt="keep_best")
    with pytest.raises(KeyboardInterrupt):
        estimator.fit(T, Y)
    assert not hasattr(estimator, "module_")
