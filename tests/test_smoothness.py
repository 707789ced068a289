"""Tests of skneuralode/_training/smoothness.py: the prior on the network term's
curvature along the data's path, and ``network_smoothness`` of the universal ODE that sets it."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from skneuralode import UniversalODERegressor
from skneuralode._training import gauss_newton
from skneuralode._training.gauss_newton import GaussNewtonStage
from skneuralode._training.smoothness import (
    AUTO_SMOOTHNESS,
    PathCurvature,
    path_parameter,
    relaxed_weight,
    smoothness_weight,
)
from skneuralode.datasets import make_lotka_volterra

MATRIX = torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64)


def linear_term(z: torch.Tensor) -> torch.Tensor:
    return z @ MATRIX.T


def quadratic_term(z: torch.Tensor) -> torch.Tensor:
    return torch.stack([3.0 * z[..., 0] ** 2, -(z[..., 0] ** 2)], dim=-1)


def uneven_times() -> torch.Tensor:
    return torch.tensor([[0.0, 0.1, 0.35, 0.4, 0.9, 1.3]], dtype=torch.float64)


def straight_path(along: torch.Tensor) -> torch.Tensor:
    """States on a straight line through (-1, 0.5), ``along`` units along it."""
    return torch.stack([-1.0 + 0.6 * along, 0.5 - 0.8 * along], dim=-1)


class TestPathParameter:
    def test_ends_at_the_time_span_and_padding_adds_nothing(self) -> None:
        times = torch.tensor([[0.5, 1.0, 2.5, 2.5]], dtype=torch.float64)
        states = straight_path(torch.tensor([[0.0, 3.0, 4.0, 9.0]], dtype=torch.float64))
        arc = path_parameter(times, states)
        np.testing.assert_allclose(arc.numpy(), [[0.0, 1.5, 2.0, 2.0]], atol=1e-12)


def curvature(
    term: Callable[[torch.Tensor], torch.Tensor],
    times: torch.Tensor,
    states: torch.Tensor,
    weight: float,
) -> torch.Tensor:
    """The prior's residuals of ``term`` (two outputs) along the path of ``states``."""
    return PathCurvature(times, states, n_outputs=2).residuals(term(states), weight)


class TestPathCurvature:
    def test_a_linear_term_costs_nothing_on_a_straight_path_at_any_speed(self) -> None:
        times = uneven_times()
        for states in (straight_path(times), straight_path(times**2)):
            residuals = curvature(linear_term, times, states, weight=1.0)
            assert residuals.shape == (4 * 2,)  # 6 points: 4 inner points, 2 outputs
            np.testing.assert_allclose(residuals.numpy(), 0.0, atol=1e-10)

    def test_squares_sum_to_weight_times_mean_squared_second_derivative(self) -> None:
        times = uneven_times()
        states = torch.stack([times, torch.zeros_like(times)], dim=-1)  # arc length = t
        residuals = curvature(quadratic_term, times, states, weight=0.2)
        # d2/ds2 of (3 s^2, -s^2) is (6, -2), exact for three-point differences
        expected = 0.2 * (6.0**2 + 2.0**2) / 2
        assert float((residuals**2).sum()) == pytest.approx(expected, rel=1e-10)

    def test_padding_and_a_resting_path_drop_out(self) -> None:
        padded = torch.tensor([0.0, 0.2, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
        times = torch.stack([uneven_times()[0], padded])  # second trajectory: 3 real times
        along = times.clone()
        along[0, 3] = along[0, 2]  # the first path rests between its 3rd and 4th points
        residuals = curvature(quadratic_term, times, straight_path(along), 1.0)
        assert residuals.shape == ((2 + 1) * 2,)
        assert bool(torch.isfinite(residuals).all())

    def test_gradient_is_finite_with_padding(self) -> None:
        times = torch.tensor([[0.0, 0.3, 0.7, 0.7]], dtype=torch.float64)
        scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
        states = torch.stack([times, times**2], dim=-1)
        residuals = curvature(lambda z: scale * quadratic_term(z), times, states, 1.0)
        (gradient,) = torch.autograd.grad((residuals**2).sum(), scale)
        assert bool(torch.isfinite(gradient).all())

    def test_nothing_without_a_weight(self) -> None:
        times = uneven_times()
        assert curvature(quadratic_term, times, straight_path(times), 0.0).numel() == 0

    def test_fewer_than_three_distinct_points_give_none(self) -> None:
        times = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
        assert curvature(quadratic_term, times, straight_path(times), 1.0).numel() == 0


class TestSmoothnessWeight:
    def test_auto_is_a_fraction_of_the_noise_variance(self) -> None:
        assert smoothness_weight("auto", 0.02) == pytest.approx(AUTO_SMOOTHNESS * 0.02)
        assert smoothness_weight("auto", 0.0) == 0.0  # clean data: no prior

    def test_a_number_is_the_weight(self) -> None:
        assert smoothness_weight(0.3, 0.02) == 0.3

    def test_halved_only_where_the_fit_misses_by_more_than_the_noise(self) -> None:
        assert relaxed_weight(0.4, misfit=2.0, allowed=1.0) == pytest.approx(0.2)
        assert relaxed_weight(0.4, misfit=0.9, allowed=1.0) == 0.4
        assert relaxed_weight(0.0, misfit=2.0, allowed=1.0) == 0.0


def lotka_volterra_known(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]
) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x, -p["d"] * z], dim=-1)


