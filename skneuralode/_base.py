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
import os
import warnings
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Tags, check_random_state
from sklearn.utils._param_validation import Hidden, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _defaults as defaults
from ._compile import compiled_field
from ._data import (
    TimeGrids,
    TrajectoryBatch,
    validate_sample_weight,
    validate_states,
    validate_times,
    validate_trajectories,
)
from ._device import device_for_prediction, resolve_device, resolve_dtype
from ._fit_warnings import warn_about_fit
from ._monitor import TrainingMonitor
from ._params import COMMON_CONSTRAINTS, check_callbacks, check_hidden_layer_sizes
from ._prediction import integrate
from ._problem import TrainingProblem, build_problem
from ._scoring import masked_r2_score
from ._solve import SolverSettings
from ._spec import FieldSpec, ModelSpec
from ._threads import limit_torch_threads_in_workers, seeded_global_rng
from ._training import StageContext, TrainingReport, TrainingStage, train
from ._training.collocation import CollocationStage
from ._training.polish import PolishStage
from ._training.shooting import ShootingStage
from ._uncertainty import RECORDED_ATTRIBUTES as UNCERTAINTY_ATTRIBUTES
from ._uncertainty import prediction_std, record_fit_uncertainty
from ._vector_fields import ODEModel


def with_renamed_settings(constraints: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Constraints under today's names, and the former names that still work."""
    renamed = {defaults.RENAMED.get(name, name): rule for name, rule in constraints.items()}
    for old, new in defaults.RENAMED.items():
        renamed[old] = [Hidden(StrOptions({defaults.DEPRECATED})), *renamed[new]]
    return renamed


class BaseODERegressor(RegressorMixin, BaseEstimator):
    """Shared machinery of :class:`NeuralODERegressor` and :class:`UniversalODERegressor`.

    Subclasses define ``__init__`` (storing their arguments) and :meth:`_field_spec`.
    """

    _parameter_constraints: ClassVar[dict] = with_renamed_settings(COMMON_CONSTRAINTS)
    #: Fitted attributes that are not derived from the model (a file stores these).
    _recorded_attributes: ClassVar[frozenset[str]] = (
        frozenset({"n_iter_", "loss_", "history_", "stage_results_"}) | UNCERTAINTY_ATTRIBUTES
    )
    #: Fitted attributes derived from ``module_`` (a file rebuilds these).
    _derived_attributes: ClassVar[frozenset[str]] = frozenset(
        {"module_", "n_features_in_", "n_trajectories_", "t0_", "y0_"}
    )
    #: The kind of field this estimator fits.
    _field_spec_type: ClassVar[type[FieldSpec]] = FieldSpec
    #: Marks the classes the safe file format may instantiate.
    _skneuralode_estimator: ClassVar[bool] = True

    # ----------------------------------------------------------------- subclass hooks
    def _field_spec(self, problem: TrainingProblem) -> FieldSpec:
        """The field of a new fit, described from the arguments and the training data."""
        raise NotImplementedError

    def _check_model_arguments(self) -> None:
        """Validate subclass-specific arguments (called at the start of ``fit``)."""

    def _check_new_model(self, model: ODEModel, problem: TrainingProblem) -> None:
        """Check a freshly built model on the data (e.g. call user physics once)."""

    def _after_fit(self) -> None:
        """Set subclass-specific attributes derived from ``module_`` (after a fit or a
        load)."""

    def _record_data_facts(self, batch: TrajectoryBatch) -> None:
        """Set subclass-specific fitted attributes that describe the training data."""

    def _after_training(self, problem: TrainingProblem, model: ODEModel) -> None:
        """Record what needs the training data besides the model: the covariance of the
        fit (``_uncertainty``), for ``return_std`` and parameter intervals."""
        record_fit_uncertainty(self, problem, model)

    # ------------------------------------------------------------------ configuration
    def _solver_settings(self) -> SolverSettings:
        return SolverSettings(
            method=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            max_num_steps=self.max_num_steps,
            step_size=self.step_size,
        )

    def _setting(self, name: str) -> Any:
        """A setting by its name, or by its former name (with a ``FutureWarning``) if the
        caller set that one."""
        for old, new in defaults.RENAMED.items():
            value = getattr(self, old, defaults.DEPRECATED)
            if new == name and not (isinstance(value, str) and value == defaults.DEPRECATED):
                warnings.warn(
                    f"{old} was renamed {new} (stage settings carry their stage's name); "
                    f"{old} will be removed in a future release.",
                    FutureWarning,
                    stacklevel=4,
                )
                return value
        return getattr(self, name)

    def _stages(self) -> list[TrainingStage]:
        stages: list[TrainingStage] = []
        if self.collocation:
            stages.append(
                CollocationStage(
                    max_iter=self.max_iter,
                    learning_rate=self.collocation_learning_rate,
                    tol=self.tol,
                    n_iter_no_change=self.n_iter_no_change,
                )
            )
        if self.shooting:
            stages.append(
                ShootingStage(
                    max_iter=self.max_iter,
                    learning_rate=self.shooting_learning_rate,
                    segment_length=self._setting("shooting_segment_length"),
                    batch_size=self._setting("shooting_batch_size"),
                    continuity_weight=self._setting("shooting_continuity_weight"),
                    tol=self.tol,
                    n_iter_no_change=self.n_iter_no_change,
                    grow_segments=self._setting("shooting_segment_growth"),
                    only_if_needed=self.shooting == "auto",
                )
            )
        if self.polish:
            stages.append(PolishStage(max_iter=self.polish_max_iter))
        if not stages:
            raise ValueError(
                "At least one training stage must be on: collocation, shooting or polish."
            )
        return stages

    def _check_arguments(self) -> tuple:
        """Validate the constructor arguments (``fit`` and the file loader); returns the
        callbacks."""
        self._validate_params()
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        callbacks = check_callbacks(self.callbacks)
        self._check_model_arguments()
        return callbacks

    # --------------------------------------------------------------------------- fit
    def fit(self, t: Any, y: Any) -> BaseODERegressor:
        """Fit the dynamics to observed trajectories.

        Parameters
        ----------
        t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
            Observation times, not necessarily sorted or evenly spaced.
        y : array-like or list of arrays
            Shape (n_times,), (n_times, n_states) or (n_traj, n_times, n_states), matching ``t``.
            Observed states; ``NaN`` marks values that were not observed.

        Returns
        -------
        self
        """
        limit_torch_threads_in_workers()
        callbacks = self._check_arguments()
        stages = self._stages()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        batch = validate_trajectories(t, y)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        previous = self.module_ if self.warm_start and hasattr(self, "module_") else None
        if previous is not None and batch.n_states != previous.n_states:
            raise ValueError(
                f"y has {batch.n_states} states but the model being continued "
                f"(warm_start=True) was fitted on {previous.n_states}."
            )
        relative_noise = None if self.smoothing == "auto" else float(self.smoothing)
        problem = build_problem(
            batch,
            device=device,
            dtype=dtype,
            relative_noise=relative_noise,
            scaling=None if previous is None else previous.scaling,
        )
        spec = self._model_spec(problem, batch, dtype, previous)
        spec.check()
        with seeded_global_rng(seed):
            model = self._new_model(spec, problem) if previous is None else None
        if previous is not None:
            model = self._continued_model(previous, spec, problem)
        model = model.to(device=device, dtype=dtype)
        generator = torch.Generator(device=device).manual_seed(seed)
        monitor = TrainingMonitor(self.verbose, callbacks)
        context = StageContext(spec.solver, monitor, generator)
        with compiled_field(model, self.compile_field):
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
            self._after_training(problem, model)
            self._set_fitted_state(model, batch, report, monitor)
        except BaseException:  # never leave a half-updated estimator behind
            vars(self).clear()
            vars(self).update(previous_state)
            raise
        warn_about_fit(report, batch.states)
        return self

    def _model_spec(
        self,
        problem: TrainingProblem,
        batch: TrajectoryBatch,
        dtype: torch.dtype,
        previous: ODEModel | None,
    ) -> ModelSpec:
        """The specification of the model this fit trains (a continued one's, updated)."""
        initial_times = batch.times[:, 0].copy()
        solver = self._solver_settings()
        layout = batch.grids.layout
        if previous is not None:
            field = self._field_spec(problem)
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
            )
        return ModelSpec(
            field=self._field_spec(problem),
            n_states=problem.n_states,
            n_augmented=int(self.augment_dim),
            initial_times=initial_times,
            scaling=problem.scaling,
            solver=solver,
            dtype=str(dtype).removeprefix("torch."),
            squeeze_states=layout.squeeze_states,
            one_trajectory=layout.kind == "single",
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
        model.spec = spec
        if model.initial_states.shape[0] != problem.n_traj:
            initial = problem.smoothed_states[:, 0].detach().cpu().to(model.initial_states.dtype)
            augmented = initial.new_zeros(problem.n_traj, spec.n_augmented)
            model.initial_states = torch.nn.Parameter(torch.cat([initial, augmented], dim=1))
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
            model.initial_states.detach().cpu().numpy().astype(np.float64)[:, : spec.n_states]
        )
        self.n_features_in_ = spec.n_states
        self.n_trajectories_ = spec.n_trajectories
        self.t0_ = (
            float(spec.initial_times[0]) if spec.one_trajectory else spec.initial_times.copy()
        )
        self.y0_ = initial_states[0] if spec.one_trajectory else initial_states
        self._after_fit()

    # ----------------------------------------------------------------------- predict
    def _fitted_model(self) -> ODEModel:
        check_is_fitted(self, "module_")
        device = device_for_prediction(self.device)
        if self.module_.initial_states.device != device:
            self.module_ = self.module_.to(device)
        return self.module_

    def _check_n_states(self, batch: TrajectoryBatch) -> None:
        n_states = self.module_.n_states
        if batch.n_states != n_states:
            raise ValueError(
                f"y has {batch.n_states} states but the model was fitted on {n_states}."
            )

    def _initial_conditions(
        self, grids: TimeGrids, y0: Any
    ) -> tuple[np.ndarray, np.ndarray, TimeGrids]:
        """Scaled initial states, their times and the (possibly replicated) grids."""
        model = self._fitted_model()
        spec = model.spec
        if y0 is None:
            scaled = model.initial_states.detach().cpu().numpy()
            starts = spec.initial_times
        else:
            states = validate_states(y0, spec.n_states, name="y0")
            scaled = self._scaled_initial_states(states)
            starts = None
        count = scaled.shape[0]
        if grids.layout.kind == "single" and count > 1:
            grids = grids.replicated(count)
        if grids.layout.n_traj != count:
            source = "y0" if y0 is not None else "the fitted initial states"
            raise ValueError(
                f"t describes {grids.layout.n_traj} trajectories but {source} give {count}; "
                "pass one initial state per trajectory as y0."
            )
        if starts is None:
            starts = np.array([times[0] for times in grids.sorted_times])
        layout = replace(grids.layout, squeeze_states=spec.squeeze_states)
        return scaled, starts, replace(grids, layout=layout)

    def _scaled_initial_states(self, states: np.ndarray) -> np.ndarray:
        """Physical initial states (n, n_states) as scaled states, augmented dims at zero."""
        spec = self.module_.spec
        scaled = spec.scaling.scale_states(states)
        return np.concatenate([scaled, np.zeros((len(states), spec.n_augmented))], axis=1)

    def _integrate(
        self, scaled: np.ndarray, starts: np.ndarray, sorted_times: list[np.ndarray]
    ) -> list[np.ndarray]:
        model = self._fitted_model()
        outputs = integrate(model, scaled, starts, sorted_times, model.spec.solver)
        if not all(np.all(np.isfinite(output)) for output in outputs):
            warnings.warn(
                "Some predictions are not finite: the learned dynamics blow up or the solver "
                "failed before the requested times.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return outputs

    def _forecast(
        self, batch: TrajectoryBatch, sorted_times: list[np.ndarray], return_std: bool = False
    ) -> Any:
        """Forecast the trajectories of ``batch`` at ``sorted_times`` (one ascending array
        per trajectory, none before its first time): the one rule for which initial state.

        One trajectory shown to a one-trajectory model is forecast from the fitted
        initial state; otherwise each trajectory from its own first observed state (a
        state not seen at the first time takes its first observed value). With
        ``return_std``, also the standard deviations (see :meth:`predict`).
        """
        model = self._fitted_model()
        self._check_n_states(batch)
        fitted = batch.n_traj == 1 and model.spec.n_trajectories == 1
        if fitted:
            scaled = model.initial_states.detach().cpu().numpy()
            starts = model.spec.initial_times
        else:
            scaled = self._scaled_initial_states(batch.first_observed_states())
            starts = batch.times[:, 0]
        mean = self._integrate(scaled, starts, sorted_times)
        if not return_std:
            return mean
        return mean, prediction_std(self, scaled, starts, sorted_times, fitted_initial=fitted)

    def predict(self, t: Any, y0: Any = None, return_std: bool = False) -> Any:
        """Integrate the learned dynamics to the times ``t``.

        The model is integrated with the solver settings of the fit (``solver``,
        ``rtol``, ``atol``, ``step_size``, ``max_num_steps``, ``adjoint``): changing them
        with ``set_params`` after a fit takes effect at the next fit.

        Parameters
        ----------
        t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
            Output times in any order.
        y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
            Initial states at the earliest time of each trajectory of ``t``. By default the
            fitted initial states ``y0_`` at the fitted initial times ``t0_`` are used.
        return_std : bool, default=False
            Also return the standard deviation of a new *observation* at each point: the
            model's uncertainty (delta method through the sensitivities of the
            prediction: physical parameters, the network's output layer under a
            linearised Laplace approximation, and the fitted initial state unless ``y0``
            is given) and the observation noise ``noise_std_``, added in variance. The
            model part alone is ``sqrt(std**2 - noise_std_**2)``.

        Returns
        -------
        y_pred : ndarray or list of ndarray
            Predicted states, in the caller's order and layout (see the user guide).
        y_std : ndarray or list of ndarray
            Only with ``return_std=True``: standard deviations, shaped like ``y_pred``.
        """
        if not isinstance(return_std, (bool, np.bool_)):
            raise ValueError(f"return_std must be True or False, got {return_std!r}.")
        limit_torch_threads_in_workers()
        self._fitted_model()
        grids = validate_times(t)
        scaled, starts, grids = self._initial_conditions(grids, y0)
        mean = grids.restore_order(self._integrate(scaled, starts, grids.sorted_times))
        if not return_std:
            return mean
        std = prediction_std(self, scaled, starts, grids.sorted_times, fitted_initial=y0 is None)
        return mean, grids.restore_order(std)

    def score(self, t: Any, y: Any, sample_weight: Any = None) -> float:
        """Coefficient of determination R^2 of the forecast, averaged over states.

        One trajectory (fitted and scored) is forecast from the fitted initial state;
        several trajectories are each forecast from their own first observed state.

        Parameters
        ----------
        t, y
            As in :meth:`fit`; ``NaN`` in ``y`` is ignored.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the samples along the first axis (time points of a single
            trajectory, trajectories otherwise).

        Returns
        -------
        score : float
        """
        limit_torch_threads_in_workers()
        self._fitted_model()
        batch = validate_trajectories(t, y)
        self._check_n_states(batch)
        single = batch.grids.layout.kind == "single" and self.module_.spec.n_trajectories == 1
        n_samples = int(batch.lengths[0]) if single else batch.n_traj
        weights = validate_sample_weight(sample_weight, n_samples)
        times = [batch.times[row, :length] for row, length in enumerate(batch.lengths)]
        predicted = self._forecast(batch, times)
        observed = [batch.states[row, :length] for row, length in enumerate(batch.lengths)]
        if single:
            weights = [weights[batch.grids.orders[0]]]
        return masked_r2_score(predicted, observed, list(weights))

    def vector_field(self, y: Any) -> np.ndarray:
        """The learned right-hand side ``dy/dt`` at given states.

        Parameters
        ----------
        y : array-like of shape (n_samples, n_states) or (n_states,)

        Returns
        -------
        dydt : ndarray of the same shape as ``y``
        """
        model = self._fitted_model()
        states = validate_states(y, model.n_states, name="y")
        return model.physical_rates(states).reshape(np.shape(y))

    # ------------------------------------------------------------------- persistence
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
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
