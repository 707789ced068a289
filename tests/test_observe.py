"""UniversalODERegressor(observe=...): data that measure a function of the states."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, KFold
from sklearn_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from skneuralode import NeuralODERegressor, Polish, UniversalODERegressor, load
from skneuralode.datasets import (
    PHARMACOKINETICS,
    central_concentration,
    make_pharmacokinetics,
    one_compartment_amounts,
    one_compartment_known,
)

TRANSFER = {"k": 0.9, "m": 0.25}


def transfer(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Two compartments: ``x1' = -k x1``, ``x2' = k x1 - m x2``."""
    flow = p["k"] * y[..., 0]
    return torch.stack([-flow, flow - p["m"] * y[..., 1]], dim=-1)


def both_compartments(y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """A sensor that reads the sum of the two compartments."""
    return y.sum(dim=-1, keepdim=True)


def two_readings(y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Returns two columns where y has one."""
    return torch.cat([y, y], dim=-1)


def sensor_data(n_times: int = 30, amount: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """The exact sum of the two compartments starting at ``[amount, 0]``."""
    t = np.linspace(0.0, 8.0, n_times)
    k, m = TRANSFER["k"], TRANSFER["m"]
    first = amount * np.exp(-k * t)
    second = amount * k / (m - k) * (np.exp(-k * t) - np.exp(-m * t))
    return t, (first + second)[:, None]


def pk_estimator(**settings: object) -> UniversalODERegressor:
    """One-compartment kinetics in amounts, concentration observed, start 3x off."""
    return UniversalODERegressor(
        known=one_compartment_amounts,
        params={"ka": 4.5, "ke": 0.027, "V": 96.0},
        param_constraints="positive",
        hidden_layer_sizes=(),
        observe=central_concentration,
        random_state=0,
        device="cpu",
        **settings,
    )


@pytest.fixture(scope="module")
def pk_data() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    t, y, y0 = make_pharmacokinetics(n_subjects=12, seed=0)
    return t, [row[:, 1:2] for row in y], y0


@pytest.fixture(scope="module")
def pk_fit(pk_data: tuple) -> UniversalODERegressor:
    t, concentration, doses = pk_data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pk_estimator().fit(t, concentration, y0=doses)


def test_concentration_of_amounts_recovers_ka_ke_and_volume(pk_fit, pk_data) -> None:
    for name, value in pk_fit.params_.items():
        assert value == pytest.approx(PHARMACOKINETICS[name], rel=0.15), name
    t, concentration, doses = pk_data
    assert pk_fit.score(t, concentration, y0=doses) > 0.95
    stages = {result.stage: result for result in pk_fit.stage_results_}
    assert stages["collocation"].status == "skipped"
    assert "observe a function of the states" in stages["collocation"].message


def test_predict_gives_what_y_measured_and_predict_states_the_states(pk_fit, pk_data) -> None:
    doses = pk_data[2]
    times = np.array([0.0, 2.0, 12.0])
    states = pk_fit.predict_states(times, y0=doses[0])
    observed = pk_fit.predict(times, y0=doses[0])
    assert states.shape == (3, 2) and observed.shape == (3, 1)
    np.testing.assert_allclose(observed[:, 0], states[:, 1] / pk_fit.params_["V"], rtol=1e-10)
    np.testing.assert_allclose(pk_fit.y0_, doses, rtol=1e-12)  # the states' initial values
    assert pk_fit.hidden_states_ == [0, 1]


def test_sensor_reading_the_sum_of_two_compartments() -> None:
    t, total = sensor_data()
    estimator = UniversalODERegressor(
        known=transfer,
        params={"k": 0.3, "m": 0.75},
        param_constraints="positive",
        hidden_layer_sizes=(),
        observe=both_compartments,
        random_state=0,
        device="cpu",
    )
    # The first compartment's initial amount is learned (first guess: the first reading).
    estimator.fit(t, total, y0=[np.nan, 0.0])
    # The sum a (m e^{-kt} - k e^{-mt}) / (m - k) is symmetric in k and m: it fixes the
    # two rates, not which is which.
    fitted = sorted(estimator.params_.values())
    np.testing.assert_allclose(fitted, sorted(TRANSFER.values()), rtol=0.05)
    assert estimator.y0_[0] == pytest.approx(5.0, rel=0.02)
    assert np.isfinite(estimator.y0_std_[0]) and estimator.y0_std_[1] == 0.0  # y0 given
    assert estimator.score(t, total) > 0.999


def test_bad_observe_is_refused_clearly(pk_data) -> None:
    t, concentration, doses = pk_data
    with pytest.raises(TypeError, match="observe"):
        pk_estimator().set_params(observe="V").fit(t, concentration, y0=doses)
    with pytest.raises(ValueError, match=r"observe\(y, p\) must return .* shape \(\.\.\., 1\)"):
        pk_estimator().set_params(observe=two_readings).fit(t, concentration, y0=doses)
    with pytest.raises(ValueError, match="as many states as y0 has columns"):
        pk_estimator().fit(t, concentration)  # two states, but y has one column
    with pytest.raises(TypeError, match="observe"):
        NeuralODERegressor(observe=central_concentration)  # type: ignore[call-arg]
    missing = [np.column_stack([row, np.full(len(row), np.nan)]) for row in concentration]
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] are never observed"):
        pk_estimator().fit(t, missing, y0=doses)


def test_uncertainty_of_observed_quantities_matches_the_hidden_state_model(pk_fit, pk_data) -> None:
    """The same model written with the concentration as a state (the gut hidden) has the
    same likelihood, so the same intervals and prediction bands."""
    t, concentration, doses = pk_data
    with_states = [np.column_stack([np.full(len(row), np.nan), row[:, 0]]) for row in concentration]
    reference = UniversalODERegressor(
        known=one_compartment_known,
        params=dict(pk_fit.params_),  # already at the optimum: a short polish
        param_constraints="positive",
        hidden_layer_sizes=(),
        collocation=False,
        random_state=0,
        device="cpu",
    ).fit(t, with_states, y0=doses)
    for name, std in reference.params_std_.items():
        assert pk_fit.params_std_[name] == pytest.approx(std, rel=0.02), name
    assert pk_fit.noise_std_ == pytest.approx(reference.noise_std_[1:], rel=0.02)
    times = np.array([0.0, 2.0, 12.0])
    _, spread = pk_fit.predict(times, y0=doses[0], return_std=True)
    _, expected = reference.predict(times, y0=doses[0], return_std=True)
    np.testing.assert_allclose(spread[:, 0], expected[:, 1], rtol=0.02)
    low, high = pk_fit.param_intervals()["V"]
    assert low < PHARMACOKINETICS["V"] < high


def test_save_load_and_pickle_keep_observe(pk_fit, tmp_path: Path) -> None:
    times = np.array([0.5, 3.0])
    expected = pk_fit.predict(times, y0=[300.0, 0.0])
    pk_fit.save(tmp_path / "pk.skn")
    with pytest.raises(ValueError, match="central_concentration"):
        load(tmp_path / "pk.skn", allow_imports=["skneuralode.datasets.one_compartment_amounts"])
    loaded = load(tmp_path / "pk.skn", allow_imports=["skneuralode"])
    assert loaded.observe is central_concentration
    np.testing.assert_array_equal(loaded.predict(times, y0=[300.0, 0.0]), expected)
    unpickled = pickle.loads(pickle.dumps(pk_fit))
    np.testing.assert_array_equal(unpickled.predict(times, y0=[300.0, 0.0]), expected)


def test_observe_is_a_parameter_for_clone_and_model_selection(pk_data) -> None:
    t, concentration, doses = pk_data
    estimator = pk_estimator(polish=Polish(max_iter=2)).set_params(params=dict(PHARMACOKINETICS))
    assert clone(estimator).get_params()["observe"] is central_concentration
    search = GridSearchCV(estimator, {"polish__max_iter": [1, 2]}, cv=KFold(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(t[:4], concentration[:4], y0=doses[:4])
    np.testing.assert_allclose(search.best_estimator_.y0_, doses[:4], rtol=1e-12)


def test_plot_fit_draws_the_observed_quantities(pk_fit, pk_data) -> None:
    pytest.importorskip("matplotlib").use("Agg")
    from skneuralode.plotting import plot_fit

    t, concentration, doses = pk_data
    axes = plot_fit(pk_fit, t[:2], concentration[:2], y0=doses[:2])
    assert axes.size == 1
    curve = axes[0].get_lines()[1].get_ydata()  # subject 0's forecast from its dose
    assert np.nanmax(curve) == pytest.approx(np.nanmax(concentration[0]), rel=0.15)
