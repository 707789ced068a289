"""Physical parameters of a universal differential equation: validation and transforms.

Learned parameters live in an unconstrained "raw" form that the optimisers move freely:

- unconstrained: ``p = r * raw``, with ``r = |p0|`` (or 1 when ``p0 = 0``), so a step of
  the optimiser is a relative change whatever the parameter's units;
- ``"positive"``: ``p = p0 * exp(raw)`` (log-parametrisation), positive by construction;
- ``(low, high)``: ``p = low + (high - low) * sigmoid(raw)``, inside the open interval.

Fixed parameters are constants handed to ``known`` in the same mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

Constraint = str | tuple[float, float]

_UNCONSTRAINED, _POSITIVE, _INTERVAL = 0, 1, 2


class PhysicalParameters(nn.Module):
    """Learnable physical parameters (raw, unconstrained tensors) and fixed constants.

    Parameters
    ----------
    initial : mapping of str to float
        Learned parameters and their starting values (validated by the caller).
    constraints : mapping of str to constraint
        ``"positive"`` or ``(low, high)`` for some of the learned names.
    fixed : mapping of str to float
        Constants passed to ``known`` in the same mapping.
    """

    def __init__(
        self,
        initial: Mapping[str, float],
        constraints: Mapping[str, Constraint],
        fixed: Mapping[str, float],
    ) -> None:
        super().__init__()
        self.names = tuple(initial)
        self.fixed_names = tuple(fixed)
        kinds, raw, reference, low, width = [], [], [], [], []
        for name, value in initial.items():
            constraint = constraints.get(name)
            if constraint is None:
                scale = abs(value) if value != 0 else 1.0
                kinds.append(_UNCONSTRAINED)
                raw.append(value / scale)
                reference.append(scale)
                low.append(0.0)
                width.append(1.0)
            elif constraint == "positive":
                kinds.append(_POSITIVE)
                raw.append(0.0)
                reference.append(value)
                low.append(0.0)
                width.append(1.0)
            else:
                lower, upper = constraint
                fraction = (value - lower) / (upper - lower)
                kinds.append(_INTERVAL)
                raw.append(math.log(fraction / (1.0 - fraction)))
                reference.append(1.0)
                low.append(lower)
                width.append(upper - lower)
        self.raw = nn.Parameter(torch.as_tensor(raw, dtype=torch.float64))  # (n_params,)
        self.register_buffer("kind", torch.as_tensor(kinds, dtype=torch.long))
        self.register_buffer("reference", torch.as_tensor(reference, dtype=torch.float64))
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float64))
        self.register_buffer("width", torch.as_tensor(width, dtype=torch.float64))
        self.register_buffer(
            "fixed_values", torch.as_tensor(list(fixed.values()), dtype=torch.float64)
        )
        # Which transforms occur: the field calls forward() at every solver step, so the
        # common cases (all unconstrained, all positive) cost two tensor operations.
        self.kinds_present = frozenset(kinds)

    def learned_values(self) -> torch.Tensor:
        """Physical values of the learned parameters, shape (n_params,)."""
        if self.kinds_present == {_UNCONSTRAINED}:
            return self.reference * self.raw
        if self.kinds_present == {_POSITIVE}:
            return self.reference * torch.exp(self.raw)
        positive = self.kind == _POSITIVE
        interval = self.kind == _INTERVAL
        exponent = torch.exp(torch.where(positive, self.raw, torch.zeros_like(self.raw)))
        return torch.where(
            positive,
            self.reference * exponent,
            torch.where(
                interval,
                self.low + self.width * torch.sigmoid(self.raw),
                self.reference * self.raw,
            ),
        )

    def forward(self) -> dict[str, torch.Tensor]:
        """Mapping of every name (learned and fixed) to a 0-d tensor."""
        values: dict[str, torch.Tensor] = {}
        if self.names:
            values.update(zip(self.names, self.learned_values().unbind(), strict=True))
        if self.fixed_names:
            values.update(zip(self.fixed_names, self.fixed_values.unbind(), strict=True))
        return values

    def as_floats(self) -> dict[str, float]:
        """The learned parameters' current values as Python floats."""
        with torch.no_grad():
            learned = self.learned_values().detach().cpu().tolist()
        return dict(zip(self.names, learned, strict=True))


def check_parameter_mapping(value: object, name: str) -> dict[str, float]:
    """A mapping of parameter names (str) to finite real numbers, as floats."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"{name} must be a mapping of parameter names to numbers, e.g. "
            f"{{'alpha': 1.0}}, got {type(value).__name__}."
        )
    checked: dict[str, float] = {}
    for key, number in value.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"{name} keys must be non-empty strings, got {key!r}.")
        if isinstance(number, bool) or np.ndim(number) != 0:
            raise TypeError(f"{name}[{key!r}] must be a real number, got {number!r}.")
        try:
            as_float = float(number)
        except (TypeError, ValueError):
            raise TypeError(f"{name}[{key!r}] must be a real number, got {number!r}.") from None
        if isinstance(number, complex) or not math.isfinite(as_float):
            raise ValueError(f"{name}[{key!r}] must be a finite real number, got {number!r}.")
        checked[key] = as_float
    return checked


def check_constraints(value: object, params: Mapping[str, float]) -> dict[str, Constraint]:
    """``param_constraints``: None, "positive" (all learned parameters) or a mapping of
    learned names to "positive" or (low, high); initial values must satisfy them."""
    if value is None:
        return {}
    if isinstance(value, str):
        if value != "positive":
            raise ValueError(
                f"param_constraints must be None, 'positive' or a mapping, got {value!r}."
            )
        value = dict.fromkeys(params, "positive")
    if not isinstance(value, Mapping):
        raise TypeError(
            "param_constraints must be None, 'positive' or a mapping of learned parameter "
            f"names to 'positive' or (low, high), got {type(value).__name__}."
        )
    checked: dict[str, Constraint] = {}
    for name, constraint in value.items():
        if name not in params:
            raise ValueError(
                f"param_constraints names {name!r}, which is not a learned parameter "
                f"(params has {sorted(params)})."
            )
        start = params[name]
        if constraint == "positive":
            if start <= 0:
                raise ValueError(
                    f"params[{name!r}] = {start} must be > 0 to be constrained 'positive'."
                )
            checked[name] = "positive"
            continue
        try:
            low, high = (float(bound) for bound in constraint)  # type: ignore[union-attr]
        except (TypeError, ValueError):
            raise ValueError(
                f"param_constraints[{name!r}] must be 'positive' or a (low, high) pair, "
                f"got {constraint!r}."
            ) from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"param_constraints[{name!r}] = {constraint!r} must be finite with low < high."
            )
        if not low < start < high:
            raise ValueError(
                f"params[{name!r}] = {start} must lie strictly inside its bounds ({low}, {high})."
            )
        checked[name] = (low, high)
    return checked