def lotka_volterra_with_interactions(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]
) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x - p["b"] * x * z, p["c"] * x * z - p["d"] * z], dim=-1)


def mean_squared_bend(term: np.ndarray) -> float:
    """Mean squared second difference of a learned term along the (uniform) data."""
    return float((np.diff(term, n=2, axis=0) ** 2).mean())


class TestNetworkSmoothness:
    def test_the_prior_straightens_the_learned_term(self) -> None:
        t, clean = make_lotka_volterra()
        rng = np.random.default_rng(3)
        noisy = clean + 0.05 * clean.mean(axis=0) * rng.standard_normal(clean.shape)
        settings = {
            "known": lotka_volterra_known,
            "fixed_params": {"a": 1.3, "d": 1.8},
            "hidden_layer_sizes": (16, 16),
            "max_iter": 300,
            "random_state": 0,
        }
        bends, scores = [], []
        for smoothness in (0.0, "auto"):
            estimator = UniversalODERegressor(network_smoothness=smoothness, **settings)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                estimator.fit(t, noisy)
            bends.append(mean_squared_bend(estimator.network_term(clean)))
            scores.append(estimator.score(t, clean))
        assert bends[1] < 0.5 * bends[0]
        assert min(scores) > 0.99

    def test_a_prior_that_fights_the_data_is_relaxed(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[tuple[float, float, float]] = []

        def recorded(weight: float, misfit: float, allowed: float) -> float:
            calls.append((weight, misfit, allowed))
            return relaxed_weight(weight, misfit, allowed)

        monkeypatch.setattr(gauss_newton, "relaxed_weight", recorded)
        t, clean = make_lotka_volterra()
        noisy = clean + 0.05 * clean.mean(axis=0) * np.random.default_rng(0).standard_normal(
            clean.shape
        )
        estimator = UniversalODERegressor(
            known=lotka_volterra_known,
            fixed_params={"a": 1.3, "d": 1.8},
            hidden_layer_sizes=(8,),
            max_iter=100,
            network_smoothness=10.0,  # far above the noise variance
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(t, noisy)
        weights = [weight for weight, _, _ in calls]
        assert weights[0] == 10.0 and calls[0][1] > calls[0][2]  # it misfit: relaxed
        assert weights[1] == pytest.approx(5.0)
        assert len(calls) <= GaussNewtonStage.max_relaxations + 1

    def test_no_network_no_prior(self, monkeypatch: pytest.MonkeyPatch) -> None:
        weights: list[float] = []

        def recorded(weight: float, misfit: float, allowed: float) -> float:
            weights.append(weight)
            return relaxed_weight(weight, misfit, allowed)

        monkeypatch.setattr(gauss_newton, "relaxed_weight", recorded)
        t, clean = make_lotka_volterra()
        noisy = clean * (1.0 + 0.05 * np.random.default_rng(1).standard_normal(clean.shape))
        estimator = UniversalODERegressor(
            known=lotka_volterra_with_interactions,
            params={"b": 1.0, "c": 1.0},
            fixed_params={"a": 1.3, "d": 1.8},
            hidden_layer_sizes=(),
            network_smoothness=10.0,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimator.fit(t, noisy)
        assert weights and all(weight == 0.0 for weight in weights)
        assert estimator.params_["b"] == pytest.approx(0.9, rel=0.1)

    @pytest.mark.parametrize("value", [-1.0, "evidence", float("nan")])
    def test_bad_values_name_the_argument(self, value: object) -> None:
        t, clean = make_lotka_volterra()
        estimator = UniversalODERegressor(
            known=lotka_volterra_known,
            fixed_params={"a": 1.3, "d": 1.8},
            network_smoothness=value,
            max_iter=2,
        )
        with pytest.raises(ValueError, match="network_smoothness"):
            estimator.fit(t, clean)
