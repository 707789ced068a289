"""The one scaling between the caller's units and the internal ones, both ways.

Internally every state is standardised and time is measured in units ``tau`` chosen so
that the scaled vector field has unit root-mean-square; one set of default
hyper-parameters then works whether the data lives at 1e-3 or 1e4, over milliseconds or
years, with time starting at 0 or at 1900.

:class:`Scaling` is plain data (it is part of a fitted model's specification and of the
file format) and converts numpy arrays and torch tensors alike: a tensor is converted
with the scaling's values as tensors of its own dtype and device, made once per dtype
and device and then reused, so the vector field can call it at every solver step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

_MIN_STATE_SCALE = 1e-12
_MAX_TIME_SCALE_RATIO = 1e-3  # tau is at least this fraction of the longest span


@dataclass(frozen=True, eq=False)
class Scaling:
    """Affine maps between physical and scaled units.

    ``z = (y - state_offset) / state_scale``, ``s = (t - time_origin) / time_scale`` and
    so ``dz/ds = dy/dt * time_scale / state_scale``.

    Attributes
    ----------
    state_offset, state_scale : ndarray of shape (n_states,)
    time_origin : float
        Kept as a Python float: a float32 tensor would lose an origin such as 1.7e9 s.
    time_scale : float
    """

    state_offset: np.ndarray
    state_scale: np.ndarray
    time_origin: float
    time_scale: float
    _tensors: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "state_offset", np.asarray(self.state_offset, dtype=np.float64))
        object.__setattr__(self, "state_scale", np.asarray(self.state_scale, dtype=np.float64))
        object.__setattr__(self, "time_origin", float(self.time_origin))
        object.__setattr__(self, "time_scale", float(self.time_scale))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scaling):
            return NotImplemented
        return (
            np.array_equal(self.state_offset, other.state_offset)
            and np.array_equal(self.state_scale, other.state_scale)
            and self.time_origin == other.time_origin
            and self.time_scale == other.time_scale
        )

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.record_fields()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_tensors", {})

    @staticmethod
    def record_fields() -> tuple[str, ...]:
        """The fields that describe a scaling (what a file stores)."""
        return ("state_offset", "state_scale", "time_origin", "time_scale")

    @classmethod
    def from_data(
        cls,
        states: np.ndarray,
        times: np.ndarray,
        derivatives: np.ndarray,
        inside: np.ndarray,
        known_initial_states: np.ndarray | None = None,
    ) -> Scaling:
        """Standardise states; choose the time unit that gives the field unit RMS.

        A state that is never observed (hidden) is scaled by the largest magnitude of its
        known initial values, around zero (by 1 if none is known): what it does is learned.

        Parameters
        ----------
        states : ndarray of shape (n_traj, n_max, n_states)
            Observations, NaN where missing.
        times : ndarray of shape (n_traj, n_max)
            Sorted times (padding repeats the last one).
        derivatives, inside : ndarray of shape (n_traj, n_max, n_states)
            Smoothed ``dy/dt`` and where it interpolates observations.
        known_initial_states : ndarray of shape (n_traj, n_states), optional
            Known initial values, NaN where unknown.
        """
        hidden = np.isnan(states).all(axis=(0, 1))
        observed = np.where(hidden[None, None, :], 0.0, states)
        offset = np.where(hidden, 0.0, np.nanmean(observed, axis=(0, 1)))
        scale = np.nanstd(observed, axis=(0, 1))
        scale = np.where(scale > _MIN_STATE_SCALE * np.maximum(np.abs(offset), 1.0), scale, 1.0)
        if hidden.any():
            known = (
                np.zeros(states.shape[2]) if known_initial_states is None else known_initial_states
            )
            magnitude = np.nanmax(np.abs(np.nan_to_num(known, nan=0.0)), axis=0, initial=0.0)
            scale = np.where(hidden, np.where(magnitude > 0, magnitude, 1.0), scale)
        longest_span = float((times[:, -1] - times[:, 0]).max())
        inside_slopes = (np.nan_to_num(derivatives) / scale)[inside]
        rms_slope = float(np.sqrt(np.mean(inside_slopes**2))) if inside_slopes.size else 0.0
        time_scale = 1.0 / rms_slope if rms_slope > 0 else longest_span
        time_scale = float(np.clip(time_scale, _MAX_TIME_SCALE_RATIO * longest_span, longest_span))
        return cls(offset, scale, float(times.min()), time_scale)

    @property
    def n_states(self) -> int:
        return int(self.state_offset.shape[0])

    def subset(self, state_indices: Sequence[int]) -> Scaling:
        """The scaling of some of the states only."""
        indices = list(state_indices)
        return Scaling(
            self.state_offset[indices], self.state_scale[indices], self.time_origin, self.time_scale
        )

    # ------------------------------------------------------------------- conversions
    def _offset_and_scale(self, like: Array) -> tuple[Any, Any]:
        if not isinstance(like, torch.Tensor):
            return self.state_offset, self.state_scale
        key = (like.dtype, like.device)
        tensors = self._tensors.get(key)
        if tensors is None:
            tensors = (
                torch.as_tensor(self.state_offset, dtype=like.dtype, device=like.device),
                torch.as_tensor(self.state_scale, dtype=like.dtype, device=like.device),
            )
            self._tensors[key] = tensors
        return tensors

    def scale_states(self, states: Array) -> Array:
        """``z`` from ``y`` (the last axis holds the states)."""
        offset, scale = self._offset_and_scale(states)
        return (states - offset) / scale

    def unscale_states(self, scaled: Array) -> Array:
        """``y`` from ``z``."""
        offset, scale = self._offset_and_scale(scaled)
        return scaled * scale + offset

    def scale_times(self, times: Array) -> Array:
        """``s`` from ``t``."""
        return (times - self.time_origin) / self.time_scale

    def unscale_times(self, scaled: Array) -> Array:
        """``t`` from ``s``."""
        return scaled * self.time_scale + self.time_origin

    def scale_rates(self, rates: Array) -> Array:
        """``dz/ds`` from ``dy/dt``."""
        _, scale = self._offset_and_scale(rates)
        return rates * (self.time_scale / scale)

    def unscale_rates(self, scaled_rates: Array) -> Array:
        """``dy/dt`` from ``dz/ds``."""
        _, scale = self._offset_and_scale(scaled_rates)
        return scaled_rates * scale / self.time_scale
