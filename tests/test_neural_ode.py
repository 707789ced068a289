"""``NeuralODERegressor`` end to end: accuracy, data layouts, options and bad input."""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn_helpers import (
    FAST,
    FASTEST,
    OSCILLATOR_STARTS,
    cube,
    oscillator_at,
    oscillator_rates,
    r2,
)
from torch import nn

from skneuralode import Collocation, NeuralODERegressor, Polish, Solver
from skneuralode.datasets import make_damped_oscillator, spiral_rhs


class FlakyIdentity:
    """Identity feature map that returns NaN while ``broken`` (a stand-in for a field
    that blows up during training)."""

    def __init__(self, broken_calls: range = range(0)) -> None:
        self.broken_calls = broken_calls
        self.broken = False
        self.calls = 0

    def __call__(self, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.broken or self.calls in self.broken_calls:
            return y * float("nan")
        return y


STAGES = ["collocation", "shooting", "polish"]


# ------------------------------------------------------------------ one trajectory
def test_fit_sets_the_fitted_attributes(fitted_oscillator: NeuralODERegressor, oscillator) -> None:
    _, y = oscillator
    estimator = fitted_oscillator
    assert estimator.n_features_in_ == 2
    assert estimator.n_trajectories_ == 1
    assert estimator.t0_ == 0.0
    assert estimator.y0_.shape == (2,)
    assert_allclose(estimator.y0_, y[0], atol=0.1)
    assert isinstance(estimator.module_, nn.Module)
    assert 0.0 <= estimator.loss_ < 0.01
    assert estimator.n_iter_ == len(estimator.history_) > 0
    assert {record["stage"] for record in estimator.history_} <= {"collocation", "shooting"}
    assert set(estimator.history_[0]) == {"stage", "iteration", "loss", "seconds"}
    assert estimator.history_[0]["stage"] == "collocation"


def test_fits_a_damped_oscillator_accurately(
    fitted_oscillator: NeuralODERegressor, oscillator
) -> None:
    t, y = oscillator
    assert fitted_oscillator.score(t, y) > 0.99
    assert r2(y, fitted_oscillator.predict(t)) > 0.99
    # A forecast past the data stays on the true trajectory.
    future = np.linspace(6.0, 8.0, 15)
    error = fitted_oscillator.predict(future) - oscillator_at(future)
    assert np.abs(error).max() < 0.2  # 6 % of the range of the data


def test_vector_field_is_the_learned_dynamics(
    fitted_oscillator: NeuralODERegressor, oscillator
) -> None:
    _, y = oscillator
    rates = fitted_oscillator.vector_field(y)
    assert rates.shape == y.shape
    truth = oscillator_rates(y)
    assert np.linalg.norm(rates - truth) < 0.1 * np.linalg.norm(truth)
    one = fitted_oscillator.vector_field(y[5])
    assert one.shape == (2,)
    assert_allclose(one, rates[5], atol=1e-12)  # one row or many: BLAS may sum otherwise


def test_predictions_come_back_in_the_callers_order(
    fitted_oscillator: NeuralODERegressor, oscillator
) -> None:
    t, _ = oscillator
    order = np.random.default_rng(0).permutation(t.size)
    assert_array_equal(fitted_oscillator.predict(t[order]), fitted_oscillator.predict(t)[order])


def test_predict_from_given_initial_states(fitted_oscillator: NeuralODERegressor) -> None:
    t = np.linspace(1.0, 5.0, 25)
    start = np.array([0.5, -0.3])
    truth = make_damped_oscillator(t - t[0], y0=start)[1]  # autonomous: shift to 0
    predicted = fitted_oscillator.predict(t, y0=start)
    assert predicted.shape == (25, 2)
    # y0 holds at the earliest requested time.
    assert_array_equal(predicted[0], start)
    assert np.abs(predicted - truth).max() < 0.2
    starts = np.array([start, [0.2, 0.8], [-0.6, 0.0]])
    several = fitted_oscillator.predict(t, y0=starts)
    assert several.shape == (3, 25, 2)
    # One adaptive step serves the batch: equal to the solver's tolerance.
    assert_allclose(several[0], predicted, atol=1e-5)


def test_predict_before_the_initial_time_integrates_backwards() -> None:
    t, y = make_damped_oscillator(np.linspace(0.0, 6.0, 41))
    later = t >= 1.5
    estimator = NeuralODERegressor(**FAST).fit(t[later], y[later])
    assert estimator.t0_ == 1.5
    times = np.array([3.0, 1.2, 1.5, 1.3, 1.4])  # after, before and at t0_, unsorted
    predicted = estimator.predict(times)
    assert_array_equal(predicted[2], estimator.y0_)
    assert np.abs(predicted - oscillator_at(times)).max() < 0.15
    # Forwards from the state found backwards leads back to y0_ (to the solver's accuracy).
    there_and_back = estimator.predict(np.array([1.2, 1.5]), y0=predicted[1])
    assert_allclose(there_and_back[1], estimator.y0_, atol=1e-4)


def test_joblib_and_pickle_round_trips_predict_identically(
    fitted_oscillator: NeuralODERegressor, oscillator, tmp_path
) -> None:
    t, y = oscillator
    path = tmp_path / "model.joblib"
    joblib.dump(fitted_oscillator, path)
    for loaded in (joblib.load(path), pickle.loads(pickle.dumps(fitted_oscillator))):
        assert_array_equal(loaded.predict(t), fitted_oscillator.predict(t))
        assert loaded.score(t, y) == fitted_oscillator.score(t, y)
        assert_array_equal(loaded.vector_field(y), fitted_oscillator.vector_field(y))


# ------------------------------------------------------------------- data layouts
def test_one_state_without_state_axis() -> None:
    t = np.linspace(0.0, 3.0, 30)
    y = 2.0 * np.exp(-0.8 * t)
    estimator = NeuralODERegressor(**FAST).fit(t, y)
    assert estimator.n_features_in_ == 1
    predicted = estimator.predict(t)
    assert predicted.shape == (30,)
    assert r2(y[:, None], predicted[:, None]) > 0.99
    assert_allclose(estimator.vector_field(y[::5]), -0.8 * y[::5], rtol=0.1)


def test_several_trajectories_on_a_shared_grid(oscillators) -> None:
    t, y = oscillators
    estimator = NeuralODERegressor(**FASTEST).fit(t, y)
    assert estimator.n_trajectories_ == 3
    assert estimator.t0_.shape == (3,)
    assert estimator.y0_.shape == (3, 2)
    predicted = estimator.predict(t)
    assert predicted.shape == (3, 30, 2)
    assert r2(y, predicted) > 0.97
    assert estimator.score(t, y) > 0.97
    # Without y0, predictions start from the fitted initial states ...
    assert_allclose(estimator.predict(t, y0=estimator.y0_), predicted, atol=1e-8)
    # ... while scoring several trajectories forecasts each from its first observed state.
    assert estimator.score(t, y) == pytest.approx(r2(y, estimator.predict(t, y0=y[:, 0])))


def test_several_trajectories_with_own_irregular_grids() -> None:
    rng = np.random.default_rng(0)
    grids = np.stack([np.sort(rng.uniform(0.0, 6.0, 30)) for _ in OSCILLATOR_STARTS])
    states = np.stack(
        [
            make_damped_oscillator(grid, y0=start)[1]
            for grid, start in zip(grids, OSCILLATOR_STARTS, strict=True)
        ]
    )
    estimator = NeuralODERegressor(**FASTEST).fit(grids, states)
    predicted = estimator.predict(grids)
    assert predicted.shape == (3, 30, 2)
    assert r2(states, predicted) > 0.9
    # Unsorted rows come back in the caller's order.
    order = rng.permutation(30)
    assert_allclose(estimator.predict(grids[:, order]), predicted[:, order], atol=1e-6)


def test_ragged_trajectories() -> None:
    rng = np.random.default_rng(1)
    grids = [np.sort(rng.uniform(0.0, 6.0, n)) for n in (30, 40, 25)]
    states = [
        make_damped_oscillator(grid, y0=start)[1]
        for grid, start in zip(grids, OSCILLATOR_STARTS, strict=True)
    ]
    estimator = NeuralODERegressor(**FASTEST).fit(grids, states)
    predicted = estimator.predict(grids)
    assert isinstance(predicted, list)
    assert [p.shape for p in predicted] == [(30, 2), (40, 2), (25, 2)]
    assert r2(np.concatenate(states), np.concatenate(predicted)) > 0.9
    assert estimator.score(grids, states) > 0.9


def test_missing_values_are_masked(oscillator) -> None:
    t, y = oscillator
    rng = np.random.default_rng(0)
    gappy = y.copy()
    gappy[rng.random(y.shape) < 0.25] = np.nan
    gappy[:3, 1] = np.nan  # the second state is first seen later
    estimator = NeuralODERegressor(**FASTEST).fit(t, gappy)
    assert np.isfinite(estimator.loss_)
    assert np.isfinite(estimator.y0_).all()
    assert estimator.score(t, gappy) > 0.97  # NaN is skipped by the score too
    # Judged on the complete, clean data (but for the velocity before it was first
    # seen: a free-form field that fits the data does not pin it down).
    predicted = estimator.predict(t)
    assert np.isfinite(predicted).all()
    assert r2(y[3:], predicted[3:]) > 0.97


# ----------------------------------------------------------------------- options
def test_scaling_invariance(fitted_oscillator: NeuralODERegressor, oscillator) -> None:
    t, y = oscillator
    milliseconds, large = (t + 1900.0) * 1000.0, y * 1e4
    scaled = NeuralODERegressor(**FAST).fit(milliseconds, large)
    assert scaled.t0_ == 1900.0 * 1000.0
    assert scaled.score(milliseconds, large) > 0.99
    assert scaled.score(milliseconds, large) == pytest.approx(
        fitted_oscillator.score(t, y), abs=0.01
    )
    assert_allclose(scaled.predict(milliseconds) / 1e4, fitted_oscillator.predict(t), atol=0.03)
    # dy/dt in units per millisecond.
    assert_allclose(
        scaled.vector_field(large) / 1e4 * 1000.0, fitted_oscillator.vector_field(y), atol=0.1
    )


def test_random_state_makes_fits_identical(oscillator) -> None:
    t, y = oscillator
    settings = {**FASTEST, "max_iter": 30, "shooting": True}
    first = NeuralODERegressor(**settings).fit(t, y).predict(t)
    torch.manual_seed(1234)  # the global torch seed plays no part
    second = NeuralODERegressor(**settings).fit(t, y).predict(t)
    assert_array_equal(first, second)
    other_seed = NeuralODERegressor(**{**settings, "random_state": 1}).fit(t, y).predict(t)
    assert not np.array_equal(first, other_seed)


def test_warm_start_continues(oscillator) -> None:
    t, y = oscillator
    estimator = NeuralODERegressor(**{**FASTEST, "max_iter": 40, "warm_start": True})
    estimator.fit(t, y)
    first_loss, first_history = estimator.loss_, len(estimator.history_)
    first_weights = copy.deepcopy(estimator.module_.state_dict())
    estimator.fit(t, y)
    assert len(estimator.history_) == first_history + estimator.n_iter_
    assert estimator.loss_ <= first_loss
    assert any(
        not torch.equal(value, first_weights[name])
        for name, value in estimator.module_.state_dict().items()
    )
    # Without warm_start a refit starts afresh.
    estimator.set_params(warm_start=False).fit(t, y)
    assert len(estimator.history_) == first_history
    assert estimator.loss_ == first_loss


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_verbose_zero_is_silent_and_one_shows_progress(oscillator, capsys) -> None:
    t, y = oscillator
    NeuralODERegressor(**{**FASTEST, "max_iter": 10, "shooting": True}).fit(t, y)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == ""
    NeuralODERegressor(**{**FASTEST, "max_iter": 10, "shooting": True, "verbose": 1}).fit(t, y)
    shown = capsys.readouterr().err
    assert "collocation" in shown
    assert "shooting" in shown
    assert "loss=" in shown
    assert "10/10" in shown


def test_augmented_dimensions(oscillator) -> None:
    t, y = oscillator
    estimator = NeuralODERegressor(**{**FASTEST, "augment_dim": 2}).fit(t, y)
    assert estimator.module_.initial_states.shape == (1, 4)
    assert estimator.y0_.shape == (2,)
    assert estimator.predict(t).shape == (40, 2)
    assert estimator.vector_field(y).shape == (40, 2)
    assert estimator.predict(t, y0=[0.5, 0.0]).shape == (40, 2)
    assert estimator.score(t, y) > 0.97


def test_compiled_field_trains_the_same_model_and_is_not_kept(oscillator) -> None:
    """``compile_field`` changes how the field runs during training, not what is learned."""
    t, y = oscillator
    settings = {**FAST, "max_iter": 20, "shooting": True}
    eager = NeuralODERegressor(**settings).fit(t, y)
    compiled = NeuralODERegressor(**settings, solver=Solver(compile_field=True)).fit(t, y)
    assert type(compiled.module_.field) is type(eager.module_.field)  # the plain module back
    assert vars(compiled.module_.field).keys() == vars(eager.module_.field).keys()
    assert [r.n_iter for r in compiled.stage_results_] == [20, 20]
    # Collocation computes in float32 (compiled kernels round differently there).
    assert_allclose(compiled.predict(t), eager.predict(t), rtol=1e-5, atol=1e-7)
    restored = pickle.loads(pickle.dumps(compiled))
    assert_array_equal(restored.predict(t), compiled.predict(t))


def test_feature_map_as_structural_prior(spiral) -> None:
    t, y = spiral
    estimator = NeuralODERegressor(
        hidden_layer_sizes=(), feature_map=cube, max_iter=150, shooting=False, random_state=0
    ).fit(t, y)
    truth = np.array([spiral_rhs(0.0, state) for state in y])
    assert np.linalg.norm(estimator.vector_field(y) - truth) < 0.05 * np.linalg.norm(truth)
    assert estimator.score(t, y) > 0.9
    loaded = pickle.loads(pickle.dumps(estimator))
    assert_array_equal(loaded.predict(t), estimator.predict(t))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(
    ("switches", "stages"),
    [
        ({"collocation": True, "shooting": False, "polish": False}, ["collocation"]),
        ({"collocation": False, "shooting": True, "polish": False}, ["shooting"]),
        ({"collocation": False, "shooting": False, "polish": Polish(max_iter=2)}, ["polish"]),
        ({"collocation": True, "shooting": True, "polish": Polish(max_iter=2)}, STAGES),
    ],
)
def test_stages_are_switched_on_and_off(oscillator, switches: dict, stages: list[str]) -> None:
    t, y = oscillator
    settings = {**FASTEST, "max_iter": 10, **switches}
    estimator = NeuralODERegressor(**settings).fit(t, y)
    assert [result.stage for result in estimator.stage_results_] == stages
    assert [result.n_iter for result in estimator.stage_results_] == [
        2 if stage == "polish" else 10 for stage in stages
    ]
    assert [record["stage"] for record in estimator.history_] == [
        stage for result in estimator.stage_results_ for stage in [result.stage] * result.n_iter
    ]


def test_callbacks_stop_every_stage(oscillator) -> None:
    t, y = oscillator
    records: list[dict[str, Any]] = []

    def stop(record: dict[str, Any]) -> bool:
        records.append(record)
        return True

    estimator = NeuralODERegressor(**{**FASTEST, "shooting": True, "callbacks": [stop]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 20 steps may fit poorly
        estimator.fit(t, y)
    assert [result.status for result in estimator.stage_results_] == ["stopped", "stopped"]
    assert estimator.n_iter_ == 20
    assert [record["stage"] for record in records] == ["collocation"] * 10 + ["shooting"] * 10


# ------------------------------------------------------------- divergence recovery
def test_training_recovers_from_temporary_non_finite_losses(oscillator) -> None:
    t, y = oscillator
    # The feature map is called once when the model is built, then once per step.
    features = FlakyIdentity(broken_calls=range(25, 28))
    estimator = NeuralODERegressor(**{**FASTEST, "feature_map": features, "shooting": False})
    estimator.fit(t, y)
    losses = [record["loss"] for record in estimator.history_]
    assert np.isnan(losses).any()
    assert estimator.stage_results_[0].status in {"max_iter", "converged"}
    assert np.isfinite(estimator.predict(t)).all()
    assert estimator.score(t, y) > 0.97


def test_a_diverging_stage_warns_and_leaves_a_usable_estimator(oscillator) -> None:
    t, y = oscillator
    features = FlakyIdentity()

    def break_during_shooting(record: dict[str, Any]) -> bool:
        features.broken = record["stage"] == "shooting"
        return False

    estimator = NeuralODERegressor(
        **{
            **FASTEST,
            "feature_map": features,
            "shooting": True,
            "callbacks": [break_during_shooting],
        }
    )
    with pytest.warns(ConvergenceWarning, match="Training diverged: the shooting loss"):
        estimator.fit(t, y)
    assert [result.status for result in estimator.stage_results_] == ["max_iter", "diverged"]
    features.broken = False
    # The collocation model was kept: finite, accurate predictions.
    assert np.isfinite(estimator.loss_)
    assert estimator.score(t, y) > 0.97


# ------------------------------------------------------------------------ bad input
def test_methods_before_fit_raise_not_fitted(oscillator) -> None:
    t, y = oscillator
    estimator = NeuralODERegressor()
    for call in (
        lambda: estimator.predict(t),
        lambda: estimator.score(t, y),
        lambda: estimator.vector_field(y),
    ):
        with pytest.raises(NotFittedError):
            call()


@pytest.mark.parametrize(
    ("parameters", "error", "match"),
    [
        ({"hidden_layer_sizes": (0,)}, ValueError, "hidden_layer_sizes must be a tuple"),
        ({"hidden_layer_sizes": ("wide",)}, ValueError, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": 16}, TypeError, "hidden_layer_sizes"),
        ({"activation": "swish"}, ValueError, "'activation' parameter"),
        ({"solver": "rk45"}, ValueError, "'solver' parameter"),
        ({"augment_dim": -1}, ValueError, "'augment_dim' parameter"),
        ({"max_iter": 0}, ValueError, "'max_iter' parameter"),
        (
            {"collocation": Collocation(smoothing=-0.1)},
            ValueError,
            "'collocation.smoothing' parameter",
        ),
        ({"feature_map": "cube"}, ValueError, "'feature_map' parameter"),
        ({"device": "gpu"}, ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'"),
        ({"callbacks": [3]}, TypeError, "callbacks must be callables"),
        (
            {"collocation": False, "shooting": False, "polish": False},
            ValueError,
            "At least one training stage",
        ),
    ],
)
def test_bad_constructor_arguments_are_named_at_fit(
    oscillator, parameters: dict, error: type[Exception], match: str
) -> None:
    t, y = oscillator
    with pytest.raises(error, match=match):
        NeuralODERegressor(**parameters).fit(t, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_missing_cuda_is_an_error(oscillator) -> None:
    t, y = oscillator
    with pytest.raises(ValueError, match="CUDA is not available"):
        NeuralODERegressor(device="cuda").fit(t, y)


def test_bad_arguments_of_fitted_methods_are_named(
    fitted_oscillator: NeuralODERegressor, oscillator
) -> None:
    t, y = oscillator
    estimator = fitted_oscillator
    with pytest.raises(ValueError, match=r"y0 must have shape \(n_samples, 2\)"):
        estimator.predict(t, y0=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="y0 must be finite"):
        estimator.predict(t, y0=[1.0, np.nan])
    with pytest.raises(ValueError, match="t describes 2 trajectories but y0 give 3"):
        estimator.predict(np.stack([t, t]), y0=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="t must be finite"):
        estimator.predict(np.array([0.0, np.inf]))
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples, 2\)"):
        estimator.vector_field(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="y has 3 states but the model was fitted on 2"):
        estimator.score(t, np.c_[y, y[:, :1]])
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(40,\)"):
        estimator.score(t, y, sample_weight=np.ones(39))
    continued = copy.deepcopy(estimator).set_params(warm_start=True)
    with pytest.raises(ValueError, match="y has 1 states but the model being continued"):
        continued.fit(t, y[:, :1])
