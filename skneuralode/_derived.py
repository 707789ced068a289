"""Functions of the physical parameters (a reproduction number ``beta / gamma``, a
clearance ``ke * V``, an insulin sensitivity ``p3 / p2``) and their intervals.

A derived quantity ``g(p)`` is written like the ``known`` term's parameters: a callable
on the mapping of every parameter name (learned and fixed) to a 0-d tensor, returning a
0-d tensor. Its Wald interval is the delta method on the raw scale the parameters are
learned on, ``var g = grad^T C grad`` with ``C`` the raw parameters' covariance; its
profile (``_profile``) re-fits the parameters at each value of ``g``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from ._physical_parameters import PhysicalParameters

DerivedFunction = Callable[[dict[str, torch.Tensor]], Any]


class DerivedQuantity:
    """One function of the physical parameters, evaluated on raw parameter vectors.

    Parameters
    ----------
    name : str
    function : callable
        ``function(p) -> 0-d tensor`` with ``p`` every parameter name (learned and
        fixed) mapped to a 0-d tensor.
    parameters : PhysicalParameters
        The fitted model's parameters (read, never changed).
    """

    def __init__(
        self, name: str, function: DerivedFunction, parameters: PhysicalParameters
    ) -> None:
        self.name, self.function, self.parameters = name, function, parameters

    def value_and_gradient(self, raw: np.ndarray) -> tuple[float, np.ndarray]:
        """``g`` and ``dg / draw`` at the raw physical parameters ``raw``."""
        tensor = torch.as_tensor(raw, dtype=self.parameters.raw.dtype).clone()
        tensor.requires_grad_(True)
        with torch.enable_grad():
            values = functional_call(self.parameters, {"raw": tensor}, ())
            output = self.function(values)
            if not isinstance(output, torch.Tensor):
                output = torch.as_tensor(output, dtype=tensor.dtype)
            if output.numel() != 1:
                raise ValueError(
                    f"functions[{self.name!r}] must return one number (a 0-d tensor), got "
                    f"shape {tuple(output.shape)}."
                )
            output = output.reshape(())
            if not output.requires_grad:
                gradient = np.zeros(raw.shape)
            else:
                (grad,) = torch.autograd.grad(output, tensor, allow_unused=True)
                gradient = np.zeros(raw.shape) if grad is None else grad.detach().numpy()
        return float(output.detach()), gradient.astype(np.float64)


def check_functions(functions: Any, parameters: PhysicalParameters) -> dict[str, DerivedQuantity]:
    """``functions`` of ``param_intervals``: None or a mapping of new names to callables,
    each returning a finite number with a gradient at the fitted parameters."""
    if functions is None:
        return {}
    if not isinstance(functions, Mapping):
        raise TypeError(
            "functions must be a mapping of names to callables f(p) -> number, got "
            f"{type(functions).__name__}."
        )
    quantities = {}
    on_cpu = copy.deepcopy(parameters).cpu()
    raw = on_cpu.raw.detach().numpy().astype(np.float64)
    for name, function in functions.items():
        if not isinstance(name, str) or not callable(function):
            raise TypeError(
                f"functions must map names (str) to callables f(p) -> number; got {name!r}: "
                f"{type(function).__name__}."
            )
        if name in parameters.names or name in parameters.fixed_names:
            raise ValueError(
                f"functions[{name!r}]: the name is already a parameter; choose another."
            )
        quantity = DerivedQuantity(name, function, on_cpu)
        try:
            value, gradient = quantity.value_and_gradient(raw)
        except (KeyError, TypeError, RuntimeError) as error:
            raise ValueError(
                f"functions[{name!r}] failed on the fitted parameters "
                f"{sorted((*parameters.names, *parameters.fixed_names))}: {error}"
            ) from error
        if not math.isfinite(value) or not np.all(np.isfinite(gradient)):
            raise ValueError(
                f"functions[{name!r}] is not finite at the fitted parameters (value {value})."
            )
        quantities[name] = quantity
    return quantities


def delta_interval(
    quantity: DerivedQuantity, raw: np.ndarray, covariance: np.ndarray, quantile: float
) -> tuple[float, float]:
    """The Wald interval of ``g`` by the delta method: ``g +- quantile * sqrt(grad^T C
    grad)``."""
    value, gradient = quantity.value_and_gradient(raw)
    half = quantile * math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
    return value - half, value + half
