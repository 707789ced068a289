"""Collocation warm start: fit the field by regression on smoothed ``(z, dz/ds)`` pairs.

No ODE is solved: the smoothing splines of ``_smoothing`` give a state and a derivative
estimate at every observed time, and the field is trained to map one to the other. This
is the two-stage method (Varah 1982; Roesch et al. 2021 for neural ODEs): seconds instead
of minutes, and it lands near the optimum that trajectory fitting then refines. The loss
is a Huber loss so that the few derivative estimates that are mostly error — undersampled
stretches, the ends of a series — do not dominate it.

On clean data, where the steps are the whole cost of the stage, a float64 model whose
field is free of user code is trained as a float32 copy that is written back into the
model: the targets are estimates whose error is far above float32's rounding, and a
step of the default network on 1000 pairs costs ~0.6x (seed spiral, 1000 steps: the same
R^2, 0.9984). On noisy data the trajectory checks cost more than the steps and choose
the checkpoint; float32 rounding there changed which one without saving time (irregular
noisy spiral, collocation alone, seeds 0 and 2-5), so the stage computes in the model's
dtype.
"""

from __future__ import annotations

import copy
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
    """Huber misfit between ``field(z)`` and ``dz/ds`` on a mini-batch of pairs.

    With a ``working_dtype`` other than the model's, the steps update a copy of the model
    in that dtype, and :meth:`publish` writes the copy's field into the model.
    """

    def __init__(
        self,
        problem: TrainingProblem,
        model: ODEModel,
        batch_size: int,
        huber_delta: float,
        generator: torch.Generator,
        working_dtype: torch.dtype | None = None,
    ) -> None:
        n_states = problem.n_states
        n_total = model.n_total_states
        weight = problem.smoothing_weight.reshape(-1, n_states)  # (n_pairs, n_states)
        keep = weight.sum(dim=1) > 0
        states = problem.smoothed_states.reshape(-1, n_states)[keep]
        augmented = states.new_zeros(states.shape[0], n_total - n_states)
        trajectory = problem.trajectory_index()[:, None].expand(problem.times.shape)
        times = problem.times.reshape(-1)[keep]
        inputs = problem.inputs_at(times, trajectory.reshape(-1)[keep])
        n_inputs = 0 if inputs is None else inputs.shape[-1]
        # Everything a pair holds, side by side, so a mini-batch is ONE row gather:
        # [states + augmented zeros | rates | weight | time | inputs],
        # (n_pairs, n_total + 2 n_states + 1 + n_inputs)
        pairs = [
            states,
            augmented,
            problem.smoothed_derivatives.reshape(-1, n_states)[keep],
            weight[keep],
            times[:, None],
        ]
        self.work = model
        if working_dtype not in (None, model.initial_states.dtype):
            self.work = copy.deepcopy(model).to(dtype=working_dtype)
        self.pairs = torch.cat(pairs if inputs is None else [*pairs, inputs], dim=1).to(
            self.work.initial_states.dtype
        )
        time_column = n_total + 2 * n_states
        self.columns = {
            "states": slice(0, n_total),
            "rates": slice(n_total, n_total + n_states),
            "weight": slice(n_total + n_states, time_column),
            "times": time_column,
            "inputs": slice(time_column + 1, time_column + 1 + n_inputs),
        }
        self.has_inputs = inputs is not None
        self.model = model
        self.n_states = n_states
        n_pairs = self.pairs.shape[0]
        self.n_pairs = n_pairs
        self.batch_size = min(batch_size, n_pairs)
        self.full_batch = self.batch_size == n_pairs
        self.huber_delta = huber_delta
        self.generator = generator

    def parameters(self) -> list[torch.Tensor]:
        return list(self.work.field.parameters())

    def publish(self) -> None:
        """Write the working copy's field into the model (nothing to do without one)."""
        if self.work is self.model:
            return
        with torch.no_grad():
            pairs = zip(self.model.field.parameters(), self.parameters(), strict=True)
            for parameter, working in pairs:
                parameter.copy_(working)

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
        inputs = (batch[:, columns["inputs"]],) if self.has_inputs else ()
        predicted = self.work.field(times, states, *inputs)[:, : self.n_states]
        misfit = masked_huber(
            predicted, batch[:, columns["rates"]], batch[:, columns["weight"]], self.huber_delta
        )
        return misfit + self.work.regularisation(times, states, *inputs)


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
    checks_wait_while_falling : float
        ...but not while the whole trajectories fit worse than the data's mean and the
        stage's own loss fell by more than this fraction over those checks
        (``TrajectoryCheck.unless_falling``): from a far start the regression is still
        on its way (0: the checks always decide).
    check_above_noise : float
        Check only when the estimated noise variance (scaled units) exceeds this: on
        clean data the derivative regression does not overfit, and the checks' tight
        solves cost as much as the stage (seed spiral, 1000 points: 4.2 -> 8.1 CPU s).
    working_dtype : torch.dtype or None
        The dtype the steps compute in when no trajectory checks run (clean data), the
        model is float64 and its field is ``dtype_agnostic`` (free of user code); None:
        the model's. The model keeps its dtype: the working copy's field is written into
        it (at the end, and before a check or an interrupt leaves the stage).
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
    checks_wait_while_falling: float = 0.2
    working_dtype: torch.dtype | None = torch.float32
    name: str = "collocation"
    divergence_remedy: ClassVar[str] = "a smaller Collocation(learning_rate=...)"

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        if not bool(problem.smoothing_weight.any()):
            return (
                "no state has a derivative estimate to regress on (every state is hidden, "
                "or the data observe a function of the states)"
            )
        return None

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        solver = noise_matched(
            context.solver, problem.noise_variance, TrajectoryCheck.largest_trusted_noise
        )
        check = None
        if problem.noise_variance > self.check_above_noise:
            check = TrajectoryCheck(
                problem,
                model,
                solver,
                every=self.check_every,
                patience=self.check_patience,
                unless_falling=self.checks_wait_while_falling,
            )
        objective = _CollocationObjective(
            problem,
            model,
            self.batch_size,
            self.huber_delta,
            context.generator,
            None if check is not None else self._working_dtype(model),
        )
        settings = LoopSettings(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
        )
        return optimise(objective, settings, context.monitor, self.name, check)

    def _working_dtype(self, model: ODEModel) -> torch.dtype | None:
        agnostic = bool(getattr(model.field, "dtype_agnostic", False))
        is_float64 = model.initial_states.dtype == torch.float64
        return self.working_dtype if agnostic and is_float64 else None
