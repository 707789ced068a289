"""External inputs inside the model: what the network sees of them, and the forced field.

A model fitted with inputs ``u(t)`` has a field ``field(t, z, u)``. The inputs are data,
not part of the fitted model: the training problem holds the training inputs and
``predict`` builds the ones it is given (``_inputs``), as a signal ``signal(times,
trajectory)``. :class:`ForcedField` puts a signal and the trajectory of each member of a
batch in front of such a field, so the solver sees the usual ``field(t, z)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ._inputs import ValidatedInputs


class InputStandardiser(nn.Module):
    """``(u - mean) / std`` with the statistics of the training inputs (buffers)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.as_tensor(mean, dtype=torch.float64))
        self.register_buffer("input_std", torch.as_tensor(std, dtype=torch.float64))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return (u - self.input_mean) / self.input_std


def input_statistics(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (1 where constant) of inputs ``(n_samples, n_inputs)``."""
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std > 0, std, 1.0)


class ForcedField(nn.Module):
    """``field(t, z, signal(t, members))``: a field driven by inputs, for one solve.

    Parameters
    ----------
    field : nn.Module
        Called as ``field(t, z, u)``.
    signal : nn.Module
        ``signal(times, trajectory) -> (..., n_inputs)`` in the solver's (scaled) time.
    members : Tensor of shape (n_batch,)
        The trajectory of each member of the batch being solved.
    """

    depends_on_time = True

    def __init__(self, field: nn.Module, signal: nn.Module, members: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.signal = signal
        self.members = members

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.field(t, z, self.signal(t, self.members))


def training_input_statistics(
    inputs: ValidatedInputs, sorted_times: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of the training inputs over the real samples of every trajectory (a
    callable is evaluated at the observation times)."""
    if inputs.kind == "callable":
        times = torch.as_tensor(np.concatenate(sorted_times))
        values = np.asarray(torch.as_tensor(inputs.function(times)), dtype=np.float64)
        return input_statistics(values.reshape(times.numel(), inputs.n_inputs))
    if inputs.kind == "constant":
        return input_statistics(inputs.values[:, 0])
    rows = [inputs.values[row, : len(times)] for row, times in enumerate(sorted_times)]
    return input_statistics(np.concatenate(rows))
