"""Full-trajectory polish: single shooting from the learned initial states with L-BFGS.

After collocation and multiple shooting the parameters sit near the optimum, where a
quasi-Newton method on the whole-trajectory misfit converges in a few dozen iterations
and fits the few-parameter cases (physical parameters, initial states) far better than
Adam does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from .._problem import TrainingProblem
from .._solve import SolverSettings
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import LoopSettings, StageResult, optimise
from .misfit import trajectory_misfit

#: A line-search trial may take at most this many times the solver steps of the stage's
#: first solve (plus TRIAL_EXTRA_STEPS): a trial far out in parameter space can make the
#: dynamics stiff, and an explicit solve would then crawl to max_num_steps with a
#: gradient graph; cut short, it counts as a failed trial and the line search backs off.
TRIAL_STEP_FACTOR = 20
TRIAL_EXTRA_STEPS = 100


class _TrajectoryObjective:
    def __init__(self, problem: TrainingProblem, model: ODEModel, solver: SolverSettings) -> None:
        self.problem = problem
        self.model = model
        self.solver = solver
        self.last_failure: str | None = None
        self.steps: list[int] = []

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def _trial_solver(self) -> SolverSettings:
        if not self.steps or self.solver.is_fixed_step:
            return self.solver
        budget = TRIAL_STEP_FACTOR * self.steps[0] + TRIAL_EXTRA_STEPS
        return replace(self.solver, max_num_steps=min(self.solver.max_num_steps, budget))

    def loss(self) -> torch.Tensor:
        loss, failure = trajectory_misfit(
            self.problem, self.model, self._trial_solver(), record_steps=self.steps
        )
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
