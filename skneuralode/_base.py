"""The estimator machinery both public regressors share: fit, predict, score, persistence."""

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
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._collocation import CollocationStage
from ._compile import compiled_field
from ._data import (
    TimeGrids,
    validate_sample_weight,
    validate_states,
    validate_times,
    validate_trajectories,
)
from ._device import device_for_prediction, resolve_device, resolve_dtype
from ._fit_warnings import warn_about_fit
from ._monitor import TrainingMonitor
from ._params import COMMON_CONSTRAINTS, check_callbacks, check_hidden_layer_sizes
from ._polish import PolishStage
from ._prediction import integrate
from ._problem import TrainingProblem, build_problem
from ._scoring import masked_r2_score
from ._shooting import ShootingStage
from ._solve import SolverSettings
from ._stage import StageContext, TrainingStage
from ._threads import limit_torch_threads_in_workers, seeded_global_rng
from ._training import TrainingReport, train
from ._vector_fields import ODEModel, StateScaling


class BaseODERegressor(RegressorMixin, BaseEstimator):
    """Shared machinery of :class:`NeuralODERegressor` and :class:`UniversalODERegressor`.

    Subclasses define ``__init__`` (storing their arguments) and :meth:`_build_field`.
    """

    _parameter_constraints: ClassVar[dict] = dict(COMMON_CONSTRAINTS)

    # ----------------------------------------------------------------- subclass hooks
    def _build_field(self, problem: TrainingProblem, scaling: StateScaling) -> nn.Module:
        """Return the scaled dynamics ``field(t, z)`` for a new fit."""
        raise NotImplementedError

    def _check_model_arguments(self) -> None:
        """Validate subclass-specific arguments (called at the start of ``fit``)."""

    def _after_fit(self) -> None:
        """Set subclass-specific fitted attributes."""

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
                    segment_length=self.segment_length,
                    batch_size=self.segment_batch_size,
                    continuity_weight=self.continuity_weight,
                    tol=self.tol,
                    n_iter_no_change=self.n_iter_no_change,
                    grow_segments=self.segment_growth,
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
        self._validate_params()
        check_hidden_layer_sizes(self.hidden_layer_sizes)
        callbacks = check_callbacks(self.callbacks)
        self._check_model_arguments()
        stages = self._stages()
        device = resolve_device(self.device)
        dtype = resolve_dtype(self.dtype, device)
        batch = validate_trajectories(t, y)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        continuing = self.warm_start and hasattr(self, "module_")
        if continuing and batch.n_states != self.n_features_in_:
            raise ValueError(
                f"y has {batch.n_states} states but the model being continued "
                f"(warm_start=True) was fitted on {self.n_features_in_}."
            )
        relative_noise = None if self.smoothing == "auto" else float(self.smoothing)
        previous_scaling = self._scaling_ if continuing else None
        problem = build_problem(
            batch,
            device=device,
            dtype=dtype,
            relative_noise=relative_noise,
            scaling=previous_scaling,
        )
        with seeded_global_rng(seed):
            model = self._continued_model(problem) if continuing else self._new_model(problem)
        model = model.to(device=device, dtype=dtype)
        generator = torch.Generator(device=device).manual_seed(seed)
        monitor = TrainingMonitor(self.verbose, callbacks)
        context = StageContext(self._solver_settings(), monitor, generator)
        with compiled_field(model, self.compile_field):
            report = train(
                problem,
                model,
                stages,
                context,
                model_is_trained=continuing,
                keep_best_on_interrupt=self.on_interrupt == "keep_best",
            )
        previous_state = dict(vars(self))
        try:
            self._set_fitted_state(model, problem, batch, report, monitor)
        except BaseException:  # never leave a half-updated estimator behind
            vars(self).clear()
            vars(self).update(previous_state)
            raise
        warn_about_fit(report, batch.states)
        return self

    def _new_model(self, problem: TrainingProblem) -> ODEModel:
        scaling = StateScaling(problem.scaling)
        field = self._build_field(problem, scaling)
        initial = problem.smoothed_states[:, 0].detach().cpu()
        augmented = torch.zeros(problem.n_traj, self.augment_dim, dtype=initial.dtype)
        return ODEModel(
            field,
            scaling,
            torch.cat([initial, augmented], dim=1),
            problem.times[:, 0].detach().cpu().clone(),  # a view would pickle all times
            problem.n_states,
        )

    def _continued_model(self, problem: TrainingProblem) -> ODEModel:
        model = copy.deepcopy(self.module_).cpu()
        if model.initial_states.shape[0] != problem.n_traj:
            initial = problem.smoothed_states[:, 0].detach().cpu().to(model.initial_states.dtype)
            augmented = initial.new_zeros(problem.n_traj, model.n_total_states - problem.n_states)
            model.initial_states = nn.Parameter(torch.cat([initial, augmented], dim=1))
        initial_times = problem.times[:, 0].detach().cpu().clone()  # a view pickles all times
        model.initial_times = initial_times.to(model.initial_states.dtype)
        return model

    def _set_fitted_state(
        self,
        model: ODEModel,
        problem: TrainingProblem,
        batch: Any,
        report: TrainingReport,
        monitor: TrainingMonitor,
    ) -> None:
        """Set every fitted attribute at once, after training succeeded."""
        initial_states = problem.scaling.unscale_states(
            model.initial_states.detach().cpu().numpy()[:, : problem.n_states]
        )
        single = batch.grids.layout.kind == "single"
        history = monitor.history
        if self.warm_start and hasattr(self, "history_"):
            history = [*self.history_, *history]
        self.module_ = model
        self._scaling_ = problem.scaling
        self._squeeze_states_ = batch.grids.layout.squeeze_states
        self.n_features_in_ = problem.n_states
        self.n_trajectories_ = problem.n_traj
        self.t0_ = float(batch.times[0, 0]) if single else batch.times[:, 0].copy()
        self.y0_ = initial_states[0] if single else initial_states
        self.n_iter_ = report.n_iter
        self.loss_ = report.trajectory_loss
        self.history_ = history
        self.stage_results_ = report.results
        self._after_fit()

    # ----------------------------------------------------------------------- predict
    def _fitted_model(self) -> ODEModel:
        check_is_fitted(self, "module_")
        device = device_for_prediction(self.device)
        if self.module_.initial_states.device != device:
            self.module_ = self.module_.to(device)
        return self.module_

    def _initial_conditions(
        self, grids: TimeGrids, y0: Any
    ) -> tuple[np.ndarray, np.ndarray, TimeGrids]:
        """Scaled initial states, their times and the (possibly replicated) grids."""
        model = self.module_
        if y0 is None:
            count = self.n_trajectories_
            scaled = model.initial_states.detach().cpu().numpy()
            starts = np.atleast_1d(self.t0_).astype(float)
        else:
            states = validate_states(y0, self.n_features_in_, name="y0")
            count = states.shape[0]
            scaled = np.concatenate(
                [self._scaling_.scale_states(states), np.zeros((count, self.augment_dim))], axis=1
            )
            starts = None
        if grids.layout.kind == "single" and count > 1:
            grids = TimeGrids(
                grids.sorted_times * count,
                grids.orders * count,
                replace(grids.layout, kind="shared", n_traj=count),
            )
        if grids.layout.n_traj != count:
            source = "y0" if y0 is not None else "the fitted initial states"
            raise ValueError(
                f"t describes {grids.layout.n_traj} trajectories but {source} give {count}; "
                "pass one initial state per trajectory as y0."
            )
        if starts is None:
            starts = np.array([times[0] for times in grids.sorted_times])
        layout = replace(grids.layout, squeeze_states=self._squeeze_states_)
        return scaled, starts, replace(grids, layout=layout)

    def _integrate(
        self, scaled: np.ndarray, starts: np.ndarray, grids: TimeGrids
    ) -> list[np.ndarray]:
        outputs = integrate(
            self._fitted_model(), scaled, starts, grids.sorted_times, self._solver_settings()
        )
        if not all(np.all(np.isfinite(output)) for output in outputs):
            warnings.warn(
                "Some predictions are not finite: the learned dynamics blow up or the solver "
                "failed before the requested times.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return outputs

    def predict(self, t: Any, y0: Any = None) -> Any:
        """Integrate the learned dynamics to the times ``t``.

        Parameters
        ----------
        t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
            Output times in any order.
        y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
            Initial states at the earliest time of each trajectory of ``t``. By default the
            fitted initial states ``y0_`` at the fitted initial times ``t0_`` are used.

        Returns
        -------
        y_pred : ndarray or list of ndarray
            Predicted states, in the caller's order and layout (see the user guide).
        """
        limit_torch_threads_in_workers()
        self._fitted_model()
        grids = validate_times(t)
        scaled, starts, grids = self._initial_conditions(grids, y0)
        return grids.restore_order(self._integrate(scaled, starts, grids))

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
        if batch.n_states != self.n_features_in_:
            raise ValueError(
                f"y has {batch.n_states} states but the model was fitted on {self.n_features_in_}."
            )
        grids = batch.grids
        single = grids.layout.kind == "single" and self.n_trajectories_ == 1
        n_samples = int(batch.lengths[0]) if single else batch.n_traj
        weights = validate_sample_weight(sample_weight, n_samples)
        y0 = None if single else batch.first_observed_states()
        scaled, starts, grids = self._initial_conditions(grids, y0)
        predicted = self._integrate(scaled, starts, grids)
        observed = [batch.states[row, :length] for row, length in enumerate(batch.lengths)]
        if single:
            weights = [weights[grids.orders[0]]]
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
        states = validate_states(y, self.n_features_in_, name="y")
        parameter = next(model.parameters())
        with torch.no_grad():
            rates = model.physical_rates(
                torch.as_tensor(states, dtype=parameter.dtype, device=parameter.device)
            )
        return rates.cpu().numpy().reshape(np.shape(y))

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
