"""Stopping that knows when to stop: periodic checks of the full-trajectory fit.

A stage's own loss (derivative misfit, a mini-batch of segments) keeps falling long after
the whole trajectories stop getting closer to the data: on 21 noisy points collocation
and shooting both ran their 1000 steps while the fit the runner keeps had settled. Every
``every`` steps a :class:`TrajectoryCheck` integrates the whole trajectories once (no
gradient), keeps a copy of the parameters with the lowest misfit, and asks the stage to
end when ``patience`` checks in a row have not lowered it by a meaningful amount: a
fraction of the estimated noise variance (what the fit cannot go below) or a relative
tolerance, whichever is larger. On few data points a third bound takes over: the part of
the misfit that is noise changes by about ``sqrt(2 / N)`` of itself from one draw of the
noise to the next (``N`` observed values), and a gain below half of that is taken for
fitting this draw. Two fits of 10 noisy points bracket the fraction: on the spiral,
shooting's in-sample gains of 2-5 % per check made the fit on the dense truth worse (R^2
-0.13 -> -0.30 over 300 steps); on a damped oscillator, gains of 20-30 % per check were
real (R^2 on the clean values 0.63 -> 0.76). At the end of the stage the best checked
parameters are put back if the last ones fit worse.
"""

from __future__ import annotations

import functools
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
        ...or this fraction of the estimated noise variance (counted up to
        ``largest_trusted_noise``), or ``sampling_fraction`` of the sampling error of the
        noise part of the misfit, ``sqrt(2 / N)`` times the smaller of the best misfit
        and the estimated noise variance (``N`` observed values checked), whichever is
        largest.
    largest_trusted_noise : float
        The noise variance counts only up to this (scaled units; see
        :class:`~skneuralode._training.shooting.ShootingStage`) in the noise fraction.
    sampling_fraction : float
        Fraction of the misfit's sampling error a gain must exceed (see above).
    decisive_below : float
        Idle checks end the stage only once the best checked misfit is below this
        (scaled units; inf: always). Far from the data a whole trajectory can stay out of
        phase, its misfit flat, while a stage of short segments is still finding the
        basin (noisy irregular cubic spiral, known structure: the full-trajectory misfit
        stayed at 1.16 for 100 shooting steps, then fell to the noise).
    unless_falling : float
        Idle checks do not end the stage while the whole trajectories fit worse than
        the data's mean (best misfit at least ``worse_than_the_mean``, scaled units) and
        the stage's own loss fell by more than this fraction over the idle checks (0:
        off). Collocation from a far start: four Lotka-Volterra rates from 0.1 on 21
        noisy points, the derivative loss still fell 44 % over the 300 steps in which the
        whole-trajectory misfit stayed above 1.7, with the rates of the wrong sign; run to
        its own plateau (1900 steps) collocation lands where the polish reaches the
        optimum in 6 iterations. Where the checks stop a neural field overfitting the
        noise of a few points its loss also falls fast (60-97 % over the idle checks on
        the 10-point spiral, 25-point oscillator, 30-point Van der Pol), but the whole
        trajectories already fit better than the mean there.
    worse_than_the_mean : float
        See ``unless_falling``.
    """

    problem: TrainingProblem
    model: ODEModel
    solver: SolverSettings
    every: int = 50
    patience: int = 3
    relative_tolerance: float = 1e-2
    noise_fraction: float = 0.1
    largest_trusted_noise: float = 0.025
    sampling_fraction: float = 0.5
    decisive_below: float = math.inf
    unless_falling: float = 0.0
    worse_than_the_mean: float = 1.0
    best_loss: float = math.inf
    best_state: list[torch.Tensor] | None = None
    checks: int = 0
    idle_checks: int = 0
    stage_losses: list[float] = field(default_factory=list)
    last_step: int = 0
    first_steps: list[int] = field(default_factory=list)

    @property
    def meaningful(self) -> float:
        """The smallest improvement of the misfit that counts as progress."""
        noise = min(self.problem.noise_variance, self.largest_trusted_noise)
        best = self.best_loss if math.isfinite(self.best_loss) else 0.0
        noise_part = min(best, self.problem.noise_variance)
        sampling_error = math.sqrt(2.0 / max(self.n_checked_values, 1)) * noise_part
        return max(
            self.relative_tolerance * best,
            self.noise_fraction * noise,
            self.sampling_fraction * sampling_error,
        )

    @functools.cached_property
    def n_checked_values(self) -> int:
        """Observed values the check compares (of the checked trajectories)."""
        members = self._members()
        observed = self.problem.observed if members is None else self.problem.observed[members]
        return int(observed.count_nonzero())

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

    def should_stop(
        self, step: int, parameters: list[torch.Tensor], stage_loss: float = math.nan
    ) -> bool:
        """Check the fit after ``step`` steps; True when the stage should end.

        ``stage_loss`` is the stage's own loss now (see ``unless_falling``)."""
        self.last_step = step
        self.stage_losses.append(stage_loss)
        self.checks += 1
        loss = self.misfit()
        if loss < self.best_loss - self.meaningful or self.best_state is None:
            self.idle_checks = 0
        else:
            self.idle_checks += 1
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = [parameter.detach().clone() for parameter in parameters]
        idle = self.idle_checks >= self.patience and self.best_loss < self.decisive_below
        return idle and not self.stage_still_falling()

    def stage_still_falling(self) -> bool:
        """Whether the stage's own loss fell by more than ``unless_falling`` over the last
        ``patience`` checks while the whole trajectories fit worse than the mean."""
        if self.unless_falling <= 0.0 or self.best_loss < self.worse_than_the_mean:
            return False
        losses = self.stage_losses[-(self.patience + 1) :]
        before, now = losses[0], losses[-1]
        if not (math.isfinite(before) and math.isfinite(now)) or before <= 0.0:
            return False
        return now < (1.0 - self.unless_falling) * before

    def start_from(self, parameters: list[torch.Tensor]) -> None:
        """Check the model before the first step: a stage that starts from a trained model
        must improve on it meaningfully, or it ends ``patience`` checks later."""
        self.should_stop(self.last_step, parameters)

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
