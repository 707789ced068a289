"""Validation of user arrays and their one internal form: a padded batch of trajectories.

Every public entry point (``fit``, ``predict``, ``score``, ``vector_field``) hands the
caller's arrays to this module first. What comes out is valid by construction: sorted,
finite times without duplicates, states with ``NaN`` marking what was not observed, and
the permutation that gives answers back in the caller's order. Code after this module
may assume all of that.
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import scipy.sparse

LayoutKind = Literal["single", "shared", "grids", "ragged"]

_MAX_MAGNITUDE = 1e150  # squares of larger states overflow the statistics of scaling

# Ragged trajectories are padded to the longest one. Padding that outweighs the data this
# many times over is worth a warning once it is large enough to matter...
PADDING_WARNING_RATIO = 50
PADDING_WARNING_BYTES = 256 * 2**20
# ... and padding (what the batch adds beyond the caller's values) past this size is
# refused before it is allocated: training copies the batch several times more (torch
# tensors, smoothed states, segments), so 4 GiB of padding alone exhausts most machines.
MAX_PADDING_BYTES = 4 * 2**30


@dataclass(frozen=True)
class Layout:
    """How the caller arranged their trajectories, so answers come back the same way.

    Attributes
    ----------
    kind : {"single", "shared", "grids", "ragged"}
        One trajectory; several on one 1-D time grid; several with a 2-D time array;
        a list of trajectories of their own lengths.
    n_traj : int
        Number of trajectories.
    squeeze_states : bool
        The caller gave one state without a state axis, so answers drop it too.
    """

    kind: LayoutKind
    n_traj: int
    squeeze_states: bool = False


@dataclass(frozen=True)
class TimeGrids:
    """Validated time points of one or more trajectories.

    Attributes
    ----------
    sorted_times : list of ndarray
        Each trajectory's times, ascending, as float64.
    orders : list of ndarray
        ``sorted_times[i] == original_times[i][orders[i]]``.
    layout : Layout
        The caller's arrangement.
    """

    sorted_times: list[np.ndarray]
    orders: list[np.ndarray]
    layout: Layout

    def restore_order(self, sorted_values: list[np.ndarray]) -> Any:
        """Put per-trajectory arrays of shape ``(n_times, n_states)`` back in caller form."""
        restored = []
        for values, order in zip(sorted_values, self.orders, strict=True):
            original = np.empty_like(values)
            original[order] = values
            if self.layout.squeeze_states:
                original = original[:, 0]
            restored.append(original)
        if self.layout.kind == "single":
            return restored[0]
        if self.layout.kind == "ragged":
            return restored
        return np.stack(restored)

    def replicated(self, count: int) -> TimeGrids:
        """The one grid of these times shared by ``count`` trajectories."""
        return TimeGrids(
            self.sorted_times * count,
            self.orders * count,
            replace(self.layout, kind="shared", n_traj=count),
        )


@dataclass(frozen=True)
class TrajectoryBatch:
    """Trajectories padded to one rectangular batch.

    Attributes
    ----------
    times : ndarray of shape (n_traj, n_max)
        Sorted times; a shorter trajectory repeats its last time in the padding.
    states : ndarray of shape (n_traj, n_max, n_states)
        Observations in sorted order; ``NaN`` where not observed and in the padding.
    lengths : ndarray of shape (n_traj,)
        Number of real time points of each trajectory.
    grids : TimeGrids
        The validated times with the caller's order and layout.
    """

    times: np.ndarray
    states: np.ndarray
    lengths: np.ndarray
    grids: TimeGrids

    @property
    def n_traj(self) -> int:
        return self.times.shape[0]

    @property
    def n_states(self) -> int:
        return self.states.shape[2]

    @property
    def observed(self) -> np.ndarray:
        """Boolean mask of shape (n_traj, n_max, n_states): True where a value was seen."""
        return ~np.isnan(self.states)

    @property
    def hidden_states(self) -> tuple[int, ...]:
        """States never observed in any trajectory (columns of ``NaN`` only)."""
        return tuple(int(i) for i in np.flatnonzero(np.isnan(self.states).all(axis=(0, 1))))

    def first_observed_states(self) -> np.ndarray:
        """Each trajectory's state at its first time; a state not seen there takes its
        first observed value. Shape (n_traj, n_states)."""
        observed = self.observed
        first_index = np.argmax(observed, axis=1)  # (n_traj, n_states)
        rows = np.arange(self.n_traj)[:, None]
        columns = np.arange(self.n_states)[None, :]
        return self.states[rows, first_index, columns]


def _is_missing(value: Any) -> bool:
    """``None`` or pandas' ``NA``: how object arrays and nullable dtypes mark a gap."""
    if value is None:
        return True
    pandas = sys.modules.get("pandas")  # pd.NA exists only once pandas was imported
    return pandas is not None and value is getattr(pandas, "NA", None)


