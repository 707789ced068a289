"""The interface every training stage implements, and what a stage is given."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .._monitor import TrainingMonitor
from .._problem import TrainingProblem
from .._solve import SolverSettings
from .._vector_fields import ODEModel
from .loop import StageResult


@dataclass
class RunRecord:
    """What the runner has seen so far in a training run, for stages that build on it
    (a rescue restarts from where an earlier stage started).

    Attributes
    ----------
    starts : dict of str to dict
        The model's ``state_dict`` (a copy) just before each stage ran, by stage name.
    losses : dict of str to float
        The full-trajectory misfit (scaled MSE) after each stage that ran, by stage name.
    results : list of StageResult
        How each stage so far ended, in order.
    """

    starts: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    results: list[StageResult] = field(default_factory=list)

    def result_of(self, stage: str) -> StageResult | None:
        """The last result of the stage named ``stage``, or None if it has none."""
        return next((result for result in reversed(self.results) if result.stage == stage), None)


@dataclass(frozen=True)
class StageContext:
    """Shared services of a training run.

    Attributes
    ----------
    solver : SolverSettings
        How the stages that integrate call the solver.
    monitor : TrainingMonitor
        History, progress bars and callbacks.
    generator : torch.Generator
        The one source of randomness for mini-batches (seeded by ``random_state``).
    record : RunRecord
        What the runner has seen so far (filled by :func:`~.runner.train`).
    """

    solver: SolverSettings
    monitor: TrainingMonitor
    generator: torch.Generator
    record: RunRecord = field(default_factory=RunRecord)


class TrainingStage(ABC):
    """One step of the training recipe: collocation, multiple shooting, polish.

    A stage reads the problem, updates the model's parameters in place and reports how
    it ended; it never raises for numerical trouble (see ``loop``).
    """

    name: str
    #: What a user can change when this stage diverges, for the warning that says so.
    divergence_remedy: ClassVar[str] = "a smaller learning rate"

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        """Why this stage need not run given the current full-trajectory loss, or None."""
        return None

    def keeps_fits_within_noise(self, model: ODEModel) -> bool:
        """Whether the runner keeps this stage's ``model`` when its misfit is within what
        the noise allows, even if an earlier stage's misfit is lower. True for a stage
        whose objective carries a prior that trades some misfit for a better-determined
        model: below the noise level, a lower misfit only fits the noise."""
        return False

    def decides_the_kept_model(self) -> bool:
        """Whether this stage compares models itself: the runner then starts it from the
        best model so far and keeps what it returns, even at a higher misfit."""
        return False

    @abstractmethod
    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        """Improve ``model`` on ``problem``.

        A stage that finds only once it runs that it has nothing to do returns a result
        with status ``"skipped"`` and leaves ``model`` as it was (the runner then does not
        evaluate it again)."""
