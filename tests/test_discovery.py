"""Equation discovery from a UDE's learned term (pysindy, the ``[discovery]`` extra)."""

from __future__ import annotations

import itertools
import sys
import warnings

import numpy as np
import pytest
import torch
from sklearn_helpers import spring  # x' = v, v' = -omega2 x: the damping is the network's

from skneuralode import UniversalODERegressor
from skneuralode.datasets import make_damped_oscillator

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def damping_model() -> UniversalODERegressor:
    t, y = make_damped_oscillator(n_times=40, t_end=6.0)
    estimator = UniversalODERegressor(
        known=spring,
        fixed_params={"omega2": 4.0},
        network_outputs=[1],
        network_inputs=[1],
        hidden_layer_sizes=(16,),
        max_iter=1000,
        shooting=False,
        polish=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(t, y)


def test_discovery_finds_the_damping_term(damping_model: UniversalODERegressor) -> None:
    pytest.importorskip("pysindy")
    equations = damping_model.discover_equations(feature_names=["x", "v"])
    assert equations[0] == "0"  # no network term on x'
    discovery = damping_model.discovery_
    assert discovery.term_names == ["1", "v", "v^2"]  # only the states the network sees
    coefficients = discovery.coefficients
    assert np.all(coefficients[0] == 0.0)
    assert np.flatnonzero(coefficients[1]).tolist() == [1]  # v alone is kept
    assert coefficients[1, 1] == pytest.approx(-0.4, rel=0.1)
    assert "v" in equations[1] and "v^2" not in equations[1]
    assert 0.0 < discovery.unexplained[1] <= 0.1
    assert 0.0 < discovery.trajectory_error <= 0.05  # the rebuilt model follows the fit


def test_discovered_rates_evaluate_the_equations(damping_model: UniversalODERegressor) -> None:
    pytest.importorskip("pysindy")
    damping_model.discover_equations()
    states = damping_model.predict(np.linspace(0.0, 6.0, 50))
    discovered = damping_model.discovery_.rates(states)
    assert discovered.shape == states.shape
    velocity = states[:, 1]
    library = np.stack([np.ones_like(velocity), velocity, velocity**2], axis=1)
    np.testing.assert_allclose(discovered[:, 0], 0.0, atol=1e-12)
    np.testing.assert_allclose(
        discovered[:, 1], library @ damping_model.discovery_.coefficients[1], atol=1e-12
    )
    learned = damping_model.network_term(states)[:, 1]
    assert np.abs(discovered[:, 1] - learned).max() < 0.1 * np.abs(learned).max()


def test_threshold_trades_sparsity_for_fidelity(damping_model: UniversalODERegressor) -> None:
    pytest.importorskip("pysindy")
    sparsest = damping_model.discover_equations(threshold=0.5, n_points=40)
    assert sparsest[1].count("x1") == 1  # one term reproduces the dynamics within 50 %
    loose = damping_model.discovery_.trajectory_error
    exact = damping_model.discover_equations(threshold=0.0, n_points=40)
    assert exact[1].count("x1") >= 1  # nothing is exact: the closest candidate is kept
    assert 0.0 < damping_model.discovery_.trajectory_error <= loose


def test_bad_discovery_arguments(damping_model: UniversalODERegressor) -> None:
    pytest.importorskip("pysindy")
    with pytest.raises(ValueError, match="degree"):
        damping_model.discover_equations(degree=0)
    with pytest.raises(ValueError, match="threshold"):
        damping_model.discover_equations(threshold=1.5)
    with pytest.raises(ValueError, match="feature_names"):
        damping_model.discover_equations(feature_names=["x"])


def test_a_model_without_network_has_nothing_to_discover() -> None:
    t, y = make_damped_oscillator(n_times=20, t_end=3.0)
    estimator = UniversalODERegressor(
        known=spring,
        params={"omega2": 3.0},
        hidden_layer_sizes=(),
        max_iter=20,
        shooting=False,
        polish=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(t, y)
    with pytest.raises(ValueError, match="no network"):
        estimator.discover_equations()


def test_missing_pysindy_names_the_extra(
    damping_model: UniversalODERegressor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pysindy", None)  # makes `import pysindy` fail
    with pytest.raises(ImportError, match=r"skneuralode\[discovery\]"):
        damping_model.discover_equations()


def collinear_library() -> tuple[np.ndarray, np.ndarray]:
    """``y = b + c`` exactly, and a third column ``a = b + c + 5 % of another signal``.

    Backward elimination drops ``a`` first (it costs nothing) and is then left with the
    two-term ``b + c``; the best single term, ``a``, explains all but 5 % of ``y``.
    """
    t = np.linspace(0.0, 3.0, 200)
    b, c = np.sin(t), np.cos(2.0 * t)
    target = b + c
    a = target + 0.05 * np.linalg.norm(target) / np.sqrt(t.size) * np.sin(7.0 * t)
    return np.stack([a, b, c], axis=1), target


def test_best_subset_beats_greedy_elimination_under_collinearity() -> None:
    pysindy = pytest.importorskip("pysindy")
    from skneuralode._discovery import candidate_supports

    features, target = collinear_library()
    greedy = candidate_supports(features, target, pysindy, max_exhaustive=0)
    assert [np.flatnonzero(s).tolist() for s in greedy[:2]] == [[1], [1, 2]]  # misses {a}
    best = candidate_supports(features, target, pysindy)
    assert [np.flatnonzero(s).tolist() for s in best] == [[0], [1, 2], [0, 1, 2]]


def test_refitting_through_the_ode_removes_the_bias_of_the_term_fit() -> None:
    """A term known only with an error (as a network's is) gives a biased coefficient by
    least squares; refitted so the rebuilt model reproduces the trajectory, it is exact."""
    from skneuralode._discovery_refit import refit_through_trajectories

    times = np.linspace(0.0, 3.0, 60)
    trajectory = np.exp(-0.7 * times)[:, None]  # y' = -0.7 y
    start = np.array([[-0.5]])  # a term fitted with 30 % bias

    def rebuilt_rates(coefficients: np.ndarray):
        return lambda y: y @ coefficients.T

    refit = refit_through_trajectories(
        start, np.ones_like(start, dtype=bool), rebuilt_rates, [trajectory], [times]
    )
    assert refit.coefficients[0, 0] == pytest.approx(-0.7, rel=1e-4)
    assert refit.error < 1e-5
    assert start[0, 0] == -0.5  # the starting values are not modified


def test_a_candidate_that_cannot_be_integrated_is_refused_not_raised() -> None:
    from skneuralode._discovery_refit import refit_through_trajectories

    times = np.linspace(0.0, 1.0, 20)
    trajectory = np.exp(times)[:, None]

    def rebuilt_rates(coefficients: np.ndarray):
        return lambda y: np.full_like(y, np.nan)  # a field that is nowhere defined

    refit = refit_through_trajectories(
        np.array([[1.0]]), np.array([[True]]), rebuilt_rates, [trajectory], [times]
    )
    assert refit.error >= 100.0  # far worse than any candidate that integrates


def test_best_subsets_are_the_least_residual_of_each_size() -> None:
    from skneuralode._discovery import _best_subsets

    rng = np.random.default_rng(0)
    features = rng.standard_normal((50, 6)) * [1.0, 10.0, 0.1, 1.0, 3.0, 1.0]
    target = rng.standard_normal(50)
    for support in _best_subsets(features, target):
        size = int(support.sum())

        def residual(columns: tuple[int, ...]) -> float:
            chosen = features[:, list(columns)]
            return float(np.linalg.norm(chosen @ np.linalg.lstsq(chosen, target)[0] - target))

        best = min(itertools.combinations(range(6), size), key=residual)
        assert np.flatnonzero(support).tolist() == list(best)
