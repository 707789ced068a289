"""The batched solve with time warping (``skneuralode._solve``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy.integrate import solve_ivp
from scipy.linalg import expm
from torch import nn

from skneuralode._solve import SolverSettings, solve, solve_interpolated

MATRIX = np.array([[-0.1, 2.0], [-2.0, -0.1]])
ACCURATE = SolverSettings(rtol=1e-9, atol=1e-11)


class LinearField(nn.Module):
    """dz/dt = z A^T, the same for every member of the batch."""

    def __init__(self, matrix: np.ndarray = MATRIX) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.as_tensor(matrix, dtype=torch.float64))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z @ self.matrix.T


class ForcedField(nn.Module):
    """dz/dt = cos(t): the solution tells whether the field saw the real time."""

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.cos(t).expand(z.shape[:-1])[..., None] * torch.ones_like(z)


class NaNField(nn.Module):
    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return z * float("nan")


def _network() -> nn.Module:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2)).double()

    class NetworkField(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            return self.network(z)

    return NetworkField()


def _exact_linear(z0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Rows of ``times`` (n_batch, n_points) from ``z0`` (n_batch, 2) at ``times[:, 0]``."""
    return np.stack(
        [
            np.stack([expm(MATRIX * (time - row[0])) @ start for time in row])
            for start, row in zip(z0, times, strict=True)
        ]
    )


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(array, dtype=torch.float64)


@pytest.mark.parametrize("shared_grid", [True, False])
def test_batched_solve_equals_solves_one_by_one(shared_grid: bool) -> None:
    field = _network()
    rng = np.random.default_rng(0)
    z0 = _tensor(rng.normal(size=(4, 2)))
    if shared_grid:
        times = _tensor(np.tile(np.linspace(0.0, 3.0, 7), (4, 1)))
    else:
        times = _tensor(np.sort(rng.uniform(0.0, 3.0, size=(4, 7)), axis=1))
    batched = solve(field, z0, times, ACCURATE, shared_grid=shared_grid)
    assert batched.ok
    assert batched.states.shape == (4, 7, 2)
    for member in range(4):
        alone = solve(
            field, z0[member : member + 1], times[member : member + 1], ACCURATE, shared_grid=True
        )
        assert_allclose(batched.states[member].detach(), alone.states[0].detach(), atol=1e-7)


def test_warped_irregular_grids_match_the_exact_linear_solution() -> None:
    rng = np.random.default_rng(1)
    z0 = rng.normal(size=(3, 2))
    times = np.stack(
        [
            np.sort(rng.uniform(0.0, 4.0, 9)),  # irregular, increasing
            np.r_[np.linspace(2.0, 3.0, 6), 3.0, 3.0, 3.0],  # padded: zero-length steps
            np.sort(rng.uniform(-3.0, 1.0, 9))[::-1],  # decreasing: backwards in time
        ]
    )
    result = solve(LinearField(), _tensor(z0), _tensor(times), ACCURATE, shared_grid=False)
    assert result.ok
    assert_allclose(result.states.detach().numpy(), _exact_linear(z0, times), atol=1e-7)


def test_warped_grids_match_scipy_on_a_field_of_time() -> None:
    times = np.array([[0.0, 0.3, 1.7, 2.0, 4.5], [10.0, 10.1, 10.2, 12.0, 13.0]])
    z0 = np.array([[1.0], [-2.0]])
    for shared_grid, grid in [(False, times), (True, times[:, :1] + np.linspace(0, 3, 5))]:
        result = solve(ForcedField(), _tensor(z0), _tensor(grid), ACCURATE, shared_grid=shared_grid)
        for member in range(2):
            reference = solve_ivp(
                lambda t, z: np.cos(t) * np.ones_like(z),
                (grid[member, 0], grid[member, -1]),
                z0[member],
                t_eval=grid[member],
                rtol=1e-10,
                atol=1e-12,
            )
            assert_allclose(result.states[member].numpy(), reference.y.T, atol=1e-7)


@pytest.mark.parametrize(
    ("method", "tolerance"), [("rk4", 5e-5), ("midpoint", 2e-2), ("bosh3", 1e-4)]
)
def test_other_methods_on_warped_grids(method: str, tolerance: float) -> None:
    rng = np.random.default_rng(2)
    z0 = rng.normal(size=(2, 2))
    times = np.stack([np.linspace(0.0, 1.0, 41), np.linspace(0.5, 2.5, 41) ** 1.1])
    settings = SolverSettings(method=method, rtol=1e-6, atol=1e-8)
    result = solve(LinearField(), _tensor(z0), _tensor(times), settings, shared_grid=False)
    assert_allclose(result.states.detach().numpy(), _exact_linear(z0, times), atol=tolerance)


