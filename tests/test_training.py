"""Training stages, their sequence and the stage runner; collocation's working dtype."""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from training_helpers import (
    Sabotage,
    context,
    fresh_model,
    parameters_of,
    trajectory_loss,
)

from skneuralode import NeuralODERegressor
from skneuralode._data import validate_trajectories
from skneuralode._problem import TrainingProblem, build_problem
from skneuralode._training import StageContext, TrainingStage, train
from skneuralode._training.collocation import CollocationStage
from skneuralode._training.loop import StageInterrupted, StageResult
from skneuralode._training.polish import PolishStage
from skneuralode._training.shooting import ShootingStage
from skneuralode._vector_fields import ODEModel


# ------------------------------------------------------------------------ the stages
@pytest.mark.parametrize(
    "stage",
    [
        CollocationStage(max_iter=100),
        ShootingStage(max_iter=60, learning_rate=1e-2),
        PolishStage(max_iter=5),
    ],
    ids=["collocation", "shooting", "polish"],
)
def test_each_stage_alone_lowers_the_loss(problem: TrainingProblem, stage: TrainingStage) -> None:
    model = fresh_model(problem)
    before = trajectory_loss(problem, model)
    run = context()
    report = train(problem, model, [stage], run)
    assert [result.stage for result in report.results] == [stage.name]
    assert report.results[0].status in {"max_iter", "converged"}
    assert report.kept_after == stage.name
    # The whole-trajectory misfit falls to well under half ...
    assert report.trajectory_loss < 0.5 * before
    assert trajectory_loss(problem, model) == pytest.approx(report.trajectory_loss)
    # ... and so does the stage's own loss over its iterations.
    losses = [record["loss"] for record in run.monitor.history]
    assert len(losses) == report.results[0].n_iter
    assert all(record["stage"] == stage.name for record in run.monitor.history)
    assert np.mean(losses[-3:]) < 0.5 * losses[0]


