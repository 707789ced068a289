"""External inputs: validation and their torch modules (``skneuralode._inputs``)."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils import _safe_indexing

from skneuralode._data import validate_times, validate_trajectories
from skneuralode._inputs import (
    CallableInput,
    ConstantInputs,
    InputSignal,
    build_input_signal,
    make_input_signal,
    validate_inputs,
)

T = np.linspace(0.0, 2.0, 6)
Y = np.column_stack([np.cos(T), np.sin(T)])
U = np.column_stack([T**2, np.sign(T - 1.0)])  # two inputs sampled at T


def forcing(t: torch.Tensor) -> torch.Tensor:
    """Module-level u(t) with two inputs."""
    return torch.stack([torch.sin(t), t**2], dim=-1)


def at(signal: torch.nn.Module, times: np.ndarray, rows: np.ndarray | int = 0) -> np.ndarray:
    """Evaluate an input module at float64 numpy times and trajectory indices."""
    return signal(torch.as_tensor(times), torch.as_tensor(rows)).numpy()


def hold(sample_times: np.ndarray, sample_values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Zero-order hold by hand: the last sample at or before each time (the first before)."""
    index = np.clip(np.searchsorted(sample_times, times, side="right") - 1, 0, None)
    return sample_values[index]


# ------------------------------------------------------------------------ layouts
def test_one_trajectory_with_and_without_input_axis() -> None:
    grids = validate_trajectories(T, Y).grids
    two = validate_inputs(U, grids)
    assert (two.kind, two.n_inputs) == ("samples", 2)
    assert_array_equal(two.times, T[None]) and assert_array_equal(two.values, U[None])
    one = validate_inputs(U[:, 0], grids)
    assert one.n_inputs == 1 and one.values.shape == (1, 6, 1)


def test_shared_grid_and_own_grids() -> None:
    u = np.stack([U, 2 * U, 3 * U])
    shared = validate_inputs(u, validate_trajectories(T, np.stack([Y, Y, Y])).grids)
    assert_array_equal(shared.values, u)
    t = np.stack([T, T + 5.0, T - 5.0])
    own = validate_inputs(u, validate_trajectories(t, np.stack([Y, Y, Y])).grids)
    assert_array_equal(own.times, t) and assert_array_equal(own.values, u)
    one_input = validate_inputs(u[..., 0], validate_trajectories(t, np.stack([Y, Y, Y])).grids)
    assert one_input.values.shape == (3, 6, 1)


def test_ragged_lists_are_padded_with_their_last_sample() -> None:
    t = [T, T[:4]]
    grids = validate_trajectories(t, [Y, Y[:4]]).grids
    inputs = validate_inputs([U, U[:4]], grids)
    assert inputs.values.shape == (2, 6, 2)
    assert_array_equal(inputs.times[1], [*T[:4], T[3], T[3]])
    assert_array_equal(inputs.values[1, 4:], [U[3], U[3]])
    one_input = validate_inputs([U[:, 1], U[:4, 1]], grids)
    assert one_input.values.shape == (2, 6, 1)


@pytest.mark.parametrize(
    ("values", "n_traj", "expected"),
    [
        (2.5, 1, [[2.5]]),
        ([1.0, 2.0], 1, [[1.0, 2.0]]),
        ([[1.0], [2.0], [3.0]], 3, [[1.0], [2.0], [3.0]]),
    ],
)
def test_constant_inputs(values: object, n_traj: int, expected: list) -> None:
    grids = validate_times(np.tile(T, (n_traj, 1)) if n_traj > 1 else T)
    inputs = validate_inputs(ConstantInputs(values), grids)
    assert inputs.kind == "constant"
    assert_array_equal(inputs.values[:, 0], expected)
    signal = make_input_signal(inputs)
    times = np.array([-10.0, 0.0, 1.3, 100.0])
    for row in range(n_traj):
        assert_array_equal(at(signal, times, row), np.repeat([expected[row]], 4, axis=0))


def test_constant_inputs_are_sliced_by_trajectory_in_model_selection() -> None:
    doses = ConstantInputs([[0.5], [1.0], [2.0]])
    sliced = _safe_indexing(doses, np.array([0, 2]))
    assert isinstance(sliced, ConstantInputs)
    assert_array_equal(sliced, [[0.5], [2.0]])


def test_callable_inputs_are_checked_and_evaluated_at_physical_times() -> None:
    inputs = validate_inputs(forcing, validate_times(T))
    assert (inputs.kind, inputs.n_inputs, inputs.function) == ("callable", 2, forcing)
    signal = make_input_signal(inputs, time_origin=10.0, time_scale=2.0)
    scaled = np.array([[0.0, 0.5], [-1.0, 3.0]])
    expected = forcing(torch.as_tensor(scaled * 2.0 + 10.0)).numpy()
    assert_allclose(at(signal, scaled, np.zeros((2, 2), dtype=int)), expected, rtol=1e-15)
    one = validate_inputs(torch.cos, validate_times(T))
    assert one.n_inputs == 1 and at(make_input_signal(one), T).shape == (6, 1)


