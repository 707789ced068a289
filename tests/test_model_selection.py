"""Model selection with scikit-learn's real machinery: splitting one trajectory by time,
splitting across trajectories, searches in parallel (joblib/loky and a dask cluster),
scorers, Pipeline and TransformedTargetRegressor; and torch threads in workers."""

from __future__ import annotations

import multiprocessing
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from joblib import parallel_config
from scipy.stats import loguniform
from sklearn.base import clone
from sklearn.compose import TransformedTargetRegressor
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    RandomizedSearchCV,
    TimeSeriesSplit,
    cross_val_score,
    cross_validate,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn_helpers import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    ThreadRecorder,
    fast_neural,
    fast_universal,
    one_torch_thread,
    oscillator,
    oscillator_family,
)

from skneuralode import _threads as threads
from skneuralode import make_forecast_scorer

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def minutes_to_hours(t: np.ndarray) -> np.ndarray:
    """A preprocessing step on time (module level, so pipelines pickle)."""
    return np.asarray(t, dtype=float) / 60.0


# --------------------------------------------------------------- one trajectory, by time
def test_one_trajectory_split_by_time_trains_on_some_points_and_scores_the_rest() -> None:
    t, y = oscillator(n_times=30)
    interpolation = cross_validate(
        fast_neural(), t, y, cv=KFold(3, shuffle=True, random_state=0), return_estimator=True
    )
    assert np.all(interpolation["test_score"] > 0.8)
    forecast = cross_validate(fast_neural(), t, y, cv=TimeSeriesSplit(3), return_estimator=True)
    assert np.all(np.isfinite(forecast["test_score"]))
    splits = TimeSeriesSplit(3).split(t)
    for (train, test), estimator, score in zip(
        splits, forecast["estimator"], forecast["test_score"], strict=True
    ):
        assert estimator.n_trajectories_ == 1 and estimator.t0_ == t[train].min()
        assert t[test].min() > t[train].max()  # a forecast, not an interpolation
        assert score == estimator.score(t[test], y[test])


def test_string_scorer_on_one_trajectory_is_the_forecast_error() -> None:
    t, y = oscillator(n_times=30)
    cv = TimeSeriesSplit(2)
    scores = cross_val_score(fast_neural(), t, y, cv=cv, scoring="neg_mean_squared_error")
    for score, (train, test) in zip(scores, cv.split(t), strict=True):
        estimator = fast_neural().fit(t[train], y[train])
        assert score == pytest.approx(-mean_squared_error(y[test], estimator.predict(t[test])))


