"""How sure a fit is: the covariance of its parameters and the spread of its predictions.

At the end of ``fit`` the fitted trajectories and their sensitivities (``_sensitivity``)
give the Jacobian ``J`` of the full-trajectory residuals with respect to

- the raw physical parameters of a universal ODE (on the scale they are learned on: log
  for positive ones, logit for bounded ones, relative for the others),
- the output layer of the network, when there is one (a linearised Laplace
  approximation restricted to the last layer, as laplace-torch does by default; its
  isotropic Gaussian prior has the precision that maximises the evidence, MacKay's
  fixed point, so the data say how far the weights may move),
- every trajectory's learned initial state.

The Gauss-Newton (Fisher) information is ``J^T diag(1/sigma^2) J`` with ``sigma`` each
state's noise level estimated from the residuals, corrected for the degrees of freedom
the fit used (the effective number of parameters, the trace of the hat matrix). The
initial states of many trajectories are eliminated trajectory by trajectory (a Schur
complement), so the cost grows linearly with the number of trajectories.

The hidden layers of a network are held fixed throughout: thousands of weights are
neither cheap to linearise over nor determined by a few trajectories, and the last layer
already carries the network's freedom to bend the field. The intervals of physical
parameters (``params_std_``, ``param_intervals``) hold the whole network fixed: they say
how well the data determine the physics *given* the fitted network's term.

What is kept on the estimator (float arrays, so a saved file answers ``return_std``):

- ``noise_std_``: each state's noise level, in the caller's units;
- ``y0_std_``: standard deviation of the fitted initial states;
- ``_theta_prior_variance_``, ``_theta_covariance_directions_``,
  ``_theta_covariance_deviations_``: the covariance of ``theta`` (physical parameters,
  output layer) as the prior's variance plus the directions in which the data change it,
  ``diag(prior) + V diag(d) V^T`` (a network's last layer has thousands of entries in
  its covariance but the data inform a few dozen directions: this keeps a saved model
  small);
- ``_initial_state_covariance_``, ``_initial_state_cross_covariance_``: each trajectory's
  initial-state covariance and its covariance with ``theta`` (scaled units);
- ``_physical_information_``: information about the raw physical parameters with the
  network fixed and the initial states eliminated (for intervals and identifiability);
- ``_residual_dof_``: residual degrees of freedom (Student-t quantiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ._problem import TrainingProblem
from ._sensitivity import ParameterLayout, parameter_layout, trajectory_sensitivities
from ._vector_fields import ODEModel

#: Fitted attributes this module sets (all float arrays; a file stores them).
RECORDED_ATTRIBUTES = frozenset(
    {
        "noise_std_",
        "y0_std_",
        "_theta_prior_variance_",
        "_theta_covariance_directions_",
        "_theta_covariance_deviations_",
        "_initial_state_covariance_",
        "_initial_state_cross_covariance_",
        "_physical_information_",
        "_residual_dof_",
    }
)

#: Most (trajectory, direction) pairs of the sensitivity solve at the end of a fit; a
#: larger fit records no uncertainty, as its cost would rival the fit's.
MAX_SENSITIVITY_ROWS = 5_000

#: Most (trajectory, direction) pairs when the network's output layer is followed (it
#: adds (n_hidden + 1) * n_states directions, 130 for the default network on two
#: states, each as costly as a state): beyond about 15 trajectories of the default
#: network the output layer is held fixed like the hidden layers. With that much data its
#: part of the predictive spread is small next to the noise inside the data's span, and
#: following it costs most of a fit (100 pendulums: 2.7 of a 4.0 CPU s fit).
MAX_OUTPUT_LAYER_ROWS = 2_000
#: The same bound on long series: time points times followed directions (every series a
#: network's fit records, up to 500 points of the default network's 130 output-layer
#: directions, fits). Following the layer costs little along one series (noisy spiral,
#: 200 / 1000 / 5000 points: 0.5 / 0.5 / 0.6 CPU s, against 0.2 s without it) and it is
#: what makes the fitted initial state's spread honest: with the layer held fixed, the
#: irregular noisy spiral's ``y0_std_`` was 0.1-1.0 noise deviations against errors of
#: 0.2-3.5, with it 1-2.2.
MAX_OUTPUT_LAYER_WORK = 100_000
#: A model with a network gets an estimate automatically only for up to this many
#: observation times in all: past them a fit is fast per point, and the estimate would be
#: a large part of it that ``fit`` must not pay unasked (the quickstart's 1000-point
#: spiral: 0.5 CPU s on a 2 s fit; one million points with ``max_iter=1`` would hold a
#: Jacobian of gigabytes). Classical models (no network) always get one.
MAX_NETWORK_OBSERVATION_TIMES = 500

#: Every computation a fit makes besides training (this record, checks) gets the larger
#: of SIDE_BUDGET_SECONDS and SIDE_BUDGET_FRACTION of the training's CPU time.
SIDE_BUDGET_SECONDS = 1.0
SIDE_BUDGET_FRACTION = 0.2
#: CPU seconds per entry of the information blocks (per observed state, trajectory and
#: pair of directions, ``n_observed * n_traj * n_directions**2``): filling them and the
#: noise / prior fixed point over them dominate the record's cost where there are many
#: states, which the direction budgets above do not count. Measured here (one thread):
#: 200 states, 5 trajectories of 30 points, 40 M entries, 2.3 CPU s (5.6e-8 s each);
#: doubled for a slower machine. At 16 such trajectories the blocks alone hold 1 GB.
SECONDS_PER_INFORMATION_ENTRY = 1e-7

_RELATIVE_EIGENVALUE_FLOOR = 1e-12  # information below this fraction of the largest: none
_KEPT_DEVIATION = 1e-3  # changes of the prior variance below this fraction are dropped
_MIN_NOISE_STD = 1e-8  # scaled units: clean data still give finite information
_EVIDENCE_ITERATIONS = 100
_EVIDENCE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class FitUncertainty:
    """The covariance of a fit at its optimum (internal coordinates, scaled units).

    Attributes
    ----------
    noise_std : ndarray of shape (n_states,)
        Each state's noise level (scaled units).
    theta_covariance : ndarray of shape (n_theta, n_theta)
    prior_variance : ndarray of shape (n_theta,)
        The prior's variance of each entry of ``theta`` (zero where there is no prior).
    initial_state_covariance : ndarray of shape (n_traj, n_states, n_states)
    cross_covariance : ndarray of shape (n_traj, n_theta, n_states)
        Covariance of ``theta`` with each trajectory's initial state.
    physical_information : ndarray of shape (n_physical, n_physical)
        Information about the raw physical parameters, network fixed.
    residual_dof : float
        Observations less the effective number of parameters.
    """

    noise_std: np.ndarray
    theta_covariance: np.ndarray
    prior_variance: np.ndarray
    initial_state_covariance: np.ndarray
    cross_covariance: np.ndarray
    physical_information: np.ndarray
    residual_dof: float


def _pseudo_inverse(matrix: np.ndarray) -> tuple[np.ndarray, int]:
    """Inverse of a symmetric positive semi-definite matrix, directions without
    information (eigenvalues below a floor) given a huge but finite variance; returns
    the number of such directions too."""
    if matrix.size == 0:
        return matrix.copy(), 0
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    floor = max(float(values.max(initial=0.0)), 1.0) * _RELATIVE_EIGENVALUE_FLOOR
    null = int(np.sum(values <= floor))
    clipped = np.maximum(values, floor)
    return (vectors / clipped) @ vectors.T, null


def one_blas_thread() -> Any:
    """A context with one BLAS thread. The matrices here are small and dense: one thread
    is fastest, and a multi-threaded OpenBLAS on a busy machine took a hundred times
    longer for a 130 x 130 eigendecomposition (spinning threads wait for busy cores)."""
    return threadpool_limits(limits=1, user_api="blas")


def inverse_information(information: np.ndarray) -> np.ndarray:
    """Covariance from information; directions without information get a huge but finite
    variance."""
    return _pseudo_inverse(information)[0]


@dataclass(frozen=True)
class _Residuals:
    """Unweighted residuals and Jacobians of every trajectory, observed entries only."""

    residuals: list[np.ndarray]  # (n_obs_b,)
    states: list[np.ndarray]  # (n_obs_b,) state index of each residual
    jacobians: list[np.ndarray]  # (n_obs_b, n_directions)

    def sum_of_squares(self, n_states: int) -> tuple[np.ndarray, np.ndarray]:
        """Per state: sum of squared residuals and number of observations."""
        squares, counts = np.zeros(n_states), np.zeros(n_states)
        for residual, state in zip(self.residuals, self.states, strict=True):
            np.add.at(squares, state, residual**2)
            np.add.at(counts, state, 1.0)
        return squares, counts


def _trajectory_residuals(
    problem: TrainingProblem, model: ODEModel, layout: ParameterLayout
) -> _Residuals | None:
    scaling = problem.scaling
    times = scaling.unscale_times(problem.times.detach().cpu().numpy().astype(np.float64))
    sorted_times = [times[row, :length] for row, length in enumerate(problem.lengths)]
    starts = times[:, 0]
    initial = model.initial_values().detach().cpu().numpy().astype(np.float64)
    # The residuals come from the same solve as the sensitivities (its tolerance, 1e-4 of
    # the states' spread, is far below any noise worth an interval).
    sensitivities = trajectory_sensitivities(
        model, layout, initial, starts, sorted_times, local=True, signal=problem.inputs
    )
    if sensitivities is None:
        return None
    observed = problem.observed.detach().cpu().numpy() > 0
    observations = problem.observations.detach().cpu().numpy().astype(np.float64)
    residuals, states, jacobians = [], [], []
    for row, length in enumerate(problem.lengths):
        mask = observed[row, :length]  # (n_times, n_states)
        scaled = sensitivities.states[row]
        residuals.append((scaled - observations[row, :length])[mask])
        states.append(np.nonzero(mask)[1])
        jacobians.append(sensitivities.jacobians[row][mask])
    return _Residuals(residuals, states, jacobians)


@dataclass(frozen=True)
class _Information:
    """Fisher information blocks per state (weights ``1/sigma_s^2`` applied later)."""

    theta: np.ndarray  # (n_states, n_theta, n_theta)
    cross: np.ndarray  # (n_states, n_traj, n_theta, n_local)
    local: np.ndarray  # (n_states, n_traj, n_local, n_local)
    free: np.ndarray  # (n_traj, n_local) bool: fitted initial states (not given ones)

    @classmethod
    def from_residuals(
        cls, data: _Residuals, n_states: int, n_theta: int, free: np.ndarray
    ) -> _Information:
        """``n_states``: the observed quantities (one noise level each); the local
        directions are the ``free.shape[1]`` initial states."""
        n_traj, n_local = free.shape
        theta = np.zeros((n_states, n_theta, n_theta))
        cross = np.zeros((n_states, n_traj, n_theta, n_local))
        local = np.zeros((n_states, n_traj, n_local, n_local))
        for row, (jacobian, state_of) in enumerate(zip(data.jacobians, data.states, strict=True)):
            for state in range(n_states):
                rows = jacobian[state_of == state]
                field_part, local_part = rows[:, :n_theta], rows[:, n_theta:]
                theta[state] += field_part.T @ field_part
                cross[state, row] = field_part.T @ local_part
                local[state, row] = local_part.T @ local_part
        return cls(theta, cross, local, free)

    def weighted(self, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Blocks weighted by each state's noise precision ``1/sigma_s^2``."""
        return (
            np.einsum("s,sij->ij", precision, self.theta),
            np.einsum("s,sbij->bij", precision, self.cross),
            np.einsum("s,sbij->bij", precision, self.local),
        )