def _missing_as_nan(array: np.ndarray) -> np.ndarray:
    """An object array with its ``None``/``pd.NA`` entries replaced by NaN."""
    missing = np.frompyfunc(_is_missing, 1, 1)(array).astype(bool)
    return np.where(missing, np.nan, array) if missing.any() else array


def _to_numeric_array(value: Any, name: str) -> np.ndarray:
    """Turn array-likes (numpy, pandas, lists, tensors) into a real float64 array.

    Missing values in every idiom become NaN: the mask of a numpy masked array (its
    fill value is never taken for data), pandas' ``NA`` and nullable dtypes (``Int64``,
    ``Float64``, ``boolean``), and ``None`` or ``pd.NA`` in object arrays and lists.
    """
    if value is None:
        raise TypeError(f"{name} must be an array of real numbers, got None.")
    if scipy.sparse.issparse(value):
        raise TypeError(
            f"{name} is a sparse matrix, and sparse input is not supported: trajectories "
            "are dense; pass a dense array (e.g. .toarray())."
        )
    mask = None
    if isinstance(value, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(value)
        value = np.ma.getdata(value)
    elif hasattr(value, "to_numpy"):  # pandas Series / DataFrame (nullable: pd.NA objects)
        value = value.to_numpy()
    elif hasattr(value, "detach") and hasattr(value, "cpu"):  # torch tensor
        value = value.detach().cpu()
        if not value.is_complex() and value.dtype.is_floating_point:
            value = value.double()  # bfloat16 and float8 have no numpy dtype
        value = value.numpy()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got a string {value!r:.40}.")
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested sequences
        raise ValueError(
            f"{name} must be a rectangular array; for trajectories of different lengths pass "
            f"a list of 1-D time arrays and a list of state arrays ({error})."
        ) from None
    if array.dtype == object:
        try:
            array = _missing_as_nan(array).astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must hold real numbers, got values of type "
                f"{sorted({type(v).__name__ for v in array.ravel()[:20]})}."
            ) from None
    if np.iscomplexobj(array):
        raise ValueError(
            f"{name} must hold real numbers, got complex dtype {array.dtype}: "
            "Complex data not supported."
        )
    if array.dtype.kind in "MmUSV":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {array.dtype}; convert dates and "
            "strings to numbers (e.g. seconds since a reference) first."
        )
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}.")
    array = array.astype(np.float64, copy=False)
    if mask is not None and mask.any():
        array = np.where(mask, np.nan, array)  # a new array: the caller's data stays as is
    return array


def _is_ragged(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(hasattr(item, "__len__") and not isinstance(item, (str, bytes)) for item in value)
        and len({np.shape(item) for item in value}) > 1
    )


def _check_one_time_grid(times: np.ndarray, name: str, min_points: int) -> np.ndarray:
    if times.ndim != 1:
        raise ValueError(f"{name} must be 1-D per trajectory, got shape {times.shape}.")
    if times.size < min_points:
        raise ValueError(
            f"{name} needs at least {min_points} time point(s) per trajectory, got {times.size}."
        )
    if not np.all(np.isfinite(times)):
        raise ValueError(
            f"{name} must be finite: it contains NaN or inf (a missing time, masked or NA, "
            "reads as NaN)."
        )
    order = np.argsort(times, kind="stable")
    sorted_times = times[order]
    if np.any(np.diff(sorted_times) == 0):
        duplicate = sorted_times[1:][np.diff(sorted_times) == 0][0]
        raise ValueError(f"{name} has duplicate time {float(duplicate)!r} within one trajectory.")
    return order


