"""Masked losses in scaled units, shared by the stages and the final evaluation."""

from __future__ import annotations

import torch


def masked_mean_squared_error(
    predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Weighted mean of squared errors; entries of weight 0 (unobserved) do not count."""
    return (weight * (predicted - target) ** 2).sum() / weight.sum().clamp_min(1.0)


def masked_huber(
    predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, delta: float
) -> torch.Tensor:
    """Weighted mean Huber loss (quadratic up to ``delta``, linear beyond)."""
    errors = torch.nn.functional.huber_loss(predicted, target, reduction="none", delta=delta)
    return (weight * errors).sum() / weight.sum().clamp_min(1.0)
