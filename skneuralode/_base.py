"""The estimator machinery both public regressors share: fit, predict, score.

Data flows one way: ``fit`` validates the arrays (``_data``), builds the training
problem (``_problem``), computes the data-free model specification once (``_spec``),
builds the model from it and trains it (``_training``); ``predict``, ``score`` and
``vector_field`` read only the fitted module and its specification, never the live
constructor arguments, so ``set_params`` after a fit changes nothing until the next fit
(only ``device``, where to compute, is read at prediction time).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import Tags, check_random_state
from sklearn.utils._param_validation import StrOptions

from . import _defaults as defaults
from ._compile import compiled_field
from ._data import (
    TrajectoryBatch,
    validate_initial_states,
    validate_trajectories,
)
from ._device import resolve_device, resolve_dtype
from ._fit_warnings import warn_about_fit
from ._forcing import training_input_statistics
from ._forecasting import ForecastingMixin
from ._initial_time import prepend_initial_time
from ._inputs import ValidatedInputs, validate_inputs
from ._monitor import TrainingMonitor
from ._observation import (
    check_quantities_measured,
    model_hidden_states,
    n_model_states,
    observation_problem,
)
from ._params import COMMON_CONSTRAINTS, check_callbacks, check_hidden_layer_sizes
from ._problem import TrainingProblem, build_problem
from ._settings import SETTINGS_CLASSES, Polish, as_settings, check_settings, relative_noise
from ._solve import SolverSettings
from ._spec import FieldSpec, ModelSpec
from ._threads import limit_torch_threads_in_workers, seeded_global_rng
from ._training import StageContext, TrainingReport, TrainingStage, train
from ._training.polish import PolishStage
from ._uncertainty import RECORDED_ATTRIBUTES as UNCERTAINTY_ATTRIBUTES
from ._uncertainty import record_fit_uncertainty
from ._vector_fields import ODEModel


class BaseODERegressor(ForecastingMixin, RegressorMixin, BaseEstimator):
    """Shared machinery of :class:`NeuralODERegressor` and :class:`UniversalODERegressor`.

    Subclasses define ``__init__`` (storing their arguments) and :meth:`_field_spec`.
    """

    _parameter_constraints: ClassVar[dict] = {
        **COMMON_CONSTRAINTS,
        "input_interpolation": [StrOptions({"linear", "previous"})],
    }
    #: Fitted attributes that are not derived from the model (a file stores these).
    _recorded_attributes: ClassVar[frozenset[str]] = (
        frozenset({"n_iter_", "loss_", "history_", "stage_results_"}) | UNCERTAINTY_ATTRIBUTES
    )
    #: Fitted attributes derived from ``module_`` (a file rebuilds these).
    _derived_attributes: ClassVar[frozenset[str]] = frozenset(
        {"module_", "n_features_in_", "n_trajectories_", "t0_", "y0_", "hidden_states_"}
    )
    #: First guess of hidden states (see :func:`~skneuralode._problem.build_problem`).
    _hidden_guess: ClassVar[str] = "constant"
    #: Idle full-trajectory checks end shooting only below this misfit (see
    #: ShootingStage.checks_decide_below): always for a neural ODE.
    _shooting_checks_decide_below: ClassVar[float] = math.inf
    #: What ``Polish()`` means for this estimator: its iterations and method, and the
    #: methods it offers.
    _polish_max_iter: ClassVar[int] = defaults.POLISH_MAX_ITER
    _polish_method: ClassVar[str] = defaults.POLISH_METHOD
    _polish_methods: ClassVar[frozenset[str]] = frozenset({"lbfgs"})
    #: The kind of field this estimator fits.
    _field_spec_type: ClassVar[type[FieldSpec]] = FieldSpec
    #: Marks the classes the safe file format may instantiate.
    _skneuralode_estimator: ClassVar[bool] = True

    # ----------------------------------------------------------------- subclass hooks
    def _field_spec(self, problem: TrainingProblem, has_inputs: bool) -> FieldSpec:
        """The field of a new fit, described from the arguments and the training data
        (``has_inputs``: the fit has external inputs)."""
        raise NotImplementedError

    def _check_model_arguments(self) -> None:
        """Validate subclass-specific arguments (called at the start of ``fit``)."""

    def _observation(self) -> Callable[..., Any] | None:
        """The map from states to what ``y`` measured; None when ``y`` holds the states."""
        return None

    def _observation_parameters(self) -> dict[str, float]:
        """Starting values of the parameters ``observe`` reads (for a first guess of the
        initial states)."""
        return {}

    def _check_new_model(self, model: ODEModel, problem: TrainingProblem) -> None:
        """Check a freshly built model on the data (e.g. call user physics once)."""

    def _check_hidden_states(
        self, hidden: tuple[int, ...], known: np.ndarray | None, n_states: int
    ) -> None:
        """Refuse hidden states the model could not learn (naming them and why)."""

    def _after_fit(self) -> None:
        """Set subclass-specific attributes derived from ``module_`` (after a fit or a
        load)."""

    def _record_data_facts(self, batch: TrajectoryBatch) -> None:
        """Set subclass-specific fitted attributes that describe the training data."""

    def _after_training(
        self, problem: TrainingProblem, model: ODEModel, fit_seconds: float
    ) -> None:
        """Record what needs the training data besides the model: the covariance of the
        fit (``_uncertainty``), for ``return_std`` and parameter intervals, within the
        side budget of a training that took ``fit_seconds`` CPU s."""
        record_fit_uncertainty(self, problem, model, fit_seconds=fit_seconds)

    # ------------------------------------------------------------------ configuration
    def _solver_settings(self) -> SolverSettings:
        return as_settings("solver", self.solver)._solver_settings()

    def _stages(self) -> list[TrainingStage]:
        """The training stages the settings ask for, in order (see ``_settings``)."""
        collocation = as_settings("collocation", self.collocation)
        shooting = as_settings("shooting", self.shooting)
        polish = as_settings("polish", self.polish)
        stages: list[TrainingStage] = []
        if collocation is not None:
            stages.append(collocation._stage(self.max_iter))
        if shooting is not None:
            stages.append(shooting._stage(self.max_iter, self._shooting_checks_decide_below))
        if polish is not None:
            stages.append(self._polish_stage(polish))
        if not stages:
            raise ValueError(
                "At least one training stage must be on: collocation, shooting or polish."
            )
        return stages

    def _polish_stage(self, polish: Polish) -> TrainingStage:
        """The polish stage of ``polish`` (its None settings: this estimator's)."""
        max_iter, _ = polish._resolved(self._polish_max_iter, self._polish_method)
        return PolishStage(max_iter=max_iter)

    def set_params(self, **params: Any) -> BaseODERegressor:
        """Set the estimator's parameters, nested ones included.

        A nested setting of a stage or of the solver (``shooting__segment_length=10``,
        ``solver__rtol=1e-5``) also works while the argument holds a plain value: that
        value is first replaced by the settings object it stands for
        (``shooting="auto"`` by ``MultipleShooting()``, ``solver="dopri5"`` by
        ``Solver("dopri5")``), so a grid search can tune any stage setting from the
        defaults. A stage that is off (``collocation=False``) has no settings to set.

        Parameters
        ----------
        **params : dict
            Parameter names (``name`` or ``argument__setting``) and their values.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            If a name is not a parameter, or sets a setting of a stage that is off.
        """
        nested = {key for key in params if "__" in key}
        super().set_params(**{key: value for key, value in params.items() if key not in nested})
        for argument in {key.partition("__")[0] for key in nested} & SETTINGS_CLASSES.keys():
            value = getattr(self, argument)
            settings = as_settings(argument, value)
            if settings is None:
                cls = SETTINGS_CLASSES[argument].__name__
                raise ValueError(
                    f"{argument}={value!r} turns the stage off, so it has no settings to set; "
                    f"give {argument}={cls}(...) (or set {argument}=True) first."
                )
            setattr(self, argument, settings)
        return super().set_params(**{key: params[key] for key in nested})

    def _check_arguments(self) -> tuple:
        """Validate the constructor arguments (``fit`` and the file loader); returns the
        callbacks."""
        self._validate_params()
        check_settings(self)
        polish = self.polish
        if isinstance(polish, Polish) and polish.method not in {None, *self._polish_methods}:
            raise ValueError(
                f"polish.method={polish.method!r} is not available to {type(self).__name__}; "
                f"it polishes with {sorted(self._polish_methods)}."
            )
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        callbacks = check_callbacks(self.callbacks)
        self._check_model_arguments()
        return callbacks

    # --------------------------------------------------------------------------- fit
    def fit(
        self, t: Any, y: Any, y0: Any = None, u: Any = None, t0: Any = None
    ) -> BaseODERegressor:
        """Fit the dynamics to observed trajectories.

        Parameters
        ----------
        t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
            Observation times, not necessarily sorted or evenly spaced.
        y : array-like or list of arrays
            Shape (n_times,), (n_times, n_states) or (n_traj, n_times, n_states), matching ``t``.
            Observed states; ``NaN`` marks values that were not observed. A state that is
            ``NaN`` everywhere is a hidden state: never measured, learned through the
            dynamics (``hidden_states_`` lists them).
        y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
            Known initial states at each trajectory's first time: finite entries are held
            fixed (not learned), ``NaN`` entries are learned. By default every initial
            state is learned. Sliced by trajectory in model selection, like ``y``.
        u : array-like, list of arrays, ConstantInputs or callable, optional
            External inputs the dynamics depend on (a forcing, a control, a dose): sampled
            at the observation times in the layout of ``y`` with ``n_inputs`` in the last
            axis (read between samples as ``input_interpolation`` says), per-trajectory
            constants wrapped in :class:`~skneuralode.ConstantInputs`, or a callable
            ``u(t)`` on torch tensors (module level, so the model saves). The network
            sees ``[y, u(t)]``; ``known(t, y, p, u)`` gets them. A model fitted with
            inputs needs them to predict.
        t0 : float or array-like of shape (n_traj,), optional
            The time of the initial state when it is before the first observation (a
            dose given before the first sample): one for all trajectories or one each,
            at or before each trajectory's first time. ``y0`` and ``y0_`` are then the
            states at ``t0`` (``t0_``). Equivalent to an all-``NaN`` row of ``y`` at
            ``t0``; sampled inputs take their first sample there. Several trajectories
            are then handled as ragged lists (their predictions keep the caller's
            layout). Sliced by trajectory in model selection, like ``y``.

        Returns
        -------
        self
        """
        limit_torch_threads_in_workers()
        callbacks = self._check_arguments()
        stages = self._stages()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        t, y, u = prepend_initial_time(t, y, u, t0)
        batch = validate_trajectories(t, y)
        observe = self._observation()
        n_states = batch.n_states if observe is None else n_model_states(y0, batch.n_states)
        known = None if y0 is None else validate_initial_states(y0, batch.n_traj, n_states)
        if known is not None and np.isnan(known).all():
            known = None
        if observe is None:
            self._check_hidden_states(batch.hidden_states, known, batch.n_states)
        else:
            check_quantities_measured(batch.hidden_states)
        inputs = None if u is None else validate_inputs(u, batch.grids)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        previous = self.module_ if self.warm_start and hasattr(self, "module_") else None
        if previous is not None and (n_states, batch.n_states) != (
            previous.n_states,
            previous.spec.n_observed,
        ):
            given = f"{batch.n_states}" + ("" if observe is None else f" columns of {n_states}")
            fitted = f"{previous.n_states}"
            if previous.spec.observation_scaling is not None:
                fitted = f"{previous.spec.n_observed} columns of {fitted}"
            raise ValueError(
                f"y has {given} states but the model being continued (warm_start=True) was "
                f"fitted on {fitted}."
            )
        n_inputs = 0 if inputs is None else inputs.n_inputs
        if previous is not None and n_inputs != previous.spec.n_inputs:
            raise ValueError(
                f"u gives {n_inputs} input(s) but the model being continued "
                f"(warm_start=True) was fitted with {previous.spec.n_inputs}."
            )
        problem = build_problem(
            batch,
            device=device,
            dtype=dtype,
            relative_noise=relative_noise(as_settings("collocation", self.collocation)),
            scaling=None if previous is None else previous.spec.observed_scaling,
            known_initial_states=None if observe is not None else known,
            inputs=inputs,
            input_interpolation=self.input_interpolation,
            hidden_guess=self._hidden_guess,
        )
        if observe is not None:
            problem = observation_problem(
                problem,
                observe,
                self._observation_parameters(),
                known,
                n_states,
                None if previous is None else previous.scaling,
            )
        spec = self._model_spec(problem, batch, dtype, previous, known, inputs)
        spec.check()
        with seeded_global_rng(seed):
            model = self._new_model(spec, problem) if previous is None else None
        if previous is not None:
            model = self._continued_model(previous, spec, problem)
        model = model.to(device=device, dtype=dtype)
        generator = torch.Generator(device=device).manual_seed(seed)
        monitor = TrainingMonitor(self.verbose, callbacks)
        context = StageContext(spec.solver, monitor, generator)
        started = time.process_time()
        with compiled_field(model, as_settings("solver", self.solver).compile_field):
            report = train(
                problem,
                model,
                stages,
                context,
                model_is_trained=previous is not None,
                keep_best_on_interrupt=self.on_interrupt == "keep_best",
            )
        previous_state = dict(vars(self))
        try:
            self._after_training(problem, model, time.process_time() - started)
            self._set_fitted_state(model, batch, report, monitor)
        except BaseException:  # never leave a half-updated estimator behind
            vars(self).clear()
            vars(self).update(previous_state)
            raise
        has_network = getattr(model.field, "network", None) is not None
        warn_about_fit(report, batch.states, self.shooting, self.polish, has_network=has_network)
        return self

    def _model_spec(
        self,
        problem: TrainingProblem,
        batch: TrajectoryBatch,
        dtype: torch.dtype,
        previous: ODEModel | None,
        known_initial_states: np.ndarray | None,
        inputs: ValidatedInputs | None,
    ) -> ModelSpec:
        """The specification of the model this fit trains (a continued one's, updated)."""
        initial_times = batch.times[:, 0].copy()
        solver = self._solver_settings()
        layout = batch.grids.layout
        if previous is not None:
            field = self._field_spec(problem, inputs is not None)
            if field.architecture() != previous.spec.field.architecture() or (
                self.augment_dim != previous.spec.n_augmented
            ):
                raise ValueError(
                    "warm_start=True continues the fitted model, so its architecture "
                    "(hidden_layer_sizes, activation, feature_map, augment_dim and the "
                    "physics) must stay as fitted; set warm_start=False to fit a new one."
                )
            return replace(
                previous.spec,
                initial_times=initial_times,
                solver=solver,
                squeeze_states=layout.squeeze_states,
                one_trajectory=layout.kind == "single",
                known_initial_states=known_initial_states,
                hidden_states=model_hidden_states(batch.hidden_states, problem),
            )
        input_settings: dict[str, Any] = {}
        if inputs is not None:
            mean, std = training_input_statistics(inputs, batch.grids.sorted_times)
            input_settings = {
                "n_inputs": inputs.n_inputs,
                "input_interpolation": self.input_interpolation,
                "input_mean": mean,
                "input_std": std,
                "input_function": inputs.function,
            }
        return ModelSpec(
            field=self._field_spec(problem, inputs is not None),
            n_states=problem.n_states,
            n_augmented=int(self.augment_dim),
            initial_times=initial_times,
            scaling=problem.scaling,
            solver=solver,
            dtype=str(dtype).removeprefix("torch."),
            squeeze_states=layout.squeeze_states,
            one_trajectory=layout.kind == "single",
            known_initial_states=known_initial_states,
            hidden_states=model_hidden_states(batch.hidden_states, problem),
            observation_scaling=problem.observation_scaling,
            **input_settings,
        )

    def _describes(self, spec: ModelSpec) -> bool:
        """Whether the constructor arguments describe the architecture of ``spec`` (as a
        fit with them would build it); a loaded file must be consistent."""
        field = spec.field
        return (
            type(field) is self._field_spec_type
            and tuple(self.hidden_layer_sizes) == field.hidden_layer_sizes
            and self.activation == field.activation
            and self.feature_map is field.feature_map
            and self.augment_dim == spec.n_augmented
        )

    def _new_model(self, spec: ModelSpec, problem: TrainingProblem) -> ODEModel:
        model = ODEModel(spec)
        initial = problem.smoothed_states[:, 0].detach().cpu().to(torch.float64)
        augmented = initial.new_zeros(problem.n_traj, spec.n_augmented)
        with torch.no_grad():
            model.initial_states.copy_(torch.cat([initial, augmented], dim=1))
        self._check_new_model(model, problem)
        return model

    @staticmethod
    def _continued_model(previous: ODEModel, spec: ModelSpec, problem: TrainingProblem) -> ODEModel:
        model = copy.deepcopy(previous).cpu()
        if model.initial_states.shape[0] != problem.n_traj:
            initial = problem.smoothed_states[:, 0].detach().cpu().to(model.initial_states.dtype)
            augmented = initial.new_zeros(problem.n_traj, spec.n_augmented)
            model.initial_states = torch.nn.Parameter(torch.cat([initial, augmented], dim=1))
        model.hold_known_initial_states(spec)
        return model

    def _set_fitted_state(
        self,
        model: ODEModel,
        batch: TrajectoryBatch,
        report: TrainingReport,
        monitor: TrainingMonitor,
    ) -> None:
        """Set every fitted attribute at once, after training succeeded."""
        history = monitor.history
        if self.warm_start and hasattr(self, "history_"):
            history = [*self.history_, *history]
        self.module_ = model
        self.n_iter_ = report.n_iter
        self.loss_ = report.trajectory_loss
        self.history_ = history
        self.stage_results_ = report.results
        self._record_data_facts(batch)
        self._derive_fitted_attributes()

    def _derive_fitted_attributes(self) -> None:
        """The fitted attributes that follow from the model (after a fit or a load)."""
        model, spec = self.module_, self.module_.spec
        initial_states = spec.scaling.unscale_states(
            model.initial_values().detach().cpu().numpy().astype(np.float64)[:, : spec.n_states]
        )
        self.n_features_in_ = spec.n_states
        self.hidden_states_ = list(spec.hidden_states)
        self.n_trajectories_ = spec.n_trajectories
        self.t0_ = (
            float(spec.initial_times[0]) if spec.one_trajectory else spec.initial_times.copy()
        )
        self.y0_ = initial_states[0] if spec.one_trajectory else initial_states
        self._after_fit()

    # ------------------------------------------------------------------- persistence
    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # object's is the live __dict__: copy it
        state.pop("_deferred_uncertainty", None)  # the training data: not part of a model
        module = state.get("module_")
        if module is not None and next(module.parameters()).device.type != "cpu":
            state["module_"] = copy.deepcopy(module).cpu()
        return state

    # ------------------------------------- scikit-learn tags and the safe file format
    # (kept apart from the training machinery above; see _persistence.py and _threads.py)
    def __sklearn_tags__(self) -> Tags:
        """Tags for scikit-learn: ``X`` is time (1-D for one trajectory, 2-D for several)
        and ``y`` may hold several states."""
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        # scikit-learn's benchmark for regressors (R^2 > 0.5 on make_regression) asks for
        # y as a function of 10 features; with X[:, 0] as time that y is noise in time.
        tags.regressor_tags.poor_score = True
        try:
            tags.non_deterministic = resolve_device(self.device).type == "cuda"
        except ValueError:  # an invalid device is reported by fit, not by the tags
            tags.non_deterministic = False
        return tags

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save the estimator in skneuralode's safe file format (no pickle).

        The file is a zip archive holding the constructor arguments and fitted attributes
        as JSON and the torch weights as a tensor-only ``torch.save`` file. Callables
        (``known``, ``feature_map``, callbacks) are stored by import path; loading
        imports them only if the caller allows it. Load with :func:`skneuralode.load`.

        Parameters
        ----------
        path : str or path-like
            Where to write the file (conventionally ``*.skn``); replaced atomically.

        Raises
        ------
        ValueError
            If an argument holds something that cannot be stored without pickle, e.g. a
            ``known`` defined inside a function or as a lambda.

        See Also
        --------
        skneuralode.load : Read a file written by this method.
        joblib.dump : Pickle-based persistence (runs code on load: trusted files only).

        Examples
        --------
        >>> import numpy as np, skneuralode, tempfile, pathlib
        >>> t = np.linspace(0, 2, 20)
        >>> y = np.exp(-t)[:, None]
        >>> est = skneuralode.NeuralODERegressor(hidden_layer_sizes=(8,), max_iter=30,
        ...                                      random_state=0, device="cpu").fit(t, y)
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "decay.skn"
        >>> est.save(path)
        >>> loaded = skneuralode.load(path)
        >>> bool(np.array_equal(loaded.predict(t), est.predict(t)))
        True
        """
        from ._persistence import save_estimator

        save_estimator(self, path)
