"""Multiple shooting as a rescue of a universal differential equation's polish.

With physics in the model, collocation usually lands close enough for the
full-trajectory polish to reach the optimum in seconds, and shooting would only cost
time. Where collocation lands far off (sparse, fast or very noisy stretches bias the
derivative estimates), the polish of an oscillating trajectory can stop in a local
minimum. Shooting on short segments does not, but only from the collocation start: from
the polish's local minimum it stays there (noisy irregular cubic spiral, known structure,
no network, rotation started reversed: R^2 0.15 either way). So the rescue, a stage of its
own after the polish, goes back to the polish's start, shoots, and polishes again; the
runner keeps whichever fit is closer to the data.

It runs only where it can help, and stops where it does not:

- *Not needed*: the polished fit is within the noise (the shooting stage's own test,
  ``ShootingStage.skip_reason``).
- *Cannot help*: the polish converged and its fit explains all but ``helps_above`` of the
  variance. The local minima that shooting escapes are phase slips of an oscillation,
  which leave most of the variance unexplained (lynx-hare-like series: polished scaled MSE
  0.90; irregular cubic spiral: 0.85-0.88); a converged fit of an imperfect model sits in
  the optimum's basin, its residual the model's error, and shooting changes nothing at
  6-7x the cost of the fit (SIR fitted to 14 days of SEIR counts with a lockdown: polished
  0.0073, 1000 shooting steps then the polish again: 0.0073, 12.5 against 1.7 CPU s).
- *Not improving*: the segments still miss their own points by more than the polished
  whole trajectories do after ``probe_steps`` steps; shooting is abandoned and the polished
  fit kept, without a second polish.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import ClassVar

from .._problem import TrainingProblem
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import StageResult
from .shooting import ShootingStage

#: Converged polished misfit (scaled MSE) at or below which the rescue cannot help.
HELPS_ABOVE = 0.05
#: Shooting steps the rescue's segments get to fit their points better than the polish.
PROBE_STEPS = 100


@dataclass
class RescueStage(TrainingStage):
    """After the polish: where its fit may be a local minimum, shoot from the polish's
    start and polish again.

    See the module docstring for when it runs. The runner compares the rescued fit with
    the polished one and keeps the better.

    Parameters
    ----------
    shooting : ShootingStage
        The rescue's shooting (its steps are recorded as "rescue: shooting").
    polish : TrainingStage
        The polish it follows, run again after shooting (as "rescue: polish").
    helps_above : float
        Scaled MSE of a converged polished fit at or below which the rescue is skipped.
    probe_steps : int
        Shooting steps after which shooting whose loss is still above the polished misfit
        is abandoned.
    """

    shooting: ShootingStage
    polish: TrainingStage
    helps_above: float = HELPS_ABOVE
    probe_steps: int = PROBE_STEPS
    name: str = "rescue"
    divergence_remedy: ClassVar[str] = "shooting=False"

    def keeps_fits_within_noise(self, model: ODEModel) -> bool:
        return self.polish.keeps_fits_within_noise(model)

    def not_needed(
        self, problem: TrainingProblem, polished_loss: float, polish: StageResult | None
    ) -> str | None:
        """Why the rescue need not run after a polish that ended as ``polish`` with
        misfit ``polished_loss``, or None where it may help."""
        if polish is None or not math.isfinite(polished_loss):
            return "the polish did not run or its fit could not be integrated"
        within_noise = self.shooting.skip_reason(problem, polished_loss)
        if within_noise is not None:
            return within_noise
        if polish.status == "converged" and polished_loss <= self.helps_above:
            return (
                f"the polish converged on a fit that explains all but {polished_loss:.2g} of "
                f"the variance (<= {self.helps_above:g}): the model's own error, not a local "
                "minimum that shooting could escape"
            )
        return None

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        record = context.record
        polished_loss = record.losses.get(self.polish.name, math.inf)
        reason = self.not_needed(problem, polished_loss, record.result_of(self.polish.name))
        if reason is not None:
            return StageResult(self.name, 0, polished_loss, "skipped", reason)
        polished_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(record.starts[self.polish.name])
        shooting = replace(
            self.shooting,
            name=f"{self.name}: shooting",
            abandon_above=polished_loss,
            abandon_after=self.probe_steps,
        )
        try:
            shot = shooting.run(problem, model, context)
            if shot.status == "abandoned":
                model.load_state_dict(polished_state)
                message = f"the polished fit was kept: shooting was abandoned, {shot.message}"
                return StageResult(self.name, shot.n_iter, polished_loss, "abandoned", message)
            again = replace(self.polish, name=f"{self.name}: polish").run(problem, model, context)
        except KeyboardInterrupt:
            model.load_state_dict(polished_state)  # the best finished fit of this stage
            raise
        message = (
            f"the polished fit was far from the data (scaled MSE {polished_loss:.3g}); "
            f"{shot.n_iter} shooting steps ({shot.status}), then the polish again "
            f"({again.n_iter} steps, {again.status})"
        )
        status = "diverged" if "diverged" in (shot.status, again.status) else shot.status
        return StageResult(self.name, shot.n_iter + again.n_iter, again.loss, status, message)
