"""The one place that calls the ODE solver.

Many initial-value problems are integrated in ONE batched call. When every member of the
batch shares its output times, torchdiffeq integrates on that grid directly and its
adaptive steps may span several outputs. When the times differ (irregular grids,
segments at different places), each member's time is warped onto the common integer
grid ``0, 1, ..., n_points - 1`` piecewise linearly: on ``[k, k + 1]`` member ``b`` runs
``dz/ds = Δt[b, k] f(t_b(s), z)`` with ``Δt[b, k] = t[b, k + 1] - t[b, k]``. That change of
variables is exact, so one solve serves a batch of arbitrary grids (also decreasing or
with zero-length padding intervals). The solver is told about the kinks at the integers.

Failures (step-size underflow, step budget exhausted) come back as an outcome, not as an
exception: the caller decides whether to retry, restore or warn.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS

FIXED_STEP_SOLVERS = frozenset(
    {
        "euler",
        "midpoint",
        "heun2",
        "heun3",
        "rk4",
        "explicit_adams",
        "implicit_adams",
        "fixed_adams",
    }
)
SOLVER_NAMES = frozenset(name for name in SOLVERS if name != "scipy_solver")


@dataclass(frozen=True)
class SolverSettings:
    """How to integrate.

    Attributes
    ----------
    method : str
        A torchdiffeq method name.
    rtol, atol : float
        Tolerances of adaptive methods (scaled units).
    adjoint : bool
        Differentiate with the adjoint method (memory independent of the number of steps).
    max_num_steps : int
        Step budget of one adaptive solve; exceeding it is a failure outcome.
    step_size : float or None
        Step of fixed-step methods in scaled time; None steps at the output times.
    """

    method: str = "dopri5"
    rtol: float = 1e-6
    atol: float = 1e-8
    adjoint: bool = False
    max_num_steps: int = 10_000
    step_size: float | None = None
    extra_options: dict = field(default_factory=dict)

    @property
    def is_fixed_step(self) -> bool:
        return self.method in FIXED_STEP_SOLVERS


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one batched solve.

    Attributes
    ----------
    states : Tensor of shape (n_batch, n_points, n_total_states) or None
        The solution at the requested times; None when the solve failed.
    failure : str or None
        Why the solve failed, in words; None on success.
    """

    states: torch.Tensor | None
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def depends_on_time(field: nn.Module) -> bool:
    """Whether ``field(t, z)`` reads ``t`` (assumed unless the field says otherwise)."""
    return bool(getattr(field, "depends_on_time", True))


class _ShiftedField(nn.Module):
    """Field on a grid relative to each member's start: member ``b`` is at ``start[b] + s``."""

    def __init__(self, field: nn.Module, starts: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.starts = starts  # (n_batch,)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.field(self.starts + s, z)


class _WarpedField(nn.Module):
    """Field in warped time ``s``: member ``b`` on ``[k, k+1]`` runs at real speed Δt[b, k]."""

    def __init__(self, field: nn.Module, times: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.interval_starts = times[:, :-1]  # (n_batch, n_points - 1)
        self.interval_lengths = times[:, 1:] - times[:, :-1]  # (n_batch, n_points - 1)
        self.last_interval = self.interval_lengths.shape[1] - 1

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        interval = s.detach().floor().clamp(0, self.last_interval).long().reshape(1)
        lengths = self.interval_lengths.index_select(1, interval)[:, 0]  # (n_batch,)
        if depends_on_time(self.field):
            starts = self.interval_starts.index_select(1, interval)[:, 0]
            real_times = starts + (s - interval) * lengths
        else:
            real_times = s
        return lengths[:, None] * self.field(real_times, z)


def _options(settings: SolverSettings, kinks: torch.Tensor | None) -> dict:
    options = dict(settings.extra_options)
    if settings.is_fixed_step:
        if settings.step_size is not None:
            options["step_size"] = settings.step_size
        if kinks is not None:
            options["perturb"] = True
    else:
        options["max_num_steps"] = settings.max_num_steps
        if kinks is not None and kinks.numel() > 0:
            options["jump_t"] = kinks
    return options


def solve(
    field: nn.Module,
    initial_states: torch.Tensor,
    times: torch.Tensor,
    settings: SolverSettings,
    *,
    shared_grid: bool,
) -> SolveResult:
    """Integrate a batch of initial-value problems in one call.

    Parameters
    ----------
    field : nn.Module
        ``field(t, z) -> dz/ds``.
    initial_states : Tensor of shape (n_batch, n_total_states)
        State of each member at its first time.
    times : Tensor of shape (n_batch, n_points)
        Output times of each member; ``times[:, 0]`` is where ``initial_states`` hold.
    settings : SolverSettings
    shared_grid : bool
        All rows of ``times`` are equal (known to the caller without a device sync).

    Returns
    -------
    SolveResult
        ``states`` of shape (n_batch, n_points, n_total_states).
    """
    if times.shape[1] == 1:
        return SolveResult(initial_states[:, None, :])
    if shared_grid:
        func = _ShiftedField(field, times[:, 0]) if depends_on_time(field) else field
        grid, kinks = times[0] - times[0, 0], None
    else:
        func = _WarpedField(field, times)
        grid = torch.arange(times.shape[1], dtype=times.dtype, device=times.device)
        kinks = grid[1:-1]
    options = _options(settings, kinks)
    integrate = odeint_adjoint if settings.adjoint else odeint
    extra = {"adjoint_params": tuple(field.parameters())} if settings.adjoint else {}
    try:
        solution = integrate(
            func,
            initial_states,
            grid,
            rtol=settings.rtol,
            atol=settings.atol,
            method=settings.method,
            options=options,
            **extra,
        )
    except AssertionError as error:  # torchdiffeq reports underflow and budget this way
        return SolveResult(None, f"the ODE solver stopped: {error}")
    return SolveResult(solution.transpose(0, 1))