def test_parallel_cross_validation_matches_the_sequential_one_with_shared_cores() -> None:
    """n_jobs=2 (joblib's loky processes) gives the same scores as n_jobs=1, and every
    worker's fits use at most their share of the cores (cores // n_jobs)."""
    t, y = oscillator(n_times=30)
    cv = TimeSeriesSplit(2)
    runs = [
        cross_validate(
            fast_neural(callbacks=[ThreadRecorder()]),
            t,
            y,
            cv=cv,
            scoring="neg_mean_squared_error",
            n_jobs=n_jobs,
            return_estimator=True,
        )
        for n_jobs in (1, 2)
    ]
    sequential, parallel = runs
    np.testing.assert_array_equal(parallel["test_score"], sequential["test_score"])
    share = max(1, threads.available_cpus() // 2)
    seen = {n for estimator in parallel["estimator"] for n in estimator.callbacks[0].seen}
    assert seen and all(1 <= n <= share for n in seen)


def test_randomized_search_over_a_learning_rate() -> None:
    t, y = oscillator(n_times=30)
    search = RandomizedSearchCV(
        fast_neural(max_iter=40),
        {"collocation__learning_rate": loguniform(3e-3, 3e-2)},
        n_iter=2,
        cv=KFold(2, shuffle=True, random_state=0),
        random_state=0,
    ).fit(t, y)
    assert 3e-3 <= search.best_params_["collocation__learning_rate"] <= 3e-2
    assert (
        search.best_estimator_.collocation.learning_rate
        == (search.best_params_["collocation__learning_rate"])
    )
    assert search.best_estimator_.n_iter_ >= 1


# ---------------------------------------------------------------- across trajectories
def test_cross_validation_across_trajectories_with_kfold_and_groups() -> None:
    grids, states = oscillator_family(n_traj=6)
    scoring = {"r2": make_forecast_scorer("r2"), "mse": make_forecast_scorer()}
    by_trajectory = cross_validate(
        fast_neural(), grids, states, cv=KFold(3), scoring=scoring, n_jobs=2, return_estimator=True
    )
    assert [e.n_trajectories_ for e in by_trajectory["estimator"]] == [4, 4, 4]
    assert np.all(by_trajectory["test_r2"] > 0)  # forecasts of unseen trajectories beat the mean
    assert np.all(by_trajectory["test_mse"] < 0)
    groups = np.array([0, 0, 0, 1, 1, 1])  # e.g. two experimental batches
    by_group = cross_val_score(fast_neural(), grids, states, groups=groups, cv=GroupKFold(2))
    assert by_group.shape == (2,) and np.all(np.isfinite(by_group))


def test_cross_validation_over_ragged_trajectories() -> None:
    grids, states = oscillator_family(n_traj=4)
    lengths = [20, 14, 17, 11]
    t_ragged = [grid[:n] for grid, n in zip(grids, lengths, strict=True)]
    y_ragged = [state[:n] for state, n in zip(states, lengths, strict=True)]
    scores = cross_val_score(fast_neural(), t_ragged, y_ragged, cv=KFold(2))
    assert scores.shape == (2,) and np.all(np.isfinite(scores))


def test_forecast_scorer_r2_agrees_with_score() -> None:
    grids, states = oscillator_family(n_traj=4)
    estimator = fast_neural().fit(grids[:3], states[:3])
    held_out = (grids[3:], states[3:])
    assert make_forecast_scorer("r2")(estimator, *held_out) == pytest.approx(
        estimator.score(*held_out), rel=1e-9
    )
    by_hand = make_forecast_scorer(mean_squared_error, greater_is_better=False)
    assert by_hand(estimator, *held_out) == pytest.approx(
        make_forecast_scorer("neg_mean_squared_error")(estimator, *held_out)
    )
    with pytest.raises(ValueError, match="metric must be one of"):
        make_forecast_scorer("accuracy")


def test_universal_search_over_physical_parameters_in_parallel() -> None:
    grids, states = oscillator_family(n_traj=4)
    search = GridSearchCV(
        fast_universal(),
        {"params": [{"omega2": 2.0}, {"omega2": 5.0}]},
        cv=KFold(2),
        n_jobs=2,
    ).fit(grids, states)
    assert set(search.best_estimator_.params_) == {"omega2"}
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))


# ------------------------------------------------------- Pipeline and target transform
def test_pipeline_with_a_time_transform_and_nested_search() -> None:
    t, y = oscillator(n_times=30)
    t_minutes = 60.0 * t
    pipeline = Pipeline([("hours", FunctionTransformer(minutes_to_hours)), ("ode", fast_neural())])
    cv = KFold(2, shuffle=True, random_state=0)
    search = GridSearchCV(pipeline, {"ode__max_iter": [20, 100]}, cv=cv).fit(t_minutes, y)
    best = search.best_params_["ode__max_iter"]
    direct = fast_neural(max_iter=best).fit(t, y)
    np.testing.assert_allclose(
        search.best_estimator_.predict(t_minutes), direct.predict(t), rtol=1e-6, atol=1e-8
    )


def test_transformed_target_regressor_with_standard_scaler() -> None:
    t, y = oscillator(n_times=30)
    y_units = 1000.0 * y + np.array([5e4, -3e3])  # e.g. large offsets in other units
    wrapped = TransformedTargetRegressor(regressor=fast_neural(), transformer=StandardScaler())
    wrapped.fit(t, y_units)
    assert wrapped.predict(t).shape == y_units.shape
    assert wrapped.score(t, y_units) > 0.9
    one_state = clone(wrapped).fit(t, y_units[:, 0])
    assert one_state.predict(t).shape == (30,)
    scores = cross_val_score(wrapped, t, y_units, cv=KFold(2, shuffle=True, random_state=0))
    assert np.all(np.isfinite(scores))


