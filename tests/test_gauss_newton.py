"""Tests of skneuralode/_training/gauss_newton.py: the Levenberg-Marquardt polish of
universal differential equations and the evidence's weight decay."""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pytest
import torch

import skneuralode.universal_ode as universal_ode
from skneuralode import Polish, UniversalODERegressor
from skneuralode._training.gauss_newton import GaussNewtonStage, evidence_weight_decay
from skneuralode._training.polish import PolishStage
from skneuralode.datasets import make_lotka_volterra


def decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -p["k"] * y


def lotka_volterra_known(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]
) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x, -p["d"] * z], dim=-1)


def noisy_lotka_volterra(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t, clean = make_lotka_volterra()
    rng = np.random.default_rng(seed)
    return t, clean, clean + 0.05 * clean.mean(axis=0) * rng.standard_normal(clean.shape)


def polish_result(estimator: UniversalODERegressor) -> object:
    return next(result for result in estimator.stage_results_ if result.stage == "polish")


def fit_quietly(estimator: UniversalODERegressor, t: np.ndarray, y: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(t, y)


class TestEvidenceWeightDecay:
    def test_no_noise_estimate_means_no_decay(self) -> None:
        jacobian = torch.randn(6, 4, dtype=torch.float64)
        decayed = torch.ones(4, dtype=torch.bool)
        parameters = torch.ones(4, dtype=torch.float64)
        assert evidence_weight_decay(jacobian, parameters, decayed, 0.0, 6.0) == 0.0

    def test_fixed_point_of_the_evidence(self) -> None:
        generator = torch.Generator().manual_seed(0)
        jacobian = torch.randn(8, 5, dtype=torch.float64, generator=generator)
        parameters = torch.randn(5, dtype=torch.float64, generator=generator)
        decayed = torch.tensor([True, True, True, False, False])
        noise_variance, n_observed = 0.01, 8.0
        chosen = evidence_weight_decay(jacobian, parameters, decayed, noise_variance, n_observed)
        alpha = chosen * n_observed / noise_variance
        weights = jacobian[:, decayed]
        curvature = torch.linalg.eigvalsh(weights.T @ weights) * n_observed / noise_variance
        determined = float((curvature / (curvature + alpha)).sum())
        squared_norm = float((parameters[decayed] ** 2).sum())
        assert alpha == pytest.approx(determined / squared_norm, rel=1e-8)
        assert 0.0 < determined <= 3.0

    def test_more_noise_more_decay(self) -> None:
        jacobian = torch.randn(10, 6, dtype=torch.float64)
        parameters = torch.randn(6, dtype=torch.float64)
        decayed = torch.ones(6, dtype=torch.bool)
        quiet = evidence_weight_decay(jacobian, parameters, decayed, 1e-4, 10.0)
        loud = evidence_weight_decay(jacobian, parameters, decayed, 1e-1, 10.0)
        assert loud > quiet > 0.0


class TestGaussNewtonPolish:
    def test_classical_parameter_estimation(self) -> None:
        t = np.linspace(0, 2, 30)
        rng = np.random.default_rng(0)
        y = 3.0 * np.exp(-1.5 * t)[:, None] * (1 + 0.02 * rng.standard_normal((30, 1)))
        settings = {
            "known": decay,
            "params": {"k": 1.0},
            "hidden_layer_sizes": (),
            "random_state": 0,
        }
        newton = UniversalODERegressor(**settings)
        lbfgs = UniversalODERegressor(**settings, polish=Polish(method="lbfgs"))
        fit_quietly(newton, t, y)
        fit_quietly(lbfgs, t, y)
        assert newton.params_["k"] == pytest.approx(lbfgs.params_["k"], rel=1e-3)
        assert newton.params_["k"] == pytest.approx(1.5, rel=0.03)
        assert polish_result(newton).status == "converged"
        assert polish_result(newton).n_iter <= 10

    def test_universal_ode_in_fewer_iterations_than_lbfgs(self) -> None:
        t, clean, noisy = noisy_lotka_volterra()
        settings = {
            "known": lotka_volterra_known,
            "fixed_params": {"a": 1.3, "d": 1.8},
            "hidden_layer_sizes": (8, 8),
            "activation": "softplus",
            "max_iter": 300,
            "random_state": 0,
        }
        newton = UniversalODERegressor(**settings)
        fit_quietly(newton, t, noisy)
        lbfgs = UniversalODERegressor(**settings, polish=Polish(method="lbfgs", max_iter=30))
        fit_quietly(lbfgs, t, noisy)
        assert polish_result(newton).status == "converged"
        assert polish_result(newton).n_iter < 30
        assert newton.score(t, clean) >= lbfgs.score(t, clean) - 1e-3
        assert newton.score(t, clean) > 0.99

    def test_large_data_fall_back_to_lbfgs(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(
            universal_ode, "GaussNewtonStage", functools.partial(GaussNewtonStage, max_residuals=10)
        )
        calls: list[str] = []
        original = PolishStage.run

        def counted_run(self: PolishStage, *arguments: object) -> object:
            calls.append(self.name)
            return original(self, *arguments)

        monkeypatch.setattr(PolishStage, "run", counted_run)
        t, _, noisy = noisy_lotka_volterra()
        estimator = UniversalODERegressor(
            known=lotka_volterra_known,
            fixed_params={"a": 1.3, "d": 1.8},
            hidden_layer_sizes=(4,),
            max_iter=50,
            polish=Polish(max_iter=3),
            random_state=0,
        )
        fit_quietly(estimator, t, noisy)
        assert calls == ["polish"]  # 62 observed values > 10: L-BFGS polished
        assert polish_result(estimator).n_iter == 3

    def test_bad_polish_method(self) -> None:
        t, _, noisy = noisy_lotka_volterra()
        estimator = UniversalODERegressor(
            known=lotka_volterra_known,
            fixed_params={"a": 1.3, "d": 1.8},
            polish=Polish(method="adam"),
        )
        with pytest.raises(ValueError, match=r"'polish\.method' parameter"):
            estimator.fit(t, noisy)

    def test_bad_weight_decay(self) -> None:
        t, _, noisy = noisy_lotka_volterra()
        estimator = UniversalODERegressor(
            known=lotka_volterra_known,
            fixed_params={"a": 1.3, "d": 1.8},
            network_weight_decay="evidence",
        )
        with pytest.raises(ValueError, match="network_weight_decay"):
            estimator.fit(t, noisy)
