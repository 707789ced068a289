"""Training stages, the shared optimisation loop and the stage runner."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

import skneuralode._training.shooting as shooting_module
from skneuralode import NeuralODERegressor
from skneuralode._data import TrajectoryBatch, validate_trajectories
from skneuralode._fit_warnings import poor_fit_remedies
from skneuralode._monitor import TrainingMonitor
from skneuralode._problem import TrainingProblem, build_problem
from skneuralode._solve import SolverSettings
from skneuralode._spec import ModelSpec
from skneuralode._training import StageContext, TrainingReport, TrainingStage, train
from skneuralode._training.collocation import CollocationStage
from skneuralode._training.loop import LoopSettings, StageInterrupted, StageResult, optimise
from skneuralode._training.misfit import trajectory_misfit
from skneuralode._training.polish import PolishStage
from skneuralode._training.progress import TrajectoryCheck
from skneuralode._training.rescue import RescuedPolishStage
from skneuralode._training.shooting import ShootingStage
from skneuralode._training.tolerance import ATOL_PER_RTOL, RTOL_PER_NOISE, noise_matched
from skneuralode._vector_fields import ODEModel

# A fixed-step solver at the data times: these tests are about the stages, not accuracy.
SOLVER = SolverSettings(method="rk4")


# ---------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def batch(oscillator: tuple[np.ndarray, np.ndarray]) -> TrajectoryBatch:
    t, y = oscillator
    return validate_trajectories(t, y)


@pytest.fixture(scope="module")
def problem(batch: TrajectoryBatch) -> TrainingProblem:
    return build_problem(
        batch, device=torch.device("cpu"), dtype=torch.float64, relative_noise=None
    )


def fresh_model(problem: TrainingProblem, seed: int = 0) -> ODEModel:
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
    return StageContext(
        SOLVER, TrainingMonitor(callbacks=callbacks), torch.Generator().manual_seed(0)
    )


def trajectory_loss(problem: TrainingProblem, model: ODEModel) -> float:
    with torch.no_grad():
        loss, failure = trajectory_misfit(problem, model, SOLVER)
    assert failure is None
    return float(loss)


def parameters_of(model: ODEModel) -> dict[str, torch.Tensor]:
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
    return bool(
        torch.allclose(objective.point.detach(), torch.full((2,), 3.0).double(), atol=tolerance)
    )


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


@dataclass
class Sabotage(TrainingStage):
    """A stage that makes the model much worse."""

    name: str = "sabotage"

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        with torch.no_grad():
            for parameter in model.field.parameters():
                parameter.add_(torch.randn_like(parameter))
        return StageResult(self.name, 1, 0.0, "max_iter")


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


# --------------------------------------------------------------- divergence recovery
def test_loop_converges_on_a_quadratic() -> None:
    objective = Quadratic()
    result = minimise(objective, max_iter=400)
    assert result.status in {"max_iter", "converged"}
    assert at_optimum(objective, 1e-2)


def test_loop_recovers_from_a_few_non_finite_losses() -> None:
    objective = Quadratic(nan_calls={15, 16, 17})
    monitor = TrainingMonitor()
    result = minimise(objective, monitor, max_iter=400)
    losses = [record["loss"] for record in monitor.history]
    assert any(math.isnan(loss) for loss in losses)  # the failure was seen ...
    assert result.status in {"max_iter", "converged"}  # ... and survived
    assert math.isfinite(result.loss)
    assert at_optimum(objective, 0.05)


def test_loop_gives_up_after_repeated_failures_with_the_last_good_parameters() -> None:
    # Every loss from call 25 on is NaN: windows 1-2 are good, window 3 is not.
    objective = Quadratic(nan_calls=set(range(25, 10_000)))
    result = minimise(objective, max_iter=400, max_recoveries=3)
    assert result.status == "diverged"
    assert "non-finite 4 times" in result.message
    assert result.n_iter == 10 * (2 + 4)
    # Parameters are copied every 10 steps: the point restored is the one after step 20,
    # where the (finite) 21st loss was taken.
    reference = Quadratic()
    minimise(reference, max_iter=20)
    assert torch.equal(objective.point.detach(), reference.point.detach())


def test_loop_does_not_keep_parameters_whose_loss_was_never_seen() -> None:
    # The loss of step 10 (the last of the first window) is finite but its gradient is
    # not: the step lands on NaN parameters, which must not become the "good" copy.
    objective = Quadratic(infinite_gradient_calls={10})
    result = minimise(objective)
    assert result.status != "diverged", result.message
    assert torch.isfinite(objective.point).all()
    assert math.isfinite(result.loss)


def test_lbfgs_loop_recovers_from_a_non_finite_loss() -> None:
    objective = Quadratic(nan_calls={3})
    result = minimise(objective, max_iter=20, learning_rate=1.0, optimiser="lbfgs")
    assert result.status != "diverged"
    assert torch.isfinite(objective.point).all()
    assert result.loss < 1e-3


def test_loop_stops_on_a_plateau() -> None:
    result = minimise(Quadratic(), max_iter=10_000, n_iter_no_change=20)
    assert result.status == "converged"
    assert result.n_iter < 10_000


class Walled(Quadratic):
    """``|p - 3|^2``, but the solve "fails" (infinite loss, no gradient) beyond |p| = 0.3."""

    def loss(self) -> torch.Tensor:
        if self.point.detach().abs().max() > 0.3:
            return torch.tensor(float("inf"), dtype=torch.float64)
        return super().loss()


def test_lbfgs_line_search_backs_off_from_a_failed_trial() -> None:
    # L-BFGS's first trial step lands at |p| = 0.5, where the loss is infinite.
    objective = Walled()
    monitor = TrainingMonitor()
    result = minimise(objective, monitor, max_iter=10, learning_rate=1.0, optimiser="lbfgs")
    assert torch.isfinite(objective.point).all()
    assert objective.point.detach().abs().max() <= 0.3
    assert result.loss < 0.9 * 18.0  # it moved towards the wall
    assert monitor.history[-1]["loss"] < monitor.history[0]["loss"]


class Costly(Quadratic):
    """A quadratic whose objective asks to end its stage after 25 losses."""

    def stop_reason(self) -> str | None:
        return "each step costs too much" if self.calls >= 25 else None


def test_an_objective_that_asks_to_stop_ends_its_stage_early() -> None:
    objective = Costly()
    result = optimise(
        objective,
        LoopSettings(max_iter=500, learning_rate=0.1),
        TrainingMonitor(),
        "costly",
    )
    assert result.status == "ended_early"
    assert result.message == "each step costs too much"
    assert result.n_iter == 30  # asked at 25, seen at the next check (every 10 steps)


def test_shooting_ends_early_on_stiff_dynamics(
    problem: TrainingProblem, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = fresh_model(problem)
    stiff = replace(SOLVER, method="dopri5", max_num_steps=100)
    shooting = ShootingStage(max_iter=100)
    recorded: list[int] = []

    class StiffSolves:
        """Every segment solve reports 50 explicit steps: half the budget."""

        def __init__(self, solve: object) -> None:
            self.solve = solve

        def __call__(self, *args: object, **kwargs: object) -> object:
            result = self.solve(*args, **kwargs)  # type: ignore[operator]
            recorded.append(result.n_steps)
            return replace(result, n_steps=50)

    monkeypatch.setattr(shooting_module, "solve", StiffSolves(shooting_module.solve))
    context = StageContext(stiff, TrainingMonitor(), torch.Generator())
    result = shooting.run(problem, model, context)
    assert result.status == "ended_early"
    assert "stiff" in result.message and "50 steps" in result.message
    assert result.n_iter == 10
    assert all(steps > 0 for steps in recorded)  # real solves count their steps


# ------------------------------------------------------------- stopping on the full fit
def test_a_stage_ends_when_the_full_trajectory_fit_stops_improving(
    problem: TrainingProblem,
) -> None:
    """Collocation's own loss keeps falling on a few noisy points; the whole-trajectory
    fit settles, and the stage ends there instead of spending its budget."""
    model = fresh_model(problem)
    stage = CollocationStage(max_iter=5000, check_every=20, check_patience=2)
    result = stage.run(replace(problem, noise_variance=0.01), model, context())
    assert result.status == "converged"
    assert "full-trajectory fit stopped improving" in result.message
    assert result.n_iter < 5000


def test_shooting_that_cannot_improve_on_its_start_ends_after_patience_checks(
    problem: TrainingProblem,
) -> None:
    """The fit shooting starts from is the first checked one: a stage that does not
    improve on it (here: steps of size zero) ends after ``check_patience`` checks."""
    model = fresh_model(problem)
    stage = ShootingStage(
        max_iter=500,
        learning_rate=0.0,
        check_every=10,
        check_patience=2,
        checks_decide_below=math.inf,  # the fresh field is far off: decide anyway
    )
    result = stage.run(replace(problem, noise_variance=0.01), model, context())
    assert result.status == "converged"
    assert result.n_iter == 2 * 10  # checks at steps 0 (the start), 10 and 20


@pytest.mark.parametrize(
    ("growth", "margin", "continuity_weight", "levels"),
    [
        (False, 1.0, 0.0, 1),
        (True, 1.0, 0.0, 6),  # 3, 5, 9, 17, 33 and then all 40 points per segment
        # short segments fit their points (loss 0.15 <= 1.01), whole trajectories do
        # not (3.3): grow
        ("auto", 1.0, 0.0, 6),
        ("auto", 1.0, 10.0, 1),  # with its continuity gaps a segment misses by 3.8
        ("auto", 5.0, 0.0, 1),  # the whole trajectories fit within the margin
    ],
)
def test_segments_grow_while_they_fit_and_the_whole_trajectories_do_not(
    problem: TrainingProblem,
    monkeypatch: pytest.MonkeyPatch,
    growth: bool | str,
    margin: float,
    continuity_weight: float,
    levels: int,
) -> None:
    """Each level of segments ends after its idle checks (steps of practically zero
    size); "auto" grows only while the full-trajectory misfit is above what the noise
    allows plus the margin and the first, shortest segments fit within that bound, and
    each doubling takes ``growth_step_factor`` of the previous step."""
    steps: list[float] = []
    optimise = shooting_module.optimise

    def recording(objective: object, settings: LoopSettings, *args: object) -> StageResult:
        steps.append(settings.learning_rate)
        return optimise(objective, settings, *args)

    monkeypatch.setattr(shooting_module, "optimise", recording)
    stage = ShootingStage(
        max_iter=500,
        learning_rate=1e-12,
        segment_length=3,
        continuity_weight=continuity_weight,
        check_every=10,
        check_patience=2,
        grow_segments=growth,
        needed_above=margin,
    )
    noisy = replace(problem, noise_variance=0.01)
    result = stage.run(noisy, fresh_model(problem), context())
    assert result.status == "converged"
    assert result.n_iter == levels * 2 * 10
    np.testing.assert_allclose(steps, 1e-12 * stage.growth_step_factor ** np.arange(levels))


def test_auto_growth_needs_short_segments_that_fit_and_trajectories_that_do_not(
    problem: TrainingProblem,
) -> None:
    stage = ShootingStage(grow_segments="auto")
    noisy = replace(problem, noise_variance=0.01)
    bound = stage.grows_above(noisy)
    check = TrajectoryCheck(noisy, fresh_model(problem), SOLVER, best_loss=2.0 * bound)
    assert stage._grows(noisy, check, first_loss=0.5 * bound)
    assert not stage._grows(noisy, check, first_loss=1.5 * bound)  # the model cannot fit
    check.best_loss = 0.5 * bound  # the whole trajectories fit: done
    assert not stage._grows(noisy, check, first_loss=0.1 * bound)


def test_auto_growth_stops_where_the_noise_allows_the_misfit(problem: TrainingProblem) -> None:
    stage = ShootingStage(needed_above=0.002)
    noisy = replace(problem, noise_variance=0.01)
    n_observed = float(problem.observed.sum())
    expected = 0.01 * (1.0 + 2.0 * math.sqrt(2.0 / n_observed)) + 0.002
    assert stage.grows_above(noisy) == pytest.approx(expected)
    assert stage.grows_above(replace(problem, noise_variance=0.0)) == pytest.approx(0.002)


def test_a_check_keeps_the_best_checked_parameters(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    check = TrajectoryCheck(problem, model, SOLVER, every=1, patience=5)
    parameters = list(model.parameters())
    assert not check.should_stop(1, parameters)
    best = parameters_of(model)
    with torch.no_grad():
        for parameter in model.field.parameters():
            parameter.add_(1.0)  # a much worse field
    assert trajectory_loss(problem, model) > check.best_loss
    check.keep_best(parameters)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, best[name])


def test_a_meaningful_improvement_follows_the_noise(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    noisy = TrajectoryCheck(replace(problem, noise_variance=0.01), model, SOLVER)
    clean = TrajectoryCheck(replace(problem, noise_variance=0.0), model, SOLVER)
    noisy.best_loss = clean.best_loss = 0.02
    n_values = int(problem.observed.count_nonzero())
    assert noisy.n_checked_values == n_values
    sampling_error = noisy.sampling_fraction * math.sqrt(2.0 / n_values) * 0.01
    assert noisy.meaningful == pytest.approx(max(noisy.noise_fraction * 0.01, sampling_error))
    assert clean.meaningful == pytest.approx(clean.relative_tolerance * 0.02)


def test_few_noisy_values_ask_for_a_gain_above_the_misfits_sampling_error(
    problem: TrainingProblem,
) -> None:
    """On N observed values the noise part of the misfit varies by sqrt(2 / N) of itself
    between draws of the noise; gains below a fraction of that do not count, so tiny data
    stop sooner."""
    model = fresh_model(problem)
    few = replace(problem, observed=problem.observed[:, :5], noise_variance=1.0)
    many = replace(problem, noise_variance=1.0)
    checks = [TrajectoryCheck(data, model, SOLVER) for data in (few, many)]
    for check in checks:
        check.best_loss = 0.5  # below the noise estimate: all of it counts as noise
    n_few = int(few.observed.count_nonzero())
    expected = checks[0].sampling_fraction * 0.5 * math.sqrt(2.0 / n_few)
    assert checks[0].meaningful == pytest.approx(expected)
    assert checks[0].meaningful > checks[1].meaningful
    # The (capped) noise fraction still bounds it from below on many values.
    assert checks[1].meaningful >= checks[1].noise_fraction * checks[1].largest_trusted_noise


def test_training_tolerances_follow_the_noise_and_never_tighten() -> None:
    user = SolverSettings(rtol=1e-6, atol=1e-8)
    matched = noise_matched(user, noise_variance=0.05**2, largest_trusted_noise=0.025)
    assert matched.rtol == pytest.approx(RTOL_PER_NOISE * 0.05)
    assert matched.atol == pytest.approx(ATOL_PER_RTOL * matched.rtol)
    assert noise_matched(user, 0.0, 0.025) == user  # clean data: the user's tolerances
    loose = SolverSettings(rtol=1e-2, atol=1e-3)
    assert noise_matched(loose, 0.05**2, 0.025) == loose
    capped = noise_matched(user, noise_variance=4.0, largest_trusted_noise=0.025)
    assert capped.rtol == pytest.approx(RTOL_PER_NOISE * math.sqrt(0.025))
    fixed = SolverSettings(method="rk4")
    assert noise_matched(fixed, 0.05**2, 0.025) == fixed


# ------------------------------------------------------------- shooting as a rescue
@dataclass
class Recorded(TrainingStage):
    """A stage that records that it ran and, on the runs listed in ``sabotaged``,
    makes the model much worse (otherwise it leaves the model alone)."""

    name: str = "polish"
    sabotaged: tuple[int, ...] = ()
    runs: int = 0

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        if self.runs in self.sabotaged:
            Sabotage().run(problem, model, context)
        self.runs += 1
        return StageResult(self.name, 1, 0.0, "converged")


def test_rescue_is_not_run_when_the_polish_fits(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    train(problem, model, [CollocationStage(max_iter=100)], context())
    polish = Recorded()
    rescue = RescuedPolishStage(polish, ShootingStage(only_if_needed=True, needed_above=1.0))
    monitor_context = context()
    result = rescue.run(problem, model, monitor_context)
    assert (polish.runs, result.message) == (1, "")
    assert not [e for e in monitor_context.monitor.history if e["stage"] == "shooting"]


def test_rescue_shoots_from_the_polish_start_and_keeps_the_better_fit(
    problem: TrainingProblem,
) -> None:
    model = fresh_model(problem)
    start_loss = trajectory_loss(problem, model)
    polish = Recorded(sabotaged=(0,))  # the first polish lands far off, the second idles
    rescue = RescuedPolishStage(polish, ShootingStage(max_iter=60, only_if_needed=True))
    monitor_context = context()
    result = rescue.run(problem, model, monitor_context)
    assert polish.runs == 2
    assert "far from the data" in result.message
    assert "so the first polish was kept" not in result.message
    # shooting started from the start, not from the sabotaged polish, and improved on it
    assert trajectory_loss(problem, model) < start_loss
    shooting_steps = [e for e in monitor_context.monitor.history if e["stage"] == "shooting"]
    assert shooting_steps


def test_rescue_that_does_no_better_keeps_the_first_polish(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    first = parameters_of(model)
    polish = Recorded(sabotaged=(1,))  # the first polish idles (far off), the second ruins
    rescue = RescuedPolishStage(polish, ShootingStage(max_iter=1, only_if_needed=True))
    result = rescue.run(problem, model, context())
    assert "so the first polish was kept" in result.message
    for name, value in first.items():
        assert torch.equal(model.state_dict()[name], value), name


def test_poor_fit_remedies_follow_the_settings() -> None:
    ended = TrainingReport([StageResult("collocation", 10, 1.0, "max_iter")], 0.9, "x", None)
    converged = TrainingReport([StageResult("polish", 3, 1.0, "converged")], 0.9, "x", None)
    assert poor_fit_remedies(converged, False, True)[0] == "shooting=True"
    assert "shooting=True" not in poor_fit_remedies(converged, "auto", True)
    assert "polish=True" in poor_fit_remedies(converged, "auto", False)
    assert "polish=True" not in poor_fit_remedies(converged, "auto", True)
    assert "a larger max_iter" in poor_fit_remedies(ended, True, True)
    assert "a larger max_iter" not in poor_fit_remedies(converged, True, True)


def test_idle_checks_decide_only_once_the_fit_is_close(problem: TrainingProblem) -> None:
    """Far from the data (a fresh field) idle checks do not end the stage when asked to
    decide only below a misfit the fit has not reached; they do once it is reached."""
    model = fresh_model(problem)
    parameters = list(model.parameters())
    start = trajectory_loss(problem, model)
    far = TrajectoryCheck(problem, model, SOLVER, patience=2, decisive_below=start / 2)
    near = TrajectoryCheck(problem, model, SOLVER, patience=2, decisive_below=start * 2)
    always = TrajectoryCheck(problem, model, SOLVER, patience=2)
    for check in (far, near, always):
        check.start_from(parameters)
    # the model does not change: every later check is idle
    assert [far.should_stop(step, parameters) for step in (1, 2, 3)] == [False] * 3
    assert [near.should_stop(step, parameters) for step in (1, 2)] == [False, True]
    assert [always.should_stop(step, parameters) for step in (1, 2)] == [False, True]


class InterruptedShooting(ShootingStage):
    """Shooting that the user interrupts at once."""

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        Sabotage().run(problem, model, context)
        raise StageInterrupted(StageResult(self.name, 0, math.nan, "interrupted"))


def test_an_interrupted_rescue_puts_the_polished_fit_back(problem: TrainingProblem) -> None:
    expected = fresh_model(problem)
    torch.manual_seed(1)
    Sabotage().run(problem, expected, context())  # what the first (sabotaging) polish does
    model = fresh_model(problem)
    rescue = RescuedPolishStage(Recorded(sabotaged=(0,)), InterruptedShooting(only_if_needed=True))
    torch.manual_seed(1)
    with pytest.raises(StageInterrupted):
        rescue.run(problem, model, context())
    for name, value in parameters_of(expected).items():
        assert torch.equal(model.state_dict()[name], value), name


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
