"""The shared optimisation loop: convergence, plateaus and recovery from divergence."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from training_helpers import SOLVER, fresh_model

import skneuralode._training.shooting as shooting_module
from skneuralode._monitor import TrainingMonitor
from skneuralode._problem import TrainingProblem
from skneuralode._training import StageContext
from skneuralode._training.loop import LoopSettings, StageResult, optimise
from skneuralode._training.shooting import ShootingStage


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
