"""The one place that calls the ODE solver.

Many initial-value problems are integrated in ONE batched call. When every member of the
batch shares its output times, torchdiffeq integrates on that grid directly and its
adaptive steps may span several outputs. When the times differ (irregular grids,
segments at different places), each member's time is warped onto the common integer
grid ``0, 1, ..., n_points - 1`` piecewise linearly: on ``[k, k + 1]`` member ``b`` runs
``dz/ds = Δt[b, k] f(t_b(s), z)`` with ``Δt[b, k] = t[b, k + 1] - t[b, k]``. That change of
variables is exact, so one solve serves a batch of arbitrary grids (also decreasing or
with zero-length padding intervals). The solver is told about the kinks at the integers.

Every solve has a step budget, ``max_num_steps`` steps for all output times together
(torchdiffeq's own limit counts per output interval, so a long grid could take hundreds of
thousands of steps). A solve that needs no gradient (prediction, the runner's evaluation)
and fails with an explicit method is retried once with scipy's LSODA, which switches to an
implicit BDF method when the dynamics are stiff, under the same budget. Failures
(step-size underflow, step budget exhausted, blow-up) come back as an outcome, not as an
exception: the caller decides whether to retry, restore or warn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from torchdiffeq._impl.odeint import SOLVERS

from ._stiff import STIFF_SOLVER_NAMES
from ._stiff import integrate as integrate_stiff
from ._stiff.detection import AUTO_EXPLICIT_METHOD, AUTO_STIFF_METHOD, StiffnessProbe

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
AUTO = "auto"
SOLVER_NAMES = (
    frozenset(name for name in SOLVERS if name != "scipy_solver") | STIFF_SOLVER_NAMES | {AUTO}
)
STIFF_FALLBACK_METHOD = "LSODA"
_STIFF_EVALUATIONS_PER_STEP = 4  # LSODA's budget in field evaluations, per allowed step


@dataclass(frozen=True)
class SolverSettings:
    """How to integrate.

    Attributes
    ----------
    method : str
        A torchdiffeq method name, or ``"rodas4"``: the L-stable Rosenbrock method of
        :mod:`skneuralode._stiff` for stiff fields (``adjoint`` and ``step_size`` do not
        apply to it; its gradients flow through its steps), or ``"auto"``: ``"dopri5"``
        until a solve's steps are held back by stability rather than accuracy
        (:mod:`skneuralode._stiff.detection`), ``"rodas4"`` for that field from then on.
    rtol, atol : float
        Tolerances of adaptive methods (scaled units).
    adjoint : bool
        Differentiate with the adjoint method (memory independent of the number of steps).
    max_num_steps : int
        Step budget of one solve, all output times together; exceeding it is a failure
        outcome (a fixed-step solve that would need more steps is one too).
    step_size : float or None
        Step of fixed-step methods in scaled time; None steps at the output times.
    stiff_fallback : bool
        Retry a failed solve that needs no gradient with scipy's LSODA.
    """

    method: str = "dopri5"
    rtol: float = 1e-6
    atol: float = 1e-8
    adjoint: bool = False
    max_num_steps: int = 10_000
    step_size: float | None = None
    stiff_fallback: bool = True

    @property
    def is_fixed_step(self) -> bool:
        return self.method in FIXED_STEP_SOLVERS

    @property
    def is_stiff(self) -> bool:
        """Whether the method is one of the stiff (linearly implicit) solvers."""
        return self.method in STIFF_SOLVER_NAMES

    @property
    def is_auto(self) -> bool:
        """Whether the method is chosen per field by stiffness detection."""
        return self.method == AUTO


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one batched solve.

    Attributes
    ----------
    states : Tensor of shape (n_batch, n_points, n_total_states) or None
        The solution at the requested times; None when the solve failed.
    failure : str or None
        Why the solve failed, in words; None on success.
    n_steps : int
        Steps the solver took (attempts included), counted on the host.
    """

    states: torch.Tensor | None
    failure: str | None = None
    n_steps: int = 0

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


