"""External inputs ``u(t)``: validation at the door and the torch modules that evaluate them.

Inputs are data (a control, a forcing, a dose), given in one of three forms; the rule
between them is explicit, never guessed from shapes:

- **samples at the observation times**: a plain array shaped like ``y`` with ``n_inputs``
  in its last axis (left out for one input), or a list of such arrays when ``t`` is a
  list. Plain arrays are *always* read so, hence a wrong length is an error.
- **constants per trajectory** (a dose, a temperature): :class:`ConstantInputs` of shape
  ``(n_traj, n_inputs)``, or ``(n_inputs,)`` for one trajectory; an array subclass, so
  model selection slices it by trajectory like ``t`` and ``y``.
- **a callable** ``u(t)``: float64 torch tensor of physical times ``(n,)`` ->
  ``(n, n_inputs)`` (or ``(n,)`` for one input), in torch operations so it runs on the
  model's device; defined at module level, as a saved model stores its import path.

:class:`InputSignal` and :class:`CallableInput` share one call, ``signal(times,
trajectory) -> (..., n_inputs)``: vectorised, no host synchronisation, no gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ._data import _MAX_MAGNITUDE, TimeGrids, _to_numeric_array

Interpolation = Literal["linear", "previous"]
INTERPOLATIONS = ("linear", "previous")
InputFunction = Callable[[torch.Tensor], Any]


class ConstantInputs(np.ndarray):
    """Inputs that do not change in time: one row of ``n_inputs`` values per trajectory.

    Parameters
    ----------
    values : array-like of shape (n_traj, n_inputs), or (n_inputs,) for one trajectory

    Examples
    --------
    >>> doses = ConstantInputs([[0.5], [1.0], [2.0]])  # three trajectories, one input
    >>> doses[[0, 2]].shape  # sliced by trajectory like any array, and still constants
    (2, 1)
    """

    def __new__(cls, values: Any) -> ConstantInputs:
        return _to_numeric_array(values, "ConstantInputs").view(cls)


@dataclass(frozen=True)
class ValidatedInputs:
    """Inputs checked against the trajectories' time grids.

    Attributes
    ----------
    kind : {"samples", "constant", "callable"}
    n_inputs : int
    times : ndarray of shape (n_traj, n_max) or None
        Sorted physical sample times; the padding repeats each row's last time.
    values : ndarray of shape (n_traj, n_max, n_inputs) or None
        Inputs at ``times``; the padding repeats each row's last value.
    function : callable or None
        The caller's ``u(t)``.
    """

    kind: Literal["samples", "constant", "callable"]
    n_inputs: int
    times: np.ndarray | None = None
    values: np.ndarray | None = None
    function: InputFunction | None = None


def validate_inputs(
    u: Any, grids: TimeGrids, *, n_inputs: int | None = None, name: str = "u"
) -> ValidatedInputs:
    """Validate the inputs that go with the trajectories of ``grids``.

    Parameters
    ----------
    u : array-like, list of arrays, ConstantInputs or callable
        See the module docstring for the three forms.
    grids : TimeGrids
        The validated times (``TrajectoryBatch.grids`` in ``fit``/``score``, the
        replicated grids in ``predict``); samples are sorted with ``grids.orders``.
    n_inputs : int, optional
        Number of inputs the model expects (the fitted one); None accepts any.
    name : str
        Argument name used in error messages.

    Returns
    -------
    ValidatedInputs
    """
    if u is None:
        raise TypeError(f"{name} must be an array of inputs or a callable u(t), got None.")
    if isinstance(u, ConstantInputs):
        result = _constants(u.view(np.ndarray), grids, name)
    elif callable(u):
        result = _callable(u, grids, name)
    else:
        result = _samples(u, grids, name)
    if n_inputs is not None and result.n_inputs != n_inputs:
        raise ValueError(
            f"{name} has {result.n_inputs} input(s) but the model was fitted with {n_inputs}."
        )
    return result


def _samples(u: Any, grids: TimeGrids, name: str) -> ValidatedInputs:
    kind, counts = grids.layout.kind, [times.size for times in grids.sorted_times]
    expected = {
        "single": f"({counts[0]},) or ({counts[0]}, n_inputs), one row per time of t",
        "shared": f"({len(counts)}, {counts[0]}, n_inputs), like y",
        "grids": f"({len(counts)}, {counts[0]}) or ({len(counts)}, {counts[0]}, n_inputs)",
        "ragged": f"a list of {len(counts)} arrays of shape (n_times_i[, n_inputs])",
    }[kind]
    hint = f"{name} must be sampled at t like y, shape {expected}"
    if kind == "ragged" and isinstance(u, (list, tuple)):
        items = [_to_numeric_array(item, f"{name}[{i}]") for i, item in enumerate(u)]
    else:
        array = _to_numeric_array(u, name)
        if kind != "single" and array.ndim < 2:
            raise ValueError(f"{hint}; got shape {array.shape}. {_CONSTANT_HINT}")
        items = [array] if kind == "single" else list(array)
    if len(items) != len(counts):
        raise ValueError(
            f"{name} has {len(items)} trajectories but t describes {len(counts)}; {hint}."
        )
    sorted_items = []
    for i, (item, count, order) in enumerate(zip(items, counts, grids.orders, strict=True)):
        label = name if kind == "single" else f"{name}[{i}]"
        if item.ndim not in (1, 2):
            raise ValueError(f"{hint}; {label} has shape {item.shape}. {_CONSTANT_HINT}")
        if item.shape[0] != count:
            raise ValueError(
                f"{label} has {item.shape[0]} time points but the matching t has {count}. "
                + _CONSTANT_HINT
            )
        sorted_items.append((item[:, None] if item.ndim == 1 else item)[order])
    n_inputs = _common_width(sorted_items, name)
    times, values = _pad(grids.sorted_times, sorted_items)
    return ValidatedInputs("samples", n_inputs, times, values)


_CONSTANT_HINT = "Wrap inputs that are constant in time in ConstantInputs(...)."


def _constants(values: np.ndarray, grids: TimeGrids, name: str) -> ValidatedInputs:
    n_traj = len(grids.sorted_times)
    if values.ndim <= 1 and n_traj == 1:
        values = values.reshape(1, -1)
    if values.ndim != 2 or values.shape[0] != n_traj:
        raise ValueError(
            f"{name} (ConstantInputs) must have shape ({n_traj}, n_inputs), one row per "
            f"trajectory of t, got shape {values.shape}."
        )
    rows = [row[None, :] for row in values]
    n_inputs = _common_width(rows, name)
    starts = [times[:1] for times in grids.sorted_times]
    return ValidatedInputs("constant", n_inputs, *_pad(starts, rows))


def _callable(u: InputFunction, grids: TimeGrids, name: str) -> ValidatedInputs:
    times = torch.as_tensor(np.concatenate(grids.sorted_times))
    try:
        result = u(times)
    except Exception as error:
        raise TypeError(
            f"{name}(t) failed on a float64 torch tensor of the {times.numel()} times of t "
            f"({type(error).__name__}: {error}); {name} must map a tensor of shape (n,) "
            "to inputs of shape (n, n_inputs) with torch operations."
        ) from error
    values = _to_numeric_array(result, f"{name}(t)")
    if values.shape == times.shape:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] != times.numel():
        raise ValueError(
            f"{name}(t) must return shape ({times.numel()}, n_inputs) for times of shape "
            f"({times.numel()},), got shape {values.shape}."
        )
    n_inputs = _common_width([values], f"{name}(t)")
    return ValidatedInputs("callable", n_inputs, function=u)


def _common_width(items: list[np.ndarray], name: str) -> int:
    """The shared number of inputs of finite, not huge, per-trajectory arrays."""
    widths = {item.shape[1] for item in items}
    if len(widths) > 1:
        raise ValueError(f"{name}: all trajectories need the same number of inputs, got {widths}.")
    if widths == {0}:
        raise ValueError(f"{name} has no input (zero columns).")
    for i, item in enumerate(items):
        if not np.all(np.isfinite(item)):
            where = "" if len(items) == 1 else f" (trajectory {i})"
            raise ValueError(f"{name} must be finite: it contains NaN or inf{where}.")
        if np.abs(item).max(initial=0.0) > _MAX_MAGNITUDE:
            raise ValueError(f"{name} has values beyond {_MAX_MAGNITUDE:.0e}; rescale it first.")
    return widths.pop()


def _pad(times: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Rectangular (n_traj, n_max) times and (n_traj, n_max, n_inputs) values; each row's
    padding repeats its last sample, so evaluation needs no lengths."""
    n_max = max(len(row) for row in times)
    padded_times = np.stack([np.pad(row, (0, n_max - len(row)), mode="edge") for row in times])
    padded_values = np.stack([np.pad(v, ((0, n_max - len(v)), (0, 0)), "edge") for v in values])
    return padded_times, padded_values


