"""``fit(..., t0=...)``: initial states at a time before the first observation.

A dose given at 8:00 and first sampled at 8:30, an outbreak seeded before the first
count: the initial state belongs to a time with no observation. Each trajectory then
gets an unobserved row (all ``NaN``) at ``t0``, which is exactly how the stages treat a
time with nothing seen: the initial state (known through ``y0``, or learned) sits there
and the dynamics carry it to the data. Sampled inputs get their first sample at ``t0``
too (inputs are held constant before their first sample anyway).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._data import _to_numeric_array, validate_trajectories
from ._inputs import ConstantInputs, validate_inputs


def prepend_initial_time(t: Any, y: Any, u: Any, t0: Any) -> tuple[Any, Any, Any]:
    """``(t, y, u)`` with every trajectory starting at its ``t0`` (unchanged for None).

    Parameters
    ----------
    t, y, u
        As ``fit`` takes them.
    t0 : float or array-like of shape (n_traj,)
        The time of the initial state, one for all trajectories or one each; at or
        before each trajectory's first time (equal: nothing is added).

    Returns
    -------
    t, y, u
        One trajectory stays one trajectory (1-D ``t``); several become lists (ragged),
        since their starts may differ.
    """
    if t0 is None:
        return t, y, u
    batch = validate_trajectories(t, y)
    grids = batch.grids
    starts = _check_t0(t0, [times[0] for times in grids.sorted_times])
    sampled = u is not None and not isinstance(u, ConstantInputs) and not callable(u)
    inputs = validate_inputs(u, grids) if sampled else None
    new_t, new_y, new_u = [], [], []
    for row, (times, start) in enumerate(zip(grids.sorted_times, starts, strict=True)):
        states = batch.states[row, : times.size]
        added = int(start < times[0])
        new_t.append(np.concatenate([[start], times]) if added else times)
        gap = np.full((added, batch.n_states), np.nan)
        new_y.append(np.concatenate([gap, states]))
        if inputs is not None:
            values = inputs.values[row, : times.size]
            new_u.append(np.concatenate([values[:1]] * added + [values]))
    if grids.layout.squeeze_states:
        new_y = [states[:, 0] for states in new_y]
    if grids.layout.kind == "single":
        return new_t[0], new_y[0], new_u[0] if sampled else u
    return new_t, new_y, new_u if sampled else u


def _check_t0(t0: Any, firsts: list[float]) -> np.ndarray:
    """``t0`` as one finite time per trajectory, none after that trajectory's first time."""
    n_traj = len(firsts)
    array = _to_numeric_array(t0, "t0")
    if array.ndim > 1 or array.size not in (1, n_traj):
        raise ValueError(
            f"t0 must be one time, or one per trajectory (shape ({n_traj},)), got shape "
            f"{array.shape}."
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("t0 must be finite.")
    starts = np.broadcast_to(array.reshape(-1), (n_traj,)).astype(np.float64)
    late = np.flatnonzero(starts > np.asarray(firsts))
    if late.size:
        row = int(late[0])
        which = "" if n_traj == 1 else f" of trajectory {row}"
        raise ValueError(
            f"t0 must be at or before the first time{which} ({firsts[row]:g}), got "
            f"{starts[row]:g}: it is the time of the initial state."
        )
    return starts
