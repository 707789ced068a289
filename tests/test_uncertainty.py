"""How sure a fit is: sensitivities, parameter intervals (Wald and profile),
identifiability, prediction bands, persistence of what they need, and their plots."""

from __future__ import annotations

import copy
import doctest
import io
import warnings
from dataclasses import replace
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from sklearn_helpers import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    fast_neural,
    one_torch_thread,
    oscillator,
)

import skneuralode
from skneuralode import IdentifiabilityWarning, Solver, UniversalODERegressor
from skneuralode import _sensitivity as sensitivity
from skneuralode import _uncertainty as uncertainty
from skneuralode._prediction import integrate
from skneuralode.datasets import add_noise

K_TRUE, Y0_TRUE = 1.5, 3.0


def decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -p["k"] * y


def growth(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return p["a"] * p["b"] * y


def ratio(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -p["a"] / p["b"] * y


def damped_spring(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    x, v = y[..., 0], y[..., 1]
    return torch.stack([v, -p["omega2"] * x - p["damping"] * v], dim=-1)


def decay_data(n_times: int, noise: float = 0.02, seed: int = 0) -> tuple[np.ndarray, ...]:
    """``y = 3 exp(-1.5 t)`` on [0, 2] with relative Gaussian noise."""
    t = np.linspace(0.0, 2.0, n_times)
    clean = Y0_TRUE * np.exp(-K_TRUE * t)[:, None]
    rng = np.random.default_rng(seed)
    return t, clean * (1.0 + noise * rng.standard_normal(clean.shape))


def classical(known: Any, params: dict[str, float], **overrides: Any) -> UniversalODERegressor:
    """Known physics with positive learned parameters and no network."""
    settings = {"param_constraints": "positive", "hidden_layer_sizes": (), "random_state": 0}
    return UniversalODERegressor(known=known, params=params, **{**settings, **overrides})


def decay_model(**overrides: Any) -> UniversalODERegressor:
    return classical(decay, {"k": 1.0}, **overrides)


@pytest.fixture(scope="module")
def decay_fit() -> dict[str, Any]:
    t, y = decay_data(30)
    return {"t": t, "y": y, "estimator": decay_model().fit(t, y)}


@pytest.fixture(scope="module")
def neural_fit() -> dict[str, Any]:
    t, clean = oscillator()
    y = add_noise(clean, 0.05, seed=0)
    return {"t": t, "y": y, "estimator": fast_neural().fit(t, y)}


# --------------------------------------------------------------------- sensitivities
@pytest.fixture
def exact_solves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sensitivity solves as accurate as the finite differences they are checked with."""
    monkeypatch.setattr(sensitivity, "SENSITIVITY_RTOL", 1e-10)
    monkeypatch.setattr(sensitivity, "SENSITIVITY_ATOL", 1e-12)


def tight(model: Any) -> Any:
    model.spec = replace(model.spec, solver=replace(model.spec.solver, rtol=1e-10, atol=1e-12))
    return model


def test_sensitivities_match_finite_differences_of_the_solution(exact_solves: None) -> None:
    t, y = decay_data(20)
    model = tight(decay_model(param_constraints=None).fit(t, y).module_)
    layout = sensitivity.parameter_layout(model, include_output_layer=False)
    initial = model.initial_states.detach().numpy()
    times = [np.linspace(-0.5, 3.0, 15)]  # before and after the initial time
    starts = model.spec.initial_times
    result = sensitivity.trajectory_sensitivities(model, layout, initial, starts, times, local=True)

    def solution(shifted: Any, start: np.ndarray) -> np.ndarray:
        states = integrate(shifted, start, starts, times, shifted.spec.solver)[0]
        return shifted.scaling.scale_states(states)

    step = 1e-6
    shifted = [copy.deepcopy(model) for _ in range(2)]
    with torch.no_grad():
        shifted[0].field.physical_parameters.raw += step
        shifted[1].field.physical_parameters.raw -= step
    by_parameter = (solution(shifted[0], initial) - solution(shifted[1], initial)) / (2 * step)
    by_initial = (solution(model, initial + step) - solution(model, initial - step)) / (2 * step)
    jacobian = result.jacobians[0]
    np.testing.assert_allclose(jacobian[:, :, 0], by_parameter, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(jacobian[:, :, 1], by_initial, rtol=1e-5, atol=1e-7)


def test_output_layer_sensitivities_match_finite_differences(exact_solves: None) -> None:
    t, y = oscillator(n_times=20)
    model = tight(fast_neural(max_iter=30).fit(t, y).module_)
    layout = sensitivity.parameter_layout(model, include_output_layer=True)
    assert layout.size == 2 * (16 + 1)
    initial = model.initial_states.detach().numpy()
    times = [t]
    result = sensitivity.trajectory_sensitivities(
        model, layout, initial, model.spec.initial_times, times, local=False
    )
    step = 1e-6
    solutions = []
    for sign in (1.0, -1.0):
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            shifted.field.network[-1].weight[1, 3] += sign * step
        states = integrate(shifted, initial, model.spec.initial_times, times, model.spec.solver)
        solutions.append(model.scaling.scale_states(states[0]))
    expected = (solutions[0] - solutions[1]) / (2 * step)
    np.testing.assert_allclose(result.jacobians[0][:, :, 16 + 3], expected, atol=1e-6)


# ------------------------------------------------------------------ parameter intervals
def test_wald_interval_contains_the_truth_and_shrinks_with_more_data() -> None:
    widths: dict[int, list[float]] = {10: [], 90: []}
    for n_times, seed in [(n, seed) for n in widths for seed in range(3)]:
        t, y = decay_data(n_times, seed=seed)
        estimator = decay_model().fit(t, y)
        low, high = estimator.param_intervals(0.95)["k"]
        assert low < K_TRUE < high
        assert low < estimator.params_["k"] < high
        widths[n_times].append(high - low)
    # about 1 / 3 for nine times the data (the noise estimate of 10 points varies a lot)
    assert np.mean(widths[90]) < 0.6 * np.mean(widths[10])


def test_std_and_intervals_agree_and_widen_with_confidence(decay_fit: dict) -> None:
    estimator = decay_fit["estimator"]
    std = estimator.params_std_["k"]
    assert 0.0 < std < 0.05
    narrow = estimator.param_intervals(0.5)["k"]
    wide = estimator.param_intervals(0.99)["k"]
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    # log-scale interval of a positive parameter: symmetric in log k, about +-2 std wide
    low, high = estimator.param_intervals(0.95)["k"]
    k = estimator.params_["k"]
    assert np.isclose(np.log(k) - np.log(low), np.log(high) - np.log(k))
    assert 3.5 * std < high - low < 4.5 * std


def test_noise_level_and_initial_state_spread_are_estimated(decay_fit: dict) -> None:
    estimator = decay_fit["estimator"]
    residuals = estimator.predict(decay_fit["t"]) - decay_fit["y"]
    rms = np.sqrt(np.mean(residuals**2))
    # dof-corrected: slightly above the residuals' RMS (30 points, 2 parameters)
    assert rms < estimator.noise_std_[0] < 1.1 * rms
    assert estimator.y0_std_.shape == (1,)
    assert 0.0 < estimator.y0_std_[0] < 3 * estimator.noise_std_[0]


def test_profile_interval_is_close_to_wald_on_a_nearly_linear_problem(decay_fit: dict) -> None:
    estimator = decay_fit["estimator"]
    wald = estimator.param_intervals()["k"]
    profile = estimator.param_intervals(method="profile", t=decay_fit["t"], y=decay_fit["y"])
    low, high = profile["k"]
    assert low < K_TRUE < high
    np.testing.assert_allclose([low, high], wald, rtol=5e-3)


def test_param_intervals_refuse_bad_arguments(decay_fit: dict) -> None:
    estimator, t, y = decay_fit["estimator"], decay_fit["t"], decay_fit["y"]
    for confidence in (0.0, 1.0, 1.5, "high", True, float("nan")):
        with pytest.raises(ValueError, match="confidence"):
            estimator.param_intervals(confidence)
    with pytest.raises(ValueError, match="method must be 'wald' or 'profile'"):
        estimator.param_intervals(method="bootstrap")
    with pytest.raises(ValueError, match=r"method='profile'.*t=\.\.\. and y=\.\.\."):
        estimator.param_intervals(method="profile")
    with pytest.raises(ValueError, match="only used by method='profile'"):
        estimator.param_intervals(t=t, y=y)
    with pytest.raises(ValueError, match="must be the training data"):
        estimator.param_intervals(method="profile", t=t, y=np.hstack([y, y]))


def test_intervals_need_learned_params_and_a_recorded_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t, y = decay_data(20)
    no_params = UniversalODERegressor(
        known=decay, fixed_params={"k": 1.5}, hidden_layer_sizes=(4,), max_iter=20
    ).fit(t, y)
    with pytest.raises(ValueError, match="no learned physical parameters"):
        no_params.param_intervals()
    monkeypatch.setattr(uncertainty, "MAX_SENSITIVITY_ROWS", 1)
    estimator = decay_model().fit(t, y)
    assert not hasattr(estimator, "params_std_")
    with pytest.raises(ValueError, match=r"recorded no uncertainty estimate.*exceed"):
        estimator.param_intervals()
    with pytest.raises(ValueError, match="recorded no uncertainty estimate"):
        estimator.predict(t, return_std=True)


def test_network_fits_follow_the_output_layer_up_to_the_budgets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """200 observations of the default-width network's two states follow its output
    layer (130 directions); past the observation-time budget there is no estimate, and
    ``return_std`` says why."""
    # every series that gets a record follows the default network's output layer
    assert uncertainty.MAX_NETWORK_OBSERVATION_TIMES * 130 <= uncertainty.MAX_OUTPUT_LAYER_WORK
    t, clean = oscillator(n_times=200, t_end=8.0)
    y = add_noise(clean, 0.05, seed=0)
    settings = {"hidden_layer_sizes": (64, 64), "max_iter": 10}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        followed = fast_neural(**settings).fit(t, y)
        assert followed._theta_prior_variance_.size == 130
        monkeypatch.setattr(uncertainty, "MAX_NETWORK_OBSERVATION_TIMES", 199)
        skipped = fast_neural(**settings).fit(t, y)
    assert not hasattr(skipped, "noise_std_")
    with pytest.raises(ValueError, match=r"network on 200 observation times \(more than 199"):
        skipped.predict(t, return_std=True)


def test_docstring_example_runs() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(UniversalODERegressor.param_intervals, "param_intervals"):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


# ------------------------------------------------------------------- identifiability
def test_product_of_parameters_warns_and_names_the_product() -> None:
    t = np.linspace(0.0, 2.0, 25)
    y = add_noise((0.5 * np.exp(0.9 * t))[:, None], 0.05)
    estimator = classical(growth, {"a": 1.0, "b": 2.0})
    with pytest.warns(IdentifiabilityWarning, match=r"a and b separately.*only a\*b is"):
        estimator.fit(t, y)
    analysis = estimator.identifiability_
    assert analysis["undetermined"] == ["a", "b"]
    assert analysis["determined_combinations"] == ["a*b"]
    assert analysis["condition_number"] > 1e8
    direction = analysis["directions"][:, 0]  # the least determined: (1, -1) in log space
    np.testing.assert_allclose(np.abs(direction), np.sqrt(0.5), atol=1e-3)
    assert direction[0] * direction[1] < 0
    assert estimator.params_["a"] * estimator.params_["b"] == pytest.approx(0.9, rel=0.05)


def test_ratio_is_named_as_a_ratio() -> None:
    t, y = decay_data(20)
    estimator = classical(ratio, {"a": 1.0, "b": 1.0})
    with pytest.warns(IdentifiabilityWarning, match=r"only a/b is determined"):
        estimator.fit(t, y)


def test_well_posed_fit_does_not_warn() -> None:
    t, clean = oscillator(n_times=40)
    y = add_noise(clean, 0.02)
    estimator = classical(damped_spring, {"omega2": 3.0, "damping": 0.2})
    with warnings.catch_warnings():
        warnings.simplefilter("error", IdentifiabilityWarning)
        estimator.fit(t, y)
    analysis = estimator.identifiability_
    assert analysis["undetermined"] == [] and analysis["determined_combinations"] == []
    assert np.all(analysis["relative_std"] < 0.1)
    for name, truth in (("omega2", 4.0), ("damping", 0.4)):
        low, high = estimator.param_intervals()[name]
        assert low < truth < high


# --------------------------------------------------------------------- return_std
def test_return_std_shapes_order_and_positivity(neural_fit: dict) -> None:
    estimator, t = neural_fit["estimator"], neural_fit["t"]
    shuffled = np.random.default_rng(0).permutation(np.linspace(0.0, 6.0, 25))
    mean, std = estimator.predict(shuffled, return_std=True)
    np.testing.assert_array_equal(mean, estimator.predict(shuffled))
    assert std.shape == mean.shape == (25, 2)
    assert np.all(std >= estimator.noise_std_ - 1e-12) and np.all(np.isfinite(std))
    order = np.argsort(shuffled)
    sorted_std = estimator.predict(shuffled[order], return_std=True)[1]
    np.testing.assert_allclose(std[order], sorted_std, rtol=1e-10)
    several = np.stack([t[:10], t[5:15]])
    mean, std = estimator.predict(several, y0=[[1.0, 0.0], [0.0, 1.0]], return_std=True)
    assert std.shape == mean.shape == (2, 10, 2)
    ragged = [t[:7], t[3:15]]
    mean, std = estimator.predict(ragged, y0=[[1.0, 0.0], [0.0, 1.0]], return_std=True)
    assert [s.shape for s in std] == [(7, 2), (12, 2)]
    with pytest.raises(ValueError, match="return_std must be True or False"):
        estimator.predict(t, return_std="yes")


def test_band_grows_beyond_the_data_and_includes_the_noise(decay_fit: dict) -> None:
    estimator = decay_fit["estimator"]
    times = np.array([1.0, 6.0])
    mean, std = estimator.predict(times, return_std=True)
    model_part = np.sqrt(std**2 - estimator.noise_std_**2)[:, 0]
    # the relative spread of 3 exp(-k t) is sqrt(var y0 / y0^2 + t^2 var k): it grows with t
    relative = model_part / mean[:, 0]
    assert relative[1] > 2 * relative[0]
    assert model_part[0] < estimator.noise_std_[0]  # inside the data: mostly noise
    expected = 6.0 * estimator.params_std_["k"]  # the k part dominates at t = 6
    assert relative[1] == pytest.approx(expected, rel=0.1)


def test_given_initial_state_is_taken_as_exact(decay_fit: dict) -> None:
    estimator = decay_fit["estimator"]
    at_start = estimator.predict(np.array([0.0]), y0=[3.0], return_std=True)[1]
    assert at_start[0, 0] == pytest.approx(estimator.noise_std_[0])
    fitted_start = estimator.predict(np.array([0.0]), return_std=True)[1]
    expected = np.hypot(estimator.noise_std_[0], estimator.y0_std_[0])
    assert fitted_start[0, 0] == pytest.approx(expected, rel=1e-6)


def test_given_initial_state_with_the_network_held_fixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the output layer's budget a network's parameters are all held fixed: from a
    given initial state nothing is uncertain but the noise (this once crashed inside the
    sensitivity solve, which then follows no direction at all)."""
    monkeypatch.setattr(uncertainty, "MAX_OUTPUT_LAYER_WORK", 10)
    t, clean = oscillator()
    estimator = fast_neural(max_iter=40).fit(t, add_noise(clean, 0.05, seed=0))
    assert estimator._theta_prior_variance_.size == 0  # no output layer followed
    mean, std = estimator.predict(t[:7], y0=clean[0], return_std=True)
    assert mean.shape == std.shape == (7, 2)
    np.testing.assert_allclose(std, np.broadcast_to(estimator.noise_std_, (7, 2)), rtol=1e-12)
    fitted = estimator.predict(t[:7], return_std=True)[1]  # the fitted y0's spread adds
    assert np.all(fitted[0] > estimator.noise_std_)


def test_linearised_laplace_band_covers_held_out_observations(neural_fit: dict) -> None:
    estimator = neural_fit["estimator"]
    t, clean = oscillator(n_times=59, t_end=5.0)
    midpoints = t[:-1] + (t[1] - t[0]) / 2
    truth = oscillator(n_times=117, t_end=5.0)[1][1::2]  # the midpoints' states
    rng = np.random.default_rng(1)
    held_out = truth + 0.05 * clean.std(axis=0) * rng.standard_normal(truth.shape)
    mean, std = estimator.predict(midpoints, return_std=True)
    coverage = np.mean(np.abs(held_out - mean) <= 1.96 * std)
    assert 0.8 <= coverage <= 1.0
    assert estimator._theta_prior_variance_.size == 2 * (16 + 1)  # the output layer


# ----------------------------------------------------------------------- persistence
def test_saved_and_pickled_models_keep_their_uncertainty(
    decay_fit: dict, neural_fit: dict, tmp_path: Any
) -> None:
    times = np.linspace(0.0, 8.0, 20)
    for name, fit in (("decay", decay_fit), ("neural", neural_fit)):
        estimator = fit["estimator"]
        expected = estimator.predict(times, return_std=True)
        path = tmp_path / f"{name}.skn"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing fitted is left out of the file
            estimator.save(path)
        loaded = skneuralode.load(path, allow_imports=[__name__])
        buffer = io.BytesIO()
        joblib.dump(estimator, buffer)
        buffer.seek(0)
        for other in (loaded, joblib.load(buffer)):
            mean, std = other.predict(times, return_std=True)
            np.testing.assert_array_equal(mean, expected[0])
            np.testing.assert_allclose(std, expected[1], rtol=1e-12)
            np.testing.assert_array_equal(other.y0_std_, estimator.y0_std_)
    loaded = skneuralode.load(tmp_path / "decay.skn", allow_imports=[__name__])
    assert loaded.params_std_ == decay_fit["estimator"].params_std_
    assert loaded.param_intervals() == decay_fit["estimator"].param_intervals()
    assert loaded.identifiability_["undetermined"] == []


def test_refit_replaces_the_records_of_the_previous_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    t, y = decay_data(20)
    estimator = decay_model().fit(t, y)
    assert hasattr(estimator, "params_std_")
    monkeypatch.setattr(uncertainty, "MAX_SENSITIVITY_ROWS", 1)
    estimator.fit(t, y)
    assert not hasattr(estimator, "params_std_") and not hasattr(estimator, "noise_std_")


# ---------------------------------------------------------------------------- plots
def test_plots_shade_the_band_and_draw_the_intervals(decay_fit: dict) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection

    from skneuralode import plotting

    estimator, t, y = decay_fit["estimator"], decay_fit["t"], decay_fit["y"]
    try:
        (ax,) = plotting.plot_fit(estimator, t, y)
        bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
        assert bands and bands[0].get_paths()[0].vertices.shape[0] > 100
        (plain,) = plotting.plot_fit(estimator, t, y, band=False)
        assert not [c for c in plain.collections if isinstance(c, PolyCollection)]
        ax = plotting.plot_parameter_intervals(estimator, truth={"k": K_TRUE})
        assert ax.get_xlabel() == "value / estimate"
        assert ax.get_yticklabels()[0].get_text().startswith("k = 1.")
        profile = plotting.plot_parameter_intervals(estimator, method="profile", t=t, y=y)
        assert "profile" in profile.get_title()
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in doctest.DocTestFinder().find(plotting.plot_parameter_intervals):
            result.run(test)
        assert result.summarize(verbose=False).failed == 0
    finally:
        plt.close("all")


# ------------------------------------------------- given initial states, external inputs
def test_given_initial_states_are_exact_and_narrow_the_intervals() -> None:
    t, y = decay_data(15, noise=0.05)
    free = decay_model().fit(t, y)
    given = decay_model().fit(t, y, y0=[Y0_TRUE])
    np.testing.assert_allclose(given.y0_std_, [0.0], atol=1e-12)
    assert free.y0_std_[0] > 0.0
    # k and y0 are correlated in a decay: knowing y0 pins k down better
    assert given.params_std_["k"] < 0.8 * free.params_std_["k"]
    low, high = given.param_intervals()["k"]
    assert low < K_TRUE < high
    _, std = given.predict(t, return_std=True)
    assert std[0, 0] == pytest.approx(given.noise_std_[0], rel=1e-6)  # no model part at y0
    profile = given.param_intervals(method="profile", t=t, y=y)["k"]
    assert profile[0] < K_TRUE < profile[1]
    assert profile[1] - profile[0] == pytest.approx(high - low, rel=0.2)


def forced_decay(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor], u: torch.Tensor
) -> torch.Tensor:
    return -p["k"] * y + p["gain"] * u


def test_models_with_inputs_get_intervals_and_bands_that_follow_the_inputs() -> None:
    t = np.linspace(0.0, 4.0, 40)
    force = np.sin(2.0 * t)[:, None]
    rng = np.random.default_rng(1)
    states = np.zeros((t.size, 1))
    for step in range(1, t.size):  # fine Euler steps of y' = -k y + gain u
        y_now, s = states[step - 1, 0], t[step - 1]
        for _ in range(200):
            y_now += (t[step] - t[step - 1]) / 200 * (-K_TRUE * y_now + 2.0 * np.sin(2.0 * s))
            s += (t[step] - t[step - 1]) / 200
        states[step, 0] = y_now
    y = states + 0.02 * rng.standard_normal(states.shape)
    estimator = classical(
        forced_decay,
        {"k": 1.0, "gain": 1.0},
        param_constraints=None,
        solver=Solver(atol=1e-8, rtol=1e-8),
    ).fit(t, y, u=force)
    for name, truth in (("k", K_TRUE), ("gain", 2.0)):
        low, high = estimator.param_intervals()[name]
        assert low < truth < high
        assert high - low < 0.2 * truth
        profile = estimator.param_intervals(method="profile", t=t, y=y, u=force)[name]
        assert profile[0] < truth < profile[1]
    _, std = estimator.predict(t, u=force, return_std=True)
    assert std.shape == y.shape and np.all(std >= estimator.noise_std_[0])
    # the model part follows the input: a larger force moves the prediction further
    # along the uncertain gain
    _, strong = estimator.predict(t, u=3.0 * force, return_std=True)
    assert strong.max() > std.max()
    with pytest.raises(ValueError, match="u"):
        estimator.predict(t, return_std=True)


# --------------------------------------------------------------------- side budget
def test_record_cost_model_counts_states() -> None:
    """The information blocks grow with the square of the states: 200 states on five
    trajectories cost above the side budget of a one-second fit, one state does not."""
    t, y = decay_data(20)
    estimator = decay_model(max_iter=5).fit(t, y)
    problem_like = type("P", (), {"n_traj": 5})()
    model = estimator.module_
    small = uncertainty.estimated_record_seconds(problem_like, model, n_theta=1)
    wide = type("M", (), {"n_states": 200, "spec": type("S", (), {"n_observed": 200})()})()
    large = uncertainty.estimated_record_seconds(problem_like, wide, n_theta=0)
    assert small < 1e-3 < uncertainty.side_budget(0.0) < large
    assert uncertainty.side_budget(100.0) == pytest.approx(20.0)


def test_record_over_the_budget_is_deferred_until_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record costing more than the side budget is not computed by ``fit``; the first
    ``param_intervals`` or ``return_std`` computes the same record, and a pickled copy
    (without the training data) says how to get it."""
    t, y = decay_data(20)
    recorded = decay_model().fit(t, y)
    monkeypatch.setattr(uncertainty, "SECONDS_PER_INFORMATION_ENTRY", 1e6)
    deferred = decay_model().fit(t, y)
    assert not hasattr(deferred, "noise_std_") and not hasattr(deferred, "params_std_")
    assert deferred._uncertainty_note.startswith("deferred")
    buffer = io.BytesIO()
    joblib.dump(deferred, buffer)
    buffer.seek(0)
    copied = joblib.load(buffer)
    with pytest.raises(ValueError, match=r"deferred.*return_std=True.*fit again"):
        copied.predict(t, return_std=True)
    intervals = deferred.param_intervals()
    np.testing.assert_allclose(intervals["k"], recorded.param_intervals()["k"], rtol=1e-8)
    np.testing.assert_allclose(deferred.params_std_["k"], recorded.params_std_["k"], rtol=1e-8)
    np.testing.assert_allclose(
        deferred.predict(t, return_std=True)[1], recorded.predict(t, return_std=True)[1]
    )