# ------------------------------------------------------------------ interpolation
def test_unsorted_times_give_the_same_signal_as_sorted() -> None:
    rng = np.random.default_rng(0)
    order = rng.permutation(T.size)
    sorted_inputs = validate_inputs(U, validate_trajectories(T, Y).grids)
    shuffled = validate_inputs(U[order], validate_trajectories(T[order], Y[order]).grids)
    assert_array_equal(shuffled.times, sorted_inputs.times)
    assert_array_equal(shuffled.values, sorted_inputs.values)
    orders = np.stack([rng.permutation(T.size) for _ in range(3)])  # own order per row
    t, u = np.stack([T, T + 1, T + 2]), np.stack([U, -U, 2 * U])
    rows = np.arange(3)[:, None]
    grids = validate_trajectories(t[rows, orders], np.zeros((3, 6, 2))[rows, orders]).grids
    own = validate_inputs(u[rows, orders], grids)
    assert_array_equal(own.times, t) and assert_array_equal(own.values, u)


@pytest.mark.parametrize("interpolation", ["linear", "previous"])
def test_interpolation_matches_numpy_on_irregular_ragged_grids(interpolation: str) -> None:
    rng = np.random.default_rng(1)
    t = [np.sort(rng.uniform(0, 10, n)) for n in (7, 3, 12)]
    u = [rng.normal(size=(n, 2)) for n in (7, 3, 12)]
    signal = make_input_signal(validate_inputs(u, validate_times(t)), interpolation=interpolation)
    rows = rng.integers(0, 3, 10_000)
    times = rng.uniform(-2, 12, rows.size)
    times[:36] = np.concatenate(t + t)[:36]  # exactly at samples (and their neighbours)
    rows[:36] = np.repeat([0, 1, 2, 0, 1, 2], [7, 3, 12, 7, 3, 4])
    batched = at(signal, times, rows)
    expected = np.empty_like(batched)
    for member, (time, row) in enumerate(zip(times, rows, strict=True)):  # per member
        if interpolation == "linear":
            expected[member] = [np.interp(time, t[row], u[row][:, k]) for k in range(2)]
        else:
            expected[member] = hold(t[row], u[row], np.array([time]))[0]
    assert_allclose(batched, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("interpolation", ["linear", "previous"])
def test_extrapolation_is_constant(interpolation: str) -> None:
    signal = InputSignal(T[None], U[None], interpolation=interpolation)
    assert_array_equal(at(signal, np.array([-1e9, -1.0, T[0]])), np.repeat(U[:1], 3, 0))
    assert_array_equal(at(signal, np.array([T[-1], 3.0, 1e9])), np.repeat(U[-1:], 3, 0))


def test_zero_order_hold_switches_at_the_sample_time() -> None:
    signal = InputSignal(T[None], U[None], interpolation="previous")
    just_before = np.nextafter(T[3], -np.inf)
    assert_array_equal(at(signal, np.array([just_before, T[3]])), U[2:4])


def test_any_leading_shape_and_broadcast_time() -> None:
    rng = np.random.default_rng(2)
    signal = InputSignal(np.stack([T, T + 1.0]), np.stack([U, -U]))
    times, rows = rng.uniform(0, 3, (4, 5, 6)), rng.integers(0, 2, (4, 5, 6))
    grid = at(signal, times, rows)
    assert grid.shape == (4, 5, 6, 2)
    assert_array_equal(grid.reshape(-1, 2), at(signal, times.ravel(), rows.ravel()))
    shared_time = signal(torch.tensor(1.25, dtype=torch.float64), torch.tensor([0, 1, 1]))
    assert shared_time.shape == (3, 2)
    assert_array_equal(shared_time[1], shared_time[2])


def test_time_scaling_and_float32_keep_samples_exact() -> None:
    origin, scale = 1.7e9, 3600.0  # seconds since 1970, hours: float32 would lose t itself
    t = origin + scale * T
    signal = InputSignal(
        t[None], U[None], interpolation="previous", time_origin=origin, time_scale=scale
    ).to(torch.float32)
    scaled = torch.as_tensor((t - origin) / scale, dtype=torch.float32)
    values = signal(scaled, torch.zeros(6, dtype=torch.long))
    assert values.dtype == torch.float32
    assert_array_equal(values.numpy(), U.astype(np.float32))
    linear = InputSignal(
        t[None], U[None], time_origin=origin, time_scale=scale, dtype=torch.float32
    )
    middle = torch.as_tensor((T[:-1] + T[1:]) / 2, dtype=torch.float32)
    assert_allclose(
        linear(middle, torch.tensor(0)).numpy(), (U[:-1] + U[1:]) / 2, rtol=1e-6, atol=1e-6
    )


def test_inputs_are_data_without_gradient() -> None:
    signal = InputSignal(T[None], U[None])
    times = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    assert not signal(times, torch.tensor(0)).requires_grad
    assert [name for name, _ in signal.named_buffers()] == ["sample_times", "sample_values"]
    assert not list(signal.parameters())


# -------------------------------------------------------------------- persistence
@pytest.mark.parametrize("interpolation", ["linear", "previous"])
def test_record_rebuilds_the_signal_from_its_state_dict(interpolation: str) -> None:
    t = [T, T[:3] + 0.1]
    inputs = validate_inputs([U, U[:3]], validate_times(t))
    signal = make_input_signal(inputs, interpolation=interpolation, time_origin=0.5, time_scale=2.0)
    rebuilt = build_input_signal(signal.record())
    rebuilt.load_state_dict(signal.state_dict(), strict=True)
    times, rows = np.linspace(-1, 2, 50), np.arange(50) % 2
    assert_array_equal(at(rebuilt, times, rows), at(signal, times, rows))
    assert (rebuilt.interpolation, rebuilt.time_origin, rebuilt.time_scale) == (
        interpolation,
        0.5,
        2.0,
    )


def test_records_are_plain_data_and_modules_pickle() -> None:
    signal = InputSignal(T[None], U[None], interpolation="previous", time_origin=1.0)
    plain = dataclasses.asdict(signal.record())
    assert json.loads(json.dumps(plain)) == plain
    callable_signal = CallableInput(forcing, 2)
    for module in (signal, callable_signal):
        copy = pickle.loads(pickle.dumps(module))
        assert_array_equal(at(copy, T), at(module, T))


def test_record_of_a_callable_names_it() -> None:
    signal = CallableInput(forcing, 2, time_scale=3.0)
    record = signal.record()
    assert (record.kind, record.function, record.n_inputs) == ("callable", forcing, 2)
    rebuilt = build_input_signal(record)
    assert_array_equal(at(rebuilt, T), at(signal, T))


# ---------------------------------------------------------------------- bad input
GRIDS = validate_trajectories(np.stack([T, T + 1]), np.stack([Y, Y])).grids


def nan_forcing(t: torch.Tensor) -> torch.Tensor:
    return torch.log(t - 1.0)


def broken_forcing(t: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("no data for this period")


@pytest.mark.parametrize(
    ("u", "error", "match"),
    [
        (None, TypeError, "u must be an array of inputs or a callable"),
        (np.stack([U, U[::-1]])[:, :5], ValueError, r"u\[0\] has 5 time points .* has 6"),
        (
            np.stack([U, U, U]),
            ValueError,
            "u has 3 trajectories but t describes 2; u must be sampled",
        ),
        (U, ValueError, r"u must be sampled at t like y, shape \(2, 6\) or \(2, 6, n_inputs\)"),
        (np.where(T > 1, np.nan, 0.0)[None].repeat(2, 0), ValueError, "u must be finite"),
        (np.stack([U, np.full_like(U, np.inf)]), ValueError, r"finite.*\(trajectory 1\)"),
        (np.zeros((2, 6, 0)), ValueError, "u has no input"),
        (np.full((2, 6), "a"), TypeError, "u must hold real numbers"),
        (ConstantInputs([1.0, 2.0]), ValueError, r"ConstantInputs\) must have shape \(2, "),
        (ConstantInputs([[1.0], [np.nan]]), ValueError, "u must be finite"),
        (lambda t: t[:3], ValueError, r"u\(t\) must return shape \(12, n_inputs\)"),
        (nan_forcing, ValueError, r"u\(t\) must be finite"),
        (broken_forcing, TypeError, r"u\(t\) failed .*no data for this period"),
    ],
)
def test_bad_inputs_name_u_and_what_was_expected(u: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        validate_inputs(u, GRIDS)


def test_ragged_inputs_of_different_widths_or_lengths() -> None:
    grids = validate_times([T, T[:4]])
    with pytest.raises(ValueError, match="same number of inputs, got"):
        validate_inputs([U, U[:4, :1]], grids)
    with pytest.raises(ValueError, match=r"u\[1\] has 6 time points but the matching t has 4"):
        validate_inputs([U, U], grids)


def test_wrong_number_of_inputs_for_a_fitted_model() -> None:
    with pytest.raises(ValueError, match=r"u has 2 input.* fitted with 3"):
        validate_inputs(U, validate_times(T), n_inputs=3)


def test_bad_interpolation_and_time_scale() -> None:
    with pytest.raises(ValueError, match="interpolation must be one of"):
        InputSignal(T[None], U[None], interpolation="cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="time_scale must be positive"):
        InputSignal(T[None], U[None], time_scale=0.0)
