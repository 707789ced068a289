"""Tests of skneuralode/_training/smoothness.py: the prior on the network term's
curvature in time, and ``network_smoothness`` of the universal ODE that sets it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from skneuralode import UniversalODERegressor
from skneuralode._training.smoothness import (
    AUTO_SMOOTHNESS,
    curvature_residuals,
    smoothness_weight,
)
from skneuralode.datasets import make_lotka_volterra


class LinearTermField(nn.Module):
    """A stand-in hybrid field whose network term is ``matrix @ z`` on every output."""

    def __init__(self, matrix: torch.Tensor, has_network: bool = True) -> None:
        super().__init__()
        self.matrix = matrix
        self.has_network = has_network
        self.output_mask = torch.ones(matrix.shape[0], dtype=matrix.dtype)

    def network_rates(
        self, t: torch.Tensor, z: torch.Tensor, u: torch.Tensor | None = None
    ) -> torch.Tensor:
        return z @ self.matrix.T


def uneven_times() -> torch.Tensor:
    return torch.tensor([[0.0, 0.1, 0.35, 0.4, 0.9, 1.3]], dtype=torch.float64)


class TestCurvatureResiduals:
    def test_a_term_linear_in_time_costs_nothing_on_an_uneven_grid(self) -> None:
        times = uneven_times()
        states = torch.stack([2.0 * times - 1.0, 0.5 - times], dim=-1)  # (1, 6, 2)
        field = LinearTermField(torch.tensor([[1.0, 2.0], [-3.0, 0.5]], dtype=torch.float64))
        residuals = curvature_residuals(field, times, states, None, weight=1.0)
        assert residuals.shape == (4 * 2,)  # 6 times: 4 inner points, 2 outputs
        np.testing.assert_allclose(residuals.numpy(), 0.0, atol=1e-12)

    def test_squares_sum_to_weight_times_mean_squared_second_derivative(self) -> None:
        times = uneven_times()
        states = torch.stack([times**2, torch.zeros_like(times)], dim=-1)
        field = LinearTermField(torch.tensor([[3.0, 0.0], [-1.0, 0.0]], dtype=torch.float64))
        residuals = curvature_residuals(field, times, states, None, weight=0.2)
        # d2/dt2 of (3 t^2, -t^2) is (6, -2), exact for three-point differences
        expected = 0.2 * (6.0**2 + 2.0**2) / 2
        assert float((residuals**2).sum()) == pytest.approx(expected, rel=1e-10)

    def test_padding_and_repeated_times_drop_out(self) -> None:
        short = torch.tensor([0.0, 0.2, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
        times = torch.stack([uneven_times()[0], short])  # second trajectory: 3 real times
        states = torch.stack([times**2, times], dim=-1)
        field = LinearTermField(torch.eye(2, dtype=torch.float64))
        residuals = curvature_residuals(field, times, states, None, weight=1.0)
        assert residuals.shape == ((4 + 1) * 2,)
        assert bool(torch.isfinite(residuals).all())

    def test_gradient_is_finite_with_padding(self) -> None:
        times = torch.tensor([[0.0, 0.3, 0.7, 0.7]], dtype=torch.float64)
        matrix = torch.eye(2, dtype=torch.float64).requires_grad_()
        field = LinearTermField(matrix)
        states = torch.stack([times**2, times], dim=-1)
        residuals = curvature_residuals(field, times, states, None, weight=1.0)
        (gradient,) = torch.autograd.grad((residuals**2).sum(), matrix)
        assert bool(torch.isfinite(gradient).all())

    @pytest.mark.parametrize("weight, has_network", [(0.0, True), (1.0, False)])
    def test_nothing_without_a_weight_or_a_network(self, weight: float, has_network: bool) -> None:
        times = uneven_times()
        states = torch.stack([times**2, times], dim=-1)
        field = LinearTermField(torch.eye(2, dtype=torch.float64), has_network=has_network)
        assert curvature_residuals(field, times, states, None, weight).numel() == 0

    def test_fewer_than_three_distinct_times_give_none(self) -> None:
        times = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
        states = torch.stack([times, times], dim=-1)
        field = LinearTermField(torch.eye(2, dtype=torch.float64))
        assert curvature_residuals(field, times, states, None, 1.0).numel() == 0


class TestSmoothnessWeight:
    def test_auto_is_a_fraction_of_the_noise_variance(self) -> None:
        assert smoothness_weight("auto", 0.02) == pytest.approx(AUTO_SMOOTHNESS * 0.02)
        assert smoothness_weight("auto", 0.0) == 0.0  # clean data: no prior

    def test_a_number_is_the_weight(self) -> None:
        assert smoothness_weight(0.3, 0.02) == 0.3


def lotka_volterra_known(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]
) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x, -p["d"] * z], dim=-1)


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