def validate_times(t: Any, *, name: str = "t", min_points: int = 1) -> TimeGrids:
    """Validate the time argument of ``fit``/``predict``/``score``.

    Parameters
    ----------
    t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
        Time points; need not be sorted nor evenly spaced.
    name : str
        Argument name used in error messages.
    min_points : int
        Fewest time points a trajectory may have.

    Returns
    -------
    TimeGrids
    """
    if isinstance(t, (list, tuple)) and t and _is_ragged(t):
        grids = [_to_numeric_array(item, f"{name}[{i}]") for i, item in enumerate(t)]
        kind: LayoutKind = "ragged"
    else:
        array = _to_numeric_array(t, name)
        if array.ndim == 1:
            grids, kind = [array], "single"
        elif array.ndim == 2:
            if isinstance(t, (list, tuple)):
                kind = "ragged"
            else:
                kind = "grids"
            grids = list(array)
        else:
            raise ValueError(
                f"{name} must be 1-D (n_times,), 2-D (n_traj, n_times) or a list of 1-D "
                f"arrays, got shape {array.shape}."
            )
        if not grids:
            raise ValueError(f"{name} holds no trajectory (empty first axis).")
    orders = [
        _check_one_time_grid(grid, f"{name}[{i}]" if kind != "single" else name, min_points)
        for i, grid in enumerate(grids)
    ]
    sorted_times = [grid[order] for grid, order in zip(grids, orders, strict=True)]
    return TimeGrids(sorted_times, orders, Layout(kind, len(grids)))


def _states_per_trajectory(
    y: Any, grids: TimeGrids, name: str
) -> tuple[list[np.ndarray], TimeGrids]:
    """Split ``y`` into one (n_times, n_states) array per trajectory, matching ``grids``."""
    kind = grids.layout.kind
    n_times = [len(times) for times in grids.sorted_times]
    if kind == "ragged":
        if not isinstance(y, (list, tuple)):
            raise TypeError(f"{name} must be a list of arrays when t is a list, got {type(y)}.")
        if len(y) != len(n_times):
            raise ValueError(f"{name} has {len(y)} trajectories but t has {len(n_times)}.")
        arrays = [_to_numeric_array(item, f"{name}[{i}]") for i, item in enumerate(y)]
        squeeze = all(array.ndim == 1 for array in arrays)
        arrays = [array[:, None] if array.ndim == 1 else array for array in arrays]
    else:
        array = _to_numeric_array(y, name)
        if kind == "single" and array.ndim in (1, 2):
            squeeze = array.ndim == 1
            arrays = [array[:, None] if squeeze else array]
        elif kind == "single" and array.ndim == 3:
            arrays, squeeze = list(array), False
            grids = grids.replicated(len(arrays))
            n_times = n_times * len(arrays)
        elif kind == "grids" and array.ndim in (2, 3):
            squeeze = array.ndim == 2
            arrays = list(array[..., None] if squeeze else array)
        else:
            expected = {
                "single": "(n_times,), (n_times, n_states) or (n_traj, n_times, n_states)",
                "grids": "(n_traj, n_times, n_states) when t is 2-D",
            }[kind]
            raise ValueError(f"{name} must have shape {expected}, got shape {array.shape}.")
        if len(arrays) != len(n_times):
            raise ValueError(
                f"{name} has {len(arrays)} trajectories but t has {len(n_times)} rows."
            )
    for i, (array, count) in enumerate(zip(arrays, n_times, strict=True)):
        label = name if len(arrays) == 1 else f"{name}[{i}]"
        if array.ndim != 2:
            raise ValueError(f"{label} must be (n_times, n_states), got shape {array.shape}.")
        if array.shape[0] != count:
            raise ValueError(
                f"{label} has {array.shape[0]} time points but the matching t has {count}."
            )
    n_states = {array.shape[1] for array in arrays}
    if len(n_states) > 1:
        raise ValueError(
            f"{name}: all trajectories need the same number of states, got {n_states}."
        )
    if n_states == {0}:
        raise ValueError(f"{name} has no state (zero columns).")
    if any(np.isinf(array).any() for array in arrays):
        raise ValueError(f"{name} contains inf; use NaN to mark values that were not observed.")
    largest = max(float(np.nanmax(np.abs(array), initial=0.0)) for array in arrays)
    if largest > _MAX_MAGNITUDE:
        raise ValueError(
            f"{name} has values of magnitude up to {largest:.3g}; beyond {_MAX_MAGNITUDE:.0e} "
            "their squares overflow float64. Rescale it first (e.g. divide by a power of ten)."
        )
    grids = replace(grids, layout=Layout(grids.layout.kind, len(arrays), squeeze))
    return [array[order] for array, order in zip(arrays, grids.orders, strict=True)], grids


