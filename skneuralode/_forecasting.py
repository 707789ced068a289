"""Prediction for the fitted estimators: ``predict``, ``score``, ``vector_field``.

Everything here reads only the fitted module and its specification (``module_`` and
``module_.spec``), never the live constructor arguments: the model is integrated with
the solver settings of its fit, and ``set_params`` after a fit changes nothing until the
next fit. Only ``device`` (where to compute) is read at prediction time. One rule says
from which initial state a trajectory is forecast (:meth:`ForecastingMixin._forecast`).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from ._data import (
    TimeGrids,
    TrajectoryBatch,
    validate_initial_states,
    validate_sample_weight,
    validate_states,
    validate_times,
    validate_trajectories,
)
from ._device import device_for_prediction
from ._inputs import validate_inputs
from ._prediction import integrate
from ._problem import input_signal
from ._scoring import masked_r2_score
from ._threads import limit_torch_threads_in_workers
from ._uncertainty import prediction_std
from ._vector_fields import ODEModel


class ForecastingMixin:
    """What a fitted estimator answers; mixed into :class:`~skneuralode._base.BaseODERegressor`."""

    module_: ODEModel
    device: str

    def _fitted_model(self) -> ODEModel:
        check_is_fitted(self, "module_")
        device = device_for_prediction(self.device)
        if self.module_.initial_states.device != device:
            self.module_ = self.module_.to(device)
        return self.module_

    def _check_n_states(self, batch: TrajectoryBatch) -> None:
        n_observed = self.module_.spec.n_observed
        if batch.n_states != n_observed:
            raise ValueError(
                f"y has {batch.n_states} states but the model was fitted on {n_observed}."
            )

    def _initial_conditions(
        self, grids: TimeGrids, y0: Any
    ) -> tuple[np.ndarray, np.ndarray, TimeGrids]:
        """Scaled initial states, their times and the (possibly replicated) grids."""
        model = self._fitted_model()
        spec = model.spec
        if y0 is None:
            scaled = model.initial_values().detach().cpu().numpy()
            starts = spec.initial_times
        else:
            states = validate_states(y0, spec.n_states, name="y0", allow_nan=True)
            unknown = sorted(set(np.flatnonzero(np.isnan(states).any(axis=0)).tolist()))
            if set(unknown) - set(spec.hidden_states):
                raise ValueError(
                    "y0 must be finite: it contains NaN or inf (NaN is accepted only for "
                    f"hidden states, {list(spec.hidden_states)}, which start at their mean "
                    "fitted initial value)."
                )
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

    def _check_known_initial_states_given(self, first: np.ndarray) -> None:
        """Refuse to forecast new trajectories from a mean of known initial states.

        A state whose initial value was given to ``fit`` (``y0``) with values that
        differ between trajectories (doses, inocula) says nothing about a new
        trajectory's value, and the mean fitted one would be a silent guess: the caller
        must give it. Where ``fit`` had one value for all trajectories (``X(0) = 0``),
        that value is used.
        """
        known = self.module_.spec.known_initial_states
        if known is None:
            return
        unseen = np.isnan(first).any(axis=0)
        given = [column[np.isfinite(column)] for column in known.T]
        varied = [values.size > 1 and values.max() > values.min() for values in given]
        missing = np.flatnonzero(unseen & np.array(varied))
        if missing.size:
            raise ValueError(
                f"y0: this model was fitted with known initial values of state(s) "
                f"{missing.tolist()} that differ between trajectories (fit's y0), which y "
                "does not show; forecasting from y alone would guess them: pass the "
                "trajectories' y0 (NaN where unknown). In model selection, route it with "
                "scikit-learn's metadata routing: "
                "sklearn.set_config(enable_metadata_routing=True), "
                "est.set_fit_request(y0=True).set_score_request(y0=True) (and "
                "scorer.set_score_request(y0=True) for make_forecast_scorer), then "
                "cross_validate(est, t, y, params={'y0': y0}, ...)."
            )

    def _scaled_initial_states(self, states: np.ndarray) -> np.ndarray:
        """Physical initial states (n, n_states) as scaled states, augmented dims at zero.

        An unknown (``NaN``) entry takes the mean fitted initial value of its state: a
        hidden state that nobody can measure starts where the training trajectories did.
        """
        model = self.module_
        spec = model.spec
        fitted = model.initial_values().detach().cpu().numpy()[:, : spec.n_states].mean(axis=0)
        scaled = spec.scaling.scale_states(states)
        scaled = np.where(np.isnan(scaled), fitted, scaled)
        return np.concatenate([scaled, np.zeros((len(states), spec.n_augmented))], axis=1)

    def _input_signal(self, u: Any, grids: TimeGrids) -> torch.nn.Module | None:
        """The inputs of the trajectories of ``grids`` as a signal (None for a model
        without inputs); a model fitted with a callable ``u`` uses it when ``u`` is None."""
        model = self.module_
        spec = model.spec
        if not spec.n_inputs:
            if u is not None:
                raise ValueError(
                    "u: this model was fitted without external inputs, so it takes none; "
                    "fit it with u to model forced dynamics."
                )
            return None
        if u is None:
            u = spec.input_function
        if u is None:
            raise ValueError(
                f"This model was fitted with {spec.n_inputs} external input(s) u; pass the "
                "inputs of the trajectories to forecast as u (sampled at t like y, "
                "ConstantInputs, or a callable u(t))."
            )
        validated = validate_inputs(u, grids, n_inputs=spec.n_inputs)
        like = model.initial_states
        return input_signal(
            validated, spec.scaling, spec.input_interpolation, like.dtype, like.device
        )

    def _integrate(
        self,
        scaled: np.ndarray,
        starts: np.ndarray,
        sorted_times: list[np.ndarray],
        signal: torch.nn.Module | None = None,
        *,
        observed: bool = True,
    ) -> list[np.ndarray]:
        """What ``y`` measures (``observed``) or the states, at ``sorted_times``."""
        model = self._fitted_model()
        outputs = integrate(
            model, scaled, starts, sorted_times, model.spec.solver, signal, observed=observed
        )
        if not all(np.all(np.isfinite(output)) for output in outputs):
            warnings.warn(
                "Some predictions are not finite: the learned dynamics blow up or the solver "
                "failed before the requested times.",
                ConvergenceWarning,
                stacklevel=3,
            )
        return outputs

    def _forecast(
        self,
        batch: TrajectoryBatch,
        sorted_times: list[np.ndarray],
        y0: Any = None,
        u: Any = None,
        return_std: bool = False,
    ) -> Any:
        """Forecast the trajectories of ``batch`` at ``sorted_times`` (one ascending array
        per trajectory, none before its first time): the one rule for which initial state.

        One trajectory shown to a one-trajectory model is forecast from the fitted
        initial state; otherwise each trajectory from its own first observed state (a
        state not seen at the first time takes its first observed value, a state never
        seen the mean fitted initial value; when ``y`` observes a function of the states,
        every state is unseen). Finite entries of ``y0`` (known initial states, as in
        :meth:`fit`) take precedence. With ``return_std``, also the
        standard deviations (see :meth:`predict`).
        """
        model = self._fitted_model()
        self._check_n_states(batch)
        known = None
        if y0 is not None:
            known = validate_initial_states(y0, batch.n_traj, model.n_states)
        fitted = batch.n_traj == 1 and model.spec.n_trajectories == 1
        if fitted:
            scaled = model.initial_values().detach().cpu().numpy()
            starts = model.spec.initial_times
            if known is not None:
                n_states = model.n_states
                given = model.scaling.scale_states(known)
                scaled = scaled.copy()
                scaled[:, :n_states] = np.where(np.isnan(given), scaled[:, :n_states], given)
        else:
            first = batch.first_observed_states()
            if model.spec.observation_scaling is not None:
                first = np.full((batch.n_traj, model.n_states), np.nan)
            if known is not None:
                first = np.where(np.isnan(known), first, known)
            self._check_known_initial_states_given(first)
            scaled = self._scaled_initial_states(first)
            starts = batch.times[:, 0]
        signal = self._input_signal(u, batch.grids)
        mean = self._integrate(scaled, starts, sorted_times, signal)
        if not return_std:
            return mean
        std = prediction_std(
            self, scaled, starts, sorted_times, fitted_initial=fitted, signal=signal
        )
        return mean, std

    def predict(self, t: Any, y0: Any = None, u: Any = None, return_std: bool = False) -> Any:
        """Integrate the learned dynamics to the times ``t``.

        The model is integrated with the solver settings of the fit (``solver``, a
        method name or a :class:`~skneuralode.Solver` with its tolerances, step size,
        step budget and adjoint): changing them with ``set_params`` after a fit takes
        effect at the next fit.

        Parameters
        ----------
        t : array-like of shape (n_times,) or (n_traj, n_times), or list of 1-D arrays
            Output times in any order.
        y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
            Initial states at the earliest time of each trajectory of ``t``. By default the
            fitted initial states ``y0_`` at the fitted initial times ``t0_`` are used.
            ``NaN`` entries (hidden states, or any state of a model with ``observe``)
            take the mean fitted initial value.
        u : array-like, list of arrays, ConstantInputs or callable, optional
            External inputs of the trajectories of ``t``, as in :meth:`fit`; required
            for a model fitted with inputs (unless they were a callable).
        return_std : bool, default=False
            Also return the standard deviation of a new *observation* at each point: the
            model's uncertainty (delta method through the sensitivities of the
            prediction: physical parameters, the network's output layer under a
            linearised Laplace approximation, and the fitted initial state unless ``y0``
            is given) and the observation noise ``noise_std_``, added in variance. The
            model part alone is ``sqrt(std**2 - noise_std_**2)``. Initial states given
            in :meth:`fit` (``y0``) count as exact. On many trajectories (above 2,000
            trajectory-direction pairs: about 15 of the default network) or when the
            output layer's entries times the time points exceed 100,000 (a wide network
            or many states on a long series) the output layer is held fixed like the
            hidden layers: a network's part of the spread is then left out, and from a
            given ``y0`` only the physical parameters' part remains. A model with a
            network fitted to more than 500 observation times records no estimate
            (``return_std`` then raises a ValueError that says why). ``fit`` spends on
            the estimate at most the larger of 1 CPU s and 20 % of its training (its
            cost grows as observed states x trajectories x (states + followed
            parameters)^2: 200 states on 5 trajectories, about 2 s); a larger one is
            deferred to the first ``return_std`` or ``param_intervals``, which compute it
            then (a saved or pickled model without it must be fitted again).

        Returns
        -------
        y_pred : ndarray or list of ndarray
            Predicted states, in the caller's order and layout (see the user guide); for
            a model that observes a function of its states (``observe``), what ``y``
            measured (the states: ``predict_states``).
        y_std : ndarray or list of ndarray
            Only with ``return_std=True``: standard deviations, shaped like ``y_pred``.
        """
        if not isinstance(return_std, (bool, np.bool_)):
            raise ValueError(f"return_std must be True or False, got {return_std!r}.")
        limit_torch_threads_in_workers()
        self._fitted_model()
        grids = validate_times(t)
        scaled, starts, grids = self._initial_conditions(grids, y0)
        signal = self._input_signal(u, grids)
        mean = grids.restore_order(self._integrate(scaled, starts, grids.sorted_times, signal))
        if not return_std:
            return mean
        std = prediction_std(
            self, scaled, starts, grids.sorted_times, fitted_initial=y0 is None, signal=signal
        )
        return mean, grids.restore_order(std)

    def _predict_states(self, t: Any, y0: Any, u: Any) -> Any:
        """The states (not what ``y`` measured) at ``t``, as :meth:`predict` forecasts."""
        limit_torch_threads_in_workers()
        model = self._fitted_model()
        grids = validate_times(t)
        scaled, starts, grids = self._initial_conditions(grids, y0)
        if model.n_states > 1:
            grids = replace(grids, layout=replace(grids.layout, squeeze_states=False))
        signal = self._input_signal(u, grids)
        states = self._integrate(scaled, starts, grids.sorted_times, signal, observed=False)
        return grids.restore_order(states)

    def score(
        self, t: Any, y: Any, sample_weight: Any = None, *, y0: Any = None, u: Any = None
    ) -> float:
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
        y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
            Known initial states (``NaN`` where unknown), as in :meth:`fit`.
        u : array-like, list of arrays, ConstantInputs or callable, optional
            External inputs, as in :meth:`fit`.

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
        predicted = self._forecast(batch, times, y0, u)
        observed = [batch.states[row, :length] for row, length in enumerate(batch.lengths)]
        if single:
            weights = [weights[batch.grids.orders[0]]]
        return masked_r2_score(predicted, observed, list(weights))

    def vector_field(self, y: Any, u: Any = None) -> np.ndarray:
        """The learned right-hand side ``dy/dt`` at given states.

        Parameters
        ----------
        y : array-like of shape (n_samples, n_states) or (n_states,)
        u : array-like of shape (n_samples, n_inputs) or (n_inputs,), optional
            External inputs at those states (a model fitted with inputs needs them).

        Returns
        -------
        dydt : ndarray of the same shape as ``y``
        """
        model = self._fitted_model()
        states = validate_states(y, model.n_states, name="y")
        inputs = self._inputs_at_states(u, states.shape[0])
        return model.physical_rates(states, inputs=inputs).reshape(np.shape(y))

    def _inputs_at_states(self, u: Any, n_samples: int) -> np.ndarray | None:
        """Inputs ``(n_samples, n_inputs)`` that go with states, checked."""
        n_inputs = self.module_.spec.n_inputs
        if not n_inputs:
            if u is not None:
                raise ValueError("u: this model was fitted without external inputs.")
            return None
        if u is None:
            raise ValueError(f"This model was fitted with {n_inputs} input(s); pass u.")
        inputs = validate_states(u, n_inputs, name="u")
        if inputs.shape[0] not in (1, n_samples):
            raise ValueError(f"u must have one row of inputs, or one per state ({n_samples}).")
        return np.broadcast_to(inputs, (n_samples, n_inputs))
