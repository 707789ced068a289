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

First of all, where a physical parameter has *collapsed* toward 0 (below
:data:`COLLAPSED_BELOW` of its value at the start of training), the rescue
polishes again from the start of training, skipping collocation's fit: a hidden
state gives collocation nothing to regress some parameters on, and under
``param_constraints="positive"`` (``p = p0 exp(raw)``) a parameter it drives toward 0
loses its gradient there, so the polish stops beside it (glucose minimal model, X hidden,
rates from 0.1x: collocation took p2 from 0.0019 to 5e-5, the polish converged there at
twice the optimum's misfit; polished from the start it reached the optimum in 7
iterations; the polished misfit was within the noise, so only this symptom shows it). The
better of the two fits is taken; shooting then follows the rules above. Only for a model
without a network: at the start of training a network is untrained, and polishing from
there did not help (SIR with a network on I', gamma at 1e-8: the same fit, 6.6 CPU s more).
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
from .misfit import evaluate_model
from .shooting import ShootingStage

#: Converged polished misfit (scaled MSE) at or below which the rescue cannot help.
HELPS_ABOVE = 0.05
#: Shooting steps the rescue's segments get to fit their points better than the polish.
PROBE_STEPS = 100
#: A physical parameter below this fraction of its magnitude at the start of training has
#: collapsed toward 0 (a start 10x too high legitimately ends at 0.1 of it).
COLLAPSED_BELOW = 0.05


def collapsed_parameters(start: dict[str, float], now: dict[str, float]) -> list[str]:
    """Names of the physical parameters that collapsed toward 0: below
    :data:`COLLAPSED_BELOW` of their start's magnitude, on the same side of 0.

    A change of sign is not taken for this symptom: where collocation took rates across 0
    (lynx-hare-like series, four rates from 0.1), the polish from the start of training
    ended no better (R^2 -0.29 after 14 iterations, 12.8 CPU s), and shooting found the
    optimum."""
    return [
        name
        for name, begin in start.items()
        if begin != 0.0 and 0.0 <= now[name] / begin < COLLAPSED_BELOW
    ]


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
    restart_on_collapse : bool
        Polish again from the start of training first where a physical parameter
        collapsed toward 0 (see the module docstring).
    """

    shooting: ShootingStage
    polish: TrainingStage
    helps_above: float = HELPS_ABOVE
    probe_steps: int = PROBE_STEPS
    restart_on_collapse: bool = True
    name: str = "rescue"
    divergence_remedy: ClassVar[str] = "shooting=False"

    def keeps_fits_within_noise(self, model: ODEModel) -> bool:
        return self.polish.keeps_fits_within_noise(model)

    def within_noise(self, problem: TrainingProblem, polished_loss: float) -> str | None:
        """Why shooting is not needed after a polish with misfit ``polished_loss``: the
        shooting stage's own test (within the noise), or None."""
        return self.shooting.skip_reason(problem, polished_loss)

    def cannot_help(self, polished_loss: float, polish: StageResult | None) -> str | None:
        """Why shooting cannot help after a polish that ended as ``polish`` with misfit
        ``polished_loss``, or None where it may."""
        if (
            polish is not None
            and polish.status == "converged"
            and polished_loss <= self.helps_above
        ):
            return (
                f"the polish converged on a fit that explains all but {polished_loss:.2g} of "
                f"the variance (<= {self.helps_above:g}): the model's own error, not a local "
                "minimum that shooting could escape"
            )
        return None

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        record = context.record
        if self.polish.name not in record.losses:
            return StageResult(self.name, 0, math.nan, "skipped", "the polish did not run")
        polished_loss = record.losses[self.polish.name]  # inf: its fit could not be integrated
        polished_state = copy.deepcopy(model.state_dict())
        restart, note = self._restart(problem, model, context, polished_loss)
        if restart is not None and restart.loss < polished_loss:
            return restart
        model.load_state_dict(polished_state)
        restart_steps = 0 if restart is None else restart.n_iter
        reason = self.within_noise(problem, polished_loss) or self.cannot_help(
            polished_loss, record.result_of(self.polish.name)
        )
        if reason is not None:
            status = "skipped" if restart is None else "abandoned"
            return StageResult(self.name, restart_steps, polished_loss, status, note + reason)
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
                message = f"{note}the polished fit was kept: shooting was abandoned, {shot.message}"
                n_iter = restart_steps + shot.n_iter
                return StageResult(self.name, n_iter, polished_loss, "abandoned", message)
            again = replace(self.polish, name=f"{self.name}: polish").run(problem, model, context)
        except KeyboardInterrupt:
            model.load_state_dict(polished_state)  # the best finished fit of this stage
            raise
        message = (
            f"the polished fit was far from the data (scaled MSE {polished_loss:.3g}); {note}"
            f"{shot.n_iter} shooting steps ({shot.status}), then the polish again "
            f"({again.n_iter} steps, {again.status})"
        )
        status = "diverged" if "diverged" in (shot.status, again.status) else shot.status
        n_iter = restart_steps + shot.n_iter + again.n_iter
        return StageResult(self.name, n_iter, again.loss, status, message)

    def _restart(
        self,
        problem: TrainingProblem,
        model: ODEModel,
        context: StageContext,
        polished_loss: float,
    ) -> tuple[StageResult | None, str]:
        """Where a physical parameter collapsed toward 0, polish from the start of training.

        Returns the polish's result (its ``loss``: the full-trajectory misfit reached) and
        a note for the stage's message; (None, "") where nothing collapsed. The model is
        left as that polish left it."""
        parameters = getattr(model.field, "physical_parameters", None)
        starts = context.record.starts
        has_network = getattr(model.field, "network", None) is not None
        if not self.restart_on_collapse or parameters is None or not parameters.names:
            return None, ""
        if has_network or not starts:
            return None, ""
        now = parameters.as_floats()
        state = copy.deepcopy(model.state_dict())
        model.load_state_dict(next(iter(starts.values())))  # the start of training
        collapsed = collapsed_parameters(parameters.as_floats(), now)
        if not collapsed:
            model.load_state_dict(state)
            return None, ""
        polish = replace(self.polish, name=f"{self.name}: polish from the start")
        try:
            again = polish.run(problem, model, context)
        except KeyboardInterrupt:
            model.load_state_dict(state)
            raise
        loss, _ = evaluate_model(problem, model, context.solver)
        names = ", ".join(collapsed)
        note = (
            f"{names} had collapsed toward 0; polished again from the start "
            f"of training ({again.n_iter} steps, {again.status}): scaled MSE {loss:.3g} "
            f"against {polished_loss:.3g}; "
        )
        return replace(again, stage=self.name, loss=loss, message=note.rstrip("; ")), note
