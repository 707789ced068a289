"""Full-trajectory polish: single shooting from the learned initial states with L-BFGS.

After collocation and multiple shooting the parameters sit near the optimum, where a
quasi-Newton method on the whole-trajectory misfit converges in a few dozen iterations
and fits the few-parameter cases (physical parameters, initial states) far better than
Adam does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .._problem import TrainingProblem
from .._solve import SolverSettings
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import LoopSettings, StageResult, optimise
from .misfit import trajectory_misfit


class _TrajectoryObjective:
    def __init__(self, problem: TrainingProblem, model: ODEModel, solver: SolverSettings) -> None:
        self.problem = problem
        self.model = model
        self.solver = solver
        self.last_failure: str | None = None

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def loss(self) -> torch.Tensor:
        loss, failure = trajectory_misfit(self.problem, self.model, self.solver)
        self.last_failure = failure or self.last_failure
        states = self.problem.smoothed_states
        augmented = states.new_zeros(*states.shape[:2], self.model.n_total_states - states.shape[2])
        times = self.problem.times
        inputs = self.problem.inputs_at(times, self.problem.trajectory_index()[:, None])
        penalty = self.model.regularisation(times, torch.cat([states, augmented], -1), inputs)
        return loss + penalty


@dataclass
class PolishStage(TrainingStage):
    """L-BFGS on the full-trajectory misfit, learning the field and the initial states.

    Parameters
    ----------
    max_iter : int
        Most L-BFGS iterations (each may evaluate the loss several times).
    learning_rate : float
        L-BFGS step scale (1.0 with the strong-Wolfe line search).
    tol, n_iter_no_change
        Early stopping, see :class:`~skneuralode._training.loop.LoopSettings`.
    """

    max_iter: int = 50
    learning_rate: float = 1.0
    tol: float = 1e-5
    n_iter_no_change: int = 5
    name: str = "polish"
    divergence_remedy: ClassVar[str] = "polish=False"

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        objective = _TrajectoryObjective(problem, model, context.solver)
        settings = LoopSettings(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            optimiser="lbfgs",
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            max_step_reductions=0,
            max_recoveries=2,
        )
        return optimise(objective, settings, context.monitor, self.name)
