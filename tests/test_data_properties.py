"""Properties of the data layer (``skneuralode._data``), checked on random inputs.

Valid inputs of every layout (one trajectory with or without a state axis, several on a
shared grid, several with their own grids, ragged lists), with times in any order and
NaN for unobserved values, come out sorted, padded and masked, and go back to the
caller's order and layout unchanged. The same inputs with one thing broken (NaN or inf
in ``t``, inf in ``y``, a duplicate time, a missing time point, a never-observed state,
complex or string values, a one-point series) raise our own ``ValueError``/``TypeError``
naming the argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import skneuralode._data
from skneuralode._data import validate_states, validate_times, validate_trajectories

DATA_MODULE = Path(skneuralode._data.__file__).resolve()
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def time_grids(draw: st.DrawFn, n_times: int) -> np.ndarray:
    """Distinct finite times in a random order."""
    values = draw(st.lists(finite, min_size=n_times, max_size=n_times, unique=True))
    return np.array(draw(st.permutations(values)), dtype=float)


@st.composite
def observations(draw: st.DrawFn, n_times: int, n_states: int) -> np.ndarray:
    """States with some NaN (not observed), every state seen at least once."""
    values = np.array(
        draw(st.lists(finite, min_size=n_times * n_states, max_size=n_times * n_states))
    ).reshape(n_times, n_states)
    missing = np.array(
        draw(st.lists(st.booleans(), min_size=n_times * n_states, max_size=n_times * n_states))
    ).reshape(n_times, n_states)
    seen_row = draw(st.integers(0, n_times - 1))
    missing[seen_row] = False
    return np.where(missing, np.nan, values)


@dataclass(frozen=True)
class Case:
    """A valid ``(t, y)`` in some layout, with what the data layer should make of it."""

    kind: str
    t: Any
    y: Any
    times: list[np.ndarray]  # per trajectory, caller's order
    states: list[np.ndarray]  # per trajectory, (n_times, n_states), caller's order
    squeeze: bool


@st.composite
def valid_cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["single", "shared", "grids", "ragged"]))
    n_states = draw(st.integers(1, 3))
    squeeze = n_states == 1 and kind in {"single", "grids", "ragged"} and draw(st.booleans())
    n_traj = 1 if kind == "single" else draw(st.integers(1, 3))
    if kind == "ragged":
        lengths = draw(st.lists(st.integers(2, 8), min_size=2, max_size=3, unique=True))
        n_traj = len(lengths)
    else:
        lengths = [draw(st.integers(2, 8))] * n_traj
    shared = draw(time_grids(lengths[0]))
    times = [
        shared if kind in {"single", "shared"} else draw(time_grids(length)) for length in lengths
    ]
    states = [draw(observations(length, n_states)) for length in lengths]
    caller_states = [s[:, 0] if squeeze else s for s in states]
    if kind == "single":
        t, y = times[0], caller_states[0]
    elif kind == "shared":
        t, y = times[0], np.stack(caller_states)
    elif kind == "grids":
        t, y = np.stack(times), np.stack(caller_states)
    else:
        t, y = list(times), list(caller_states)
    return Case(kind, t, y, times, states, squeeze)


def restored_per_trajectory(case: Case, restored: Any) -> list[np.ndarray]:
    if case.kind == "single":
        return [restored]
    return list(restored)


@PROPERTY_SETTINGS
@given(valid_cases())
def test_valid_inputs_are_sorted_padded_and_come_back_in_the_callers_order(case: Case) -> None:
    batch = validate_trajectories(case.t, case.y)
    assert batch.grids.layout.kind == case.kind
    assert batch.grids.layout.squeeze_states == case.squeeze
    assert batch.n_traj == len(case.times)
    assert batch.n_states == case.states[0].shape[1]
    np.testing.assert_array_equal(batch.lengths, [len(times) for times in case.times])
    for row, (times, states) in enumerate(zip(case.times, case.states, strict=True)):
        length = len(times)
        order = np.argsort(times)
        np.testing.assert_array_equal(batch.times[row, :length], times[order])
        assert np.all(np.diff(batch.times[row, :length]) > 0)
        np.testing.assert_array_equal(batch.states[row, :length], states[order])
        assert np.all(batch.times[row, length:] == times.max())  # padding repeats the end
        assert np.all(np.isnan(batch.states[row, length:]))  # ... and is never observed
    sorted_states = [batch.states[row, :length] for row, length in enumerate(batch.lengths)]
    restored = batch.grids.restore_order(sorted_states)
    if case.kind == "ragged":
        assert isinstance(restored, list)
    else:
        assert isinstance(restored, np.ndarray)
        assert restored.shape == np.shape(case.y)
    for back, original in zip(
        restored_per_trajectory(case, restored), restored_per_trajectory(case, case.y), strict=True
    ):
        np.testing.assert_array_equal(back, original)


@PROPERTY_SETTINGS
@given(valid_cases())
def test_prediction_times_round_trip_in_every_layout(case: Case) -> None:
    grids = validate_times(case.t)
    one_grid = case.kind in {"single", "shared"}  # a 1-D t is one grid, whatever y was
    expected = case.times[:1] if one_grid else case.times
    assert grids.layout.kind == ("single" if one_grid else case.kind)
    for sorted_times, order, times in zip(grids.sorted_times, grids.orders, expected, strict=True):
        np.testing.assert_array_equal(sorted_times, times[order])
        assert np.all(np.diff(sorted_times) > 0)
    values = [times[order][:, None] for times, order in zip(expected, grids.orders, strict=True)]
    restored = grids.restore_order(values)
    flat = [restored] if one_grid else list(restored)
    for back, times in zip(flat, expected, strict=True):
        np.testing.assert_array_equal(np.reshape(back, -1), times)


@PROPERTY_SETTINGS
@given(st.integers(1, 4), st.integers(1, 5), st.data())
def test_states_keep_their_values_and_gain_a_sample_axis(
    n_states: int, n_samples: int, data: st.DataObject
) -> None:
    values = np.array(
        data.draw(st.lists(finite, min_size=n_samples * n_states, max_size=n_samples * n_states))
    ).reshape(n_samples, n_states)
    np.testing.assert_array_equal(validate_states(values, n_states, name="y0"), values)
    np.testing.assert_array_equal(validate_states(values[0], n_states, name="y0"), values[:1])


# --------------------------------------------------------------------- invalid inputs
def _first_trajectory_times(case: Case) -> np.ndarray:
    return case.t if case.kind in {"single", "shared"} else case.t[0]


def _replace_times(case: Case, times: np.ndarray) -> Any:
    if case.kind in {"single", "shared"}:
        return times
    if case.kind == "grids":
        return np.concatenate([times[None, :], case.t[1:]])
    return [times, *case.t[1:]]


def _replace_first_states(case: Case, states: np.ndarray) -> Any:
    if case.kind == "single":
        return states
    if case.kind == "ragged":
        return [states, *case.y[1:]]
    copied = np.array(case.y, dtype=states.dtype)
    copied[0] = states
    return copied


def _first_states(case: Case) -> np.ndarray:
    return np.asarray(case.y if case.kind == "single" else case.y[0], dtype=float)


def broken(case: Case, how: str, index: int) -> tuple[Any, Any, str]:
    """``case`` with one thing broken, and the argument the error must name."""
    times = np.array(_first_trajectory_times(case), dtype=float)
    states = _first_states(case)
    position = index % len(times)
    t_name = r"t(\[0\])?" if case.kind in {"grids", "ragged"} else "t"
    y_name = r"y(\[0\])?"
    if how in {"nan in t", "inf in t"}:
        times[position] = np.nan if how == "nan in t" else -np.inf
        return _replace_times(case, times), case.y, t_name
    if how == "duplicate time":
        times[position] = times[(position + 1) % len(times)]
        return _replace_times(case, times), case.y, t_name
    if how == "missing time point":  # y has more points than t (or t has too few)
        either = r"(t|y)(\[0\])?"
        if case.kind == "grids":  # a 2-D t loses its last column
            return case.t[:, :-1], case.y, either
        return _replace_times(case, times[:-1]), case.y, either
    if how == "one point":
        if case.kind == "grids":
            return case.t[:, :1], np.asarray(case.y)[:, :1], t_name
        if case.kind in {"single", "shared"}:
            first = case.y[:1] if case.kind == "single" else case.y[:, :1]
            return times[:1], first, t_name
        return _replace_times(case, times[:1]), _replace_first_states(case, states[:1]), t_name
    if how == "inf in y":
        states[position] = np.inf
        return case.t, _replace_first_states(case, states), y_name
    if how == "state never observed":
        states[:] = np.nan
        return case.t, _replace_first_states(case, states), y_name
    if how == "complex y":
        return case.t, _replace_first_states(case, states + 1j), y_name
    assert how == "string y"
    return case.t, _replace_first_states(case, states.astype(str)), y_name


@PROPERTY_SETTINGS
@given(
    valid_cases(),
    st.sampled_from(
        [
            "nan in t",
            "inf in t",
            "duplicate time",
            "missing time point",
            "one point",
            "inf in y",
            "state never observed",
            "complex y",
            "string y",
        ]
    ),
    st.integers(0, 100),
)
def test_broken_inputs_raise_our_error_naming_the_argument(
    case: Case, how: str, index: int
) -> None:
    t, y, argument = broken(case, how, index)
    with pytest.raises((ValueError, TypeError)) as error:
        validate_trajectories(t, y)
    assert Path(str(error.traceback[-1].path)).resolve() == DATA_MODULE
    assert _names(str(error.value), argument), (how, str(error.value))


def _names(message: str, argument: str) -> bool:
    """The message is about ``argument`` (it opens with it, or names it as the culprit)."""
    return (
        re.match(rf"^{argument}\b", message) is not None
        or re.search(rf"\b{argument} (has|must|contains)", message) is not None
    )
