"""Helpers of the training tests: a small model of the oscillator, a stage context, a stage
that wrecks the model, and a toy objective for the optimisation loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skneuralode import NeuralODERegressor
from skneuralode._monitor import TrainingMonitor
from skneuralode._problem import TrainingProblem
from skneuralode._solve import SolverSettings
from skneuralode._spec import ModelSpec
from skneuralode._training import StageContext, TrainingStage
from skneuralode._training.loop import LoopSettings, StageResult, optimise
from skneuralode._training.misfit import trajectory_misfit
from skneuralode._vector_fields import ODEModel

# A fixed-step solver at the data times: these tests are about the stages, not accuracy.
SOLVER = SolverSettings(method="rk4")


def fresh_model(problem: TrainingProblem, seed: int = 0) -> ODEModel:
    """An untrained model of ``problem`` (one 16-unit layer), seeded."""
    torch.manual_seed(seed)
    estimator = NeuralODERegressor(hidden_layer_sizes=(16,))
    initial_times = problem.scaling.unscale_times(problem.times[:, 0].numpy())
    spec = ModelSpec(
        field=estimator._field_spec(problem),
        n_states=problem.n_states,
        n_augmented=0,
        initial_times=initial_times,
        scaling=problem.scaling,
        solver=SOLVER,
    )
    return estimator._new_model(spec, problem)


def context(callbacks: tuple = ()) -> StageContext:
    """What a stage runs with: the fixed-step solver, a monitor, a seeded generator."""
    return StageContext(
        SOLVER, TrainingMonitor(callbacks=callbacks), torch.Generator().manual_seed(0)
    )


def trajectory_loss(problem: TrainingProblem, model: ODEModel) -> float:
    """The full-trajectory misfit of ``model`` to ``problem``'s data."""
    with torch.no_grad():
        loss, failure = trajectory_misfit(problem, model, SOLVER)
    assert failure is None
    return float(loss)


def parameters_of(model: ODEModel) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer of ``model``, by name."""
    return {name: value.clone() for name, value in model.state_dict().items()}


class Quadratic:
    """Minimise ``|p - 3|^2`` from 0; some calls of ``loss`` can be made to fail."""

    def __init__(self, nan_calls: set[int] = frozenset(), infinite_gradient_calls=()) -> None:
        self.point = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        self.calls = 0
        self.nan_calls = nan_calls
        self.infinite_gradient_calls = set(infinite_gradient_calls)
        self.points_at_failures: list[torch.Tensor] = []

    def parameters(self) -> list[torch.Tensor]:
        return [self.point]

    def loss(self) -> torch.Tensor:
        self.calls += 1
        loss = ((self.point - 3.0) ** 2).sum()
        if self.calls in self.nan_calls:
            return loss * float("nan")
        if self.calls in self.infinite_gradient_calls:
            # The value stays finite, the gradient is infinite: the step wrecks the point.
            return loss + torch.sqrt((self.point - self.point.detach()).abs()).sum()
        return loss


def minimise(
    objective: Quadratic, monitor: TrainingMonitor | None = None, **settings: object
) -> StageResult:
    """Run the loop on a toy objective (Adam, step 0.1 unless told otherwise)."""
    loop = LoopSettings(**{"max_iter": 200, "learning_rate": 0.1, **settings})
    return optimise(objective, loop, monitor or TrainingMonitor(), "toy")


def at_optimum(objective: Quadratic, tolerance: float) -> bool:
    """Whether the toy objective's point is within ``tolerance`` of its minimum."""
    return bool(
        torch.allclose(objective.point.detach(), torch.full((2,), 3.0).double(), atol=tolerance)
    )


@dataclass
class Sabotage(TrainingStage):
    """A stage that makes the model much worse."""

    name: str = "sabotage"

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        with torch.no_grad():
            for parameter in model.field.parameters():
                parameter.add_(torch.randn_like(parameter))
        return StageResult(self.name, 1, 0.0, "max_iter")
