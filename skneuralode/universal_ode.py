"""``UniversalODERegressor``: dy/dt = known physics with learnable parameters + a network."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from numbers import Real
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.utils._param_validation import Interval, StrOptions

from . import _defaults as defaults
from ._base import BaseODERegressor
from ._data import TrajectoryBatch, validate_state_times, validate_states
from ._derived import check_functions
from ._fit_warnings import warn_about_parameter_drift
from ._hybrid_field import (
    HybridField,
    check_known_output,
    check_state_indices,
)
from ._hybrid_spec import HybridFieldSpec
from ._identifiability import warn_about_identifiability
from ._parameter_uncertainty import parameter_identifiability, parameter_std, wald_intervals
from ._physical_parameters import check_constraints, check_parameter_mapping
from ._problem import TrainingProblem
from ._settings import Collocation, MultipleShooting, Polish, Solver, as_settings
from ._spec import ModelSpec
from ._training import TrainingStage
from ._training.gauss_newton import GaussNewtonStage
from ._training.physics_check import PhysicsAloneCheck
from ._training.physics_first import PhysicsFirstStage
from ._training.rescue import RescueStage
from ._training.shooting import ShootingStage
from ._uncertainty import (
    check_confidence,
    complete_deferred_uncertainty,
)
from ._vector_fields import ODEModel, feature_statistics
from .neural_ode import observed_reference_states

_MIN_AUTO_PENALTY = 1e-3  # scaled units: 0.1 % of the field's variance


class UniversalODERegressor(BaseODERegressor):
    """Universal differential equation ``dy/dt = known(t, y, p) + NN(y)``.

    The known physics is a user function with physical parameters ``p`` that are learned
    jointly with a neural network for the part nobody knows. Training uses the same
    stages as :class:`NeuralODERegressor`: a collocation warm start that fits physical
    parameters and network together by regression on estimated derivatives (the
    two-stage method), multiple-shooting refinement and an optional full-trajectory
    L-BFGS polish. With ``hidden_layer_sizes=()`` there is no network and the fit is
    classical parameter estimation.

    Identifiability: a network that sees the states can also represent part of the known
    term, so the data alone do not fix the physical parameters. The fit prefers the
    physics: a minimal-norm penalty on the network's contribution (as in APHYNITY, Yin et
    al. 2021) makes the network explain only what the known part cannot, with a weight
    small enough that the data fit comes first (``network_penalty``). Parameters are
    recovered where the structure determines them, e.g. when the network acts only on
    other states (``network_outputs``).

    Parameters
    ----------
    known : callable or None, default=None
        ``known(t, y, p) -> dy/dt`` of the known physics, on torch tensors in the
        caller's units: ``y`` of shape (..., n_states), ``t`` of shape ``y.shape[:-1]``,
        ``p`` a mapping of every name in ``params`` and ``fixed_params`` to a 0-d
        tensor; returns shape (..., n_states). Define it at module level so the
        estimator pickles. None means no known part (a neural ODE).
    params : mapping of str to float or None, default=None
        Physical parameters learned jointly with the network, with their starting values.
    fixed_params : mapping of str to float or None, default=None
        Constants passed to ``known`` in the same mapping ``p``.
    network_outputs : list of int or None, default=None
        States whose right-hand side gets the network's term; None means all.
    network_inputs : list of int or None, default=None
        States the network sees; None means all. A network that sees fewer states is a
        stronger prior (and leaves less room to absorb the known part).
    param_constraints : None, "positive" or mapping, default=None
        Constraints on learned parameters: a mapping of names to ``"positive"`` (learned
        as ``p0 * exp(u)``, a log-parametrisation) or to a ``(low, high)`` interval
        (learned through a sigmoid); ``"positive"`` alone constrains all of ``params``.
        Unconstrained parameters are learned as ``|p0| * u``, so an optimiser step is a
        relative change whatever the parameter's units.
    network_penalty : "auto" or float, default="auto"
        Weight of the minimal-norm penalty, the mean squared network term in scaled units
        (where the whole field has unit RMS), added to every training stage. "auto" uses
        the estimated noise variance of the data (scaled units, at least 1e-3): the
        penalty may cost about as much as the noise, so the data fit comes first. 0 turns
        it off.
    network_weight_decay : "auto" or float, default="auto"
        Weight of an L2 penalty on the network's weights (not its biases), added to every
        training stage, relative to the data misfit (a mean square in scaled units). It
        keeps the learned term smooth where a few noisy trajectories leave it loosely
        determined (the ends of short series). "auto" lets the data choose it: the
        Gauss-Newton polish sets it at every iteration where the evidence (the marginal
        likelihood, MacKay 1992) is largest given the estimated noise level, so it grows
        with the noise and vanishes on clean data (no weight decay in the other stages,
        nor with ``polish=Polish(method="lbfgs")``). 0 turns it off.
    network_smoothness : "auto" or float, default="auto"
        Weight of a prior on the network term's curvature: the mean squared second
        derivative of the term along the path the smoothed data trace in state space,
        per unit of arc length (in units of the path's mean speed; scaled units), added
        to the Gauss-Newton polish. It keeps the term from bending at the ends of a short
        noisy series to follow a stray first or last observation, and does not charge a
        term for how fast the system moves. "auto" is twice the estimated noise variance,
        so it vanishes on clean data (Lotka-Volterra, 31 points, 5 % noise, all other
        settings at their defaults: worst missing-term error over noise seeds 0-4 0.340
        without it, 0.229 with it). With it the fit keeps the polished model while its
        misfit is within what the noise allows, even where the collocation fit's misfit
        is lower. 0 turns it off; ``polish=Polish(method="lbfgs")`` does not use it.
    physics_first : bool, default=True
        Start with a collocation fit of the known part alone (network switched off), so
        that the physics explains all it can before the network sees the residual (only
        with ``collocation=True``, learned ``params`` and a network). With a polish, the
        fit then ends with a check of whether the network pays for itself: where the
        fitted model stays above the misfit the noise allows, the physics alone is
        polished from that first fit and kept (with a ``ConvergenceWarning``, the
        network's term zero) unless the network's misfit is lower by more than the
        noise's two-standard-deviation band (``stage_results_[-1]``, "physics check").
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the network's hidden layers; ``()`` means no network (only ``known``).
    activation : str, default="tanh"
        Activation of the hidden layers: "tanh", "relu", "softplus", "gelu", "silu",
        "elu", "sigmoid" or "identity".
    feature_map : callable or None, default=None
        Torch function applied to the physical states the network sees (those of
        ``network_inputs``), acting on the last axis. Define it at module level.
    augment_dim : int, default=0
        Extra, unobserved states starting at zero, driven by the network only.
    solver : str or Solver, default="dopri5"
        How the ODE is integrated, as in :class:`NeuralODERegressor`.
    max_iter : int, default=1000
        Most optimiser steps of the collocation stage and of the shooting stage, each
        (unless the stage's own ``max_iter`` says otherwise).
    collocation : bool or Collocation, default=True
        The collocation warm start, as in :class:`NeuralODERegressor` (the physics-first
        fit uses the same settings).
    shooting : bool, "auto" or MultipleShooting, default="auto"
        Multiple-shooting refinement. "auto" runs it as a rescue after the polish (its
        own stage, "rescue", in ``stage_results_``), only where the polished fit may be a
        local minimum: full-trajectory MSE above twice the estimated noise variance plus
        0.5 % of the variance, and, where the polish converged, above 5 % of the variance
        (a converged fit closer than that is the model's own error, which shooting cannot
        remove). It goes back to the collocation fit, shoots, polishes again and keeps
        the better of the two polished fits; shooting whose segments still fit their own
        points worse than the polished fit after 100 steps is abandoned. Where collocation
        lands close, the polish alone reaches the optimum
        in a fraction of the time; where it lands far off (sparse, fast or very noisy
        stretches bias the derivative estimates), the polish of oscillating data can stop
        in a local minimum that short segments avoid (noisy irregular cubic spiral, known
        structure ``u^3 A``, no network: R^2 0.12 without shooting, 1.000 with the
        rescue). True runs shooting between collocation and the polish every time. A
        :class:`~skneuralode.MultipleShooting` sets the stage's settings (its
        ``only_if_needed=True``, the default, is "auto").
    polish : bool or Polish, default=True
        The full-trajectory polish. On by default here (unlike
        :class:`NeuralODERegressor`): with few physical parameters, a full-trajectory fit
        reaches the least-squares optimum that Adam approaches slowly. True polishes by
        Gauss-Newton for at most 100 iterations (it stops earlier once converged); a
        :class:`~skneuralode.Polish` sets ``max_iter`` and the ``method``:
        "gauss-newton" (the default here): Levenberg-Marquardt steps with the Jacobian
        of every residual (one solve and one batched backward pass each); on a few dozen
        observations it converges in about ten iterations where L-BFGS needs a hundred,
        and it stops once a step improves the fit by less than the noise allows. Data with
        more than 2000 observed values are polished by L-BFGS (the Jacobian would be
        large). "lbfgs": L-BFGS on the summed misfit, as :class:`NeuralODERegressor`
        does.
    callbacks : list of callables or None, default=None
        Called with each history record; returning True stops the current stage.
    random_state : int, RandomState instance or None, default=None
        Seeds weights and mini-batches; an int makes CPU fits bit-reproducible.
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; which to choose: see
        :class:`NeuralODERegressor`.
    dtype : {"auto", "float32", "float64"}, default="auto"
        "auto" is float64 on the CPU and float32 on a GPU.
    verbose : int, default=0
        1 shows a progress bar per stage with its loss.
    warm_start : bool, default=False
        Continue from the previous fit instead of starting anew.
    on_interrupt : {"raise", "keep_best"}, default="raise"
        What a ``KeyboardInterrupt`` (Ctrl-C, a notebook's stop button) during ``fit``
        does. "raise" lets it through and leaves the estimator exactly as it was before
        ``fit`` (unfitted, or the previous fit). "keep_best" ends training instead: the
        best model found so far is kept and ``fit`` returns normally with a
        ``ConvergenceWarning``; ``fit`` again with ``warm_start=True`` continues from it.
    input_interpolation : {"linear", "previous"}, default="linear"
        How external inputs ``u`` sampled at the observation times are read between
        samples: linearly, or held from each sample to the next ("previous", a
        zero-order hold for doses and switched controls).
    observe : callable or None, default=None
        ``observe(y, p) -> observed`` when ``y`` measures a function of the states
        rather than the states (a concentration = amount / volume with the volume
        learned; a sensor that reads the sum of two compartments): on torch tensors in
        the caller's units, ``y`` the states of shape (..., n_states), ``p`` the mapping
        ``known`` receives; returns (..., n_observed), one column per column of ``y``.
        The states are what ``known`` is written in; their number is the width of
        ``y0`` given to ``fit`` (NaN entries learned, a first guess fitted so that the
        first observations are matched), or the number of columns of ``y`` without
        ``y0``. Every stage's loss is taken on the observed quantities; collocation has
        no derivative estimate of a state and is skipped, so the fit runs the polish
        (and shooting, if on). ``predict`` and ``score`` are about the observed
        quantities, :meth:`predict_states` gives the states; ``known_term``,
        ``network_term`` and ``vector_field`` stay in states. Uncertainty estimates
        (``return_std``, ``param_intervals``, ``noise_std_`` per column of ``y``) follow
        the observed quantities through the observation map.
        Define it at module level so the estimator pickles and saves. None: ``y``
        holds the states.

    Attributes
    ----------
    params_ : dict of str to float
        Fitted physical parameters (the learned ones; ``fixed_params`` are not repeated).
    n_features_in_ : int
        Number of states.
    n_trajectories_ : int
        Number of training trajectories.
    t0_ : float or ndarray of shape (n_traj,)
        Initial time of the training trajectory (trajectories).
    y0_ : ndarray of shape (n_states,) or (n_traj, n_states)
        Learned initial state(s) at ``t0_`` (the states, also when ``observe`` maps
        them to what ``y`` measured).
    n_iter_ : int
        Optimiser steps taken in all stages.
    loss_ : float
        Full-trajectory mean squared error of the kept model, in scaled units.
    history_ : list of dict
        One record per optimiser step: ``stage``, ``iteration``, ``loss``, ``seconds``.
    stage_results_ : list of StageResult
        How each stage ended.
    module_ : torch.nn.Module
        The fitted model (hybrid field, scaling, initial states).
    discovery_ : EquationDiscovery
        Set by :meth:`discover_equations`: the sparse regression of the network's term.
    params_std_ : dict of str to float
        Standard deviation of each fitted parameter, from the Gauss-Newton information
        of the full-trajectory residuals with the network held fixed (see
        :meth:`param_intervals`).
    noise_std_ : ndarray of shape (n_states,)
        Each state's observation noise, estimated from the residuals of the fit
        (corrected for the degrees of freedom the fit used).
    y0_std_ : ndarray of shape (n_states,) or (n_traj, n_states)
        Standard deviation of the fitted initial state(s) ``y0_``.
    identifiability_ : dict
        Which parameters the data determine, from the eigen-decomposition of the
        information in relative units (``dp / |p|``, i.e. ``d log p`` for positive
        parameters): ``eigenvalues`` (ascending), ``directions`` (columns, unit vectors
        of relative change), ``relative_std`` (of each direction), ``condition_number``,
        ``undetermined`` (names of parameters in directions known to no better than
        100 %) and ``determined_combinations`` (e.g. ``["a*b"]``). When some parameter is
        undetermined, ``fit`` issues an :class:`~skneuralode.IdentifiabilityWarning`.

    See Also
    --------
    NeuralODERegressor : dy/dt = a neural network of the state.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from skneuralode import UniversalODERegressor
    >>> def decay(t, y, p):
    ...     return -p["k"] * y
    >>> t = np.linspace(0, 2, 30)
    >>> y = 3.0 * np.exp(-1.5 * t)[:, None]
    >>> est = UniversalODERegressor(known=decay, params={"k": 1.0},
    ...                             param_constraints="positive",
    ...                             hidden_layer_sizes=(), random_state=0)
    >>> round(est.fit(t, y).params_["k"], 2)
    1.5
    >>> est.score(t, y) > 0.999
    True
    """

    def __init__(
        self,
        known: Callable | None = None,
        *,
        params: Mapping[str, float] | None = None,
        fixed_params: Mapping[str, float] | None = None,
        network_outputs: Sequence[int] | None = None,
        network_inputs: Sequence[int] | None = None,
        param_constraints: str | Mapping[str, Any] | None = None,
        network_penalty: str | float = defaults.UDE_NETWORK_PENALTY,
        network_weight_decay: str | float = defaults.UDE_NETWORK_WEIGHT_DECAY,
        network_smoothness: str | float = defaults.UDE_NETWORK_SMOOTHNESS,
        physics_first: bool = defaults.UDE_PHYSICS_FIRST,
        hidden_layer_sizes: Sequence[int] = defaults.HIDDEN_LAYER_SIZES,
        activation: str = defaults.ACTIVATION,
        feature_map: Callable | None = None,
        augment_dim: int = defaults.AUGMENT_DIM,
        solver: str | Solver = defaults.SOLVER,
        max_iter: int = defaults.MAX_ITER,
        collocation: bool | Collocation = defaults.COLLOCATION,
        shooting: bool | str | MultipleShooting = defaults.UDE_SHOOTING,
        polish: bool | Polish = defaults.UDE_POLISH,
        callbacks: Sequence[Callable] | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str = defaults.DEVICE,
        dtype: str = defaults.DTYPE,
        verbose: int = defaults.VERBOSE,
        warm_start: bool = defaults.WARM_START,
        on_interrupt: str = defaults.ON_INTERRUPT,
        input_interpolation: str = defaults.INPUT_INTERPOLATION,
        observe: Callable | None = None,
    ) -> None:
        self.known = known
        self.params = params
        self.fixed_params = fixed_params
        self.network_outputs = network_outputs
        self.network_inputs = network_inputs
        self.param_constraints = param_constraints
        self.network_penalty = network_penalty
        self.network_weight_decay = network_weight_decay
        self.network_smoothness = network_smoothness
        self.physics_first = physics_first
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.feature_map = feature_map
        self.augment_dim = augment_dim
        self.solver = solver
        self.max_iter = max_iter
        self.collocation = collocation
        self.shooting = shooting
        self.polish = polish
        self.callbacks = callbacks
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.warm_start = warm_start
        self.on_interrupt = on_interrupt
        self.input_interpolation = input_interpolation
        self.observe = observe

    _parameter_constraints: ClassVar[dict] = {
        **BaseODERegressor._parameter_constraints,
        "known": [callable, None],
        "params": [Mapping, None],
        "fixed_params": [Mapping, None],
        "network_outputs": ["array-like", None],
        "network_inputs": ["array-like", None],
        "param_constraints": [StrOptions({"positive"}), Mapping, None],
        "network_penalty": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "network_weight_decay": [
            StrOptions({"auto"}),
            Interval(Real, 0, None, closed="left"),
        ],
        "network_smoothness": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
        "physics_first": ["boolean"],
        "feature_map": [callable, None],
        "observe": [callable, None],
    }

    _recorded_attributes: ClassVar[frozenset[str]] = BaseODERegressor._recorded_attributes | {
        "_time_spans_"
    }
    _derived_attributes: ClassVar[frozenset[str]] = BaseODERegressor._derived_attributes | {
        "params_",
        "params_std_",
        "identifiability_",
    }
    #: Its few physical parameters bring a whole trajectory into phase only at the end of
    #: shooting: the checks decide once the fit explains half the variance.
    _shooting_checks_decide_below: ClassVar[float] = 0.5

    _polish_max_iter: ClassVar[int] = defaults.UDE_POLISH_MAX_ITER
    _polish_method: ClassVar[str] = defaults.UDE_POLISH_METHOD
    _polish_methods: ClassVar[frozenset[str]] = frozenset({"gauss-newton", "lbfgs"})

    # ----------------------------------------------------------------- subclass hooks
    def _stages(self) -> list[TrainingStage]:
        stages = super()._stages()
        shooting = as_settings("shooting", self.shooting)
        if shooting is not None and shooting.only_if_needed:
            stages = _shooting_as_rescue(stages)
        collocation = as_settings("collocation", self.collocation)
        has_network = bool(self.hidden_layer_sizes)
        if self.physics_first and collocation is not None and self.params and has_network:
            physics = PhysicsFirstStage(collocation._stage(self.max_iter, name="physics"))
            stages.insert(0, physics)
            polish = as_settings("polish", self.polish)
            if polish is not None:
                stages.append(PhysicsAloneCheck(physics, self._polish_stage(polish)))
        return stages

    def _polish_stage(self, polish: Polish) -> TrainingStage:
        max_iter, method = polish._resolved(self._polish_max_iter, self._polish_method)
        if method != "gauss-newton":
            return super()._polish_stage(polish)
        return GaussNewtonStage(
            max_iter=max_iter,
            choose_weight_decay=self.network_weight_decay == "auto",
            smoothness=self.network_smoothness,
        )

    def _check_model_arguments(self) -> None:
        params = check_parameter_mapping(self.params, "params")
        fixed = check_parameter_mapping(self.fixed_params, "fixed_params")
        shared = sorted(set(params) & set(fixed))
        if shared:
            raise ValueError(f"{shared} appear in both params and fixed_params; pick one.")
        if self.known is None and (params or fixed):
            raise ValueError("params and fixed_params are passed to known, but known is None.")
        check_constraints(self.param_constraints, params)
        if not self.hidden_layer_sizes and self.augment_dim:
            raise ValueError("augment_dim > 0 needs a network (non-empty hidden_layer_sizes).")
        if not self.hidden_layer_sizes and not params:
            raise ValueError(
                "Nothing to learn: with hidden_layer_sizes=() give learned params to known."
            )

    def _field_spec(self, problem: TrainingProblem, has_inputs: bool = False) -> HybridFieldSpec:
        n_states = problem.n_states
        params = check_parameter_mapping(self.params, "params")
        outputs = check_state_indices(self.network_outputs, n_states, "network_outputs")
        inputs_seen = check_state_indices(self.network_inputs, n_states, "network_inputs")
        hidden = tuple(int(width) for width in self.hidden_layer_sizes)
        if hidden and (outputs or self.augment_dim) and not inputs_seen and not self.augment_dim:
            raise ValueError("network_inputs is empty: the network would see nothing.")
        mean = std = None
        if self.feature_map is not None and hidden:
            reference = problem.scaling.unscale_states(observed_reference_states(problem))
            mean, std = feature_statistics(self.feature_map, reference[:, list(inputs_seen)])
        if self.network_penalty == "auto":
            penalty_weight = max(problem.noise_variance, _MIN_AUTO_PENALTY)
        else:
            penalty_weight = float(self.network_penalty)
        return HybridFieldSpec(
            known=self.known,
            params=params,
            constraints=check_constraints(self.param_constraints, params),
            fixed=check_parameter_mapping(self.fixed_params, "fixed_params"),
            network_outputs=outputs,
            network_inputs=inputs_seen,
            hidden_layer_sizes=hidden,
            activation=self.activation,
            feature_map=self.feature_map,
            feature_mean=mean,
            feature_std=std,
            penalty_weight=penalty_weight,
            # "auto": none in collocation; the Gauss-Newton polish chooses it from the data
            weight_decay=0.0
            if self.network_weight_decay == "auto"
            else float(self.network_weight_decay),
            observe=self.observe,
        )

    def _observation(self) -> Callable | None:
        return self.observe

    def _observation_parameters(self) -> dict[str, float]:
        return {
            **check_parameter_mapping(self.params, "params"),
            **check_parameter_mapping(self.fixed_params, "fixed_params"),
        }

    _field_spec_type = HybridFieldSpec

    def _describes(self, spec: ModelSpec) -> bool:
        field = spec.field
        if not super()._describes(spec):
            return False
        n_states = spec.n_states
        params = check_parameter_mapping(self.params, "params")
        return (
            self.known is field.known
            and self.observe is field.observe
            and params.keys() == field.params.keys()
            and check_parameter_mapping(self.fixed_params, "fixed_params") == field.fixed
            and check_state_indices(self.network_outputs, n_states, "network_outputs")
            == field.network_outputs
            and check_state_indices(self.network_inputs, n_states, "network_inputs")
            == field.network_inputs
        )

    def _check_hidden_states(
        self, hidden: tuple[int, ...], known: np.ndarray | None, n_states: int
    ) -> None:
        if not hidden:
            return
        if self.network_outputs is not None:
            outputs = set(check_state_indices(self.network_outputs, n_states, "network_outputs"))
        else:
            outputs = set(range(n_states))
        has_network = bool(self.hidden_layer_sizes)
        for state in hidden:
            driven = self.known is not None or (has_network and state in outputs)
            fully_known = known is not None and not np.isnan(known[:, state]).any()
            if not driven and not fully_known:
                raise ValueError(
                    f"y: state {state} is never observed (all NaN), and nothing could learn "
                    "it: there is no known physics and the network does not act on it "
                    "(network_outputs). Give it known physics or a network term, or give "
                    "its initial value in y0 (it then stays constant)."
                )

    def _check_new_model(self, model: ODEModel, problem: TrainingProblem) -> None:
        initial_states = problem.smoothed_states[:, 0].detach().cpu().to(torch.float64)
        initial_times = problem.times[:, 0]
        inputs = problem.inputs_at(initial_times, problem.trajectory_index())
        if inputs is not None:
            inputs = inputs.detach().cpu().to(torch.float64)
        times = initial_times.detach().cpu().to(torch.float64)
        check_known_output(model.field, times, initial_states, problem.n_states, inputs)

    def _record_data_facts(self, batch: TrajectoryBatch) -> None:
        ends = batch.times[np.arange(batch.n_traj), batch.lengths - 1]
        self._time_spans_ = np.stack([batch.times[:, 0], ends], axis=1)  # (n_traj, 2)

    def _after_training(
        self, problem: TrainingProblem, model: ODEModel, fit_seconds: float
    ) -> None:
        super()._after_training(problem, model, fit_seconds)
        parameters = model.field.physical_parameters
        if parameters.names:
            start = check_parameter_mapping(self.params, "params")
            constraints = check_constraints(self.param_constraints, start)
            warn_about_parameter_drift(start, parameters.as_floats(), constraints)
        if parameters.names and hasattr(self, "_physical_information_"):
            information = self._physical_information_
            warn_about_identifiability(parameter_identifiability(parameters, information))

    def _after_fit(self) -> None:
        parameters = self.module_.field.physical_parameters
        self.params_ = parameters.as_floats()
        for name in ("params_std_", "identifiability_"):
            vars(self).pop(name, None)
        if parameters.names and hasattr(self, "_physical_information_"):
            information = self._physical_information_
            self.params_std_ = parameter_std(parameters, information)
            self.identifiability_ = parameter_identifiability(parameters, information)

    # -------------------------------------------------------------------- inspection
    def _field_rates(self, y: Any, t: Any, part: str, u: Any) -> np.ndarray:
        model = self._fitted_model()
        states = validate_states(y, model.n_states, name="y")
        times = None if t is None else validate_state_times(t, states.shape[0])
        inputs = self._inputs_at_states(u, states.shape[0])
        return model.physical_rates(states, times, part, inputs).reshape(np.shape(y))

    def predict_states(self, t: Any, y0: Any = None, u: Any = None) -> Any:
        """Integrate the learned dynamics to the times ``t`` and return the states.

        The same forecast as :meth:`predict`, but the states the physics is written in
        rather than what ``y`` measured: they differ only for a model with ``observe``.

        Parameters
        ----------
        t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
            Output times in any order.
        y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
            Initial states at the earliest time of each trajectory of ``t`` (``NaN``
            where unknown: the mean fitted initial value); the fitted ``y0_`` by default.
        u : optional
            External inputs, as in :meth:`predict`.

        Returns
        -------
        states : ndarray or list of ndarray
            Shape (n_times, n_states), (n_traj, n_times, n_states) or a list, following
            the layout of ``t``.

        Examples
        --------
        A sensor that reads the sum of two compartments, ``x1' = -k x1`` and
        ``x2' = k x1 - 0.25 x2``, with the transfer rate k learned:

        >>> import numpy as np, torch
        >>> from skneuralode import UniversalODERegressor
        >>> def transfer(t, y, p):
        ...     flow = p["k"] * y[..., 0]
        ...     return torch.stack([-flow, flow - 0.25 * y[..., 1]], dim=-1)
        >>> def weigh_both(y, p):
        ...     return y.sum(dim=-1, keepdim=True)
        >>> t = np.linspace(0, 8, 30)
        >>> y = 5 * (0.25 * np.exp(-0.9 * t) - 0.9 * np.exp(-0.25 * t)) / (0.25 - 0.9)
        >>> est = UniversalODERegressor(
        ...     known=transfer, params={"k": 0.3}, param_constraints="positive",
        ...     hidden_layer_sizes=(), observe=weigh_both, random_state=0,
        ... ).fit(t, y, y0=[5.0, 0.0])
        >>> round(est.params_["k"], 2)
        0.9
        >>> np.round(est.predict_states([0.0, 2.0]), 2)  # both compartments
        array([[5.  , 0.  ],
               [0.83, 3.05]])
        """
        return self._predict_states(t, y0, u)

    def known_term(self, y: Any, t: Any = None, u: Any = None) -> np.ndarray:
        """The fitted known part ``known(t, y, params_)`` at given states.

        Parameters
        ----------
        y : array-like of shape (n_samples, n_states) or (n_states,)
        t : float or array-like of shape (n_samples,), optional
            Times passed to ``known``; by default the earliest training time.
        u : array-like of shape (n_samples, n_inputs) or (n_inputs,), optional
            External inputs (a model fitted with inputs needs them).

        Returns
        -------
        dydt : ndarray of the same shape as ``y``

        Examples
        --------
        >>> import numpy as np
        >>> from skneuralode import UniversalODERegressor
        >>> def decay(t, y, p):
        ...     return -p["k"] * y
        >>> t = np.linspace(0, 2, 30)
        >>> est = UniversalODERegressor(known=decay, params={"k": 1.0}, hidden_layer_sizes=(),
        ...                             random_state=0).fit(t, np.exp(-2.0 * t))
        >>> np.round(est.known_term([[1.0]]), 2)
        array([[-2.]])
        """
        return self._field_rates(y, t, "known", u)

    def network_term(self, y: Any, u: Any = None) -> np.ndarray:
        """The network's contribution to ``dy/dt`` at given states (zero on the states
        outside ``network_outputs``), in the caller's units.

        Parameters
        ----------
        y : array-like of shape (n_samples, n_states) or (n_states,)
        u : array-like of shape (n_samples, n_inputs) or (n_inputs,), optional
            External inputs (a model fitted with inputs needs them).

        Returns
        -------
        dydt : ndarray of the same shape as ``y``

        Examples
        --------
        A spring whose damping (-0.4 v) is left to a network of the velocity:

        >>> import numpy as np, torch
        >>> from skneuralode import UniversalODERegressor
        >>> from skneuralode.datasets import make_damped_oscillator
        >>> def spring(t, y, p):
        ...     return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)
        >>> t, y = make_damped_oscillator(n_times=40, t_end=6.0)
        >>> est = UniversalODERegressor(known=spring, params={"omega2": 3.0},
        ...                             network_outputs=[1], network_inputs=[1],
        ...                             hidden_layer_sizes=(16,), polish=False,
        ...                             random_state=0).fit(t, y)
        >>> abs(est.params_["omega2"] - 4.0) < 0.2
        True
        >>> np.round(est.network_term([[0.0, 1.0], [0.0, -1.0]]), 1)
        array([[ 0. , -0.4],
               [ 0. ,  0.4]])
        """
        return self._field_rates(y, None, "network", u)

    def param_intervals(
        self,
        confidence: float = 0.95,
        method: str = "wald",
        *,
        t: Any = None,
        y: Any = None,
        u: Any = None,
        functions: Mapping[str, Callable[[dict[str, torch.Tensor]], Any]] | None = None,
        max_seconds: float | None = None,
    ) -> dict[str, tuple[float, float]]:
        """Confidence intervals of the fitted physical parameters and functions of them.

        Both methods hold the network (if any) at its fitted weights and re-fit the
        initial states: the intervals say how well the data determine the physics
        given the network's term. Profiling thousands of weights would be neither cheap
        nor meaningful, since a few trajectories do not determine them.

        ``"wald"`` (default, free: computed from what ``fit`` recorded): the
        Gauss-Newton information of the full-trajectory residuals at the optimum, with
        each state's noise level estimated from the residuals (corrected for the
        degrees of freedom the fit used), gives the covariance of the parameters on the
        scale they are learned on (log for positive ones, logit for bounded ones); the
        interval is ``raw +- t_{dof} * std(raw)`` mapped back through the parameter's
        transform, so a positive parameter's interval never reaches zero and a
        bounded one's stays inside its bounds. ``params_std_`` holds the standard
        deviations (delta method). Where that record would cost ``fit`` more than the
        larger of 1 CPU s and 20 % of its training (many states and trajectories), it
        is deferred to the first call of this method or of ``predict(...,
        return_std=True)``, which compute it (``params_std_`` then appears too).

        ``"profile"``: profile-likelihood intervals, for small or strongly nonlinear
        problems where the quadratic approximation is poor: each parameter is moved
        away from its optimum, the other parameters and the initial states re-fitted at
        each value, until the weighted misfit has grown by the F(1, dof) quantile.
        It needs the training data again (``t``, ``y``: a fitted model does not keep
        them) and costs a few dozen ODE solves per parameter. Each value's re-fit starts
        from its neighbour's solution, and again from the linear prediction where its
        misfit jumps above the quadratic expectation (a re-fit caught in a worse local
        minimum). Warnings say where the profile and Wald intervals disagree by more
        than half a Wald half-width (trust the profile there), which sides the data do
        not bound (12 Wald half-widths without crossing: ``-inf``/``inf``, or 0 for a
        positive parameter) and when the profile has run ten times as long as the fit;
        ``max_seconds`` caps it (ends not reached take their Wald value, with a
        warning) and ``verbose=1`` on the estimator shows its progress.

        A parameter the fit pushed to the boundary of its constraint (a positive one
        below a millionth of its start, a bounded one within a millionth of its range
        from a bound) is flagged with a warning in both methods: its interval starts at
        the bound, and its other end is the profile's crossing (NaN by Wald, whose
        quadratic approximation means nothing there).

        ``functions`` adds derived quantities (a reproduction number ``beta / gamma``,
        a clearance): by the delta method for ``"wald"``, and for ``"profile"`` by
        re-fitting every parameter at each value of the quantity (held by a penalty).

        Parameters
        ----------
        confidence : float, default=0.95
            Confidence level, in (0, 1).
        method : {"wald", "profile"}, default="wald"
        t, y : array-like, optional
            The training data, in any layout ``fit`` accepts; required by
            ``method="profile"``.
        u : optional
            The training inputs of a model fitted with external inputs (unless they
            were a callable), for ``method="profile"``. Initial states given to ``fit``
            (``y0``) stay fixed in both methods.
        functions : dict of str to callable, optional
            Derived quantities ``name -> f(p)``, with ``p`` every parameter (learned and
            fixed) as a 0-d tensor, as ``known`` receives them; ``f`` returns a 0-d
            tensor, e.g. ``{"R0": lambda p: p["beta"] / p["gamma"]}``.
        max_seconds : float, optional
            For ``method="profile"``: wall-clock seconds after which the ends not yet
            profiled take their Wald value (with a warning). No cap by default.

        Returns
        -------
        intervals : dict of str to (float, float)
            ``(low, high)`` of each learned parameter, then of each function; a side
            the data do not bound is infinite (or the parameter's bound, or zero for a
            positive one).

        Raises
        ------
        ValueError
            If ``confidence`` or ``method`` is invalid, ``method="profile"`` is given no
            data, or the fit recorded no uncertainty estimate.

        Examples
        --------
        A decay ``y' = -k y`` with k = 1.5, seen through 5 % noise:

        >>> import numpy as np
        >>> from skneuralode import UniversalODERegressor
        >>> from skneuralode.datasets import add_noise
        >>> times = np.linspace(0, 2, 30)
        >>> y_noisy = add_noise(3.0 * np.exp(-1.5 * times)[:, None], 0.05)
        >>> def decay(t, y, p):
        ...     return -p["k"] * y
        >>> est = UniversalODERegressor(known=decay, params={"k": 1.0},
        ...                             param_constraints="positive",
        ...                             hidden_layer_sizes=(), random_state=0)
        >>> low, high = est.fit(times, y_noisy).param_intervals()["k"]
        >>> bool(low < 1.5 < high), bool(high - low < 0.2)
        (True, True)
        >>> low, high = est.param_intervals(method="profile", t=times, y=y_noisy)["k"]
        >>> bool(low < 1.5 < high)
        True
        """
        confidence = check_confidence(confidence)
        if method not in ("wald", "profile"):
            raise ValueError(f"method must be 'wald' or 'profile', got {method!r}.")
        model = self._fitted_model()
        parameters = model.field.physical_parameters
        if not parameters.names:
            raise ValueError("This model has no learned physical parameters (params).")
        complete_deferred_uncertainty(self)
        if not hasattr(self, "_physical_information_"):
            note = getattr(self, "_uncertainty_note", None)
            raise ValueError(
                "This fit recorded no uncertainty estimate"
                + (f" ({note})" if note else "")
                + ", so parameter intervals are not available."
            )
        quantities = check_functions(functions, parameters)
        if method == "wald":
            if t is not None or y is not None or u is not None or max_seconds is not None:
                raise ValueError("t, y, u and max_seconds are only used by method='profile'.")
            dof = float(self._residual_dof_[0])
            information = self._physical_information_
            return wald_intervals(parameters, information, confidence, dof, quantities)
        if t is None or y is None:
            raise ValueError(
                "method='profile' re-fits the model along each parameter and needs the "
                "training data: pass t=... and y=... as given to fit."
            )
        if max_seconds is not None and not (
            isinstance(max_seconds, Real) and float(max_seconds) > 0
        ):
            raise ValueError(f"max_seconds must be a positive number, got {max_seconds!r}.")
        from ._profile import profile_intervals

        return profile_intervals(self, t, y, confidence, u, max_seconds, quantities)

    def discover_equations(
        self,
        *,
        degree: int = 2,
        threshold: float = 0.05,
        feature_names: Sequence[str] | None = None,
        n_points: int = 200,
        precision: int = 3,
    ) -> list[str]:
        """Sparse regression (SINDy) of the network's term on the fitted trajectories.

        The fitted model is integrated over each training trajectory's time span, and the
        network's term there is described by a sparse combination of polynomials of the
        states the network sees (``pysindy``'s library). Candidate structures are, for
        each number of terms, the subset of library terms that best fits the network's
        term (searched exhaustively in libraries of up to 15 terms, by ``pysindy``'s
        backward elimination in larger ones). Sparsest first, each candidate's
        coefficients are then refitted so that the rebuilt model — the known part plus
        the discovered terms — reproduces the fitted trajectories, and the sparsest
        structure that does so to within ``threshold`` is kept (the parameter
        estimation after discovery of Rackauckas et al. 2020). The network is least
        accurate where the data are thinnest, so judging a structure by the dynamics it
        produces, rather than by how much of the network's output it matches, keeps
        the right terms with the right coefficients at realistic noise levels.

        The result is kept as ``discovery_``: its ``rates(y)`` evaluate the discovered
        term (to rebuild the model, e.g. for a forecast beyond the data),
        ``trajectory_error`` says how closely the rebuilt model follows the fitted one and
        ``unexplained`` how much of the network's term each equation leaves out.

        Parameters
        ----------
        degree : int, default=2
            Highest total degree of the polynomial library.
        threshold : float, default=0.05
            Largest root-mean-square distance between the rebuilt and the fitted
            trajectories, as a fraction of each state's spread along them (scale free).
            When no candidate gets that close, the closest one tried is kept.
        feature_names : list of str, optional
            Names of the states in the equations; "x0", "x1", ... by default.
        n_points : int, default=200
            Points sampled along each fitted trajectory.
        precision : int, default=3
            Decimals of the printed coefficients.

        Returns
        -------
        equations : list of str
            The discovered term of each state's right-hand side (``"0"`` for states
            without a network term).

        Raises
        ------
        ImportError
            If pysindy is not installed (``pip install 'skneuralode[discovery]'``).

        Examples
        --------
        >>> import numpy as np, torch
        >>> from skneuralode import UniversalODERegressor
        >>> from skneuralode.datasets import make_damped_oscillator
        >>> def spring(t, y, p):
        ...     return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)
        >>> t, y = make_damped_oscillator(n_times=40, t_end=6.0)
        >>> est = UniversalODERegressor(known=spring, fixed_params={"omega2": 4.0},
        ...                             network_outputs=[1], network_inputs=[1],
        ...                             hidden_layer_sizes=(16,), polish=False,
        ...                             random_state=0).fit(t, y)
        >>> est.discover_equations(feature_names=["x", "v"])  # doctest: +SKIP
        ['0', '-0.395 v']
        """
        from ._discovery import discover_network_term

        model = self._fitted_model()
        field: HybridField = model.field
        if not field.has_network:
            raise ValueError(
                "This model has no network (hidden_layer_sizes=()): nothing to discover."
            )
        if model.spec.n_inputs or model.spec.hidden_states:
            raise ValueError(
                "discover_equations describes a network of the observed states only; this "
                "model has external inputs or hidden states."
            )
        if self.augment_dim:
            raise ValueError(
                "discover_equations needs a network of the observed states only; this model "
                f"has augment_dim={self.augment_dim} hidden states."
            )
        grids = [np.linspace(start, end, n_points) for start, end in self._time_spans_]
        trajectories = self.predict(grids[0] if self.n_trajectories_ == 1 else np.stack(grids))
        states = np.reshape(trajectories, (self.n_trajectories_, n_points, self.n_features_in_))
        targets = [self.network_term(row) for row in states]
        self.discovery_ = discover_network_term(
            list(states),
            targets,
            grids,
            self.known_term,
            input_states=[int(i) for i in field.features.state_indices.tolist()],
            output_states=[int(i) for i in np.flatnonzero(field.output_mask.cpu().numpy())],
            degree=degree,
            threshold=threshold,
            feature_names=feature_names,
        )
        return self.discovery_.equations(precision)


def _shooting_as_rescue(stages: list[TrainingStage]) -> list[TrainingStage]:
    """Move an "auto" shooting stage after the polish, as its rescue
    (:class:`~skneuralode._training.rescue.RescueStage`); unchanged without a polish."""
    shooting = next((stage for stage in stages if isinstance(stage, ShootingStage)), None)
    polish = stages[-1]
    if shooting is None or polish is shooting:
        return stages
    kept = [stage for stage in stages if stage is not shooting]
    return [*kept, RescueStage(shooting, polish)]
