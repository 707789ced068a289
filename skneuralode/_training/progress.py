"""Stopping that knows when to stop: periodic checks of the full-trajectory fit.

A stage's own loss (derivative misfit, a mini-batch of segments) keeps falling long after
the whole trajectories stop getting closer to the data: on 21 noisy points collocation
and shooting both ran their 1000 steps while the fit the runner keeps had settled. Every
``every`` steps a :class:`TrajectoryCheck` integrates the whole trajectories once (no
gradient), keeps a copy of the parameters with the lowest misfit, and asks the stage to
end when ``patience`` checks in a row have not lowered it by a meaningful amount: a
fraction of the estimated noise variance (what the fit cannot go below) or a relative
tolerance, whichever is larger. At the end of the stage the best checked parameters are
put back if the last ones fit worse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

from .._problem import TrainingProblem
from .._solve import SolverSettings
from .._vector_fields import ODEModel
from .misfit import trajectory_misfit

#: Time points per trajectory a check compares (as the runner's comparison).
CHECK_POINTS = 10_000
#: Trajectories a check compares at most (evenly strided): a check must stay cheap beside
#: the steps between checks (10 000 pendulums: a solve of all of them takes ~5 s).
CHECK_TRAJECTORIES = 100
#: A check's solve may take at most this many times the first check's solver steps (plus
#: CHECK_EXTRA_STEPS): a field that turned stiff counts as no improvement, cheaply.
CHECK_STEP_FACTOR = 20
CHECK_EXTRA_STEPS = 100


@dataclass
class TrajectoryCheck:
    """Full-trajectory misfit every ``every`` steps; stop after ``patience`` idle checks.

    Parameters
    ----------
    problem, model, solver
        What to integrate, and how.
    every : int
        Optimiser steps between checks.
    patience : int
        Checks in a row without a meaningful improvement before the stage ends.
    relative_tolerance : float
        An improvement is meaningful when it exceeds this fraction of the best misfit...
    noise_fraction : float
        ...or this fraction of the estimated noise variance, whichever is larger.
    largest_trusted_noise : float
        The noise variance counts only up to this (scaled units; see
        :class:`~skneuralode._training.shooting.ShootingStage`).
    """

    problem: TrainingProblem
    model: ODEModel
    solver: SolverSettings
    every: int = 50
    patience: int = 3
    relative_tolerance: float = 1e-2
    noise_fraction: float = 0.1
    largest_trusted_noise: float = 0.025
    best_loss: float = math.inf
    best_state: list[torch.Tensor] | None = None
    checks: int = 0
    idle_checks: int = 0
    last_step: int = 0
    first_steps: list[int] = field(default_factory=list)

    @property
    def meaningful(self) -> float:
        """The smallest improvement of the misfit that counts as progress."""
        noise = min(self.problem.noise_variance, self.largest_trusted_noise)
        best = self.best_loss if math.isfinite(self.best_loss) else 0.0
        return max(self.relative_tolerance * best, self.noise_fraction * noise)

    def due(self, step: int) -> bool:
        """Whether a check is due after ``step`` optimiser steps."""
        return step - self.last_step >= self.every

    def _solver(self) -> SolverSettings:
        if not self.first_steps or self.solver.is_fixed_step:
            return self.solver
        budget = CHECK_STEP_FACTOR * self.first_steps[0] + CHECK_EXTRA_STEPS
        return replace(self.solver, max_num_steps=min(self.solver.max_num_steps, budget))

    def _members(self) -> torch.Tensor | None:
        n_traj = self.problem.n_traj
        if n_traj <= CHECK_TRAJECTORIES:
            return None
        stride = -(-n_traj // CHECK_TRAJECTORIES)
        return torch.arange(0, n_traj, stride, device=self.problem.times.device)

    def misfit(self) -> float:
        """Full-trajectory misfit of the model as it is now (inf if it cannot be solved)."""
        steps: list[int] = []
        with torch.no_grad():
            loss, _ = trajectory_misfit(
                self.problem,
                self.model,
                self._solver(),
                CHECK_POINTS,
                record_steps=steps,
                members=self._members(),
            )
        if not self.first_steps:
            self.first_steps.extend(steps)
        value = float(loss)
        return value if math.isfinite(value) else math.inf

    def should_stop(self, step: int, parameters: list[torch.Tensor]) -> bool:
        """Check the fit after ``step`` steps; True when the stage should end."""
        self.last_step = step
        self.checks += 1
        loss = self.misfit()
        if loss < self.best_loss - self.meaningful or self.best_state is None:
            self.idle_checks = 0
        else:
            self.idle_checks += 1
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = [parameter.detach().clone() for parameter in parameters]
        return self.idle_checks >= self.patience

    def keep_best(self, parameters: list[torch.Tensor]) -> None:
        """Put the best checked parameters back if the current ones fit worse."""
        if self.best_state is None or self.misfit() <= self.best_loss:
            return
        with torch.no_grad():
            for parameter, saved in zip(parameters, self.best_state, strict=True):
                parameter.copy_(saved)

    @property
    def message(self) -> str:
        return (
            f"the full-trajectory fit stopped improving (best scaled MSE "
            f"{self.best_loss:.3g} after {self.checks} checks)"
        )