def _check_padding_cost(lengths: np.ndarray, n_states: int) -> None:
    """Refuse, or warn about, padding ragged trajectories to the longest one when the
    padding costs far more memory than the data; before anything is allocated.

    The batch holds ``n_traj * n_max * (n_states + 1)`` float64 values (times and states).
    """
    values_per_point = n_states + 1
    real_bytes = 8 * int(lengths.sum()) * values_per_point
    padded_bytes = 8 * len(lengths) * int(lengths.max()) * values_per_point
    padding_bytes = padded_bytes - real_bytes
    too_large = padding_bytes > MAX_PADDING_BYTES
    wasteful = padding_bytes > PADDING_WARNING_BYTES and (
        padded_bytes > PADDING_WARNING_RATIO * real_bytes
    )
    if not (too_large or wasteful):
        return
    cost = (
        f"padding {len(lengths)} trajectories of {int(lengths.min())} to {int(lengths.max())} "
        f"time points (median {int(np.median(lengths))}) to the longest one takes "
        f"{_in_bytes(padded_bytes)} (n_traj * n_max * (n_states + 1) float64 values) for "
        f"{_in_bytes(real_bytes)} of data, and training copies it several times"
    )
    advice = (
        "Cut the long trajectories into pieces of similar length (each piece a trajectory "
        "of its own) or resample them more coarsely."
    )
    if too_large:
        raise ValueError(
            f"t and y: {cost}; the padding alone would exceed {_in_bytes(MAX_PADDING_BYTES)}. "
            + advice
        )
    warnings.warn(f"t and y: {cost}. {advice}", UserWarning, stacklevel=4)


def _in_bytes(size: int) -> str:
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} bytes"


def validate_trajectories(t: Any, y: Any) -> TrajectoryBatch:
    """Validate ``fit``/``score`` data and pad it into a :class:`TrajectoryBatch`.

    Parameters
    ----------
    t : array-like or list of 1-D arrays
        Time points, see the table in the user guide.
    y : array-like or list of arrays
        Observed states matching ``t``; ``NaN`` marks a value that was not observed.

    Returns
    -------
    TrajectoryBatch
    """
    grids = validate_times(t, min_points=2)
    if y is None:
        raise ValueError(
            "This estimator requires y to be passed, but the target y is None; pass the "
            "observed states."
        )
    sorted_states, grids = _states_per_trajectory(y, grids, "y")
    for i, states in enumerate(sorted_states):
        if np.isnan(states).all():
            label = "y" if len(sorted_states) == 1 else f"y[{i}]"
            raise ValueError(f"{label} holds no observation at all (every value is NaN).")
    lengths = np.array([len(times) for times in grids.sorted_times])
    n_max = int(lengths.max())
    n_states = sorted_states[0].shape[1]
    _check_padding_cost(lengths, n_states)
    times = np.empty((len(lengths), n_max))
    states = np.full((len(lengths), n_max, n_states), np.nan)
    for i, (grid, values) in enumerate(zip(grids.sorted_times, sorted_states, strict=True)):
        times[i, : len(grid)] = grid
        times[i, len(grid) :] = grid[-1]
        states[i, : len(grid)] = values
    return TrajectoryBatch(times, states, lengths, grids)


