"""Validation and the internal batch form (``skneuralode._data``)."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from numpy.testing import assert_array_equal

import skneuralode._data
from skneuralode._data import validate_states, validate_times, validate_trajectories

T = np.linspace(0.0, 2.0, 6)
Y = np.column_stack([np.cos(T), np.sin(T)])


def test_one_trajectory() -> None:
    batch = validate_trajectories(T, Y)
    assert batch.grids.layout.kind == "single"
    assert batch.times.shape == (1, 6)
    assert batch.states.shape == (1, 6, 2)
    assert_array_equal(batch.lengths, [6])
    assert_array_equal(batch.states[0], Y)
    restored = batch.grids.restore_order([batch.states[0]])
    assert restored.shape == (6, 2)


def test_one_state_without_state_axis() -> None:
    batch = validate_trajectories(T, Y[:, 0])
    assert batch.states.shape == (1, 6, 1)
    assert batch.grids.layout.squeeze_states
    restored = batch.grids.restore_order([batch.states[0]])
    assert restored.shape == (6,)
    assert_array_equal(restored, Y[:, 0])


def test_several_trajectories_on_a_shared_grid() -> None:
    y = np.stack([Y, 2 * Y, 3 * Y])
    batch = validate_trajectories(T, y)
    assert batch.grids.layout.kind == "shared"
    assert batch.n_traj == 3
    assert_array_equal(batch.times, np.tile(T, (3, 1)))
    assert_array_equal(batch.states, y)
    assert batch.grids.restore_order(list(batch.states)).shape == (3, 6, 2)


@pytest.mark.parametrize("one_state", [False, True])
def test_several_trajectories_with_own_grids(one_state: bool) -> None:
    t = np.stack([T, T + 10.0])
    y = np.stack([Y, -Y])
    y = y[..., 0] if one_state else y
    batch = validate_trajectories(t, y)
    assert batch.grids.layout.kind == "grids"
    assert_array_equal(batch.times, t)
    assert batch.states.shape == (2, 6, 1 if one_state else 2)
    restored = batch.grids.restore_order(list(batch.states))
    assert restored.shape == y.shape
    assert_array_equal(restored, y)


def test_ragged_trajectories_are_padded_and_restored() -> None:
    t = [T, T[:4] + 1.0]
    y = [Y, Y[:4] * 2.0]
    batch = validate_trajectories(t, y)
    assert batch.grids.layout.kind == "ragged"
    assert_array_equal(batch.lengths, [6, 4])
    # Padding repeats the last time and is unobserved.
    assert_array_equal(batch.times[1], [*(T[:4] + 1.0), T[3] + 1.0, T[3] + 1.0])
    assert np.isnan(batch.states[1, 4:]).all()
    assert not batch.observed[1, 4:].any()
    restored = batch.grids.restore_order([batch.states[i, :n] for i, n in enumerate(batch.lengths)])
    assert isinstance(restored, list)
    assert [r.shape for r in restored] == [(6, 2), (4, 2)]
    assert_array_equal(restored[1], y[1])


def test_list_of_equal_length_arrays_keeps_list_layout() -> None:
    batch = validate_trajectories([T, T], [Y, Y])
    assert batch.grids.layout.kind == "ragged"
    assert isinstance(batch.grids.restore_order(list(batch.states)), list)


def test_ragged_one_state_lists() -> None:
    batch = validate_trajectories([T, T[:3]], [Y[:, 0], Y[:3, 0]])
    assert batch.grids.layout.squeeze_states
    restored = batch.grids.restore_order([batch.states[0, :6], batch.states[1, :3]])
    assert [r.shape for r in restored] == [(6,), (3,)]


def test_unsorted_uneven_times_are_sorted_and_restored() -> None:
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0.0, 5.0, 12))
    y = np.column_stack([t**2, -t])
    order = rng.permutation(12)
    shuffled = validate_trajectories(t[order], y[order])
    tidy = validate_trajectories(t, y)
    assert_array_equal(shuffled.times, tidy.times)
    assert_array_equal(shuffled.states, tidy.states)
    # Values computed in sorted order come back in the caller's order.
    assert_array_equal(shuffled.grids.restore_order([tidy.states[0]]), y[order])


def test_each_row_of_2d_times_is_sorted_on_its_own() -> None:
    t = np.array([[3.0, 1.0, 2.0], [0.0, 2.0, 1.0]])
    y = t[..., None] * 10.0
    batch = validate_trajectories(t, y)
    assert_array_equal(batch.times, [[1.0, 2.0, 3.0], [0.0, 1.0, 2.0]])
    assert_array_equal(batch.states[..., 0], batch.times * 10.0)
    assert_array_equal(batch.grids.restore_order(list(batch.states)), y)


def test_nan_marks_unobserved_values() -> None:
    y = Y.copy()
    y[0, 0] = np.nan
    y[[2, 3], 1] = np.nan
    batch = validate_trajectories(T, y)
    assert_array_equal(batch.observed[0], ~np.isnan(y))
    # The first observed value of each state, even if it is not at the first time.
    assert_array_equal(batch.first_observed_states(), [[Y[1, 0], Y[0, 1]]])


def test_pandas_inputs() -> None:
    t = pd.Series(T, name="time")
    frame = pd.DataFrame(Y, columns=["x", "v"])
    batch = validate_trajectories(t, frame)
    assert_array_equal(batch.states[0], Y)
    series_batch = validate_trajectories(t, frame["x"])
    assert series_batch.grids.layout.squeeze_states
    assert_array_equal(series_batch.states[0, :, 0], Y[:, 0])


def test_lists_integers_and_tensors_are_accepted() -> None:
    batch = validate_trajectories([0, 1, 2, 3], torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    assert batch.times.dtype == np.float64
    assert_array_equal(batch.times[0], [0.0, 1.0, 2.0, 3.0])
    assert_array_equal(batch.states[0, :, 0], [1.0, 2.0, 3.0, 4.0])


def test_validate_times_for_prediction_allows_one_point() -> None:
    grids = validate_times(np.array([2.5]))
    assert_array_equal(grids.sorted_times[0], [2.5])


BAD_TIMES = [
    (None, TypeError, "t must be an array of real numbers, got None"),
    ("abcdef", TypeError, "t must be an array of real numbers, got a string"),
    (np.array(["a", "b"]), TypeError, "t must hold real numbers"),
    (np.arange(2).astype("datetime64[D]"), TypeError, "t must hold real numbers.*dates"),
    ([1, object()], TypeError, "t must hold real numbers"),
    (np.array([0.0, 1.0 + 1j]), (TypeError, ValueError), "t must hold real numbers"),
    (np.zeros((2, 2, 2)), ValueError, "t must be 1-D .* got shape"),
    (np.zeros((0, 4)), ValueError, "t holds no trajectory"),
    (np.array([0.0, np.nan, 2.0]), ValueError, "t must be finite"),
    (np.array([0.0, np.inf, 2.0]), ValueError, "t must be finite"),
    (np.array([0.0, 1.0, 1.0]), ValueError, "t has duplicate time 1.0"),
    (np.array([0.0]), ValueError, "t needs at least 2 time point"),
    (np.array([]), ValueError, "t needs at least 2 time point"),
]


@pytest.mark.parametrize(("t", "error", "match"), BAD_TIMES)
def test_malformed_times(t: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        validate_trajectories(t, np.zeros((3, 1)))


def test_malformed_times_of_one_trajectory_among_several_are_named() -> None:
    with pytest.raises(ValueError, match=r"t\[1\] must be finite"):
        validate_trajectories([T, np.array([0.0, np.nan])], [Y, Y[:2]])
    with pytest.raises(ValueError, match=r"t\[0\] has duplicate time"):
        validate_trajectories(np.array([[0.0, 0.0], [0.0, 1.0]]), np.zeros((2, 2, 1)))


BAD_STATES = [
    (None, ValueError, "y"),
    (np.zeros(5), ValueError, "y has 5 time points but the matching t has 6"),
    (np.zeros((7, 2)), ValueError, "y has 7 time points but the matching t has 6"),
    (np.zeros((6, 0)), ValueError, "y has no state"),
    (np.zeros((1, 6, 2, 1)), ValueError, "y must have shape"),
    (np.where(np.eye(6, 2) > 0, np.inf, 0.0), ValueError, "y contains inf"),
    (np.full((6, 2), np.nan), ValueError, r"holds no observation at all"),
    ([[0.0, 1.0], [2.0]] * 3, ValueError, "y must be a rectangular array"),
    ([["a"], ["b"], ["c"], ["d"], ["e"], ["f"]], TypeError, "y must hold real numbers"),
    (np.zeros((2, 5, 2)), ValueError, r"y\[0\] has 5 time points but the matching t has 6"),
]


@pytest.mark.parametrize(("y", "error", "match"), BAD_STATES)
def test_malformed_states(y: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        validate_trajectories(T, y)


def test_malformed_states_with_2d_times() -> None:
    t = np.stack([T, T, T])
    with pytest.raises(ValueError, match="y has 2 trajectories but t has 3"):
        validate_trajectories(t, np.zeros((2, 6, 1)))
    with pytest.raises(ValueError, match=r"y must have shape \(n_traj, n_times, n_states\)"):
        validate_trajectories(t, np.zeros(6))


def test_malformed_ragged_states() -> None:
    t = [T, T[:4]]
    with pytest.raises(TypeError, match="y must be a list of arrays when t is a list"):
        validate_trajectories(t, np.zeros((2, 6, 1)))
    with pytest.raises(ValueError, match="y has 1 trajectories but t has 2"):
        validate_trajectories(t, [Y])
    with pytest.raises(ValueError, match="y: all trajectories need the same number of states"):
        validate_trajectories(t, [Y, Y[:4, :1]])
    with pytest.raises(ValueError, match=r"y\[1\] has 6 time points but the matching t has 4"):
        validate_trajectories(t, [Y, Y])
    with pytest.raises(ValueError, match=r"y\[1\] holds no observation at all"):
        validate_trajectories(t, [Y, np.full((4, 2), np.nan)])


def test_a_state_never_observed_is_a_hidden_state() -> None:
    batch = validate_trajectories(T, np.column_stack([Y[:, 0], np.full(len(T), np.nan)]))
    assert batch.hidden_states == (1,)
    assert validate_trajectories(T, Y).hidden_states == ()


def test_validate_states() -> None:
    assert validate_states([1.0, 2.0], 2, name="y0").shape == (1, 2)
    assert validate_states(np.ones((4, 2)), 2, name="y0").shape == (4, 2)
    # One state: a 1-D array is a set of samples.
    assert validate_states(np.arange(3.0), 1, name="y").shape == (3, 1)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.ones(3), r"y0 must have shape \(n_samples, 2\) or \(2,\)"),
        (np.ones((4, 3)), r"y0 must have shape .* got shape \(4, 3\)"),
        (np.ones((1, 1, 2)), "y0 must have shape"),
        (np.ones((0, 2)), "y0 is empty"),
        (np.array([1.0, np.nan]), "y0 must be finite"),
        (np.array([1.0, np.inf]), "y0 must be finite"),
    ],
)
def test_malformed_validate_states(value: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_states(value, 2, name="y0")


# ------------------------------------------------------ missing values in every idiom
#: A tiny fit, enough to tell whether two inputs were read as the same data.
TINY = {"hidden_layer_sizes": (8,), "max_iter": 20, "device": "cpu", "random_state": 0}


def with_gaps(y: np.ndarray) -> np.ndarray:
    """``y`` with a few values not observed (NaN)."""
    gappy = y.copy()
    gappy[1, 0] = gappy[3, 1] = gappy[4, 0] = np.nan
    return gappy


def test_a_masked_array_reads_as_nan_and_its_fill_value_is_never_data() -> None:
    reference = with_gaps(Y)
    masked = np.ma.masked_invalid(reference)
    masked.data[np.isnan(reference)] = 1e20  # what numpy's default fill value looks like
    batch = validate_trajectories(T, masked)
    assert_array_equal(batch.states[0], reference)
    assert masked.data[1, 0] == 1e20  # the caller's array is left as it was
    integers = np.ma.masked_array(np.arange(12).reshape(6, 2), mask=np.isnan(reference))
    assert_array_equal(np.isnan(validate_trajectories(T, integers).states[0]), np.isnan(reference))


def test_masked_times_are_missing_times_and_refused() -> None:
    t = np.ma.masked_array(T, mask=[False, True, False, False, False, False])
    with pytest.raises(ValueError, match=r"t must be finite.*masked or NA"):
        validate_trajectories(t, Y)


@pytest.mark.parametrize(
    "convert",
    [
        pytest.param(lambda y: pd.DataFrame(y).astype("Float64"), id="Float64"),
        pytest.param(
            lambda y: pd.DataFrame(y).astype(object).where(~np.isnan(y), pd.NA), id="object-NA"
        ),
        pytest.param(
            lambda y: pd.DataFrame(y).astype(object).where(~np.isnan(y), None), id="object-None"
        ),
        pytest.param(
            lambda y: [[pd.NA if np.isnan(v) else v for v in row] for row in y], id="list-NA"
        ),
        pytest.param(
            lambda y: [[None if np.isnan(v) else v for v in row] for row in y], id="list-None"
        ),
    ],
)
def test_pandas_na_none_and_nullable_dtypes_read_as_nan(convert: object) -> None:
    reference = with_gaps(Y)
    batch = validate_trajectories(T, convert(reference))
    assert_array_equal(batch.states[0], reference)


def test_nullable_integer_and_boolean_columns_with_na() -> None:
    frame = pd.DataFrame(
        {
            "count": pd.array([1, None, 3, 4, 5, 6], dtype="Int64"),
            "on": pd.array([True, False, None, True, True, False], dtype="boolean"),
        }
    )
    states = validate_trajectories(T, frame).states[0]
    assert_array_equal(states[:, 0], [1.0, np.nan, 3.0, 4.0, 5.0, 6.0])
    assert_array_equal(states[:, 1], [1.0, 0.0, np.nan, 1.0, 1.0, 0.0])


def test_nullable_times_without_na_are_times_and_with_na_are_refused() -> None:
    for dtype in ("Int64", "Float64"):
        t = pd.Series(np.arange(6), dtype=dtype)
        assert_array_equal(validate_trajectories(t, Y).times[0], np.arange(6.0))
    with pytest.raises(ValueError, match="t must be finite"):
        validate_trajectories(pd.Series([0, 1, None, 3, 4, 5], dtype="Int64"), Y)
    with pytest.raises(ValueError, match=r"t\[1\] must be finite"):
        validate_trajectories([T, [0.0, pd.NA, 2.0]], [Y, Y[:3]])


def test_none_reads_as_nan_without_pandas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "pandas")  # pandas is a development extra only
    batch = validate_trajectories(
        T, [[None if np.isnan(v) else v for v in r] for r in with_gaps(Y)]
    )
    assert_array_equal(batch.states[0], with_gaps(Y))


def test_tensors_keep_their_values_and_nan() -> None:
    reference = with_gaps(Y)
    batch = validate_trajectories(torch.as_tensor(T), torch.as_tensor(reference))
    assert_array_equal(batch.states[0], reference)


def test_tensors_of_dtypes_that_numpy_lacks_are_read() -> None:
    values = [[0.5, -2.0], [1.0, np.nan], [0.25, 4.0]]  # exact in bfloat16
    batch = validate_trajectories(T[:3], torch.tensor(values, dtype=torch.bfloat16))
    assert_array_equal(batch.states[0], values)


@pytest.mark.parametrize(
    "missing",
    [
        pytest.param(np.ma.masked_invalid, id="masked"),
        pytest.param(lambda y: pd.DataFrame(y).astype("Float64"), id="pandas-NA"),
    ],
)
def test_a_fit_on_missing_values_equals_the_fit_on_nan(missing: object) -> None:
    from skneuralode import NeuralODERegressor

    t = np.linspace(0.0, 4.0, 20)
    y = np.column_stack([np.cos(t), -np.sin(t)])
    y[[2, 7, 11], 0] = np.nan
    y[[5, 13], 1] = np.nan
    reference = NeuralODERegressor(**TINY).fit(t, y).predict(t)
    gappy = missing(y)
    if isinstance(gappy, np.ma.MaskedArray):
        gappy.data[gappy.mask] = 1e20  # the fill value must never be fitted as data
    predicted = NeuralODERegressor(**TINY).fit(t, gappy).predict(t)
    np.testing.assert_allclose(predicted, reference, rtol=0.0, atol=1e-12)


# ------------------------------------------------------------- the cost of padding
def ragged_with_one_long_trajectory(n_long: int, n_short: int) -> tuple[list, list]:
    lengths = [n_long] + [2] * n_short
    return [np.arange(float(n)) for n in lengths], [np.zeros(n) for n in lengths]


def test_padding_that_would_exhaust_memory_is_refused_with_its_cost() -> None:
    t, y = ragged_with_one_long_trajectory(2_000_000, 300)  # 9 GiB padded, 30 MiB of data
    with pytest.raises(ValueError, match=r"t and y: padding 301 trajectories .* 9\.0 GiB"):
        validate_trajectories(t, y)


def test_wasteful_padding_is_warned_about_with_its_cost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skneuralode._data, "PADDING_WARNING_BYTES", 2**20)
    t, y = ragged_with_one_long_trajectory(2_000, 100)  # 3.1 MiB padded, 35 KiB of data
    with pytest.warns(UserWarning, match=r"t and y: padding 101 trajectories .* 3\.1 MiB"):
        batch = validate_trajectories(t, y)
    assert batch.states.shape == (101, 2_000, 1)
    t, y = ragged_with_one_long_trajectory(100_000, 10)  # 15 MiB of padding, but 11 times
    # the data: not wasteful enough to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_trajectories(t, y)
