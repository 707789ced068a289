"""Physical parameters of a fitted universal ODE: standard deviations, Wald intervals
and the identifiability analysis, from the information recorded at the end of ``fit``.

The information is about the *raw* parameters, the unconstrained numbers the optimisers
move (``_physical_parameters``). Intervals are built on that scale and mapped back
through the parameter's transform, which is monotone: a positive parameter (learned on a
log scale) gets an interval that is symmetric in ``log p`` and never crosses zero, a
bounded one stays inside its bounds. Standard deviations are the delta method,
``|dp/draw| * std(raw)``.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ._derived import DerivedQuantity, delta_interval
from ._identifiability import analyse_identifiability
from ._physical_parameters import PhysicalParameters
from ._uncertainty import inverse_information, student_quantile

_POSITIVE_KIND = 1  # PhysicalParameters' code of a log-parametrised parameter
_INTERVAL_KIND = 2  # ... and of a logit-parametrised (bounded) one


class _LearnedValues(nn.Module):
    """``raw -> physical values`` of a :class:`PhysicalParameters`, as a module call."""

    def __init__(self, parameters: PhysicalParameters) -> None:
        super().__init__()
        self.parameters_ = parameters

    def forward(self) -> torch.Tensor:
        return self.parameters_.learned_values()


def physical_values(parameters: PhysicalParameters, raw: np.ndarray) -> np.ndarray:
    """Physical values of raw parameter vectors of shape (..., n_params)."""
    tensor = torch.as_tensor(raw, dtype=parameters.raw.dtype, device=parameters.raw.device)
    with torch.no_grad():
        values = functional_call(_LearnedValues(parameters), {"parameters_.raw": tensor}, ())
    return values.cpu().numpy().astype(np.float64)


def transform_derivatives(parameters: PhysicalParameters) -> np.ndarray:
    """``dp / draw`` of each learned parameter at its fitted value."""
    raw = parameters.raw.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        values = functional_call(_LearnedValues(parameters), {"parameters_.raw": raw}, ())
        (gradient,) = torch.autograd.grad(values.sum(), raw)
    return gradient.cpu().numpy().astype(np.float64)


def _raw_std(information: np.ndarray) -> np.ndarray:
    return np.sqrt(np.diagonal(inverse_information(information)))


def parameter_std(parameters: PhysicalParameters, information: np.ndarray) -> dict[str, float]:
    """Standard deviation of each learned parameter (delta method)."""
    std = np.abs(transform_derivatives(parameters)) * _raw_std(information)
    return dict(zip(parameters.names, (float(value) for value in std), strict=True))


def wald_intervals(
    parameters: PhysicalParameters,
    information: np.ndarray,
    confidence: float,
    dof: float,
    quantities: dict[str, DerivedQuantity] | None = None,
) -> dict[str, tuple[float, float]]:
    """Student-t intervals on the raw scale, mapped back to physical values; then those
    of the derived ``quantities`` by the delta method."""
    raw = parameters.raw.detach().cpu().numpy().astype(np.float64)
    quantile = student_quantile(confidence, dof)
    covariance = inverse_information(information)
    half_width = quantile * np.sqrt(np.diagonal(covariance))
    with np.errstate(over="ignore"):
        low = physical_values(parameters, raw - half_width)
        high = physical_values(parameters, raw + half_width)
    intervals = {
        name: (float(lower), float(upper))
        for name, lower, upper in zip(parameters.names, low, high, strict=True)
    }
    at_bounds = parameters_at_bounds(parameters)
    for name, bound in at_bounds.items():
        intervals[name] = (bound, math.nan) if bound <= intervals[name][0] else (math.nan, bound)
    warn_parameters_at_bounds(at_bounds, "wald")
    for name, quantity in (quantities or {}).items():
        intervals[name] = delta_interval(quantity, raw, covariance, quantile)
    return intervals


def parameter_identifiability(
    parameters: PhysicalParameters, information: np.ndarray
) -> dict[str, Any]:
    """:func:`~skneuralode._identifiability.analyse_identifiability` of fitted parameters."""
    raw = parameters.raw.detach().cpu().numpy().astype(np.float64)
    return analyse_identifiability(
        information,
        parameters.names,
        physical_values(parameters, raw),
        transform_derivatives(parameters),
        parameters.kind.cpu().numpy() == _POSITIVE_KIND,
    )


#: A constrained parameter whose raw value lies beyond this many units (log or logit)
#: sits at its boundary: a positive one below a millionth of its start value, a bounded
#: one within a millionth of its range from a bound.
BOUNDARY_RAW = math.log(1e6)


def parameters_at_bounds(parameters: PhysicalParameters) -> dict[str, float]:
    """The learned parameters that sit at a boundary of their constraint, with that bound.

    A fit pushed them there: a positive rate collapsing toward 0 (``exp(raw)`` with raw
    at -200 gives 1e-90) is the boundary 0, not an estimate of 1e-90, and a quadratic
    (Wald) interval around it means nothing.
    """
    raw = parameters.raw.detach().cpu().numpy().astype(np.float64)
    kinds = parameters.kind.cpu().numpy()
    low = parameters.low.cpu().numpy()
    width = parameters.width.cpu().numpy()
    at_bounds = {}
    for index, name in enumerate(parameters.names):
        if kinds[index] == _POSITIVE_KIND and raw[index] < -BOUNDARY_RAW:
            at_bounds[name] = 0.0
        elif kinds[index] == _INTERVAL_KIND and abs(raw[index]) > BOUNDARY_RAW:
            at_bounds[name] = float(low[index] + (width[index] if raw[index] > 0 else 0.0))
    return at_bounds


def warn_parameters_at_bounds(at_bounds: dict[str, float], method: str) -> None:
    """One UserWarning naming the parameters at a boundary and what their interval means."""
    if not at_bounds:
        return
    listed = ", ".join(f"{name} at {bound:g}" for name, bound in at_bounds.items())
    remedy = (
        "its other end is not available from the quadratic approximation (NaN): use "
        "method='profile'"
        if method == "wald"
        else "its other end is where the profile crosses the threshold"
    )
    warnings.warn(
        f"Parameters at the boundary of their constraint: {listed}. The fit pushed them "
        "there (the data favour a value at or beyond the bound, or a term the model does "
        f"not need); each interval starts at its bound and {remedy}. Refit from another "
        "start, free the constraint, or drop the term if the boundary is not physical.",
        UserWarning,
        stacklevel=3,
    )
