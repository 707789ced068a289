"""Scores of models fitted with known initial states: each held-out trajectory is
forecast from its own ``y0`` (routed by scikit-learn's metadata routing), and never,
silently, from the mean of the training trajectories' values."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn
import torch
from sklearn.model_selection import KFold, cross_validate

from skneuralode import UniversalODERegressor, make_forecast_scorer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

KA, KE = 1.2, 0.3


def one_compartment(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    """Oral dosing: the gut (hidden, the dose at t = 0) empties into the plasma."""
    gut, plasma = y[..., 0], y[..., 1]
    return torch.stack([-p["ka"] * gut, p["ka"] * gut - p["ke"] * plasma], dim=-1)


def subjects(n: int = 6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Plasma concentrations of ``n`` subjects given different doses; the gut hidden."""
    rng = np.random.default_rng(0)
    t = np.tile(np.linspace(0.0, 12.0, 12), (n, 1))
    doses = rng.uniform(5.0, 15.0, n)
    plasma = doses[:, None] * KA / (KA - KE) * (np.exp(-KE * t) - np.exp(-KA * t))
    plasma = plasma * (1 + 0.05 * rng.standard_normal(plasma.shape))
    y = np.stack([np.full_like(plasma, np.nan), plasma], axis=-1)
    return t, y, np.stack([doses, np.zeros(n)], axis=1)


def estimator() -> UniversalODERegressor:
    return UniversalODERegressor(
        known=one_compartment,
        params={"ka": 1.0, "ke": 0.2},
        param_constraints="positive",
        hidden_layer_sizes=(),
        random_state=0,
        device="cpu",
    )


@pytest.fixture(scope="module")
def fitted() -> tuple[UniversalODERegressor, np.ndarray, np.ndarray, np.ndarray]:
    t, y, y0 = subjects()
    return estimator().fit(t, y, y0=y0), t, y, y0


def test_score_forecasts_each_trajectory_from_its_own_known_dose(fitted) -> None:
    est, t, y, y0 = fitted
    own = est.score(t, y, y0=y0)
    assert own > 0.98
    swapped = est.score(t, y, y0=y0[::-1])  # the doses of other subjects
    assert swapped < own - 0.1


def test_score_without_the_known_doses_refuses_instead_of_guessing(fitted) -> None:
    est, t, y, _ = fitted
    with pytest.raises(ValueError, match=r"y0: .*state\(s\) \[0\] .*set_score_request"):
        est.score(t, y)
    with pytest.raises(ValueError, match="y0: "):
        make_forecast_scorer("r2")(est, t, y)


def test_a_known_value_shared_by_all_trajectories_needs_no_y0() -> None:
    t, y, y0 = subjects(4)
    y0[:, 0] = 10.0  # one dose for everybody: y0 adds nothing a new trajectory lacks
    y[..., 1] *= 10.0 / subjects(4)[2][:, :1]
    est = estimator().fit(t, y, y0=y0)
    assert est.score(t, y) == pytest.approx(est.score(t, y, y0=y0), abs=1e-12)


def test_cross_validation_routes_y0_to_fit_and_to_the_scorer(fitted) -> None:
    _, t, y, y0 = fitted
    held_out = []
    with sklearn.config_context(enable_metadata_routing=True):
        scorer = make_forecast_scorer("r2").set_score_request(y0=True)
        routed = estimator().set_fit_request(y0=True).set_score_request(y0=True)
        for scoring in (scorer, None):  # the forecast scorer, and the estimator's score
            result = cross_validate(
                routed,
                t,
                y,
                params={"y0": y0},
                scoring=scoring,
                cv=KFold(3),
                return_estimator=True,
                error_score="raise",
            )
            held_out.append(result["test_score"])
    for (_, test), model, score in zip(
        KFold(3).split(t), result["estimator"], held_out[0], strict=True
    ):
        assert score == pytest.approx(model.score(t[test], y[test], y0=y0[test]), abs=1e-10)
    np.testing.assert_allclose(held_out[0], held_out[1], atol=1e-10)
    assert np.all(held_out[0] > 0.95)


def test_cross_validation_without_routing_fails_loudly(fitted) -> None:
    _, t, y, y0 = fitted
    with pytest.raises(ValueError, match="y0: "):
        cross_validate(
            estimator(),
            t,
            y,
            params={"y0": y0},
            scoring=make_forecast_scorer("r2"),
            cv=KFold(3),
            error_score="raise",
        )


def test_set_score_request_needs_routing_enabled() -> None:
    with pytest.raises(RuntimeError, match="enable_metadata_routing"):
        make_forecast_scorer("r2").set_score_request(y0=True)


def test_the_forecast_scorer_skips_a_hidden_state(fitted) -> None:
    est, t, y, y0 = fitted
    r2 = make_forecast_scorer("r2")(est, t, y, y0=y0)
    assert r2 == pytest.approx(est.score(t, y, y0=y0), abs=1e-10)
