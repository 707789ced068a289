"""Physical parameters that cross zero or collapse toward it: the warning, the restart."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from skneuralode import UniversalODERegressor
from skneuralode._fit_warnings import (
    COLLAPSE_FRACTION,
    drifted_parameters,
    warn_about_parameter_drift,
)
from skneuralode._problem import TrainingProblem
from skneuralode._training import StageContext, StageResult, TrainingStage
from skneuralode._training.rescue import COLLAPSED_BELOW, collapsed_parameters
from skneuralode._vector_fields import ODEModel


def test_drifted_parameters_names_crossings_and_collapses() -> None:
    start = {"a": 0.1, "b": 0.02, "c": 1.0, "d": -2.0, "zero": 0.0}
    fitted = {"a": -0.3, "b": 0.02 * COLLAPSE_FRACTION / 2, "c": 0.5, "d": -1e-3, "zero": 5.0}
    drifted = drifted_parameters(start, fitted, {})
    assert set(drifted) == {"a", "b"}
    assert "changed sign" in drifted["a"] and "collapsed toward 0" in drifted["b"]
    # a constrained parameter does not "change sign" (its bounds say where it may go)
    assert set(drifted_parameters(start, fitted, {"a": (-1.0, 1.0)})) == {"b"}


def test_drift_warning_says_what_to_do() -> None:
    with pytest.warns(ConvergenceWarning, match="p2 collapsed toward 0") as caught:
        warn_about_parameter_drift({"p2": 0.019}, {"p2": 4.9e-90}, {"p2": "positive"})
    message = str(caught[0].message)
    assert "identifiability_" in message and "fixed_params" in message
    with pytest.warns(ConvergenceWarning, match="param_constraints='positive'"):
        warn_about_parameter_drift({"a": 0.1}, {"a": -0.4}, {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_about_parameter_drift({"a": 0.1}, {"a": 0.4}, {})


def _decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -p["k"] * y


def test_a_fit_whose_rate_changes_sign_warns_naming_it() -> None:
    """A decay rate started positive, fitted to growth without constraints, ends
    negative: the fit says so and names the parameter."""
    t = np.linspace(0.0, 2.0, 15)
    y = np.exp(0.5 * t)[:, None]
    estimator = UniversalODERegressor(
        known=_decay, params={"k": 0.3}, hidden_layer_sizes=(), max_iter=200, random_state=0
    )
    with pytest.warns(ConvergenceWarning, match="k changed sign"):
        estimator.fit(t, y)
    assert estimator.params_["k"] == pytest.approx(-0.5, rel=0.05)
    # the same fit from a start of the right sign is quiet about parameters
    estimator.set_params(params={"k": -0.3})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(t, y)
    assert not [w for w in caught if "drifted" in str(w.message)]


@dataclass
class _Collapse(TrainingStage):
    """A stage that drives every positive physical parameter to 1e-13 of its value, as
    collocation did to p2 of a glucose model with its remote insulin hidden."""

    name: str = "collapse"

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        with torch.no_grad():
            model.field.physical_parameters.raw.fill_(-30.0)
        return StageResult(self.name, 1, 0.0, "converged")


class _CollapsingRegressor(UniversalODERegressor):
    def _stages(self) -> list[TrainingStage]:
        stages = super()._stages()
        return [*stages[:-2], _Collapse(), *stages[-2:]]  # before the polish and rescue


def test_a_rate_collapsed_before_the_polish_is_polished_again_from_the_start() -> None:
    """Under param_constraints="positive" a rate driven toward 0 has lost its gradient
    there: the polish cannot bring it back, and the rescue polishes from the start."""
    t = np.linspace(0.0, 3.0, 15)
    y = 2.0 * np.exp(-0.8 * t)[:, None]
    estimator = _CollapsingRegressor(
        known=_decay,
        params={"k": 0.3},
        hidden_layer_sizes=(),
        param_constraints="positive",
        max_iter=100,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(t, y)
    stages = [result.stage for result in estimator.stage_results_]
    assert stages == ["collocation", "collapse", "polish", "rescue"]
    rescue = estimator.stage_results_[-1]
    assert "k had collapsed toward 0" in rescue.message
    assert "rescue: polish from the start" in {e["stage"] for e in estimator.history_}
    assert estimator.params_["k"] == pytest.approx(0.8, rel=1e-3)


def test_collapsed_parameters_are_those_near_zero_on_their_side() -> None:
    start = {"a": 0.1, "b": 2.0, "c": -1.0, "d": 1.0}
    now = {"a": 0.1 * COLLAPSED_BELOW / 2, "b": 0.5, "c": -1e-4, "d": -1e-4}
    # d crossed zero: a change of sign is not this symptom
    assert collapsed_parameters(start, now) == ["a", "c"]