# ------------------------------------------------------------ scale-out: dask, threads
def test_grid_search_on_a_dask_cluster_matches_the_local_one() -> None:
    distributed = pytest.importorskip("distributed")
    t, y = oscillator(n_times=30)
    grid = {"hidden_layer_sizes": [(4,), (16,)]}
    search = GridSearchCV(fast_neural(callbacks=[ThreadRecorder()]), grid, cv=TimeSeriesSplit(2))
    local = clone(search).fit(t, y)
    with (
        warnings.catch_warnings(),
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
        parallel_config(backend="dask"),
    ):
        warnings.simplefilter("ignore", UserWarning)  # dask's notes on large graphs
        search.fit(t, y)
        fitted = cross_validate(
            fast_neural(callbacks=[ThreadRecorder()]), t, y, cv=KFold(2), return_estimator=True
        )["estimator"]
    # Same fits, up to the last bits: the worker's numpy and BLAS run in another process
    # with other thread pools (OMP_NUM_THREADS=1 there), which may sum in another order.
    np.testing.assert_allclose(
        search.cv_results_["mean_test_score"],
        local.cv_results_["mean_test_score"],
        rtol=1e-9,
        atol=1e-12,
    )
    # The nanny starts workers with OMP_NUM_THREADS=1; torch follows it in every fit.
    assert {n for estimator in fitted for n in estimator.callbacks[0].seen} == {1}


def test_dask_threads_in_one_process_share_the_cores() -> None:
    """Without a nanny's environment (processes=False), each of the worker's concurrent
    fits gets ``cores // nthreads`` torch threads, and the main thread keeps its own."""
    distributed = pytest.importorskip("distributed")
    if threads.available_cpus() < 2:
        pytest.skip("needs two cores to show the limit")
    t, y = oscillator(n_times=30)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads.available_cpus())
    try:
        with (
            distributed.LocalCluster(
                n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster),
            parallel_config(backend="dask"),
        ):
            fitted = cross_validate(
                fast_neural(callbacks=[ThreadRecorder()]), t, y, cv=KFold(2), return_estimator=True
            )["estimator"]
        assert torch.get_num_threads() == threads.available_cpus()  # the main thread's own
    finally:
        torch.set_num_threads(previous)
    expected = max(1, threads.available_cpus() // 2)
    if threads.environment_threads() is not None:
        expected = min(expected, threads.environment_threads())
    assert {n for estimator in fitted for n in estimator.callbacks[0].seen} == {expected}


def test_worker_thread_limit_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cpus", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.worker_thread_limit() is None  # a main process is left alone
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: object())
    assert threads.worker_thread_limit() == 16  # a child process running one task
    monkeypatch.setenv("OMP_NUM_THREADS", "4,2")
    assert threads.worker_thread_limit() == 4  # e.g. loky's cpu_count // n_jobs
    monkeypatch.setattr(threads, "dask_worker_threads", lambda: 8)
    assert threads.worker_thread_limit() == 2  # 16 cores shared by 8 concurrent tasks
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert threads.worker_thread_limit() == 2
    previous = torch.get_num_threads()
    monkeypatch.setattr(threads, "worker_thread_limit", lambda: 1)
    try:
        torch.set_num_threads(2)
        assert threads.limit_torch_threads_in_workers() == 1
        monkeypatch.setattr(threads, "worker_thread_limit", lambda: 4)
        assert threads.limit_torch_threads_in_workers() == 1  # never raised
    finally:
        torch.set_num_threads(previous)


def test_seeded_initialisation_is_reproducible_in_concurrent_threads() -> None:
    """Fits in threads of one process (a dask worker with several threads) share torch's
    global generator; seeding and drawing from it must not interleave."""

    def draw(seed: int) -> list[float]:
        with threads.seeded_global_rng(seed):
            first = torch.rand(1).item()
            time.sleep(0.02)  # another thread would reseed here without the lock
            return [first, torch.rand(1).item()]

    seeds = list(range(6))
    sequential = [draw(seed) for seed in seeds]
    with ThreadPoolExecutor(max_workers=3) as pool:
        concurrent = list(pool.map(draw, seeds))
    assert concurrent == sequential


def test_scorer_docstring_example_runs() -> None:
    import doctest

    from skneuralode import _scoring

    assert doctest.testmod(_scoring, optionflags=doctest.ELLIPSIS).failed == 0