@dataclass(frozen=True)
class InputRecord:
    """Plain data to rebuild an input module without its data (see
    :func:`build_input_signal`); sample values travel in the ``state_dict``."""

    kind: Literal["samples", "callable"]
    n_inputs: int
    interpolation: str = "linear"
    n_traj: int = 0
    n_samples: int = 0
    time_origin: float = 0.0
    time_scale: float = 1.0
    function: InputFunction | None = None


class _InputModule(nn.Module):
    """What both input modules share: their width and the time units of ``forward``."""

    def __init__(self, n_inputs: int, time_origin: float, time_scale: float) -> None:
        super().__init__()
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}.")
        self.n_inputs = int(n_inputs)
        self.time_origin, self.time_scale = float(time_origin), float(time_scale)


class InputSignal(_InputModule):
    """Inputs interpolated between per-trajectory samples, in the model's time units.

    Parameters
    ----------
    sample_times : ndarray of shape (n_traj, n_samples)
        Physical sample times, ascending per row (padding may repeat the last one).
    sample_values : ndarray of shape (n_traj, n_samples, n_inputs)
    interpolation : {"linear", "previous"}
        Linear between samples, or zero-order hold (``previous``: each sample holds
        until the next, for doses and switched controls). Constant outside each
        trajectory's sample span.
    time_origin, time_scale : float
        ``forward`` takes times ``(t - time_origin) / time_scale``: give the model's
        time scaling and the field passes its own scaled times.
    dtype : torch.dtype

    Examples
    --------
    >>> signal = InputSignal(np.array([[0.0, 1.0]]), np.array([[[0.0], [2.0]]]))
    >>> signal(torch.tensor([0.25, 5.0], dtype=torch.float64), torch.tensor([0, 0]))
    tensor([[0.5000],
            [2.0000]], dtype=torch.float64)
    """

    def __init__(
        self,
        sample_times: np.ndarray,
        sample_values: np.ndarray,
        *,
        interpolation: Interpolation = "linear",
        time_origin: float = 0.0,
        time_scale: float = 1.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(np.shape(sample_values)[2], time_origin, time_scale)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}"
            )
        self.interpolation = interpolation
        scaled = (np.asarray(sample_times, dtype=np.float64) - time_origin) / time_scale
        self.register_buffer("sample_times", torch.as_tensor(scaled, dtype=dtype))
        self.register_buffer("sample_values", torch.as_tensor(sample_values, dtype=dtype))

    def forward(self, times: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
        """Inputs at ``times`` of trajectories ``trajectory`` (broadcast together), of
        shape ``broadcast_shape + (n_inputs,)``."""
        times, trajectory = torch.broadcast_tensors(times.detach(), trajectory)
        shape = times.shape
        times = times.reshape(-1).to(self.sample_times.dtype)  # (n_members,)
        n_samples = self.sample_times.shape[1]
        first = trajectory.reshape(-1).long() * n_samples  # flat index of each row's start
        flat_times = self.sample_times.reshape(-1)
        flat_values = self.sample_values.reshape(-1, self.n_inputs)
        # Bisection, all members at once: count = samples of the member's row at or before t.
        count = torch.zeros_like(first)
        step = 1 << (n_samples.bit_length() - 1)
        while step:
            candidate = count + step
            probe = flat_times[first + candidate.clamp(max=n_samples) - 1]
            count = torch.where((candidate <= n_samples) & (probe <= times), candidate, count)
            step >>= 1
        before = first + (count - 1).clamp(min=0)
        values = flat_values[before]  # (n_members, n_inputs)
        if self.interpolation == "linear":
            after = first + count.clamp(max=n_samples - 1)
            start, width = flat_times[before], flat_times[after] - flat_times[before]
            safe_width = torch.where(width > 0, width, torch.ones_like(width))
            weight = torch.where(width > 0, ((times - start) / safe_width).clamp(0, 1), 0)
            values = values + weight[:, None] * (flat_values[after] - values)
        return values.reshape(*shape, self.n_inputs)

    def record(self) -> InputRecord:
        """The plain-data description that :func:`build_input_signal` rebuilds."""
        shape, scaling = self.sample_times.shape, (self.time_origin, self.time_scale)
        return InputRecord("samples", self.n_inputs, self.interpolation, *shape, *scaling)


class CallableInput(_InputModule):
    """The caller's ``u(t)`` behind the call of :class:`InputSignal` (trajectory ignored).

    Parameters
    ----------
    function : callable
        ``u(t)``: float64 tensor of physical times (n,) -> (n, n_inputs) or (n,).
    n_inputs : int
    time_origin, time_scale : float
        As in :class:`InputSignal`.
    """

    def __init__(
        self,
        function: InputFunction,
        n_inputs: int,
        *,
        time_origin: float = 0.0,
        time_scale: float = 1.0,
    ) -> None:
        super().__init__(n_inputs, time_origin, time_scale)
        self.function = function

    def forward(self, times: torch.Tensor, trajectory: torch.Tensor) -> torch.Tensor:
        """``u`` at ``times`` broadcast with ``trajectory``: shape ``(..., n_inputs)``."""
        times = torch.broadcast_tensors(times.detach(), trajectory)[0]
        physical = times.reshape(-1).double() * self.time_scale + self.time_origin
        values = torch.as_tensor(self.function(physical), device=times.device)
        return values.to(times.dtype).reshape(*times.shape, self.n_inputs)

    def record(self) -> InputRecord:
        """The plain-data description that :func:`build_input_signal` rebuilds."""
        scaling = (self.time_origin, self.time_scale)
        return InputRecord("callable", self.n_inputs, "linear", 0, 0, *scaling, self.function)


def make_input_signal(
    inputs: ValidatedInputs,
    *,
    interpolation: Interpolation = "linear",
    time_origin: float = 0.0,
    time_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
) -> InputSignal | CallableInput:
    """The input module of validated inputs (parameters as in :class:`InputSignal`)."""
    scaling = {"time_origin": time_origin, "time_scale": time_scale}
    if inputs.kind == "callable":
        return CallableInput(inputs.function, inputs.n_inputs, **scaling)
    return InputSignal(
        inputs.times, inputs.values, interpolation=interpolation, dtype=dtype, **scaling
    )


def build_input_signal(
    record: InputRecord, *, dtype: torch.dtype = torch.float64
) -> InputSignal | CallableInput:
    """The input module ``record`` describes, without data: a sampled signal holds zeros
    of the recorded shape until its ``state_dict`` is loaded."""
    shape = (record.n_traj, record.n_samples)
    empty = np.zeros(shape), np.zeros((*shape, record.n_inputs)), record.function
    settings = {key: getattr(record, key) for key in ("interpolation", "time_origin", "time_scale")}
    inputs = ValidatedInputs(record.kind, record.n_inputs, *empty)
    return make_input_signal(inputs, dtype=dtype, **settings)
