"""The interface every training stage implements, and what a stage is given."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from .._monitor import TrainingMonitor
from .._problem import TrainingProblem
from .._solve import SolverSettings
from .._vector_fields import ODEModel
from .loop import StageResult


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
    """

    solver: SolverSettings
    monitor: TrainingMonitor
    generator: torch.Generator


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
        """Improve ``model`` on ``problem``."""
