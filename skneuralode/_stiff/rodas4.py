"""One Rodas4 step of a batch of initial-value problems (one LU per step)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import tableau


@dataclass(frozen=True)
class Step:
    """A Rodas4 step from ``t`` to ``t + h``.

    Attributes
    ----------
    states : Tensor of shape (n_batch, n_states)
        The fourth-order solution at ``t + h``.
    error : Tensor of shape (n_batch, n_states)
        Its difference to the embedded third-order solution.
    """

    states: torch.Tensor
    error: torch.Tensor


def rodas4_step(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    time: float,
    step: float,
    states: torch.Tensor,
    rates: torch.Tensor,
    jacobian: torch.Tensor,
    time_derivative: torch.Tensor | None,
) -> Step:
    """Take one step of size ``step`` (negative integrates backwards).

    Parameters
    ----------
    func : callable
        ``func(t, z) -> dz/dt``.
    time, step : float
    states, rates : Tensor of shape (n_batch, n_states)
        The state at ``time`` and the field there.
    jacobian : Tensor of shape (n_batch, n_states, n_states)
        ``df/dz`` at ``(time, states)``.
    time_derivative : Tensor of shape (n_batch, n_states) or None
        ``df/dt`` at ``(time, states)``; None for a field that does not read ``t``.

    Returns
    -------
    Step
    """
    n_states = states.shape[1]
    eye = torch.eye(n_states, dtype=states.dtype, device=states.device)
    matrix = eye / (step * tableau.GAMMA) - jacobian  # (n_batch, n_states, n_states)
    inverse = torch.linalg.inv(matrix)

    def solve(right_hand_side: torch.Tensor) -> torch.Tensor:
        return (inverse @ right_hand_side[..., None])[..., 0]

    def at(stage: int) -> torch.Tensor:
        return torch.as_tensor(time + tableau.NODES[stage] * step, dtype=states.dtype)

    def time_term(stage: int) -> torch.Tensor | float:
        if time_derivative is None or stage >= len(tableau.TIME_WEIGHTS):
            return 0.0
        return (step * tableau.TIME_WEIGHTS[stage]) * time_derivative

    stages = [solve(rates + time_term(0))]
    stage_states = states
    for stage in range(1, 6):
        if stage <= 4:
            weights = tableau.A[stage - 1]
            stage_states = states + sum(w * k for w, k in zip(weights, stages, strict=True))
        else:  # stage 6 sits where stage 5 ended
            stage_states = stage_states + stages[4]
        coupling = tableau.C[stage - 1]
        right = func(at(stage), stage_states) + time_term(stage)
        right = right + sum((c / step) * k for c, k in zip(coupling, stages, strict=True))
        stages.append(solve(right))
    new_states = stage_states + stages[5]
    return Step(new_states, stages[5])