def test_one_output_time_returns_the_initial_states() -> None:
    z0 = _tensor(np.ones((3, 2)))
    result = solve(LinearField(), z0, _tensor(np.zeros((3, 1))), ACCURATE, shared_grid=False)
    assert result.ok
    assert torch.equal(result.states[:, 0], z0)


def test_adjoint_gradients_equal_direct_gradients() -> None:
    times = _tensor([[0.0, 0.4, 1.5], [1.0, 1.2, 2.0]])
    z0 = _tensor([[1.0, 0.0], [0.0, -1.0]])
    gradients = []
    for adjoint in (False, True):
        field = _network()
        settings = SolverSettings(rtol=1e-9, atol=1e-11, adjoint=adjoint)
        result = solve(field, z0, times, settings, shared_grid=False)
        (result.states**2).sum().backward()
        gradients.append(torch.cat([p.grad.reshape(-1) for p in field.parameters()]))
    assert_allclose(gradients[1].numpy(), gradients[0].numpy(), rtol=1e-5, atol=1e-8)


def test_exhausted_step_budget_is_an_outcome_not_an_exception() -> None:
    fast_rotation = LinearField(np.array([[0.0, 200.0], [-200.0, 0.0]]))
    settings = SolverSettings(max_num_steps=5)
    result = solve(
        fast_rotation, _tensor([[1.0, 0.0]]), _tensor([[0.0, 10.0]]), settings, shared_grid=True
    )
    assert not result.ok
    assert result.states is None
    assert "max_num_steps" in result.failure


def test_non_finite_field_is_an_outcome_not_an_exception() -> None:
    times = _tensor([[0.0, 1.0, 2.0]])
    result = solve(NaNField(), _tensor([[1.0, 2.0]]), times, ACCURATE, shared_grid=True)
    assert not result.ok
    assert result.failure.startswith("the ODE solver stopped")


def _irregular_grids(rng: np.random.Generator) -> np.ndarray:
    return np.stack(
        [
            np.sort(rng.uniform(0.0, 2.0, 9)),  # irregular, increasing
            np.r_[np.linspace(2.0, 3.0, 6), 3.0, 3.0, 3.0],  # padded: zero-length steps
            np.sort(rng.uniform(-2.0, 0.0, 9))[::-1],  # decreasing: backwards in time
            np.full(9, 1.5),  # no span at all
        ]
    )


@pytest.mark.parametrize("nodes", [17, 33])
def test_interpolated_solve_matches_the_exact_linear_solution(nodes: int) -> None:
    rng = np.random.default_rng(3)
    z0 = rng.normal(size=(4, 2))
    times = _irregular_grids(rng)
    result = solve_interpolated(LinearField(), _tensor(z0), _tensor(times), ACCURATE, nodes)
    assert result.ok
    exact = _exact_linear(z0, times)
    error = np.abs(result.states.detach().numpy() - exact).max()
    # cubic Hermite between nodes: error ~ h^4 |z''''| / 384 with |z''''| ~ 2^4 |z|
    assert error < (4.0 / (nodes - 1)) ** 4
    assert_allclose(result.states[:, 0].detach().numpy(), z0, atol=1e-12)


def test_interpolation_error_falls_with_the_fourth_power_of_the_node_spacing() -> None:
    rng = np.random.default_rng(4)
    z0 = rng.normal(size=(4, 2))
    times = _irregular_grids(rng)
    exact = _exact_linear(z0, times)
    errors = [
        np.abs(
            solve_interpolated(LinearField(), _tensor(z0), _tensor(times), ACCURATE, nodes)
            .states.detach()
            .numpy()
            - exact
        ).max()
        for nodes in (9, 17)
    ]
    assert errors[1] < errors[0] / 8.0


def test_interpolated_solve_sees_the_real_time_and_gives_the_warped_gradient() -> None:
    times = _tensor(np.array([[0.0, 0.3, 1.7, 2.0, 2.5], [10.0, 10.1, 10.2, 11.0, 11.5]]))
    z0 = _tensor(np.array([[1.0], [-2.0]]))
    forced = solve_interpolated(ForcedField(), z0, times, ACCURATE, 33)
    expected = z0[:, None, :] + (torch.sin(times) - torch.sin(times[:, :1]))[..., None]
    assert_allclose(forced.states.numpy(), expected.numpy(), atol=1e-5)

    field = LinearField()
    start = _tensor(np.array([[1.0, 0.5], [-0.3, 0.8]]))
    gradients = []
    for interpolated in (True, False):
        field.zero_grad()
        if interpolated:
            states = solve_interpolated(field, start, times - times[:, :1], ACCURATE, 33).states
        else:
            states = solve(field, start, times - times[:, :1], ACCURATE, shared_grid=False).states
        (states**2).sum().backward()
        gradients.append(field.matrix.grad.clone())
    assert_allclose(gradients[0].numpy(), gradients[1].numpy(), rtol=1e-3)
