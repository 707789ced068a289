"""Multiple-shooting refinement over mini-batches of trajectory segments.

Every trajectory is cut into segments of ``segment_length`` time points that overlap at
their ends. Each segment starts from its own state, a free parameter initialised from
the smoothed data (true multiple shooting: noisy or partly missing observations are never
used as initial conditions). A mini-batch of segments is integrated in one batched solve;
the loss is the masked data misfit plus ``continuity_weight`` times the squared gap
between a segment's state where the next segment starts and that segment's start state.
Short segments keep the loss landscape free of the local minima that long single-shooting
horizons have on oscillating data (Bock & Plitt 1984; Turan & Jäschke 2021).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from .._losses import masked_mean_squared_error
from .._problem import TrainingProblem
from .._solve import SolverSettings, solve, solve_interpolated
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import LoopSettings, StageResult, optimise
from .misfit import misfit_the_noise_allows
from .progress import TrajectoryCheck
from .tolerance import noise_matched

_MIN_SEGMENT_LENGTH = 3
_MAX_SEGMENT_LENGTH = 16
_SHARED_OFFSET_TOLERANCE = 1e-9
#: Shooting solves short segments: needing more than this fraction of ``max_num_steps``
#: per solve, over STIFF_WINDOW consecutive steps, means a stiff field for an explicit
#: solver (each step would cost what a whole fit should).
STIFF_STEP_FRACTION = 0.1
STIFF_WINDOW = 10
#: Shared points of a segment solve on an irregular grid (see ``solve_interpolated``):
#: at least this many, and two per output interval.
_MIN_INTERPOLATION_NODES = 9


@dataclass(frozen=True)
class Segments:
    """Index tensors describing all segments (host-built once, then on the device).

    Attributes
    ----------
    trajectory : Tensor of shape (n_segments,)
    time_index : Tensor of shape (n_segments, segment_length)
        Time indices into the padded trajectory; a short trajectory repeats its last index.
    valid : Tensor of shape (n_segments, segment_length)
        1.0 for real positions, 0.0 for repeated indices.
    next_segment : Tensor of shape (n_segments,)
        Following segment of the same trajectory (itself for the last one).
    has_next : Tensor of shape (n_segments,)
    next_offset : Tensor of shape (n_segments,)
        Position inside this segment where the next segment starts.
    first_segment : Tensor of shape (n_traj,)
    shared_offsets : bool
        All segments have the same times relative to their start.
    """

    trajectory: torch.Tensor
    time_index: torch.Tensor
    valid: torch.Tensor
    next_segment: torch.Tensor
    has_next: torch.Tensor
    next_offset: torch.Tensor
    first_segment: torch.Tensor
    shared_offsets: bool

    @property
    def count(self) -> int:
        return self.trajectory.shape[0]


def segment_starts(length: int, segment_length: int) -> list[int]:
    """Start indices of overlapping segments covering ``range(length)``."""
    if length <= segment_length:
        return [0]
    starts = list(range(0, length - segment_length + 1, segment_length - 1))
    if starts[-1] + segment_length - 1 < length - 1:
        starts.append(length - segment_length)
    return starts


def auto_segment_length(times: np.ndarray, lengths: np.ndarray, span: float) -> int:
    """Points per segment so a segment covers about ``span`` scaled time units."""
    steps = np.concatenate([np.diff(row[:n]) for row, n in zip(times, lengths, strict=True)])
    typical_step = float(np.median(steps)) if steps.size else 1.0
    points = round(span / max(typical_step, 1e-12)) + 1
    return int(np.clip(points, _MIN_SEGMENT_LENGTH, _MAX_SEGMENT_LENGTH))


def build_segments(
    times: np.ndarray, lengths: np.ndarray, segment_length: int, device: torch.device
) -> Segments:
    """Cut every trajectory into overlapping segments of ``segment_length`` points."""
    trajectory, time_index, valid, next_offset, has_next, first = [], [], [], [], [], []
    for row, length in enumerate(lengths):
        starts = segment_starts(int(length), segment_length)
        first.append(len(trajectory))
        for position, start in enumerate(starts):
            indices = np.arange(start, start + segment_length)
            trajectory.append(row)
            valid.append(indices < length)
            time_index.append(np.minimum(indices, length - 1))
            is_last = position == len(starts) - 1
            has_next.append(not is_last)
            next_offset.append(0 if is_last else starts[position + 1] - start)
    count = len(trajectory)
    next_segment = np.arange(count) + np.asarray(has_next, dtype=int)
    time_index_array = np.asarray(time_index)
    segment_times = times[np.asarray(trajectory)[:, None], time_index_array]
    relative = segment_times - segment_times[:, :1]
    scale = max(float(np.abs(relative).max()), 1.0)
    shared = bool(np.all(valid)) and bool(
        np.all(np.abs(relative - relative[:1]) <= _SHARED_OFFSET_TOLERANCE * scale)
    )

    def as_tensor(values: object, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)

    return Segments(
        trajectory=as_tensor(trajectory, torch.long),
        time_index=as_tensor(time_index_array, torch.long),
        valid=as_tensor(valid, torch.float64),
        next_segment=as_tensor(next_segment, torch.long),
        has_next=as_tensor(has_next, torch.float64),
        next_offset=as_tensor(next_offset, torch.long),
        first_segment=as_tensor(first, torch.long),
        shared_offsets=shared,
    )


def segment_keys(segments: Segments) -> list[tuple[int, int]]:
    """(trajectory, start index) of every segment."""
    rows = segments.trajectory.cpu().tolist()
    starts = segments.time_index[:, 0].cpu().tolist()
    return list(zip(rows, starts, strict=True))


class _ShootingObjective:
    """Data misfit of a mini-batch of segments plus their continuity gaps."""

    def __init__(
        self,
        problem: TrainingProblem,
        model: ODEModel,
        segments: Segments,
        solver: SolverSettings,
        batch_size: int,
        continuity_weight: float,
        generator: torch.Generator,
        known_starts: dict[tuple[int, int], torch.Tensor] | None = None,
    ) -> None:
        dtype = problem.times.dtype
        rows, columns = segments.trajectory[:, None], segments.time_index
        self.times = problem.times[rows, columns]  # (n_segments, segment_length)
        self.observations = problem.observations[rows, columns]  # (n_seg, seg_len, n_obs)
        self.weight = problem.observed[rows, columns] * segments.valid.to(dtype)[..., None]
        start_states = problem.smoothed_states[segments.trajectory, segments.time_index[:, 0]]
        augmented = start_states.new_zeros(segments.count, model.n_total_states - problem.n_states)
        initial = torch.cat([start_states, augmented], dim=1)
        initial[segments.first_segment] = model.initial_states.detach()
        for row, key in enumerate(segment_keys(segments)):
            if known_starts and key in known_starts:
                initial[row] = known_starts[key]
        self.start_states = initial.requires_grad_(True)  # (n_segments, n_total_states)
        # Known initial values stay fixed: the first segment of a trajectory starts there.
        self.fixed_mask = torch.zeros_like(initial, dtype=torch.bool)
        self.fixed_values = torch.zeros_like(initial)
        if model.has_known_initial_states:
            self.fixed_mask[segments.first_segment] = model.known_initial_mask
            self.fixed_values[segments.first_segment] = model.known_initial_values
        self.segments = segments
        self.problem = problem
        self.has_next = segments.has_next.to(dtype)
        self.model = model
        self.solver = solver
        self.batch_size = min(batch_size, segments.count)
        self.continuity_weight = continuity_weight
        self.generator = generator
        self.last_failure: str | None = None
        self.solver_steps: list[int] = []

    def parameters(self) -> list[torch.Tensor]:
        return [*self.model.field.parameters(), self.start_states]

    def stop_reason(self) -> str | None:
        """Stop when the learned dynamics are stiff: over the last steps the explicit
        solver needed more than :data:`STIFF_STEP_FRACTION` of its budget per solve on
        these short segments, which makes every step of this stage cost about as much as
        a whole fit should (the model so far is kept and evaluated as usual)."""
        recent = self.solver_steps[-STIFF_WINDOW:]
        budget = self.solver.max_num_steps
        if len(recent) < STIFF_WINDOW or np.median(recent) <= STIFF_STEP_FRACTION * budget:
            return None
        return (
            f"the learned dynamics are stiff: the solver needed about {int(np.median(recent))} "
            f"steps per segment solve (budget {budget}), so multiple shooting was stopped"
        )

    def publish(self) -> None:
        """Make the first segments' start states the model's initial states."""
        with torch.no_grad():
            self.model.initial_states.copy_(self.start_states[self.segments.first_segment])

    def start_states_by_key(self) -> dict[tuple[int, int], torch.Tensor]:
        """Current start state of every segment, keyed by (trajectory, start index)."""
        states = self.start_states.detach()
        return {key: states[row] for row, key in enumerate(segment_keys(self.segments))}

    def _draw(self) -> torch.Tensor | slice:
        if self.batch_size == self.segments.count:
            return slice(None)
        order = torch.randperm(
            self.segments.count, generator=self.generator, device=self.generator.device
        )
        return order[: self.batch_size].to(self.times.device)

    def loss(self) -> torch.Tensor:
        batch = self._draw()
        starts = torch.where(
            self.fixed_mask[batch], self.fixed_values[batch], self.start_states[batch]
        )
        members = self.segments.trajectory[batch]
        field = self.model.forced(self.problem.inputs, members)
        if self.segments.shared_offsets or self.solver.is_fixed_step:
            result = solve(
                field,
                starts,
                self.times[batch],
                self.solver,
                shared_grid=self.segments.shared_offsets,
            )
        else:
            nodes = max(_MIN_INTERPOLATION_NODES, 2 * self.times.shape[1] - 1)
            result = solve_interpolated(field, starts, self.times[batch], self.solver, nodes)
        self.solver_steps.append(result.n_steps)
        if not result.ok:
            self.last_failure = result.failure
            return torch.full((), float("inf"), dtype=starts.dtype, device=starts.device)
        predicted = result.states  # (n_batch, segment_length, n_total_states)
        misfit = masked_mean_squared_error(
            self.model.observation(predicted), self.observations[batch], self.weight[batch]
        )
        positions = self.segments.next_offset[batch]
        reached = predicted[torch.arange(predicted.shape[0], device=positions.device), positions]
        following = self.start_states[self.segments.next_segment[batch]]
        has_next = self.has_next[batch][:, None]
        gaps = (has_next * (reached - following) ** 2).sum()
        continuity = gaps / (has_next.sum() * predicted.shape[-1]).clamp_min(1.0)
        times = self.times[batch]
        inputs = self.problem.inputs_at(times, members[:, None])
        penalty = self.model.regularisation(times, predicted, inputs)
        return misfit + self.continuity_weight * continuity + penalty


@dataclass
class ShootingStage(TrainingStage):
    """Multiple shooting with free segment start states.

    Parameters
    ----------
    max_iter : int
        Most optimiser steps.
    learning_rate : float
        Adam's initial step.
    segment_length : int or None
        Time points per segment; None covers about ``segment_span`` scaled time units.
    segment_span : float
        Target span of an automatic segment, in scaled time (the field has unit RMS).
    batch_size : int
        Segments per step (all of them when there are fewer).
    continuity_weight : float
        Weight of the continuity gaps relative to the data misfit.
    tol, n_iter_no_change
        Early stopping, see :class:`~skneuralode._training.loop.LoopSettings`.
    check_every, check_patience
        The whole trajectories are integrated before the first step and every
        ``check_every`` steps; the stage ends when ``check_patience`` checks in a row found
        no meaningful improvement on the best fit so far (the start counts: shooting that
        cannot improve on collocation's fit ends after ``check_patience`` checks), with
        the best checked model (see :mod:`~skneuralode._training.progress`).
    checks_decide_below : float
        The checks end the stage only once the whole trajectories fit better than this
        (scaled MSE; inf: always). Far from the data the segments may still be finding
        the basin, and the stage's own plateau rule ends it. A universal differential
        equation sets 0.5 (half the variance explained): its few physical parameters
        bring the whole trajectory into phase only at the end (noisy irregular cubic
        spiral, known structure: flat at 1.16 for 100 steps, then down to the noise).
        A neural ODE keeps inf: on 10 noisy points the checks are what stops it fitting
        the noise (spiral: R^2 -0.14 in 3 s with them, -0.30 in 5 s without).
    grow_segments : bool or "auto"
        When the loss plateaus before the budget is spent, double the segments (keeping
        the start states of the segments that remain) and go on, until a segment covers a
        whole trajectory: short segments find the basin, long ones refine in it. "auto"
        grows only while the whole trajectories still miss the data by more than the
        noise allows plus ``needed_above`` (see :meth:`grows_above`), and only where
        the first, shortest segments fit their own points that well: such segments can
        each fit their points while their small errors add up to a phase drift over the
        whole trajectory (noisy irregular spiral, 200 points, seed 2: full-trajectory
        MSE 0.055, R^2 0.940; with growth 0.0054, R^2 0.994).
    only_if_needed : bool
        Skip the stage when the model already fits whole trajectories to within the
        noise: full-trajectory MSE at most twice the estimated noise variance plus
        ``needed_above`` (scaled units, where 0.005 is 0.5 % unexplained variance).
        The noise variance counts only up to ``largest_trusted_noise``: on short or
        coarsely sampled series the third differences behind the estimate carry signal
        (10 points of a damped oscillator with 10 % noise: ~25x too high), and a fit
        that leaves a third of the variance unexplained must not pass as noise.
    needed_above : float
        Scaled MSE above the noise that makes shooting (``only_if_needed``) and a
        doubling of its segments (``grow_segments="auto"``) needed. Each doubling makes
        a step cost about twice as much: on the irregular spiral (seed 2) growing down
        to 0.0025 bought R^2 0.9944 in 38 CPU s where 0.005 gives 0.9937 in 24 s.
    growth_step_factor : float
        Each doubling of the segments multiplies Adam's initial step by this: a longer
        horizon makes the loss steeper in the parameters, and the model is already close
        (irregular spiral, seed 4: at the full step no grown level improved the
        whole-trajectory MSE of 0.0193 in 600 steps; at 0.3 of the step per doubling it
        fell to 0.011).
    abandon_above, abandon_after
        Give up (status "abandoned", the model put back as it was) when the stage's own
        loss is still above ``abandon_above`` after ``abandon_after`` steps (inf: never),
        checked on the first level of segments only. The rescue sets the
        polished fit's misfit: segments that cannot fit their own points as well as the
        polished whole trajectories do will not lead the polish to a better optimum
        (SEIR counts fitted by an SIR: the segment loss fell 6.7 -> 0.76 in 1000 steps, the
        polished misfit was 0.0073; on the lynx-hare-like series it was below the
        polished 0.90 after 50 steps, and the rescue found the optimum).
    """

    max_iter: int = 500
    learning_rate: float = 3e-3
    segment_length: int | None = None
    segment_span: float = 1.0
    batch_size: int = 256
    continuity_weight: float = 10.0
    tol: float = 1e-4
    n_iter_no_change: int = 50
    grow_segments: bool | str = False
    only_if_needed: bool = False
    needed_above: float = 5e-3
    growth_step_factor: float = 0.3
    largest_trusted_noise: float = 0.025
    check_every: int = 50
    check_patience: int = 2
    checks_decide_below: float = math.inf
    abandon_above: float = math.inf
    abandon_after: int = 100
    name: str = "shooting"
    divergence_remedy: ClassVar[str] = (
        "a smaller MultipleShooting(learning_rate=...) or a shorter "
        "MultipleShooting(segment_length=...)"
    )

    def skip_reason(self, problem: TrainingProblem, trajectory_loss: float) -> str | None:
        noise_variance = min(problem.noise_variance, self.largest_trusted_noise)
        threshold = 2.0 * noise_variance + self.needed_above
        if self.only_if_needed and trajectory_loss <= threshold:
            return (
                f"the model already fits the trajectories to within the noise "
                f"(scaled MSE {trajectory_loss:.2e} <= {threshold:.2e})"
            )
        return None

    def grows_above(self, problem: TrainingProblem) -> float:
        """Full-trajectory misfit (scaled MSE) above which ``grow_segments="auto"`` grows
        the segments: what the noise allows (:func:`.misfit.misfit_the_noise_allows`)
        plus ``needed_above``."""
        return misfit_the_noise_allows(problem) + self.needed_above

    def _grows(self, problem: TrainingProblem, check: TrajectoryCheck, first_loss: float) -> bool:
        """Whether a level of segments that ended converged goes on with longer ones.

        With "auto": while the whole trajectories miss the data by more than
        :meth:`grows_above`, provided the first, shortest segments fit their own points
        within that bound (``first_loss``, their stage loss at the end of the first
        level). Segments that fit locally but drift apart over a whole trajectory gain
        from growing; a model that cannot fit even short segments (a forced system
        fitted without its inputs: segment loss 45x the noise) would only pay for every
        doubling (7.6 -> 65 CPU s).
        """
        if self.grow_segments != "auto":
            return bool(self.grow_segments)
        bound = self.grows_above(problem)
        return first_loss <= bound < check.best_loss

    def _give_up(self, step: int, loss: float) -> str | None:
        """Why to abandon the stage after ``step`` steps at ``loss`` (see ``abandon_above``)."""
        if step < self.abandon_after or loss <= self.abandon_above:
            return None
        return (
            f"after {step} steps its segments still missed their points by more (loss "
            f"{loss:.3g}) than the fit it was to improve on ({self.abandon_above:.3g})"
        )

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        host_times = problem.times.detach().cpu().numpy()
        length = self.segment_length or auto_segment_length(
            host_times, problem.lengths, self.segment_span
        )
        longest = int(problem.lengths.max())
        start = copy.deepcopy(model.state_dict()) if math.isfinite(self.abandon_above) else None
        solver = noise_matched(context.solver, problem.noise_variance, self.largest_trusted_noise)
        steps_left, steps_taken, known_starts, level = self.max_iter, 0, None, 0
        while True:
            segments = build_segments(host_times, problem.lengths, length, problem.times.device)
            objective = _ShootingObjective(
                problem,
                model,
                segments,
                solver,
                self.batch_size,
                self.continuity_weight,
                context.generator,
                known_starts,
            )
            settings = LoopSettings(
                max_iter=steps_left,
                learning_rate=self.learning_rate * self.growth_step_factor**level,
                tol=self.tol,
                n_iter_no_change=self.n_iter_no_change,
            )
            check = TrajectoryCheck(
                problem,
                model,
                solver,
                every=self.check_every,
                patience=self.check_patience,
                largest_trusted_noise=self.largest_trusted_noise,
                decisive_below=self.checks_decide_below,
            )
            check.start_from(objective.parameters())  # the fit shooting starts from
            give_up = self._give_up if level == 0 and math.isfinite(self.abandon_above) else None
            result = optimise(objective, settings, context.monitor, self.name, check, give_up)
            steps_taken += result.n_iter
            steps_left -= result.n_iter
            if level == 0:
                first_loss = result.loss  # how well the shortest segments fit their points
            can_grow = length < longest and steps_left > 0 and result.status == "converged"
            if not can_grow or not self._grows(problem, check, first_loss):
                break
            known_starts = objective.start_states_by_key()
            length, level = min(2 * length - 1, longest), level + 1
        message = result.message
        if result.status == "abandoned" and start is not None:
            model.load_state_dict(start)  # as the status promises: the model as it was
        if result.status == "diverged" and objective.last_failure:
            message = f"{message} ({objective.last_failure})"
        return StageResult(self.name, steps_taken, result.loss, result.status, message)
