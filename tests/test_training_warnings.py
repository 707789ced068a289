"""Warnings about the fitted physical parameters: crossing zero, collapsing toward it."""

from __future__ import annotations

import warnings

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