def test_stages_in_sequence_improve_on_each_other(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    collocation_only = fresh_model(problem)
    train(problem, collocation_only, [CollocationStage(max_iter=100)], context())
    report = train(
        problem,
        model,
        [CollocationStage(max_iter=100), ShootingStage(max_iter=40), PolishStage(max_iter=5)],
        context(),
    )
    assert [result.stage for result in report.results] == ["collocation", "shooting", "polish"]
    assert report.n_iter == sum(result.n_iter for result in report.results)
    assert report.trajectory_loss < trajectory_loss(problem, collocation_only)


def test_runner_keeps_the_best_stage(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    reference = fresh_model(problem)
    train(problem, reference, [CollocationStage(max_iter=50)], context())
    report = train(problem, model, [CollocationStage(max_iter=50), Sabotage()], context())
    assert report.kept_after == "collocation"
    assert [result.stage for result in report.results] == ["collocation", "sabotage"]
    for name, value in parameters_of(reference).items():
        assert torch.equal(model.state_dict()[name], value), name
    assert report.trajectory_loss == pytest.approx(trajectory_loss(problem, reference))


def test_runner_keeps_a_trained_model_that_no_stage_beats(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    train(problem, model, [CollocationStage(max_iter=50)], context())
    trained = parameters_of(model)
    report = train(problem, model, [Sabotage()], context(), model_is_trained=True)
    assert report.kept_after == "start"
    for name, value in trained.items():
        assert torch.equal(model.state_dict()[name], value), name


@dataclass
class Nudge(TrainingStage):
    """A stage that makes the fit a little worse, as a prior trading misfit would."""

    within_noise: bool = True
    name: str = "nudge"

    def keeps_fits_within_noise(self, model: ODEModel) -> bool:
        return self.within_noise

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in model.field.parameters():
                noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.add_(0.1 * noise)
        return StageResult(self.name, 1, 0.0, "max_iter")


@pytest.mark.parametrize(
    "within_noise, noise_per_nudged_loss, kept_after",
    [(True, 1.0, "nudge"), (True, 0.5, "start"), (False, 1.0, "start")],
)
def test_runner_keeps_a_stage_with_a_prior_while_the_noise_allows_its_misfit(
    problem: TrainingProblem, within_noise: bool, noise_per_nudged_loss: float, kept_after: str
) -> None:
    start = fresh_model(problem)
    train(problem, start, [CollocationStage(max_iter=50)], context())
    start_loss = trajectory_loss(problem, start)
    nudged = copy.deepcopy(start)
    Nudge().run(problem, nudged, context())
    nudged_loss = trajectory_loss(problem, nudged)
    assert nudged_loss > start_loss
    noisy = replace(problem, noise_variance=noise_per_nudged_loss * nudged_loss)
    report = train(
        noisy, start, [Nudge(within_noise=within_noise)], context(), model_is_trained=True
    )
    assert report.kept_after == kept_after
    expected = nudged_loss if kept_after == "nudge" else start_loss
    assert report.trajectory_loss == pytest.approx(expected, rel=1e-9)


def test_shooting_only_if_needed_is_skipped_on_a_good_fit(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    stages = [CollocationStage(max_iter=50), ShootingStage(only_if_needed=True, needed_above=1.0)]
    report = train(problem, model, stages, context())
    assert report.results[1].status == "skipped"
    assert report.results[1].n_iter == 0
    assert "within the noise" in report.results[1].message


def test_an_implausibly_large_noise_estimate_does_not_skip_shooting(
    problem: TrainingProblem,
) -> None:
    """A fit leaving a third of the variance unexplained is not "within the noise", even
    where the noise estimate says so (short, coarsely sampled series overestimate it)."""
    stage = ShootingStage(only_if_needed=True)
    assert stage.skip_reason(replace(problem, noise_variance=1e-4), 0.001) is not None
    assert stage.skip_reason(replace(problem, noise_variance=1e-4), 0.3) is None
    assert stage.skip_reason(replace(problem, noise_variance=0.25), 0.3) is None
    assert stage.skip_reason(replace(problem, noise_variance=0.25), 0.05) is not None


def test_a_callback_stops_a_stage(problem: TrainingProblem) -> None:
    seen: list[dict] = []

    def stop_at_iteration_25(record: dict) -> bool:
        seen.append(record)
        return record["iteration"] >= 25

    run = context(callbacks=(stop_at_iteration_25,))
    model = fresh_model(problem)
    report = train(problem, model, [CollocationStage(max_iter=500)], run)
    result = report.results[0]
    assert result.status == "stopped"
    assert "callback" in result.message
    # The host checks every 10 steps: the window holding iteration 25 is the last one.
    assert result.n_iter == 30
    assert [record["iteration"] for record in seen] == list(range(30))
    assert set(seen[0]) == {"stage", "iteration", "loss", "seconds"}


# ------------------------------------------------------------- collocation's working dtype
def dtypes_seen_by(module: torch.nn.Module) -> list[torch.dtype]:
    """Record the dtype of every input ``module`` is called with (copies record too)."""
    seen: list[torch.dtype] = []
    module.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].dtype))
    return seen


def test_collocation_computes_in_float32_and_writes_the_field_back(
    problem: TrainingProblem,
) -> None:
    reduced, full = fresh_model(problem), fresh_model(problem)
    before = trajectory_loss(problem, reduced)
    seen = dtypes_seen_by(reduced.field.network)
    CollocationStage(max_iter=100).run(problem, reduced, context())
    assert seen.count(torch.float32) == 100  # every step; trajectory checks see float64
    assert all(value.dtype == torch.float64 for value in reduced.state_dict().values())
    CollocationStage(max_iter=100, working_dtype=None).run(problem, full, context())
    # The same fit, up to float32 rounding carried through 100 steps.
    assert trajectory_loss(problem, reduced) < 0.5 * before
    assert trajectory_loss(problem, reduced) == pytest.approx(
        trajectory_loss(problem, full), rel=1e-2
    )


def test_collocation_on_noisy_data_keeps_the_models_dtype(
    oscillator: tuple[np.ndarray, np.ndarray],
) -> None:
    """With trajectory checks (noisy data) the steps compute in float64, as the checks."""
    t, y = oscillator
    noisy = y + 0.1 * y.std(axis=0) * np.random.default_rng(0).standard_normal(y.shape)
    noisy_problem = build_problem(
        validate_trajectories(t, noisy),
        device=torch.device("cpu"),
        dtype=torch.float64,
        relative_noise=None,
    )
    stage = CollocationStage(max_iter=20)
    assert noisy_problem.noise_variance > stage.check_above_noise
    model = fresh_model(noisy_problem)
    seen = dtypes_seen_by(model.field.network)
    stage.run(noisy_problem, model, context())
    assert seen and set(seen) == {torch.float64}


def test_collocation_of_a_field_with_user_code_keeps_the_models_dtype(
    oscillator: tuple[np.ndarray, np.ndarray],
) -> None:
    seen: list[torch.dtype] = []

    def identity_features(states: torch.Tensor) -> torch.Tensor:
        seen.append(states.dtype)
        return states

    t, y = oscillator
    NeuralODERegressor(
        feature_map=identity_features, max_iter=5, shooting=False, random_state=0
    ).fit(t, y)
    assert seen and set(seen) == {torch.float64}


def test_interrupted_float32_collocation_leaves_its_progress_in_the_model(
    problem: TrainingProblem,
) -> None:
    model = fresh_model(problem)
    start = parameters_of(model)

    def interrupt_at_step_30(entry: dict) -> bool:
        if entry["iteration"] == 30:
            raise KeyboardInterrupt
        return False

    with pytest.raises(StageInterrupted):
        CollocationStage(max_iter=100).run(problem, model, context((interrupt_at_step_30,)))
    network = {k: v for k, v in parameters_of(model).items() if "network" in k}
    assert all(torch.isfinite(value).all() for value in network.values())
    assert any(not torch.equal(value, start[name]) for name, value in network.items())
