"""Adaptive Rodas4 integration of a batch to a grid of output times.

The whole batch shares its steps (as torchdiffeq's solvers do): the error of a step is
the root mean square over every member and state of ``error / (atol + rtol |y|)``, and
an integral controller with exponent 1/4 picks the next step. Every output time is
landed on by a step: no interpolant is accurate between the steps of a stiff solve. An
interpolant (Rodas4's dense output from its stages, or a cubic Hermite through the step
ends and their rates) amplifies the state's error, which the tolerance allows, by the
field's stiffness: on ``dz/dt = -1e4 (z - sin t) + cos t`` at ``rtol=1e-6`` either errs
by 3e-4 between step ends that are within 1e-8 of the solution, while landing costs 13
outputs 95 steps instead of 88 (Robertson's 41 log-spaced outputs: 124 instead of 115).
Gradients flow through the accepted steps (discretise-then-optimise); the step sizes
themselves are not differentiated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import tableau
from .jacobian import reads_time as field_reads_time
from .jacobian import value_and_jacobian
from .rodas4 import Step, rodas4_step

SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 6.0


@dataclass(frozen=True)
class Outcome:
    """What one integration produced.

    Attributes
    ----------
    states : Tensor of shape (n_batch, n_points, n_states) or None
        None when the integration failed.
    failure : {None, "budget", "underflow"}
    n_steps : int
        Steps attempted (rejected ones included).
    """

    states: torch.Tensor | None
    failure: str | None
    n_steps: int


def _norm(values: torch.Tensor, scale: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((values / scale) ** 2)))


def _first_step(
    states: torch.Tensor, rates: torch.Tensor, span: float, rtol: float, atol: float
) -> float:
    """Hairer and Wanner's first guess, ``0.01 |y| / |f|`` in the error norm."""
    scale = atol + rtol * states.detach().abs()
    size_states, size_rates = _norm(states.detach(), scale), _norm(rates.detach(), scale)
    guess = 1e-6 if size_states < 1e-5 or size_rates < 1e-5 else 0.01 * size_states / size_rates
    return min(guess, abs(span))


def _time_derivative(
    func: Callable, time: float, step: float, states: torch.Tensor, rates: torch.Tensor
) -> torch.Tensor:
    """``df/dt`` by a forward difference in the direction of the step."""
    epsilon = math.sqrt(torch.finfo(states.dtype).eps)
    delta = math.copysign(epsilon * max(abs(time), abs(step), 1e-10), step)
    later = func(torch.as_tensor(time + delta, dtype=states.dtype), states)
    return (later - rates) / delta


def integrate(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    initial_states: torch.Tensor,
    grid: torch.Tensor,
    *,
    rtol: float,
    atol: float,
    max_num_steps: int,
    reads_time: bool,
    method: str,
) -> Outcome:
    """Integrate ``dz/dt = func(t, z)`` from ``grid[0]`` through every time of ``grid``.

    Parameters
    ----------
    func : callable
        ``func(t, z) -> dz/dt`` for ``z`` of shape (n_batch, n_states) and scalar ``t``.
    initial_states : Tensor of shape (n_batch, n_states)
    grid : Tensor of shape (n_points,)
        Output times, monotonic (increasing or decreasing).
    rtol, atol : float
    max_num_steps : int
        Budget of step attempts for the whole grid.
    reads_time : bool
        Whether ``func`` may depend on ``t`` (its time derivative, by a forward
        difference, enters the stages); a field whose output has no autograd path to
        ``t`` is taken not to.
    method : str
        The solver's name, for error messages.

    Returns
    -------
    Outcome
    """
    times = [float(value) for value in grid.detach().cpu()]
    span = times[-1] - times[0]
    direction = 1.0 if span >= 0 else -1.0
    time, states = times[0], initial_states
    outputs = [initial_states]
    next_output = 1
    while next_output < len(times) and times[next_output] == time:
        outputs.append(states)
        next_output += 1
    rates, jacobian, states = value_and_jacobian(
        func, torch.as_tensor(time, dtype=states.dtype), states, method=method, check=True
    )
    reads_time = reads_time and field_reads_time(func, time, states)
    step = direction * _first_step(states, rates, span, rtol, atol)
    n_steps = 0
    rejected = False
    while next_output < len(times):
        n_steps += 1
        if n_steps > max_num_steps:
            return Outcome(None, "budget", n_steps)
        target = times[next_output]
        landing = direction * (time + step - target) >= 0 or abs(target - time - step) < 1e-3 * abs(
            step
        )
        natural = step  # the step the controller asked for, before landing shortens it
        if landing:
            step = target - time
        time_derivative = _time_derivative(func, time, step, states, rates) if reads_time else None
        taken: Step = rodas4_step(func, time, step, states, rates, jacobian, time_derivative)
        with torch.no_grad():
            scale = atol + rtol * torch.maximum(states.abs(), taken.states.abs())
            error = _norm(taken.error, scale)
        if not math.isfinite(error):
            error = math.inf
        factor = SAFETY * error ** (-1.0 / (tableau.ERROR_ORDER + 1)) if error > 0 else MAX_FACTOR
        factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
        if error <= 1.0:
            end = target if landing else time + step
            time, states = end, taken.states
            while next_output < len(times) and times[next_output] == end:
                outputs.append(states)
                next_output += 1
            if next_output >= len(times):
                break
            rates, jacobian, states = value_and_jacobian(
                func, torch.as_tensor(time, dtype=states.dtype), states, method=method
            )
            grown = step * (min(factor, 1.0) if rejected else factor)
            step = math.copysign(min(abs(grown), abs(natural) * max(factor, 1.0)), grown)
            rejected = False
        else:
            step = step * min(factor, 1.0)
            rejected = True
        if abs(step) <= 10 * torch.finfo(initial_states.dtype).eps * max(abs(time), abs(span)):
            return Outcome(None, "underflow", n_steps)
    return Outcome(torch.stack(outputs, dim=1), None, n_steps)
