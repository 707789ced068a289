"""The physics-first stage of a universal differential equation: the known part alone."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._problem import TrainingProblem
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .collocation import CollocationStage
from .loop import StageResult


@dataclass
class PhysicsFirstStage(TrainingStage):
    """Collocation of the known part alone, the network switched off.

    The physical parameters move first to where the physics explains the estimated
    derivatives best (the least-squares projection of the data on the physics, which is
    the minimal-norm split of APHYNITY in collocation form). The network's output layer
    is then zeroed, so the model leaving this stage is the fitted physics alone; the
    network grows from there on the residual, and the minimal-norm penalty keeps it
    from taking over what the physics explains.

    Parameters
    ----------
    collocation : CollocationStage
        The regression to run (its ``name`` labels the history).
    """

    collocation: CollocationStage
    name: str = "physics"
    #: The model's state when the stage ended (the physics alone), for
    #: :class:`~.physics_check.PhysicsAloneCheck`; None until it ran.
    fitted_state: dict[str, Any] | None = field(default=None, init=False, repr=False)
    divergence_remedy: ClassVar[str] = (
        "a smaller Collocation(learning_rate=...) or physics_first=False"
    )

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        return self.collocation.skip_reason(problem, trajectory_loss)

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        hybrid = model.field
        hybrid.network_enabled = False
        try:
            result = self.collocation.run(problem, model, context)
        finally:
            hybrid.network_enabled = True
        hybrid.silence_network()
        self.fitted_state = copy.deepcopy(model.state_dict())
        return result
