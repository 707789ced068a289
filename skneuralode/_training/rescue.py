"""Multiple shooting as a rescue of a universal differential equation's polish.

With physics in the model, collocation usually lands close enough for the
full-trajectory polish to reach the optimum in seconds, and shooting would only cost
time. Where collocation lands far off (sparse, fast or very noisy stretches bias the
derivative estimates), the polish of an oscillating trajectory can stop in a local
minimum. Shooting on short segments does not, but only from the collocation start: from
the polish's local minimum it stays there (noisy irregular cubic spiral, known structure,
no network, rotation started reversed: R^2 0.15 either way). So the rescue goes back
to the polish's start, shoots, polishes again, and keeps whichever of the two polished
fits is closer to the data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

from .._problem import TrainingProblem
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import StageResult
from .misfit import evaluate_model
from .shooting import ShootingStage


@dataclass
class RescuedPolishStage(TrainingStage):
    """The polish; where its fit is still far from the data, shooting then the polish again.

    "Far" is the shooting stage's own test (``ShootingStage.skip_reason`` with
    ``only_if_needed``): a misfit above twice the estimated noise variance plus
    ``needed_above``.

    Parameters
    ----------
    polish : TrainingStage
        The full-trajectory polish.
    shooting : ShootingStage
        The rescue, run from the polish's start.

    The result counts the steps of every run. An interrupt during the rescue puts the
    first polished fit back before it propagates.
    """

    polish: TrainingStage
    shooting: ShootingStage
    name: str = "polish"
    divergence_remedy: ClassVar[str] = "polish=False"

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        return self.polish.skip_reason(problem, trajectory_loss)

    def keeps_fits_within_noise(self, model: ODEModel) -> bool:
        return self.polish.keeps_fits_within_noise(model)

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        start = copy.deepcopy(model.state_dict())
        polished = self.polish.run(problem, model, context)
        polished_loss, _ = evaluate_model(problem, model, context.solver)
        if self.shooting.skip_reason(problem, polished_loss) is not None:
            return polished
        polished_state = copy.deepcopy(model.state_dict())
        model.load_state_dict(start)
        try:
            shot = self.shooting.run(problem, model, context)
            again = self.polish.run(problem, model, context)
        except KeyboardInterrupt:
            model.load_state_dict(polished_state)  # the best finished fit of this stage
            raise
        rescued_loss, _ = evaluate_model(problem, model, context.solver)
        steps = f"{shot.n_iter} shooting steps ({shot.status}), then the polish again"
        n_iter = polished.n_iter + shot.n_iter + again.n_iter
        if rescued_loss < polished_loss:
            message = (
                f"the polished fit was far from the data (scaled MSE {polished_loss:.3g}); "
                f"{steps} reached {rescued_loss:.3g}"
            )
            return StageResult(self.name, n_iter, again.loss, again.status, message)
        model.load_state_dict(polished_state)
        message = (
            f"the polished fit was far from the data (scaled MSE {polished_loss:.3g}); "
            f"{steps} did no better ({rescued_loss:.3g}), so the first polish was kept"
        )
        return StageResult(self.name, n_iter, polished.loss, polished.status, message)
