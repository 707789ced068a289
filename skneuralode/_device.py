"""Resolution of the ``device`` and ``dtype`` arguments."""

from __future__ import annotations

import re

import torch

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device_name(device: object) -> str:
    """``device`` must be "auto", "cpu", "cuda" or "cuda:N" (whether or not CUDA exists)."""
    if not isinstance(device, str) or not _DEVICE_PATTERN.match(device):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return device


def resolve_device(device: str) -> torch.device:
    """``"auto"`` is CUDA when available, else the CPU; CUDA that is missing is an error."""
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} was asked for but CUDA is not available.")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``"auto"`` is float64 on the CPU (accurate; on clean data the collocation warm start
    of a neural field computes in float32) and float32 on a GPU (where float64 is many times
    slower)."""
    if dtype == "auto":
        return torch.float32 if device.type == "cuda" else torch.float64
    return {"float32": torch.float32, "float64": torch.float64}[dtype]


def device_for_prediction(device: str) -> torch.device:
    """Like :func:`resolve_device`, but a model saved on a GPU predicts on a machine
    without one (on its CPU) instead of failing."""
    try:
        return resolve_device(device)
    except ValueError:
        return torch.device("cpu")
