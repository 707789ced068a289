"""When stages stop: full-trajectory checks, segment growth, shooting as a rescue."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from training_helpers import (
    SOLVER,
    Sabotage,
    context,
    fresh_model,
    parameters_of,
    trajectory_loss,
)

import skneuralode._training.shooting as shooting_module
from skneuralode import Collocation, UniversalODERegressor
from skneuralode._fit_warnings import poor_fit_remedies
from skneuralode._problem import TrainingProblem
from skneuralode._solve import SolverSettings
from skneuralode._training import StageContext, TrainingReport, TrainingStage, train
from skneuralode._training.collocation import CollocationStage
from skneuralode._training.loop import LoopSettings, StageInterrupted, StageResult
from skneuralode._training.polish import PolishStage
from skneuralode._training.progress import TrajectoryCheck
from skneuralode._training.rescue import RescueStage
from skneuralode._training.shooting import ShootingStage
from skneuralode._training.tolerance import ATOL_PER_RTOL, RTOL_PER_NOISE, noise_matched
from skneuralode._vector_fields import ODEModel


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
    #: One name per run; shared by copies (the rescue runs a renamed copy).
    ran_as: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return len(self.ran_as)

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        if self.runs in self.sabotaged:
            Sabotage().run(problem, model, context)
        self.ran_as.append(self.name)
        return StageResult(self.name, 1, 0.0, "converged")


def _names(report: TrainingReport) -> list[tuple[str, str]]:
    return [(result.stage, result.status) for result in report.results]


def test_rescue_is_its_own_stage_and_not_run_when_the_polish_fits(
    problem: TrainingProblem,
) -> None:
    model = fresh_model(problem)
    train(problem, model, [CollocationStage(max_iter=100)], context())
    polish = Recorded()
    rescue = RescueStage(ShootingStage(only_if_needed=True, needed_above=1.0), polish)
    monitor_context = context()
    report = train(problem, model, [polish, rescue], monitor_context)
    assert _names(report) == [("polish", "converged"), ("rescue", "skipped")]
    assert "within the noise" in report.results[-1].message
    assert polish.runs == 1
    assert not [e for e in monitor_context.monitor.history if e["stage"].startswith("rescue")]


@pytest.mark.parametrize(("polish_status", "runs"), [("converged", False), ("max_iter", True)])
def test_rescue_is_skipped_after_a_polish_that_converged_close_to_the_data(
    problem: TrainingProblem, polish_status: str, runs: bool
) -> None:
    """A converged polished fit that explains all but ``helps_above`` of the variance is
    the model's own error: the rescue is skipped. The same fit from a polish that ran out
    of steps may still be improved, and the rescue runs."""
    model = fresh_model(problem)
    train(problem, model, [CollocationStage(max_iter=100)], context())
    loss = trajectory_loss(problem, model)
    polish = Recorded()
    polish.run = lambda *_: StageResult("polish", 1, loss, polish_status)  # type: ignore[method-assign]
    shooting = ShootingStage(max_iter=20, only_if_needed=True, needed_above=0.0)
    rescue = RescueStage(shooting, polish, helps_above=2.0 * loss, probe_steps=1000)
    quiet = replace(problem, noise_variance=0.0)
    report = train(quiet, model, [polish, rescue], context())
    assert (report.results[-1].status != "skipped") is runs
    if not runs:
        assert "the model's own error" in report.results[-1].message


def test_rescue_shoots_from_the_polish_start_and_the_better_fit_is_kept(
    problem: TrainingProblem,
) -> None:
    model = fresh_model(problem)
    start_loss = trajectory_loss(problem, model)
    polish = Recorded(sabotaged=(0,))  # the first polish lands far off, the second idles
    rescue = RescueStage(ShootingStage(max_iter=60, only_if_needed=True), polish)
    monitor_context = context()
    report = train(problem, model, [polish, rescue], monitor_context)
    assert polish.ran_as == ["polish", "rescue: polish"]
    assert report.kept_after == "rescue"
    assert "far from the data" in report.results[-1].message
    # shooting started from the start, not from the sabotaged polish, and improved on it
    assert trajectory_loss(problem, model) < start_loss
    assert "rescue: shooting" in {e["stage"] for e in monitor_context.monitor.history}


def test_rescue_that_does_no_better_leaves_the_first_polish(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    first = parameters_of(model)
    polish = Recorded(sabotaged=(1,))  # the first polish idles (far off), the second ruins
    rescue = RescueStage(ShootingStage(max_iter=1, only_if_needed=True), polish)
    report = train(problem, model, [polish, rescue], context())
    assert report.kept_after == "polish"
    for name, value in first.items():
        assert torch.equal(model.state_dict()[name], value), name


def test_shooting_is_abandoned_while_its_loss_stays_above_the_bound(
    problem: TrainingProblem,
) -> None:
    """Above ``abandon_above`` after ``abandon_after`` steps the stage gives up and puts
    the model back as it found it."""
    model = fresh_model(problem)
    first = parameters_of(model)
    stage = ShootingStage(max_iter=500, abandon_above=1e-9, abandon_after=30)
    result = stage.run(problem, model, context())
    assert (result.status, result.n_iter) == ("abandoned", 30)
    assert "than the fit it was to improve on" in result.message
    for name, value in first.items():
        assert torch.equal(model.state_dict()[name], value), name
    free = ShootingStage(max_iter=40, abandon_after=30)
    assert free.run(problem, fresh_model(problem), context()).status != "abandoned"


def test_rescue_is_abandoned_when_its_segments_do_not_beat_the_polish(
    problem: TrainingProblem,
) -> None:
    """A polish that ends close to the data (but not converged, so the rescue runs): the
    segments from the collocation start do not fit their points that well within the
    probe, shooting is abandoned without a second polish and the polished fit stays."""
    model = fresh_model(problem)
    train(problem, model, [CollocationStage(max_iter=100)], context())
    polish = PolishStage(max_iter=30)
    shooting = ShootingStage(max_iter=500, only_if_needed=True, needed_above=0.0)
    rescue = RescueStage(shooting, polish, helps_above=0.0, probe_steps=20)
    quiet = replace(problem, noise_variance=0.0)
    monitor_context = context()
    report = train(quiet, model, [polish, rescue], monitor_context)
    polished = monitor_context.record.losses["polish"]
    assert report.results[-1].status == "abandoned", report.results[-1]
    assert report.results[-1].n_iter == 20
    assert report.kept_after == "polish"
    assert trajectory_loss(problem, model) == pytest.approx(polished, rel=1e-9)
    stages = {e["stage"] for e in monitor_context.monitor.history}
    assert "rescue: polish" not in stages


def test_poor_fit_remedies_follow_the_settings() -> None:
    ended = TrainingReport([StageResult("collocation", 10, 1.0, "max_iter")], 0.9, "x", None)
    converged = TrainingReport([StageResult("polish", 3, 1.0, "converged")], 0.9, "x", None)
    assert poor_fit_remedies(converged, False, True)[0] == "shooting=True"
    assert "shooting=True" not in poor_fit_remedies(converged, "auto", True)
    assert "polish=True" in poor_fit_remedies(converged, "auto", False)
    assert "polish=True" not in poor_fit_remedies(converged, "auto", True)
    assert "a larger max_iter" in poor_fit_remedies(ended, True, True)
    assert "a larger max_iter" not in poor_fit_remedies(converged, True, True)
    assert "a wider network" in poor_fit_remedies(converged, True, True)
    classical = poor_fit_remedies(converged, True, True, has_network=False)
    assert "a wider network" not in classical
    assert any("param_constraints" in remedy for remedy in classical)


def _decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return -p["k"] * y


def test_poor_classical_fit_is_not_advised_a_wider_network() -> None:
    """A model without a network that fits poorly (a decay fitted to a sine) is advised
    what helps a classical fit, not a wider network."""
    t = np.linspace(0.0, 6.0, 25)
    y = np.sin(2.0 * t)[:, None]
    estimator = UniversalODERegressor(
        known=_decay,
        params={"k": 0.5},
        hidden_layer_sizes=(),
        max_iter=30,
        random_state=0,
    )
    with pytest.warns(ConvergenceWarning, match="The fit is poor") as caught:
        estimator.fit(t, y)
    message = " ".join(str(w.message) for w in caught if "poor" in str(w.message))
    assert "wider network" not in message and "param_constraints" in message


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
    polish = Recorded(sabotaged=(0,))
    rescue = RescueStage(InterruptedShooting(only_if_needed=True), polish)
    torch.manual_seed(1)
    with pytest.raises(StageInterrupted):
        train(problem, model, [polish, rescue], context())
    for name, value in parameters_of(expected).items():
        assert torch.equal(model.state_dict()[name], value), name


@pytest.mark.parametrize(
    ("stage_losses", "start_factor", "stops"),
    [
        ((1.0, 0.9, 0.7, 0.5), 0.5, False),  # worse than the mean, loss down 50 %: go on
        ((1.0, 0.95, 0.9, 0.85), 0.5, True),  # worse than the mean, down 15 %: stop
        ((1.0, 0.9, 0.7, 0.5), 2.0, True),  # better than the mean: the checks decide
    ],
)
def test_idle_checks_wait_while_the_stage_loss_falls_far_from_the_data(
    problem: TrainingProblem, stage_losses: tuple[float, ...], start_factor: float, stops: bool
) -> None:
    """Collocation from a far start: the whole trajectories stay worse than the data's
    mean for a few checks while the regression's own loss is still falling fast; the
    idle checks end the stage only once that loss has slowed down, or where the whole
    trajectories already fit better than the mean."""
    model = fresh_model(problem)
    parameters = list(model.parameters())
    mean_level = start_factor * trajectory_loss(problem, model)
    check = TrajectoryCheck(
        problem, model, SOLVER, patience=3, unless_falling=0.2, worse_than_the_mean=mean_level
    )
    decisions = [
        check.should_stop(step, parameters, loss) for step, loss in enumerate(stage_losses)
    ]
    assert decisions == [False, False, False, stops]


def _lotka_volterra(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x - p["b"] * x * z, -p["c"] * z + p["d"] * x * z], -1)


def test_collocation_far_from_the_data_runs_on_while_its_loss_falls() -> None:
    """Four Lotka-Volterra rates from 0.1 on 21 noisy yearly points: the derivative loss
    is still falling fast when the whole-trajectory misfit has stayed above the data's
    variance for three checks; collocation goes on (here to its max_iter)."""
    from scipy.integrate import solve_ivp

    def rhs(_: float, u: np.ndarray) -> list[float]:
        return [0.5 * u[0] - 0.025 * u[0] * u[1], -0.9 * u[1] + 0.027 * u[0] * u[1]]

    t = np.arange(21.0)
    clean = solve_ivp(rhs, (0.0, 20.0), [30.0, 4.0], t_eval=t, rtol=1e-10).y.T
    y = clean * (1.0 + 0.1 * np.random.default_rng(0).standard_normal(clean.shape))
    estimator = UniversalODERegressor(
        known=_lotka_volterra,
        params={name: 0.1 for name in "abcd"},
        hidden_layer_sizes=(),
        collocation=Collocation(max_iter=1000),
        shooting=False,
        polish=False,
        random_state=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.fit(t, y)
    collocation = estimator.stage_results_[0]
    assert (collocation.n_iter, collocation.status) == (1000, "max_iter")


@dataclass
class _Poisoned(TrainingStage):
    """A polish that leaves a model which cannot be integrated (NaN weights)."""

    name: str = "polish"

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        with torch.no_grad():
            for parameter in model.field.parameters():
                parameter.fill_(math.nan)
        return StageResult(self.name, 1, math.nan, "diverged")


def test_a_polished_fit_that_cannot_be_integrated_is_rescued(problem: TrainingProblem) -> None:
    model = fresh_model(problem)
    polish = _Poisoned()
    # the rescue polishes again with an idle stage of the same name
    rescue = RescueStage(ShootingStage(max_iter=30, only_if_needed=True), Recorded())
    monitor_context = context()
    report = train(problem, model, [polish, rescue], monitor_context)
    assert monitor_context.record.losses["polish"] == math.inf
    assert report.kept_after == "rescue"
    assert math.isfinite(report.trajectory_loss)