def _eliminate_initial_states(
    theta: np.ndarray, cross: np.ndarray, local: np.ndarray, free: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Schur complement of the fitted initial-state blocks (``free``; given ones are
    exact): information about ``theta`` with the initial states re-fitted, their
    inverses (zero in the given directions), and how many local directions carry
    information."""
    inverses, informative = np.zeros_like(local), 0
    reduced = theta.copy()
    for row in range(local.shape[0]):
        fitted = np.flatnonzero(free[row])
        inverse, null = _pseudo_inverse(local[row][np.ix_(fitted, fitted)])
        inverses[row][np.ix_(fitted, fitted)] = inverse
        informative += fitted.size - null
        coupling = cross[row][:, fitted]
        reduced -= coupling @ inverse @ coupling.T
    return reduced, inverses, informative


@dataclass(frozen=True)
class _Posterior:
    """The Gaussian approximation at one setting of the noise levels and the prior."""

    covariance: np.ndarray  # (n_theta, n_theta)
    local_inverses: np.ndarray  # (n_traj, n_local, n_local)
    cross: np.ndarray  # (n_traj, n_theta, n_local), weighted information
    local: np.ndarray  # (n_traj, n_local, n_local), weighted information
    theta: np.ndarray  # (n_theta, n_theta), weighted information
    effective_parameters: float  # trace of the hat matrix

    @classmethod
    def at(
        cls, information: _Information, noise_variance: np.ndarray, prior: np.ndarray
    ) -> _Posterior:
        theta, cross, local = information.weighted(1.0 / noise_variance)
        reduced, local_inverses, informative = _eliminate_initial_states(
            theta, cross, local, information.free
        )
        covariance, null = _pseudo_inverse(reduced + np.diag(prior))
        # tr(F C) = n_theta - tr(prior C) - (directions without information)
        shrinkage = float(np.sum(prior * np.diagonal(covariance)))
        effective = informative + prior.size - null - shrinkage
        return cls(covariance, local_inverses, cross, local, theta, effective)


def _noise_and_prior(
    information: _Information,
    data: _Residuals,
    prior_block: slice,
    weight_norm: float,
) -> tuple[np.ndarray, np.ndarray, float] | str:
    """Each state's noise variance and the output layer's prior precision, at their joint
    fixed point: the residuals' mean square corrected for the effective number of
    parameters, and MacKay's evidence update ``alpha = gamma / |w|^2``. Returns them with
    the residual degrees of freedom, or why there are none."""
    n_states, n_theta = information.theta.shape[:2]
    squares, counts = data.sum_of_squares(n_states)
    n_observations = float(counts.sum())
    noise_variance = np.maximum(squares / np.maximum(counts, 1.0), _MIN_NOISE_STD**2)
    prior = np.zeros(n_theta)
    prior[prior_block] = 1.0
    n_prior = prior[prior_block].size
    for _ in range(_EVIDENCE_ITERATIONS):
        posterior = _Posterior.at(information, noise_variance, prior)
        dof = n_observations - posterior.effective_parameters
        if dof < 1.0:
            return (
                f"{int(n_observations)} observations leave no degrees of freedom for "
                f"{posterior.effective_parameters:.1f} effective parameters"
            )
        residual_dof = np.maximum(counts * dof / n_observations, 1e-300)  # shared per state
        updated_noise = np.maximum(squares / residual_dof, _MIN_NOISE_STD**2)
        updated_prior = prior.copy()
        if n_prior:
            precision = prior[prior_block][0]
            weights_variance = float(np.trace(posterior.covariance[prior_block, prior_block]))
            determined = max(n_prior - precision * weights_variance, 1e-8)  # gamma
            updated_prior[prior_block] = determined / max(weight_norm, 1e-300)
        converged = np.allclose(updated_prior, prior, rtol=_EVIDENCE_TOLERANCE) and np.allclose(
            updated_noise, noise_variance, rtol=_EVIDENCE_TOLERANCE
        )
        noise_variance, prior = updated_noise, updated_prior
        if converged:
            break
    return noise_variance, prior, dof


def estimate_fit_uncertainty(
    problem: TrainingProblem, model: ODEModel, *, include_output_layer: bool
) -> FitUncertainty | str:
    """The covariance of a fitted model's parameters at its optimum.

    Parameters
    ----------
    problem : TrainingProblem
        The training data.
    model : ODEModel
        The fitted model.
    include_output_layer : bool
        Follow the network's output layer too (a last-layer Laplace approximation).

    Returns
    -------
    FitUncertainty or str
        The estimate, or why there is none.
    """
    layout = parameter_layout(model, include_output_layer=include_output_layer)
    n_directions = layout.size + model.n_states
    if problem.n_traj * n_directions > MAX_SENSITIVITY_ROWS:
        return (
            f"{problem.n_traj} trajectories x {n_directions} sensitivity directions exceed "
            f"the {MAX_SENSITIVITY_ROWS} that are followed at the end of a fit"
        )
    data = _trajectory_residuals(problem, model, layout)
    if data is None:
        return "the fitted model could not be integrated with its sensitivities"
    free = np.ones((problem.n_traj, model.n_states), dtype=bool)
    if model.has_known_initial_states:
        free = ~model.known_initial_mask.cpu().numpy()[:, : model.n_states]
    n_observed = model.spec.n_observed
    information = _Information.from_residuals(data, n_observed, layout.size, free)
    weights = _output_parameters(model) if layout.output_layer else []
    weight_norm = sum(float(torch.sum(weight.detach() ** 2)) for weight in weights)
    prior_block = slice(layout.n_physical, layout.size)
    hyperparameters = _noise_and_prior(information, data, prior_block, weight_norm)
    if isinstance(hyperparameters, str):
        return hyperparameters
    noise_variance, prior, dof = hyperparameters
    posterior = _Posterior.at(information, noise_variance, prior)
    covariance = posterior.covariance
    gains = np.einsum("bij,bjk->bik", posterior.cross, posterior.local_inverses)
    initial_covariance = posterior.local_inverses + np.einsum(
        "bji,jk,bkl->bil", gains, covariance, gains
    )
    physical = slice(0, layout.n_physical)
    physical_information, _, _ = _eliminate_initial_states(
        posterior.theta[physical, physical],
        posterior.cross[:, physical],
        posterior.local,
        information.free,
    )
    counts = data.sum_of_squares(n_observed)[1]
    return FitUncertainty(
        noise_std=np.sqrt(noise_variance) * (counts > 0),
        theta_covariance=covariance,
        prior_variance=np.where(prior > 0, 1.0 / np.maximum(prior, 1e-300), 0.0),
        initial_state_covariance=initial_covariance,
        cross_covariance=-np.einsum("ij,bjk->bik", covariance, gains),
        physical_information=physical_information,
        residual_dof=float(dof),
    )


def _output_parameters(model: ODEModel) -> list[torch.Tensor]:
    layout = parameter_layout(model, include_output_layer=True)
    named = dict(model.field.named_parameters())
    return [named[name] for name in layout.output_layer]


# ----------------------------------------------------------------- estimator records
def side_budget(fit_seconds: float) -> float:
    """CPU seconds a fit may spend on computations besides training: the larger of
    ``SIDE_BUDGET_SECONDS`` and ``SIDE_BUDGET_FRACTION`` of the training's CPU time."""
    return max(SIDE_BUDGET_SECONDS, SIDE_BUDGET_FRACTION * fit_seconds)


def estimated_record_seconds(problem: TrainingProblem, model: ODEModel, n_theta: int) -> float:
    """The cost model of :func:`estimate_fit_uncertainty` with ``n_theta`` followed field
    parameters: its information blocks (``SECONDS_PER_INFORMATION_ENTRY``)."""
    n_directions = n_theta + model.n_states
    entries = model.spec.n_observed * problem.n_traj * n_directions**2
    return SECONDS_PER_INFORMATION_ENTRY * entries


def record_fit_uncertainty(
    estimator: Any,
    problem: TrainingProblem,
    model: ODEModel,
    *,
    fit_seconds: float = math.inf,
) -> FitUncertainty | None:
    """Set (or clear) the estimator's uncertainty records after a fit.

    The network's output layer is followed when the model has a network and few enough
    trajectories and short enough series (``MAX_OUTPUT_LAYER_ROWS``,
    ``MAX_OUTPUT_LAYER_WORK``); otherwise only physical parameters and
    initial states. Returns the estimate (None when there is
    none; the reason is kept in ``estimator._uncertainty_note``).

    The record is bounded by the side budget (:func:`side_budget` of ``fit_seconds``,
    the training's CPU time): where :func:`estimated_record_seconds` exceeds it (many
    states and trajectories), it is deferred: the training problem is kept on the
    estimator, and the first ``predict(..., return_std=True)`` or ``param_intervals``
    computes it (:func:`complete_deferred_uncertainty`).
    """
    for name in RECORDED_ATTRIBUTES:
        if name in vars(estimator):
            delattr(estimator, name)
    vars(estimator).pop("_deferred_uncertainty", None)
    n_times = int(problem.lengths.sum())
    if (
        getattr(model.field, "network", True) is not None
        and n_times > MAX_NETWORK_OBSERVATION_TIMES
    ):
        estimator._uncertainty_note = (
            f"not computed for a model with a network on {n_times} observation times "
            f"(more than {MAX_NETWORK_OBSERVATION_TIMES}), where it would be a large part "
            "of the fit's cost"
        )
        return None
    with_network = parameter_layout(model, include_output_layer=True)
    rows = problem.n_traj * (with_network.size + model.n_states)
    work = problem.times.shape[1] * with_network.size
    has_network = (
        with_network.output_layer != ()
        and rows <= MAX_OUTPUT_LAYER_ROWS
        and work <= MAX_OUTPUT_LAYER_WORK
    )
    n_theta = (
        with_network if has_network else parameter_layout(model, include_output_layer=False)
    ).size
    cost = estimated_record_seconds(problem, model, n_theta)
    budget = side_budget(fit_seconds)
    if cost > budget:
        estimator._deferred_uncertainty = (problem, model)
        estimator._uncertainty_note = (
            f"deferred at the end of fit: for {model.n_states} states and "
            f"{problem.n_traj} trajectories it costs about {cost:.2g} CPU s, above the "
            f"{budget:.2g} s a fit may spend besides training (the larger of "
            f"{SIDE_BUDGET_SECONDS:g} s and {SIDE_BUDGET_FRACTION:.0%} of the training); "
            "predict(..., return_std=True) or param_intervals computes it when first asked"
        )
        return None
    with one_blas_thread():
        estimate = estimate_fit_uncertainty(problem, model, include_output_layer=has_network)
    if isinstance(estimate, str):
        estimator._uncertainty_note = estimate
        return None
    estimator._uncertainty_note = None
    scale = model.scaling.state_scale
    initial_std = (
        np.sqrt(np.maximum(np.diagonal(estimate.initial_state_covariance, axis1=1, axis2=2), 0.0))
        * scale
    )
    estimator.noise_std_ = estimate.noise_std * model.spec.observed_scaling.state_scale
    estimator.y0_std_ = initial_std[0] if model.spec.one_trajectory else initial_std
    with one_blas_thread():
        deviations, directions = np.linalg.eigh(
            estimate.theta_covariance - np.diag(estimate.prior_variance)
        )
    prior_along = estimate.prior_variance @ directions**2  # the prior's variance there
    kept = np.abs(deviations) > _KEPT_DEVIATION * prior_along
    estimator._theta_prior_variance_ = estimate.prior_variance
    estimator._theta_covariance_directions_ = directions[:, kept]
    estimator._theta_covariance_deviations_ = deviations[kept]
    estimator._initial_state_covariance_ = estimate.initial_state_covariance
    estimator._initial_state_cross_covariance_ = estimate.cross_covariance
    estimator._physical_information_ = estimate.physical_information
    estimator._residual_dof_ = np.array([estimate.residual_dof])
    return estimate


def theta_covariance(estimator: Any) -> np.ndarray:
    """The recorded covariance of ``theta``, shape (n_theta, n_theta)."""
    directions = estimator._theta_covariance_directions_
    deviations = estimator._theta_covariance_deviations_
    return np.diag(estimator._theta_prior_variance_) + (directions * deviations) @ directions.T


def complete_deferred_uncertainty(estimator: Any) -> None:
    """Compute the uncertainty record that :func:`record_fit_uncertainty` deferred (the
    caller asked for it, so no budget applies), and the fitted attributes derived from
    it; nothing to do when none was deferred."""
    deferred = vars(estimator).pop("_deferred_uncertainty", None)
    if deferred is None or deferred[1] is not getattr(estimator, "module_", None):
        return
    problem, model = deferred
    record_fit_uncertainty(estimator, problem, model)
    estimator._after_fit()


def _require_records(estimator: Any) -> None:
    complete_deferred_uncertainty(estimator)
    if not hasattr(estimator, "_theta_prior_variance_"):
        note = getattr(estimator, "_uncertainty_note", None)
        reason = f": {note}" if note else ""
        if note and note.startswith("deferred"):
            reason += (
                " (it needs the training data: a loaded or copied estimator lacks them; fit again)"
            )
        raise ValueError(
            "This fit recorded no uncertainty estimate" + reason + ", so return_std and "
            "parameter intervals are not available."
        )


def prediction_std(
    estimator: Any,
    initial_states: np.ndarray,
    initial_times: np.ndarray,
    sorted_times: list[np.ndarray],
    *,
    fitted_initial: bool,
    signal: torch.nn.Module | None = None,
) -> list[np.ndarray]:
    """Standard deviation of a new observation at each predicted point.

    The model part is the delta method: ``J C J^T`` with ``J`` the sensitivities of the
    predicted states to the followed parameters (and to the fitted initial state when
    the forecast starts from it) and ``C`` their covariance; the noise part is the
    state's fitted noise level. Both are added in variance.

    Parameters
    ----------
    estimator : fitted estimator
    initial_states : ndarray of shape (n_traj, n_total_states)
        Scaled initial states.
    initial_times : ndarray of shape (n_traj,)
    sorted_times : list of ndarray
        Ascending physical output times of each trajectory.
    fitted_initial : bool
        The initial states are the fitted ones (row ``i`` is training trajectory ``i``),
        whose uncertainty then counts; given initial states are taken as exact.
    signal : nn.Module, optional
        The trajectories' external inputs (required when the model has inputs).

    Returns
    -------
    list of ndarray of shape (n_times_i, n_states)
        In the caller's units.
    """
    _require_records(estimator)
    model = estimator.module_
    with one_blas_thread():
        covariance = theta_covariance(estimator)
    layout = parameter_layout(model, include_output_layer=True)
    if covariance.shape[0] != layout.size:
        layout = parameter_layout(model, include_output_layer=False)
    sensitivities = trajectory_sensitivities(
        model,
        layout,
        initial_states,
        initial_times,
        sorted_times,
        local=fitted_initial,
        signal=signal,
    )
    scale = model.spec.observed_scaling.state_scale  # what predict returns
    noise = (estimator.noise_std_ / scale) ** 2
    if sensitivities is None:
        return [np.full((times.size, scale.size), np.nan) for times in sorted_times]
    spreads = []
    for row, jacobian in enumerate(sensitivities.jacobians):
        joint = covariance
        if fitted_initial:
            cross = estimator._initial_state_cross_covariance_[row]
            joint = np.block(
                [[covariance, cross], [cross.T, estimator._initial_state_covariance_[row]]]
            )
        variance = np.einsum("tsi,ij,tsj->ts", jacobian, joint, jacobian)
        spreads.append(np.sqrt(np.maximum(variance, 0.0) + noise) * scale)
    return spreads


def student_quantile(confidence: float, dof: float) -> float:
    """Two-sided Student-t quantile for ``confidence`` with ``dof`` degrees of freedom."""
    from scipy.stats import t as student

    return float(student.ppf(0.5 + confidence / 2.0, dof))


def check_confidence(confidence: Any) -> float:
    """A confidence level strictly between 0 and 1."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}.")
    if not (math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    return float(confidence)
