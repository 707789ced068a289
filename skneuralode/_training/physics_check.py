"""After a universal differential equation's fit: does the network pay for itself?

A network added to known physics can end worse than the physics alone: on a short,
noisy series it grows into a wrong shape early and the stages after it refine that
(an SIR with a 16-unit network on the infection term, 14 daily counts: in-sample R^2
0.65 where the classical SIR reaches 0.97). Where the fit stays above the misfit the
noise allows, this stage polishes the physics alone from the physics-first stage's fit
(the network switched off) and compares the two in the noise-aware misfit: the
network's model is kept only if it is better by more than the noise's two-standard-
deviation band (``2 sqrt(2 / n)`` of the noise variance over ``n`` observed values);
otherwise the physics alone is kept (its network silenced) and the estimator warns.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

from sklearn.exceptions import ConvergenceWarning

from .._problem import TrainingProblem
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import StageResult
from .misfit import evaluate_model, misfit_the_noise_allows
from .physics_first import PhysicsFirstStage


def network_pays_margin(problem: TrainingProblem) -> float:
    """How much lower than the physics alone a network's misfit must be to count: the
    two-standard-deviation band of the noise's mean squared error."""
    n_observed = max(float(problem.observed.sum()), 1.0)
    return problem.noise_variance * 2.0 * math.sqrt(2.0 / n_observed)


@dataclass
class PhysicsAloneCheck(TrainingStage):
    """The physics alone, polished, against the fitted universal ODE; the better kept.

    Parameters
    ----------
    physics : PhysicsFirstStage
        The stage whose fit (the known part alone) the check starts from.
    polish : TrainingStage
        The polish to run on the physics alone.
    """

    physics: PhysicsFirstStage
    polish: TrainingStage
    name: str = "physics check"
    divergence_remedy: ClassVar[str] = "physics_first=False"

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        if self.physics.fitted_state is None:
            return "the physics-first stage did not run"
        if trajectory_loss <= misfit_the_noise_allows(problem):
            return "the fit is within what the noise allows"
        return None

    def decides_the_kept_model(self) -> bool:
        return True

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        assert self.physics.fitted_state is not None  # skip_reason says so otherwise
        network_state = copy.deepcopy(model.state_dict())
        network_loss, _ = evaluate_model(problem, model, context.solver)
        field = model.field
        model.load_state_dict(self.physics.fitted_state)
        field.network_enabled = False
        try:
            polished = self.polish.run(problem, model, context)
        except KeyboardInterrupt:
            model.load_state_dict(network_state)
            raise
        finally:
            field.network_enabled = True
        field.silence_network()
        physics_loss, _ = evaluate_model(problem, model, context.solver)
        margin = network_pays_margin(problem)
        if network_loss < physics_loss - margin:
            model.load_state_dict(network_state)
            message = (
                f"the network improves on the physics alone (scaled MSE {network_loss:.3g} "
                f"against {physics_loss:.3g})"
            )
            return StageResult(self.name, polished.n_iter, network_loss, "converged", message)
        comparison = (
            "better"
            if physics_loss <= network_loss
            else f"within the noise's margin of {margin:.2g}"
        )
        message = (
            f"the network does not pay for itself: the physics alone fits {comparison} "
            f"(scaled MSE {physics_loss:.3g} against {network_loss:.3g} with the network), "
            "so the physics alone was kept"
        )
        warnings.warn(
            f"{message[0].upper()}{message[1:]}; the network's term is zero. A network that "
            "helps may need more data, a smaller network or another start (random_state); "
            "physics_first=False skips this check.",
            ConvergenceWarning,
            stacklevel=2,
        )
        return StageResult(self.name, polished.n_iter, physics_loss, polished.status, message)
