"""The Rosenbrock solver for stiff fields (``skneuralode._stiff``, ``solver="rodas4"``)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.integrate import solve_ivp
from torch import nn

from skneuralode import Solver, UniversalODERegressor, load
from skneuralode._solve import SolverSettings, solve
from skneuralode._stiff.detection import StiffnessProbe

RATES = (0.04, 3e7, 1e4)  # Robertson's chemical kinetics


def robertson_rates(y: torch.Tensor, k: tuple[float, float, float]) -> torch.Tensor:
    a, b, c = y[..., 0], y[..., 1], y[..., 2]
    fast = k[1] * b * b
    slow = k[0] * a - k[2] * b * c
    return torch.stack([-slow, slow - fast, fast], dim=-1)


class RobertsonField(nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return robertson_rates(z, RATES)


class DecayField(nn.Module):
    """dz/dt = -k z with a learnable k."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = nn.Parameter(torch.tensor(rate, dtype=torch.float64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -self.rate * z


class DetachedField(nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -z.detach()


def _robertson_reference(times: np.ndarray) -> np.ndarray:
    def rates(_: float, y: np.ndarray) -> np.ndarray:
        return robertson_rates(torch.as_tensor(y), RATES).numpy()

    solution = solve_ivp(
        rates, (times[0], times[-1]), [1.0, 0.0, 0.0], "Radau", times, rtol=1e-11, atol=1e-14
    )
    return solution.y.T


def test_robertson_agrees_with_scipy_radau_in_about_a_hundred_steps() -> None:
    times = np.concatenate([[0.0], np.logspace(-5, 2, 41)])
    settings = SolverSettings(method="rodas4", rtol=1e-6, atol=1e-12)
    with torch.no_grad():
        result = solve(
            RobertsonField(),
            torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64),
            torch.as_tensor(times)[None],
            settings,
            shared_grid=True,
        )
    assert result.ok, result.failure
    reference = _robertson_reference(times)
    relative = np.abs(result.states[0].numpy() - reference) / (np.abs(reference) + 1e-6)
    assert relative.max() < 1e-4
    assert result.n_steps < 1000  # an explicit method needs tens of thousands here


def test_tighter_tolerance_gives_a_proportionally_smaller_error() -> None:
    times = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)[None].repeat(2, 1)
    start = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    exact = start.numpy()[:, None, :] * np.exp(-1.5 * times.numpy())[..., None]
    errors = {}
    for rtol in (1e-3, 1e-7):
        settings = SolverSettings("rodas4", rtol, rtol * 1e-3)
        with torch.no_grad():
            states = solve(DecayField(1.5), start, times, settings, shared_grid=True).states
        errors[rtol] = np.abs(states.numpy() - exact).max()
        assert errors[rtol] < 30 * rtol
    assert errors[1e-7] < errors[1e-3] / 100


def test_batched_members_match_their_solves_alone() -> None:
    times = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)[None].repeat(2, 1)
    start = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    settings = SolverSettings("rodas4", 1e-8, 1e-10)
    with torch.no_grad():
        together = solve(DecayField(0.7), start, times, settings, shared_grid=True).states
        alone = solve(DecayField(0.7), start[1:], times[1:], settings, shared_grid=True).states
    assert_allclose(together[1].numpy(), alone[0].numpy(), rtol=1e-6, atol=1e-10)


def test_gradient_through_the_steps_matches_the_exact_derivative() -> None:
    field = DecayField(1.2)
    times = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    result = solve(
        field,
        torch.tensor([[2.0]], dtype=torch.float64),
        times,
        SolverSettings("rodas4", 1e-9, 1e-11),
        shared_grid=True,
    )
    result.states[0, -1, 0].backward()
    exact = -1.0 * 2.0 * np.exp(-1.2)  # d/dk of 2 exp(-k t) at t = 1
    assert field.rate.grad is not None
    assert_allclose(field.rate.grad.item(), exact, rtol=1e-5)


def test_a_field_without_a_gradient_in_the_state_is_refused_clearly() -> None:
    times = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="rodas4"):
        solve(
            DetachedField(),
            torch.tensor([[1.0]], dtype=torch.float64),
            times,
            SolverSettings("rodas4"),
            shared_grid=True,
        )


def _decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -p["k"] * y


def test_a_classical_fit_with_the_stiff_solver_recovers_its_rate() -> None:
    t = np.linspace(0.0, 2.0, 15)
    y = (
        3.0
        * np.exp(-1.5 * t)[:, None]
        * (1.0 + 0.01 * np.random.default_rng(0).standard_normal((15, 1)))
    )
    estimator = UniversalODERegressor(
        known=_decay,
        params={"k": 0.5},
        param_constraints="positive",
        hidden_layer_sizes=(),
        solver=Solver(method="rodas4"),
        random_state=0,
    ).fit(t, y)
    assert_allclose(estimator.params_["k"], 1.5, rtol=0.03)
    assert estimator.score(t, y) > 0.99


class StiffForcedField(nn.Module):
    """dz/dt = -k (z - sin t) + cos t, k = 1e4: z = sin t + (z0 - 0) exp(-k t)."""

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -1e4 * (z - torch.sin(t)[..., None]) + torch.cos(t)[..., None]


