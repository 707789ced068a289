"""Full-trajectory polish by Levenberg-Marquardt: Gauss-Newton steps on the residuals.

A universal differential equation fitted to a few dozen points has a few dozen
residuals and a few hundred to a few thousand parameters. L-BFGS on the summed misfit
(``polish``) learns the curvature of that problem one gradient at a time and needs
about a hundred iterations, each one or more solves with a gradient graph. The
Jacobian of all residuals costs about as much as two gradients (one solve, one batched
backward pass through it), and with it a damped Gauss-Newton step goes most of the way
at once: a dozen iterations reach what L-BFGS reaches in a hundred.

The objective is the polish stage's, written as least squares: the masked mean squared
trajectory error, the minimal-norm penalty of the network's term and the weight decay
of its weights (:meth:`~skneuralode._hybrid_field.HybridField.penalty_terms`), and
a prior on the term's curvature along the data's path (:mod:`.smoothness`). With
fewer residuals than parameters each step solves its linear system in residual space
(Woodbury), so a 64-64 network costs no more than a 16-16 one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from .._problem import TrainingProblem
from .._solve import SolverSettings, solve
from .._vector_fields import ODEModel
from .base import StageContext, TrainingStage
from .loop import StageResult
from .misfit import misfit_the_noise_allows
from .polish import TRIAL_EXTRA_STEPS, TRIAL_STEP_FACTOR, PolishStage
from .smoothness import PathCurvature, relaxed_weight, smoothness_weight

#: Smallest Marquardt scale, relative to the mean one (columns the residuals do not
#: depend on, such as known initial states, still get a positive damping).
_SCALE_FLOOR = 1e-8


@dataclass
class _Linearisation:
    """Residuals, their Jacobian and the weight decay at the current parameters."""

    residuals: torch.Tensor  # (n_residuals,)
    jacobian: torch.Tensor  # (n_residuals, n_parameters)
    decay: torch.Tensor  # (n_parameters,): weight decay of each parameter (0 for most)

    def objective(self, parameters: torch.Tensor) -> float:
        return float((self.residuals**2).sum() + (self.decay * parameters**2).sum())

    def step(self, parameters: torch.Tensor, damping: float) -> tuple[torch.Tensor, float]:
        """The damped Gauss-Newton step and the decrease its linear model predicts."""
        jacobian, residuals, decay = self.jacobian, self.residuals, self.decay
        gradient = jacobian.T @ residuals + decay * parameters  # (n_parameters,)
        scale = (jacobian**2).sum(dim=0) + decay
        scale = scale.clamp_min(_SCALE_FLOOR * float(scale.mean().clamp_min(1e-300)))
        diagonal = decay + damping * scale  # (n_parameters,)
        n_residuals, n_parameters = jacobian.shape
        if n_residuals < n_parameters:
            # (D + J^T J)^-1 = D^-1 - D^-1 J^T (I + J D^-1 J^T)^-1 J D^-1
            scaled = jacobian / diagonal  # J D^-1, (n_residuals, n_parameters)
            inner = torch.eye(n_residuals, dtype=jacobian.dtype, device=jacobian.device)
            inner = inner + scaled @ jacobian.T
            solved = torch.linalg.solve(inner, scaled @ gradient)
            step = -(gradient - jacobian.T @ solved) / diagonal
        else:
            system = jacobian.T @ jacobian + torch.diag(diagonal)
            step = -torch.linalg.solve(system, gradient)
        model_residuals = residuals + jacobian @ step
        moved = parameters + step
        predicted = self.objective(parameters) - float(
            (model_residuals**2).sum() + (decay * moved**2).sum()
        )
        return step, predicted


class _Residuals:
    """The polish objective as a residual vector of the flattened parameters."""

    def __init__(
        self,
        problem: TrainingProblem,
        model: ODEModel,
        solver: SolverSettings,
        smoothness: float = 0.0,
    ) -> None:
        self.problem = problem
        self.model = model
        self.solver = solver
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        field = model.field
        states = problem.smoothed_states
        augmented = states.new_zeros(*states.shape[:2], model.n_total_states - states.shape[2])
        self.penalty_states = torch.cat([states, augmented], -1)
        self.penalty_inputs = problem.inputs_at(problem.times, problem.trajectory_index()[:, None])
        decayed = getattr(field, "decayed_weights", list)()
        decayed_ids = {id(weight) for weight in decayed}
        self.decay_mask = torch.cat(
            [torch.full_like(p.reshape(-1), float(id(p) in decayed_ids)) for p in self.parameters]
        ).bool()  # (n_parameters,): the entries a weight decay acts on
        self.decay = self.decay_mask * float(getattr(field, "weight_decay", 0.0))
        self.n_data = 0
        observed = problem.observed
        self.data_weight = (observed / observed.sum().clamp_min(1.0)).sqrt()
        self.smoothness = smoothness
        self.curvature: PathCurvature | None = None
        if smoothness > 0.0:
            n_outputs = float(field.output_mask.sum())
            self.curvature = PathCurvature(problem.times, states[..., : field.n_states], n_outputs)
        self.first_steps: int | None = None
        self.failure: str | None = None

    def flat(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.parameters])

    def assign(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            offset = 0
            for parameter in self.parameters:
                size = parameter.numel()
                parameter.copy_(flat[offset : offset + size].reshape(parameter.shape))
                offset += size

    def _solver(self) -> SolverSettings:
        if self.first_steps is None or self.solver.is_fixed_step:
            return self.solver
        budget = TRIAL_STEP_FACTOR * self.first_steps + TRIAL_EXTRA_STEPS
        return replace(self.solver, max_num_steps=min(self.solver.max_num_steps, budget))

    def residuals(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Data and penalty residuals at the current parameters (None when the solve
        failed or they are not finite)."""
        problem, model = self.problem, self.model
        result = solve(
            model.forced(problem.inputs, problem.trajectory_index()),
            model.initial_values(),
            problem.times,
            self._solver(),
            shared_grid=problem.shared_grid,
        )
        if not result.ok:
            self.failure = result.failure
            return None
        if self.first_steps is None:
            self.first_steps = result.n_steps
        predicted = model.observation(result.states)
        data = (self.data_weight * (predicted - problem.observations)).reshape(-1)
        penalty, _ = model.field.penalty_terms(
            problem.times, self.penalty_states, self.penalty_inputs
        )
        if self.curvature is not None:
            rates = model.field.network_rates(
                problem.times, self.penalty_states, self.penalty_inputs
            )
            penalty = torch.cat([penalty, self.curvature.residuals(rates, self.smoothness)])
        finite = bool(torch.isfinite(data).all()) and bool(torch.isfinite(penalty).all())
        return (data, penalty) if finite else None

    def _jacobian(self, residuals: torch.Tensor) -> torch.Tensor:
        """d residuals / d parameters, (n_residuals, n_parameters): one batched backward
        pass (the penalty's rows apart, so they do not travel through the solve)."""
        n_residuals = residuals.numel()
        if n_residuals == 0 or not residuals.requires_grad:
            return residuals.new_zeros(n_residuals, self.decay.numel())
        rows = torch.eye(n_residuals, dtype=residuals.dtype, device=residuals.device)

        def row_gradients(row: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return torch.autograd.grad(
                residuals,
                self.parameters,
                grad_outputs=row,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )

        # torch.func.vmap batches far more backward formulas than the legacy vmap behind
        # is_grads_batched=True, whose missing rules (sum, matmul) loop over the rows:
        # twice as fast through the steps of a stiff solve.
        columns = torch.func.vmap(row_gradients)(rows)
        blocks = [column.reshape(n_residuals, -1) for column in columns]
        return torch.cat(blocks, dim=1)

    def evaluate(self) -> tuple[float, tuple[torch.Tensor, torch.Tensor] | None]:
        """The objective at the current parameters (inf when the solve failed), and the
        residuals with their graph, for :meth:`linearise` should this point be kept."""
        parts = self.residuals()
        if parts is None:
            return math.inf, None
        squares = sum(float((part.detach() ** 2).sum()) for part in parts)
        return squares + float((self.decay * self.flat() ** 2).sum()), parts

    def linearise(
        self, parts: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> _Linearisation | None:
        """Residuals and Jacobian at the current parameters; ``parts`` are the residuals
        :meth:`evaluate` returned there (computed anew when None)."""
        parts = self.residuals() if parts is None else parts
        if parts is None:
            return None
        data, penalty = parts
        self.n_data = data.numel()
        jacobian = torch.cat([self._jacobian(data), self._jacobian(penalty)], dim=0)
        residuals = torch.cat([data, penalty]).detach()
        return _Linearisation(residuals, jacobian, self.decay)


@dataclass
class GaussNewtonStage(TrainingStage):
    """Levenberg-Marquardt on the full-trajectory misfit, learning every parameter.

    Marquardt's scaling (the damping grows with each parameter's own curvature) and
    Nielsen's damping update. The stage ends when ``n_iter_no_change`` accepted steps in a
    row lower the objective by less than the larger of ``tol`` (relative) and
    ``min_chi2_decrease`` noise variances per observation, after ``max_iter``
    iterations, or when no step along the damped directions lowers it; where it would
    end misfitting the data by more than the noise allows with a curvature prior, the
    prior is relaxed and the iterations go on (``max_relaxations``).

    Parameters
    ----------
    max_iter : int
        Most Jacobian evaluations.
    tol : float
        Relative decrease of the objective that counts as progress.
    min_chi2_decrease : float
        Decrease of the data's chi-square (the misfit in units of the estimated noise
        variance per observation) that counts as progress: a smaller one is within what
        the noise allows, whatever its relative size.
    n_iter_no_change : int
        Accepted steps without progress before the stage ends.
    initial_damping : float
        Starting damping, relative to each parameter's curvature.
    max_rejections : int
        Consecutive rejected trials before the stage ends.
    choose_weight_decay : bool
        Choose the network's weight decay from the data at every iteration (the
        evidence, see :func:`evidence_weight_decay`) instead of keeping the field's.
    max_residuals : int
        Most observed values for a Jacobian (it holds one row per value): a larger
        problem is polished by L-BFGS (:class:`~.polish.PolishStage`) instead.
    smoothness : "auto" or float
        Weight of the prior on the network term's curvature along the path of the
        smoothed data (:mod:`~.smoothness`), scaled units; "auto" is a multiple of the
        estimated noise variance. With a prior the runner keeps the polished fit while
        its misfit is within what the noise allows, even where collocation's was lower.
    max_relaxations : int
        Most halvings of the prior's weight: where the converged fit misfits the data by
        more than the noise allows (:func:`~.misfit.misfit_the_noise_allows`), the prior
        fights the data, so its weight is halved and the iterations go on.
    """

    max_iter: int = 100
    tol: float = 1e-3
    min_chi2_decrease: float = 0.25
    n_iter_no_change: int = 2
    initial_damping: float = 1e-2
    max_rejections: int = 8
    choose_weight_decay: bool = False
    max_residuals: int = 2000
    smoothness: str | float = 0.0
    max_relaxations: int = 6
    name: str = "polish"
    divergence_remedy: ClassVar[str] = "polish=False"

    def keeps_fits_within_noise(self, model: ODEModel) -> bool:
        return self._prior_acts_on(model)

    def _prior_acts_on(self, model: ODEModel) -> bool:
        """Whether the curvature prior has a network term to act on."""
        return self.smoothness != 0.0 and bool(getattr(model.field, "has_network", False))

    def run(self, problem: TrainingProblem, model: ODEModel, context: StageContext) -> StageResult:
        n_observed = float(problem.observed.sum())
        if n_observed > self.max_residuals:
            fallback = PolishStage(max_iter=self.max_iter, name=self.name)
            return fallback.run(problem, model, context)
        smoothness = 0.0
        if self._prior_acts_on(model):
            smoothness = smoothness_weight(self.smoothness, problem.noise_variance)
        target = _Residuals(problem, model, context.solver, smoothness)
        meaningful = self.min_chi2_decrease * problem.noise_variance / max(n_observed, 1.0)
        monitor = context.monitor
        monitor.start_stage(self.name, self.max_iter)
        damping, growth = self.initial_damping, 2.0
        stalled, status, message, loss = 0, "max_iter", "", math.nan
        iteration, relaxations = 0, 0
        allowed = misfit_the_noise_allows(problem)
        kept: tuple[torch.Tensor, torch.Tensor] | None = None
        while iteration < self.max_iter:
            linear = target.linearise(kept)
            if linear is None:
                status = "diverged"
                message = f"the {self.name} stage could not integrate its start: {target.failure}"
                break
            parameters = target.flat()
            if self.choose_weight_decay and bool(target.decay_mask.any()):
                decay = evidence_weight_decay(
                    linear.jacobian[: target.n_data],
                    parameters,
                    target.decay_mask,
                    problem.noise_variance,
                    n_observed,
                )
                target.decay = target.decay_mask * decay
                linear = replace(linear, decay=target.decay)
            loss = linear.objective(parameters)
            if monitor.record(self.name, iteration, [loss]):
                status, message = "stopped", f"a callback stopped the {self.name} stage"
                iteration += 1
                break
            iteration += 1
            accepted, rejections = False, 0
            while not accepted and rejections < self.max_rejections:
                step, predicted = linear.step(parameters, damping)
                target.assign(parameters + step)
                trial, parts = target.evaluate()
                gain = (loss - trial) / predicted if predicted > 0 else -1.0
                if math.isfinite(trial) and gain > 0:
                    accepted = True
                    damping *= max(1.0 / 3.0, 1.0 - (2.0 * gain - 1.0) ** 3)
                    growth = 2.0
                    small = loss - trial < max(self.tol * loss, meaningful)
                    stalled = stalled + 1 if small else 0
                    loss, kept = trial, parts
                else:
                    rejections += 1
                    damping *= growth
                    growth *= 2.0
            if not accepted:
                target.assign(parameters)
            if accepted and stalled < self.n_iter_no_change:
                continue
            data = kept[0] if accepted and kept is not None else linear.residuals[: target.n_data]
            relaxed = relaxed_weight(target.smoothness, float((data.detach() ** 2).sum()), allowed)
            if relaxations < self.max_relaxations and relaxed != target.smoothness:
                target.smoothness = relaxed
                relaxations, stalled, kept = relaxations + 1, 0, None
                continue
            status = "converged"
            break
        monitor.end_stage(status)
        return StageResult(self.name, iteration, loss, status, message)


def evidence_weight_decay(
    jacobian: torch.Tensor,
    parameters: torch.Tensor,
    decayed: torch.Tensor,
    noise_variance: float,
    n_observed: float,
    n_updates: int = 30,
) -> float:
    """Weight decay that maximises the evidence (MacKay 1992), in the stage's units.

    With Gaussian noise of variance ``noise_variance`` (scaled units) and a Gaussian
    prior of precision ``alpha`` on the decayed weights, the evidence is largest where
    ``alpha = gamma / |w|^2``, ``gamma = sum_k l_k / (l_k + alpha)`` the number of
    weights the data determine (``l_k`` the eigenvalues of the data's Gauss-Newton
    Hessian in the weights' subspace). In the stage's objective (mean squared error plus
    ``decay |w|^2``) that prior is ``decay = alpha * noise_variance / n_observed``.

    Parameters
    ----------
    jacobian : Tensor of shape (n_data, n_parameters)
        Jacobian of the data residuals, each scaled by ``1 / sqrt(n_observed)``.
    parameters : Tensor of shape (n_parameters,)
    decayed : Tensor of shape (n_parameters,), bool
        The weights the decay acts on.
    noise_variance : float
        Estimated noise variance of the data (scaled units).
    n_observed : float
        Number of observed values.
    n_updates : int
        Fixed-point updates of ``alpha`` (it converges in a few).

    Returns
    -------
    decay : float
        0 when the data carry no noise estimate.
    """
    if noise_variance <= 0.0:
        return 0.0
    weights = jacobian[:, decayed]  # (n_data, n_weights)
    # The nonzero eigenvalues of J^T J are those of J J^T (n_data x n_data, small).
    curvature = torch.linalg.eigvalsh(weights @ weights.T).clamp_min(0.0)
    curvature = curvature * (n_observed / noise_variance)
    squared_norm = max(float((parameters[decayed] ** 2).sum()), 1e-12)
    alpha = 1.0
    for _ in range(n_updates):
        determined = float((curvature / (curvature + alpha)).sum())
        alpha = max(determined, 1e-12) / squared_norm
    return alpha * noise_variance / n_observed
