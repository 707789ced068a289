"""Collocation warm start: fit the field by regression on smoothed ``(z, dz/ds)`` pairs.

No ODE is solved: the smoothing splines of ``_smoothing`` give a state and a derivative
estimate at every observed time, and the field is trained to map one to the other. This
is the two-stage method (Varah 1982; Roesch et al. 2021 for neural ODEs): seconds instead
of minutes, and it lands near the optimum that trajectory fitting then refines. The loss
is a Huber loss so that the few derivative estimates that are mostly error — undersampled
stretches, the ends of a series — do not dominate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .._losses import masked_huber
from .._problem import TrainingProblem
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import LoopSettings, StageResult, optimise
from .progress import TrajectoryCheck
from .tolerance import noise_matched


class _CollocationObjective:
    """Huber misfit between ``field(z)`` and ``dz/ds`` on a mini-batch of pairs."""

    def __init__(
        self,
        problem: TrainingProblem,
        model: ODEModel,
        batch_size: int,
        huber_delta: float,
        generator: torch.Generator,
    ) -> None:
        n_states = problem.n_states
        n_total = model.n_total_states
        weight = problem.smoothing_weight.reshape(-1, n_states)  # (n_pairs, n_states)
        keep = weight.sum(dim=1) > 0
        states = problem.smoothed_states.reshape(-1, n_states)[keep]
        augmented = states.new_zeros(states.shape[0], n_total - n_states)
        trajectory = problem.trajectory_index()[:, None].expand(problem.times.shape)
        # Everything a pair holds, side by side, so a mini-batch is ONE row gather:
        # [states + augmented zeros | rates | weight | time | trajectory],
        # (n_pairs, n_total + 2 n_states + 2)
        self.pairs = torch.cat(
            [
                states,
                augmented,
                problem.smoothed_derivatives.reshape(-1, n_states)[keep],
                weight[keep],
                problem.times.reshape(-1, 1)[keep],
                trajectory.reshape(-1, 1)[keep].to(states.dtype),
            ],
            dim=1,
        )
        self.columns = {
            "states": slice(0, n_total),
            "rates": slice(n_total, n_total + n_states),
            "weight": slice(n_total + n_states, n_total + 2 * n_states),
            "times": n_total + 2 * n_states,
            "trajectory": n_total + 2 * n_states + 1,
        }
        self.problem = problem
        self.model = model
        self.n_states = n_states
        n_pairs = self.pairs.shape[0]
        self.n_pairs = n_pairs
        self.batch_size = min(batch_size, n_pairs)
        self.full_batch = self.batch_size == n_pairs
        self.huber_delta = huber_delta
        self.generator = generator

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.field.parameters())

    def loss(self) -> torch.Tensor:
        if self.full_batch:
            batch = self.pairs
        else:
            rows = torch.randint(
                self.n_pairs,
                (self.batch_size,),
                generator=self.generator,
                device=self.generator.device,
            ).to(self.pairs.device)
            batch = self.pairs.index_select(0, rows)  # (batch_size, n_columns)
        columns = self.columns
        times, states = batch[:, columns["times"]], batch[:, columns["states"]]
        inputs = ()
        if self.problem.inputs is not None:
            trajectories = batch[:, columns["trajectory"]].long()
            inputs = (self.problem.inputs_at(times, trajectories),)
        predicted = self.model.field(times, states, *inputs)[:, : self.n_states]
        misfit = masked_huber(
            predicted, batch[:, columns["rates"]], batch[:, columns["weight"]], self.huber_delta
        )
        return misfit + self.model.regularisation(times, states, *inputs)


@dataclass
class CollocationStage(TrainingStage):
    """Regression of the field on smoothed derivative estimates (no ODE solve).

    Parameters
    ----------
    max_iter : int
        Most optimiser steps.
    learning_rate : float
        Adam's initial step.
    batch_size : int
        Pairs per step; the whole data set when it has fewer. 1024 keeps a step of the
        default network in a CPU core's cache: on 1000 pendulums (50 000 pairs) a step of
        4096 pairs costs ~6x one of 1024 for the same R^2 (0.9995 vs 0.9995) in about as
        many steps.
    huber_delta : float
        Error (in scaled units, where the field has unit RMS) beyond which the loss grows
        linearly.
    tol, n_iter_no_change
        Early stopping, see :class:`~skneuralode._training.loop.LoopSettings`.
    check_every, check_patience
        The whole trajectories are integrated every ``check_every`` steps; the stage ends
        when ``check_patience`` checks in a row found no meaningful improvement, with
        the best checked field (see :mod:`~skneuralode._training.progress`).
    check_above_noise : float
        Check only when the estimated noise variance (scaled units) exceeds this: on
        clean data the derivative regression does not overfit, and the checks' tight
        solves cost as much as the stage (seed spiral, 1000 points: 4.2 -> 8.1 CPU s).
    """

    max_iter: int = 1000
    learning_rate: float = 1e-2
    batch_size: int = 1024
    huber_delta: float = 1.0
    tol: float = 1e-4
    n_iter_no_change: int = 50
    check_every: int = 100
    check_patience: int = 3
    check_above_noise: float = 1e-4
    name: str = "collocation"
    divergence_remedy: ClassVar[str] = "a smaller collocation_learning_rate"

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        if not bool(problem.smoothing_weight.any()):
            return (
                "no state has a derivative estimate to regress on (every state is hidden, "
                "or the data observe a function of the states)"
            )
        return None

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        objective = _CollocationObjective(
            problem, model, self.batch_size, self.huber_delta, context.generator
        )
        settings = LoopSettings(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
        )
        solver = noise_matched(
            context.solver, problem.noise_variance, TrajectoryCheck.largest_trusted_noise
        )
        check = None
        if problem.noise_variance > self.check_above_noise:
            check = TrajectoryCheck(
                problem, model, solver, every=self.check_every, patience=self.check_patience
            )
        return optimise(objective, settings, context.monitor, self.name, check)