def validate_states(y: Any, n_states: int, *, name: str, allow_nan: bool = False) -> np.ndarray:
    """Validate a set of states of shape (n_samples, n_states) or (n_states,); ``NaN``
    (an unknown value) only where ``allow_nan``.

    Returns
    -------
    ndarray of shape (n_samples, n_states)
    """
    array = _to_numeric_array(y, name)
    if array.ndim == 1 and n_states == 1 and array.size != 1:
        array = array[:, None]
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != n_states:
        raise ValueError(
            f"{name} must have shape (n_samples, {n_states}) or ({n_states},) for a model "
            f"of {n_states} state(s), got shape {np.shape(y)}."
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} is empty.")
    if np.isinf(array).any() or (not allow_nan and np.isnan(array).any()):
        what = "inf" if allow_nan else "NaN or inf"
        raise ValueError(f"{name} must be finite: it contains {what}.")
    return array


def validate_initial_states(y0: Any, n_traj: int, n_states: int, *, name: str = "y0") -> np.ndarray:
    """Validate known initial states: ``NaN`` entries are unknown (to be learned).

    Parameters
    ----------
    y0 : array-like of shape (n_states,) or (n_traj, n_states)
        One row for every trajectory, or one row for all of them.

    Returns
    -------
    ndarray of shape (n_traj, n_states)
    """
    array = _to_numeric_array(y0, name)
    if array.ndim == 1 and n_states == 1 and array.size == n_traj and n_traj > 1:
        array = array[:, None]
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != n_states or array.shape[0] not in (1, n_traj):
        raise ValueError(
            f"{name} must have shape ({n_states},) or ({n_traj}, {n_states}): one initial "
            f"state (NaN where unknown) for all trajectories or one per trajectory, got shape "
            f"{np.shape(y0)}."
        )
    if np.isinf(array).any():
        raise ValueError(f"{name} contains inf; use NaN for initial values to be learned.")
    largest = float(np.nanmax(np.abs(array), initial=0.0))
    if largest > _MAX_MAGNITUDE:
        raise ValueError(f"{name} has values of magnitude up to {largest:.3g}; rescale it first.")
    return np.broadcast_to(array, (n_traj, n_states)).copy()


def validate_sample_weight(sample_weight: Any, n_samples: int) -> np.ndarray:
    """Validate ``score``'s weights: finite, non-negative, not all zero.

    Returns
    -------
    ndarray of shape (n_samples,)
        Ones when ``sample_weight`` is None.
    """
    if sample_weight is None:
        return np.ones(n_samples)
    weights = _to_numeric_array(sample_weight, "sample_weight")
    if weights.shape != (n_samples,):
        raise ValueError(
            f"sample_weight must have shape ({n_samples},), one weight per sample (time point "
            f"of a single trajectory, trajectory otherwise), got shape {weights.shape}."
        )
    if not np.all(np.isfinite(weights)):
        raise ValueError("sample_weight must be finite: it contains NaN or inf.")
    if np.any(weights < 0):
        raise ValueError(f"sample_weight must be non-negative, got {float(weights.min())!r}.")
    if not np.any(weights > 0):
        raise ValueError("sample_weight must have a positive entry, got all zeros.")
    return weights


def validate_state_times(t: Any, n_samples: int, *, name: str = "t") -> np.ndarray:
    """Validate the times that go with ``n_samples`` states: one finite time for all of
    them, or one each.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    times = _to_numeric_array(t, name)
    if times.ndim == 0:
        times = np.full(n_samples, float(times))
    if times.shape != (n_samples,):
        raise ValueError(
            f"{name} must be a number or have shape ({n_samples},), one time per state, got "
            f"shape {times.shape}."
        )
    if not np.all(np.isfinite(times)):
        raise ValueError(f"{name} must be finite: it contains NaN or inf.")
    return times