class _UnitSpanField(nn.Module):
    """Field in unit time: member ``b`` is at ``start[b] + s span[b]``, ``s`` in [0, 1]."""

    def __init__(self, field: nn.Module, starts: torch.Tensor, spans: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.starts = starts  # (n_batch,)
        self.spans = spans  # (n_batch,)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        real_times = self.starts + s * self.spans if depends_on_time(self.field) else s
        return self.spans[:, None] * self.field(real_times, z)


class _StepBudgetExhausted(Exception):
    """Raised from inside a solve when it has used up its step budget."""


class _StiffnessDetected(Exception):
    """Raised from inside an explicit solve of ``solver="auto"`` that turned out stiff."""


class _BudgetedField(nn.Module):
    """Counts solver steps (torchdiffeq calls ``callback_step`` before each attempt) and,
    for ``solver="auto"``, asks its stiffness probe whether the steps are held back by
    stability."""

    def __init__(
        self, func: nn.Module, max_steps: float, probe: StiffnessProbe | None = None
    ) -> None:
        super().__init__()
        self.func = func
        self.max_steps = max_steps
        self.steps = 0
        self.probe = probe

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.func(s, z)

    def callback_step(self, t0: torch.Tensor, y0: torch.Tensor, dt: torch.Tensor) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise _StepBudgetExhausted
        if self.probe is not None and self.probe.is_stiff(self.steps, t0, y0, dt):
            raise _StiffnessDetected


def _budget_message(settings: SolverSettings) -> str:
    return (
        f"the ODE solver used up its budget of max_num_steps={settings.max_num_steps} steps "
        "before the last output time (stiff or exploding dynamics)"
    )


def _fixed_steps_needed(settings: SolverSettings, grid: torch.Tensor) -> float:
    """Steps a fixed-step solve over ``grid`` takes (one per output interval at least)."""
    intervals = grid.shape[0] - 1
    if settings.step_size is None:
        return intervals
    span = abs(float(grid[-1] - grid[0]))
    return math.ceil(span / settings.step_size) + intervals


def _solve_stiff(
    func: nn.Module, initial_states: torch.Tensor, grid: torch.Tensor, settings: SolverSettings
) -> SolveResult:
    """Integrate with scipy's LSODA (no gradient), budgeted in field evaluations.

    The members of the batch are independent, so the Jacobian is block diagonal: LSODA is
    told it is banded, which keeps its finite differences at ``2 n_total_states - 1``
    field evaluations whatever the batch size.
    """
    n_batch, n_total_states = initial_states.shape
    dtype, device = initial_states.dtype, initial_states.device
    max_evaluations = _STIFF_EVALUATIONS_PER_STEP * settings.max_num_steps
    evaluations = 0

    def rates(s: float, flat_states: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        if evaluations > max_evaluations:
            raise _StepBudgetExhausted
        states = torch.as_tensor(flat_states.reshape(n_batch, n_total_states), device=device)
        time = torch.as_tensor(s, dtype=dtype, device=device)
        derivative = func(time, states.to(dtype))
        return derivative.detach().cpu().numpy().astype(np.float64).reshape(-1)

    times = grid.detach().cpu().numpy().astype(np.float64)
    try:
        solution = solve_ivp(
            rates,
            (times[0], times[-1]),
            initial_states.detach().cpu().numpy().astype(np.float64).reshape(-1),
            method=STIFF_FALLBACK_METHOD,
            t_eval=times,
            rtol=settings.rtol,
            atol=settings.atol,
            lband=n_total_states - 1,
            uband=n_total_states - 1,
        )
    except _StepBudgetExhausted:
        return SolveResult(None, _budget_message(settings) + f", also with {STIFF_FALLBACK_METHOD}")
    if solution.status != 0 or not np.all(np.isfinite(solution.y)):
        return SolveResult(None, f"{STIFF_FALLBACK_METHOD} stopped: {solution.message}")
    states = solution.y.T.reshape(times.shape[0], n_batch, n_total_states)
    return SolveResult(torch.as_tensor(states, dtype=dtype, device=device).transpose(0, 1))


def _options(settings: SolverSettings, kinks: torch.Tensor | None) -> dict:
    options: dict = {}
    if settings.is_fixed_step:
        if settings.step_size is not None:
            options["step_size"] = settings.step_size
        if kinks is not None:
            options["perturb"] = True
    else:
        options["max_num_steps"] = settings.max_num_steps + 1  # our budget counts first
        if kinks is not None and kinks.numel() > 0:
            options["jump_t"] = kinks
    return options


def _adjoint_arguments(field: nn.Module, settings: SolverSettings, options: dict) -> dict:
    """Arguments of ``odeint_adjoint``: the field's parameters and the backward options.

    Adaptive backward solves control their error on the state and its adjoint only (the
    "seminorm" of Kidger et al. 2021): the parameters' adjoint is an integral that does
    not feed back into the dynamics, and letting it shrink the steps makes the backward
    pass several times slower for no accuracy where it matters.
    """
    arguments: dict = {"adjoint_params": tuple(field.parameters())}
    if not settings.is_fixed_step:
        arguments["adjoint_options"] = {**options, "norm": "seminorm"}
    return arguments


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
    if settings.is_fixed_step and _fixed_steps_needed(settings, grid) > settings.max_num_steps:
        return SolveResult(None, _budget_message(settings))
    result = _integrate(func, field, initial_states, grid, settings, kinks)
    if result.ok or not settings.stiff_fallback or torch.is_grad_enabled() or settings.is_stiff:
        return result
    fallback = _solve_stiff(func, initial_states, grid, settings)
    return fallback if fallback.ok else SolveResult(None, f"{result.failure}; {fallback.failure}")


def solve_interpolated(
    field: nn.Module,
    initial_states: torch.Tensor,
    times: torch.Tensor,
    settings: SolverSettings,
    nodes: int,
) -> SolveResult:
    """Integrate members with different output times on ONE shared grid, for training.

    :func:`solve` warps each member's grid onto the integers and tells the solver about
    the kinks there, so an adaptive solver stops (and restarts) at every output time.
    Here every member's time is rescaled linearly to ``[0, 1]`` (member ``b`` runs
    ``dz/ds = T_b f(t_b0 + s T_b, z)`` with ``T_b`` its span), all of them are integrated
    to ``nodes`` evenly spaced points they share, with steps that cross output times,
    and each output comes from the cubic Hermite interpolant of the states and rates at
    the two nodes around it. The interpolation errs by ``O((1 / (nodes - 1))^4)`` of the
    solution's fourth derivative: meant for training solves whose tolerance follows the
    noise (multiple shooting on an irregular grid: 6 instead of 9 steps a solve), not
    for predictions.

    Parameters
    ----------
    field : nn.Module
        ``field(t, z) -> dz/dt``.
    initial_states : Tensor of shape (n_batch, n_total_states)
    times : Tensor of shape (n_batch, n_points)
        Output times of each member, ascending or descending (repeated values pad a
        short member); ``times[:, 0]`` is where ``initial_states`` hold.
    settings : SolverSettings
    nodes : int
        Shared grid points (at least 2).

    Returns
    -------
    SolveResult
        ``states`` of shape (n_batch, n_points, n_total_states).
    """
    if times.shape[1] == 1:
        return SolveResult(initial_states[:, None, :])
    spans = times[:, -1] - times[:, 0]
    spans = torch.where(spans != 0, spans, torch.ones_like(spans))
    func = _UnitSpanField(field, times[:, 0], spans)
    grid = torch.linspace(0.0, 1.0, nodes, dtype=times.dtype, device=times.device)
    result = _integrate(func, field, initial_states, grid, settings, None)
    if not result.ok:
        return result
    node_states = result.states  # (n_batch, nodes, n_total_states)
    node_rates = torch.stack(
        [func(grid[node], node_states[:, node]) for node in range(nodes)], dim=1
    )
    position = (times - times[:, :1]) / spans[:, None] * (nodes - 1)  # (n_batch, n_points)
    left = position.detach().floor().clamp(0, nodes - 2).long()
    tau = (position - left)[..., None]
    width = 1.0 / (nodes - 1)

    def at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return values.gather(1, index[..., None].expand(-1, -1, values.shape[-1]))

    states = (
        (2 * tau**3 - 3 * tau**2 + 1) * at(node_states, left)
        + (tau**3 - 2 * tau**2 + tau) * width * at(node_rates, left)
        + (3 * tau**2 - 2 * tau**3) * at(node_states, left + 1)
        + (tau**3 - tau**2) * width * at(node_rates, left + 1)
    )
    return SolveResult(states, n_steps=result.n_steps)


def _integrate(
    func: nn.Module,
    field: nn.Module,
    initial_states: torch.Tensor,
    grid: torch.Tensor,
    settings: SolverSettings,
    kinks: torch.Tensor | None,
) -> SolveResult:
    """One solve with the settings' method, explicit (torchdiffeq) or stiff, or for
    ``"auto"`` the explicit method until the field shows itself stiff."""
    if settings.is_auto:
        return _integrate_auto(func, field, initial_states, grid, settings, kinks)
    if not settings.is_stiff:
        return _solve_explicit(func, field, initial_states, grid, settings, kinks)
    outcome = integrate_stiff(
        func,
        initial_states,
        grid,
        rtol=settings.rtol,
        atol=settings.atol,
        max_num_steps=settings.max_num_steps,
        reads_time=depends_on_time(field),
        method=settings.method,
    )
    if outcome.failure == "budget":
        return SolveResult(None, _budget_message(settings), outcome.n_steps)
    if outcome.failure is not None:
        return SolveResult(
            None,
            f"the ODE solver stopped: the step size of {settings.method} underflowed",
            outcome.n_steps,
        )
    return SolveResult(outcome.states, n_steps=outcome.n_steps)


def _integrate_auto(
    func: nn.Module,
    field: nn.Module,
    initial_states: torch.Tensor,
    grid: torch.Tensor,
    settings: SolverSettings,
    kinks: torch.Tensor | None,
) -> SolveResult:
    """``solver="auto"``: the explicit method, switching to the stiff one for good (the
    field remembers it) when a solve's steps are limited by stability.

    A field that is not stiff is integrated exactly as by the explicit method alone:
    the probe only reads the solver's state, under ``no_grad``, every so many steps.
    """
    explicit = replace(settings, method=AUTO_EXPLICIT_METHOD)
    stiff = replace(settings, method=AUTO_STIFF_METHOD)
    if StiffnessProbe.remembers(field):
        return _integrate(func, field, initial_states, grid, stiff, kinks)
    probe = StiffnessProbe(func)
    result = _solve_explicit(func, field, initial_states, grid, explicit, kinks, probe)
    if not probe.detected:
        return result
    StiffnessProbe.remember(field)
    switched = _integrate(func, field, initial_states, grid, stiff, kinks)
    return replace(switched, n_steps=switched.n_steps + result.n_steps)


def _solve_explicit(
    func: nn.Module,
    field: nn.Module,
    initial_states: torch.Tensor,
    grid: torch.Tensor,
    settings: SolverSettings,
    kinks: torch.Tensor | None,
    probe: StiffnessProbe | None = None,
) -> SolveResult:
    """One torchdiffeq solve under the step budget; failures become outcomes."""
    budgeted = _BudgetedField(func, settings.max_num_steps, probe)
    integrate = odeint_adjoint if settings.adjoint else odeint
    options = _options(settings, kinks)
    extra = _adjoint_arguments(field, settings, options) if settings.adjoint else {}
    try:
        solution = integrate(
            budgeted,
            initial_states,
            grid,
            rtol=settings.rtol,
            atol=settings.atol,
            method=settings.method,
            options=options,
            **extra,
        )
    except _StepBudgetExhausted:
        return SolveResult(None, _budget_message(settings), budgeted.steps)
    except _StiffnessDetected:
        return SolveResult(None, "the field is stiff", budgeted.steps)
    except AssertionError as error:  # torchdiffeq reports underflow and blow-up this way
        return SolveResult(None, f"the ODE solver stopped: {error}", budgeted.steps)
    finally:
        budgeted.max_steps = math.inf  # the adjoint's backward solve is not cut short
    return SolveResult(solution.transpose(0, 1), n_steps=budgeted.steps)
