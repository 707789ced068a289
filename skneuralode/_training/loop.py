"""The optimisation loop every gradient stage shares.

A stage describes *what* to minimise (an :class:`Objective`); this loop decides *how*:
Adam or L-BFGS steps, a learning-rate schedule on plateaus, early stopping, recording and
divergence recovery. The loss of each step stays on the device; the host looks at the
losses only every ``check_every`` steps (one synchronisation), where it also keeps a copy
of the last parameters known to give a finite loss. A non-finite loss — a NaN, a
blow-up or a failed solve — restores that copy, lowers the step and goes on; after
``max_recoveries`` such events the stage ends as ``"diverged"`` with the good copy in
place. An objective that could not evaluate its loss (a failed solve) returns one
without a gradient; the host knows that without a synchronisation and checks at once,
since the next steps would repeat the same, possibly costly, failure.

A ``KeyboardInterrupt`` during the loop also restores the good copy, then propagates as
:class:`StageInterrupted`, which carries how far the stage got: the runner decides
whether to keep the model (``on_interrupt="keep_best"``) or to let the interrupt through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from .._monitor import TrainingMonitor
from .progress import TrajectoryCheck

Status = Literal[
    "converged", "max_iter", "diverged", "stopped", "ended_early", "abandoned", "interrupted"
]
#: Statuses of a stage that left the model as it found it: the runner does not evaluate
#: the model again after them.
UNCHANGED_STATUSES = frozenset({"skipped", "abandoned"})

# A failed L-BFGS trial is shown as the start loss plus its magnitude plus this.
_FAILED_TRIAL_EXCESS = 1.0


class Objective(Protocol):
    """What a stage minimises."""

    def parameters(self) -> list[torch.Tensor]:
        """Tensors the optimiser updates."""
        ...

    def loss(self) -> torch.Tensor:
        """Scalar loss for the next step (may draw a new mini-batch); inf if a solve failed."""
        ...


def stop_reason(objective: Objective) -> str | None:
    """Why ``objective`` asks to end its stage now (e.g. its solves are too costly), if
    it can say so (an optional ``stop_reason()`` method); None to go on."""
    reason = getattr(objective, "stop_reason", None)
    return None if reason is None else reason()


@dataclass(frozen=True)
class LoopSettings:
    """Budget, schedule and stopping rule of one stage.

    Attributes
    ----------
    max_iter : int
        Most optimiser steps.
    learning_rate : float
        Initial step (Adam) or step scale (L-BFGS).
    optimiser : {"adam", "lbfgs"}
    tol : float
        Relative improvement of the windowed mean loss that counts as progress.
    n_iter_no_change : int
        Steps without progress before the step is lowered, or the stage ends.
    max_step_reductions : int
        How often a plateau lowers the step before the stage counts as converged.
    check_every : int
        Steps between host looks at the losses.
    max_recoveries : int
        Divergence recoveries before the stage gives up.
    """

    max_iter: int
    learning_rate: float
    optimiser: Literal["adam", "lbfgs"] = "adam"
    tol: float = 1e-4
    n_iter_no_change: int = 50
    max_step_reductions: int = 3
    check_every: int = 10
    max_recoveries: int = 5
    step_reduction: float = 0.3


@dataclass(frozen=True)
class StageResult:
    """How a stage ended.

    Attributes
    ----------
    stage : str
    n_iter : int
        Optimiser steps taken.
    loss : float
        Mean loss over the last checked window (nan if none was finite).
    status : str
        "converged", "max_iter", "diverged", "stopped" (a callback asked), "ended_early"
        (the objective said why, in ``message``), "interrupted", "skipped" or
        "abandoned" (it was not improving on its start and put it back; see
        :data:`UNCHANGED_STATUSES`).
    message : str
        What happened, in words, for warnings.
    remedy : str
        What the user can change if the stage diverged (set by the runner from the
        stage's ``divergence_remedy``); empty otherwise.
    """

    stage: str
    n_iter: int
    loss: float
    status: str
    message: str = ""
    remedy: str = ""


class StageInterrupted(KeyboardInterrupt):
    """A ``KeyboardInterrupt`` that arrived during a stage's loop.

    The stage's parameters hold the last values with a finite loss.

    Attributes
    ----------
    result : StageResult
        How far the stage got, with status ``"interrupted"``.
    """

    def __init__(self, result: StageResult) -> None:
        super().__init__(f"the {result.stage} stage was interrupted at step {result.n_iter}")
        self.result = result


def _make_optimiser(
    settings: LoopSettings, parameters: list[torch.Tensor]
) -> torch.optim.Optimizer:
    if settings.optimiser == "lbfgs":
        return torch.optim.LBFGS(
            parameters,
            lr=settings.learning_rate,
            max_iter=1,
            # One iteration per step, but the line search needs its own evaluations:
            # torch's default max_eval (max_iter * 5 // 4 = 1) leaves it none to backtrack.
            max_eval=25,
            history_size=20,
            line_search_fn="strong_wolfe",
        )
    return torch.optim.Adam(parameters, lr=settings.learning_rate)


def _snapshot(parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    return [parameter.detach().clone() for parameter in parameters]


def _restore(parameters: list[torch.Tensor], snapshot: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for parameter, saved in zip(parameters, snapshot, strict=True):
            parameter.copy_(saved)


def _lbfgs_step(
    optimiser: torch.optim.Optimizer, closure: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """One L-BFGS iteration; returns the loss at its start.

    torch's strong-Wolfe line search interpolates between trial losses: an infinite or
    NaN trial (a failed solve, a blow-up) turns its next trial step into NaN and it gives
    up without moving, iteration after iteration. It is shown such a trial as a finite
    loss above the start instead, with no gradient, so it backs off to a shorter step.
    """
    evaluations: list[torch.Tensor] = []

    def guarded_closure() -> torch.Tensor:
        loss = closure().detach()
        evaluations.append(loss)
        if len(evaluations) == 1 or bool(torch.isfinite(loss)):
            return loss
        optimiser.zero_grad(set_to_none=True)
        start = evaluations[0]
        return start + start.abs() + _FAILED_TRIAL_EXCESS

    optimiser.step(guarded_closure)
    return evaluations[0]


def publish(objective: Objective) -> None:
    """Let ``objective`` write into the model what it keeps aside (e.g. the start states
    of shooting segments, a working copy's field), if it can (an optional ``publish()``
    method). The loop publishes before every check and whenever it ends, interrupted or
    not, with the parameters it leaves in place."""
    method = getattr(objective, "publish", None)
    if method is not None:
        method()


def optimise(
    objective: Objective,
    settings: LoopSettings,
    monitor: TrainingMonitor,
    stage: str,
    check: TrajectoryCheck | None = None,
    give_up: Callable[[int, float], str | None] | None = None,
) -> StageResult:
    """Minimise ``objective`` under ``settings``; see the module docstring.

    With a ``check``, the full-trajectory fit is checked every ``check.every`` steps: the
    stage ends when it stops improving, and ends with the best checked parameters.
    ``give_up(step, window_mean)`` is asked at every host look at the losses; a message
    ends the stage as "abandoned" with that message (the caller puts its start back).
    """
    parameters = objective.parameters()
    learning_rate = settings.learning_rate
    optimiser = _make_optimiser(settings, parameters)
    check_every = 1 if settings.optimiser == "lbfgs" else settings.check_every
    pending: list[torch.Tensor] = []
    # The parameters after a window's last step have no loss yet: they become the good
    # copy only once the next window's first loss, taken at them, is finite.
    good_state = _snapshot(parameters)
    unchecked_state = good_state
    best_window, last_progress, reductions, recoveries = math.inf, 0, 0, 0
    window_mean, status, message = math.nan, "max_iter", ""
    monitor.start_stage(stage, settings.max_iter)

    def closure() -> torch.Tensor:
        optimiser.zero_grad(set_to_none=True)
        loss = objective.loss()
        if loss.requires_grad:
            loss.backward()
        return loss

    step = 0
    try:
        while step < settings.max_iter:
            loss = _lbfgs_step(optimiser, closure) if settings.optimiser == "lbfgs" else None
            if loss is None:
                loss = closure()
                optimiser.step()
            pending.append(loss.detach())
            step += 1
            could_not_evaluate = not loss.requires_grad
            if len(pending) < check_every and step < settings.max_iter and not could_not_evaluate:
                continue
            losses = torch.stack(pending).cpu().tolist()  # the one host synchronisation
            stop_requested = monitor.record(stage, step - len(pending), losses)
            pending = []
            if math.isfinite(losses[0]):  # the window's first loss was taken at them
                good_state = unchecked_state
            if not all(math.isfinite(value) for value in losses):
                recoveries += 1
                _restore(parameters, good_state)
                unchecked_state = good_state
                if recoveries > settings.max_recoveries:
                    status = "diverged"
                    message = (
                        f"the {stage} loss became non-finite {recoveries} times; the last "
                        "parameters with a finite loss were kept"
                    )
                    break
                learning_rate *= settings.step_reduction
                optimiser = _make_optimiser(
                    LoopSettings(**{**settings.__dict__, "learning_rate": learning_rate}),
                    parameters,
                )
                continue
            unchecked_state = _snapshot(parameters)
            window_mean = sum(losses) / len(losses)
            if window_mean < best_window * (1.0 - settings.tol):
                best_window, last_progress = window_mean, step
            elif step - last_progress >= settings.n_iter_no_change:
                if reductions >= settings.max_step_reductions:
                    status = "converged"
                    break
                reductions += 1
                learning_rate *= settings.step_reduction
                for group in optimiser.param_groups:
                    group["lr"] = learning_rate
                last_progress = step
            if stop_requested:
                status, message = "stopped", f"a callback stopped the {stage} stage"
                break
            abandon = None if give_up is None else give_up(step, window_mean)
            if abandon is not None:
                status, message = "abandoned", abandon
                break
            reason = stop_reason(objective)
            if reason is not None:
                status, message = "ended_early", reason
                break
            if check is not None and check.due(step):
                publish(objective)
                if check.should_stop(step, parameters, window_mean):
                    status, message = "converged", check.message
                    break
    except KeyboardInterrupt as interrupt:
        _restore(parameters, good_state)
        publish(objective)
        monitor.end_stage("interrupted")
        message = f"interrupted by the user at step {step} of {settings.max_iter}"
        result = StageResult(stage, step, window_mean, "interrupted", message)
        raise StageInterrupted(result) from interrupt
    except BaseException:
        monitor.end_stage("failed")  # close the progress bar; the caller handles the error
        raise
    if check is not None and status not in ("diverged", "abandoned"):
        publish(objective)  # the check integrates the model
        check.keep_best(parameters)
    publish(objective)
    monitor.end_stage(status)
    return StageResult(stage, step, window_mean, status, message)
