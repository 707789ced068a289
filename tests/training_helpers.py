"""Helpers of the training tests: a small model of the oscillator, a stage context, a stage
that wrecks the model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skneuralode import NeuralODERegressor
from skneuralode._monitor import TrainingMonitor
from skneuralode._problem import TrainingProblem
from skneuralode._solve import SolverSettings
from skneuralode._spec import ModelSpec
from skneuralode._training import StageContext, TrainingStage
from skneuralode._training.loop import StageResult
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


@dataclass
class Sabotage(TrainingStage):
    """A stage that makes the model much worse."""

    name: str = "sabotage"

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        with torch.no_grad():
            for parameter in model.field.parameters():
                parameter.add_(torch.randn_like(parameter))
        return StageResult(self.name, 1, 0.0, "max_iter")
