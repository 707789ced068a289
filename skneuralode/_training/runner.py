"""The stage runner: sequence the stages, keep the best model, report how it ended."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .._problem import TrainingProblem
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import UNCHANGED_STATUSES, StageInterrupted, StageResult
from .misfit import evaluate_model, misfit_the_noise_allows


@dataclass(frozen=True)
class TrainingReport:
    """Outcome of a training run.

    Attributes
    ----------
    results : list of StageResult
        One per stage, in order.
    trajectory_loss : float
        Full-trajectory masked MSE (scaled units) of the model that was kept; inf if no
        state of the model could be integrated over the data.
    kept_after : str
        The stage after which the kept model was taken ("start" for the initial model).
    solver_failure : str or None
        Why the kept model could not be integrated, if it could not.
    interrupted_in : str or None
        The stage during (or right after) which a ``KeyboardInterrupt`` ended training
        when the best model so far was kept; None if training was not interrupted.
    """

    results: list[StageResult]
    trajectory_loss: float
    kept_after: str
    solver_failure: str | None
    interrupted_in: str | None = None

    @property
    def n_iter(self) -> int:
        return sum(result.n_iter for result in self.results)


def _interrupted_result(stage: TrainingStage, interrupt: KeyboardInterrupt) -> StageResult:
    if isinstance(interrupt, StageInterrupted):
        return interrupt.result
    return StageResult(stage.name, 0, math.nan, "interrupted", "interrupted by the user")


def train(
    problem: TrainingProblem,
    model: ODEModel,
    stages: Sequence[TrainingStage],
    context: StageContext,
    *,
    model_is_trained: bool = False,
    keep_best_on_interrupt: bool = False,
) -> TrainingReport:
    """Run ``stages`` in order on ``model`` (in place).

    After each stage the whole trajectories are integrated once; the model state with
    the lowest full-trajectory misfit is the one kept, so a stage that makes things
    worse (or diverges) can never leave the estimator worse than before it ran. A model
    that is already trained (``warm_start``) is evaluated first and competes too. A
    stage that :meth:`~.base.TrainingStage.keeps_fits_within_noise` is kept also when
    its misfit is higher but within :func:`~.misfit.misfit_the_noise_allows`. The
    context's :class:`~.base.RunRecord` holds each stage's start, result and misfit for
    the stages after it.

    A ``KeyboardInterrupt`` during a stage propagates, unless ``keep_best_on_interrupt``:
    then the interrupted stage's last parameters with a finite loss are evaluated like a
    finished stage's, the remaining stages are skipped, and the best model so far is
    kept. An interrupt during an evaluation leaves that model out of the comparison.
    """
    best_loss, failure = (
        evaluate_model(problem, model, context.solver) if model_is_trained else (math.inf, None)
    )
    current_loss = best_loss
    noise_allows = misfit_the_noise_allows(problem)
    best_state, kept_after = copy.deepcopy(model.state_dict()), "start"
    results: list[StageResult] = []
    interrupted_in: str | None = None
    record = context.record
    record.results = results
    for stage in stages:
        if interrupted_in is not None:
            results.append(StageResult(stage.name, 0, math.nan, "skipped", "interrupted"))
            continue
        reason = stage.skip_reason(problem, current_loss)
        if reason is not None:
            results.append(StageResult(stage.name, 0, current_loss, "skipped", reason))
            continue
        if stage.decides_the_kept_model():
            model.load_state_dict(best_state)
        record.starts[stage.name] = copy.deepcopy(model.state_dict())
        try:
            result = stage.run(problem, model, context)
            if result.status == "diverged":
                result = replace(result, remedy=stage.divergence_remedy)
            results.append(result)
        except KeyboardInterrupt as interrupt:
            if not keep_best_on_interrupt:
                raise
            results.append(_interrupted_result(stage, interrupt))
            interrupted_in = stage.name
        if results[-1].status in UNCHANGED_STATUSES:
            continue  # the stage left the model as it was
        try:
            loss, stage_failure = evaluate_model(problem, model, context.solver)
        except KeyboardInterrupt:
            if not keep_best_on_interrupt:
                raise
            interrupted_in = stage.name
            continue
        current_loss = record.losses[stage.name] = loss
        within_noise = stage.keeps_fits_within_noise(model) and loss <= noise_allows
        if loss <= best_loss or within_noise or stage.decides_the_kept_model():
            best_loss, failure, kept_after = loss, stage_failure, stage.name
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return TrainingReport(
        results,
        best_loss,
        kept_after,
        failure if best_loss == math.inf else None,
        interrupted_in,
    )