def test_backward_integration_matches_the_exact_solution() -> None:
    times = torch.tensor([[2.0, 1.5, 0.5, 0.0]], dtype=torch.float64)
    start = torch.tensor([[3.0]], dtype=torch.float64)
    with torch.no_grad():
        result = solve(DecayField(1.5), start, times, SolverSettings("rodas4", 1e-8, 1e-10),
                       shared_grid=True)  # fmt: skip
    assert result.ok, result.failure
    exact = 3.0 * np.exp(1.5 * (2.0 - times[0].numpy()))
    assert_allclose(result.states[0, :, 0].numpy(), exact, rtol=1e-6)


def test_a_stiff_time_dependent_field_follows_its_slow_manifold_in_few_steps() -> None:
    times = torch.linspace(0.0, 6.0, 13, dtype=torch.float64)[None]
    with torch.no_grad():
        result = solve(
            StiffForcedField(),
            torch.tensor([[0.0]], dtype=torch.float64),
            times,
            SolverSettings("rodas4", 1e-6, 1e-9),
            shared_grid=True,
        )
    assert result.ok, result.failure
    # z = sin t exactly (the forcing keeps it on the manifold it starts on)
    assert_allclose(result.states[0, :, 0].numpy(), np.sin(times[0].numpy()), atol=1e-6)
    assert result.n_steps < 200  # an explicit method needs k * span / 3.3 ~ 2e4


def test_members_on_their_own_irregular_grids_match_the_exact_solution() -> None:
    times = torch.tensor(
        [[0.0, 0.1, 0.7, 2.0], [1.0, 1.05, 3.0, 3.5]], dtype=torch.float64
    )  # different grids: the warped solve
    start = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    with torch.no_grad():
        result = solve(StiffForcedField(), start, times, SolverSettings("rodas4", 1e-7, 1e-10),
                       shared_grid=False)  # fmt: skip
    assert result.ok, result.failure
    t = times.numpy()
    offset = start.numpy() - np.sin(t[:, :1])
    exact = np.sin(t) + offset * np.exp(-1e4 * (t - t[:, :1]))
    assert_allclose(result.states[..., 0].numpy(), exact, atol=1e-6)


def test_auto_switches_to_the_stiff_method_on_a_stiff_field_and_remembers() -> None:
    field = RobertsonField()
    times = torch.as_tensor(np.concatenate([[0.0], np.logspace(-5, 2, 21)]))[None]
    start = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    settings = SolverSettings("auto", 1e-6, 1e-12)
    with torch.no_grad():
        first = solve(field, start, times, settings, shared_grid=True)
        second = solve(field, start, times, settings, shared_grid=True)
    assert first.ok and second.ok, (first.failure, second.failure)
    assert first.n_steps < 1000  # the explicit attempt is cut short, then Rodas4
    assert second.n_steps < first.n_steps  # no explicit attempt the second time
    reference = _robertson_reference(times[0].numpy())
    assert_allclose(second.states[0].numpy(), reference, rtol=1e-3, atol=1e-9)


class RotationField(nn.Module):
    """dz/dt = w (z2, -z1) with a learnable frequency w: not stiff, many steps."""

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = nn.Parameter(torch.tensor(frequency, dtype=torch.float64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.frequency * torch.stack([z[:, 1], -z[:, 0]], dim=-1)


def test_auto_integrates_a_field_that_is_not_stiff_exactly_as_dopri5() -> None:
    times = torch.linspace(0.0, 60.0, 40, dtype=torch.float64)[None]
    start = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    field = RotationField(1.3)
    results = {}
    for method in ("dopri5", "auto"):
        result = solve(field, start, times, SolverSettings(method, 1e-9, 1e-12), shared_grid=True)
        result.states[0, -1, 0].backward()
        results[method] = (
            result.states.detach().numpy(),
            field.frequency.grad.item(),
            result.n_steps,
        )
        field.frequency.grad = None
    assert results["auto"][2] > 2 * 64  # long enough to be probed twice
    assert np.array_equal(results["auto"][0], results["dopri5"][0])
    assert results["auto"][1] == results["dopri5"][1]
    assert not StiffnessProbe.remembers(field)


def fast_follower(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    """y1 follows y2 a thousand times faster than y2 decays: stiff for an explicit solver."""
    return torch.stack([-1000.0 * (y[..., 0] - y[..., 1]), -p["k"] * y[..., 1]], dim=-1)


def test_a_fit_that_switched_to_the_stiff_method_saves_and_loads_the_switch(tmp_path) -> None:
    t = np.linspace(0.0, 5.0, 20)
    y = np.stack([np.exp(-0.7 * t), np.exp(-0.7 * t)], axis=1)
    est = UniversalODERegressor(
        known=fast_follower, params={"k": 0.5}, param_constraints="positive",
        hidden_layer_sizes=(), solver="auto", random_state=0, device="cpu",
    ).fit(t, y)  # fmt: skip
    assert est.params_["k"] == pytest.approx(0.7, rel=1e-3)
    assert StiffnessProbe.remembers(est.module_.field)
    expected = est.predict(t)
    est.save(tmp_path / "stiff.skn")
    loaded = load(tmp_path / "stiff.skn", allow_imports=["test_stiff_solver"])
    assert StiffnessProbe.remembers(loaded.module_.field)
    np.testing.assert_array_equal(loaded.predict(t), expected)
    unpickled = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(unpickled.predict(t), expected)
