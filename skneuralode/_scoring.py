"""Scorers for model selection across trajectories.

scikit-learn's string scorers (``scoring="neg_mean_squared_error"``) call
``estimator.predict(X)`` with the held-out times only. For one trajectory split by time
that is a forecast from the fitted initial state and works as is. Held-out trajectories,
though, start from states the model has never seen; a scorer must forecast each of them
from its own first observed state, as :meth:`~skneuralode.NeuralODERegressor.score`
does. :func:`make_forecast_scorer` builds such scorers from any regression metric;
:func:`masked_r2_score` is the R^2 that ``score`` itself returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import (
    explained_variance_score,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    root_mean_squared_error,
)
from sklearn.utils.metadata_routing import MetadataRequest, _MetadataRequester, _routing_enabled

from ._data import validate_trajectories

Metric = Callable[[np.ndarray, np.ndarray], float]

# name -> (metric on one state's observed values, sign that makes greater better)
_METRICS: dict[str, tuple[Metric, float]] = {
    "r2": (r2_score, 1.0),
    "explained_variance": (explained_variance_score, 1.0),
    "neg_mean_squared_error": (mean_squared_error, -1.0),
    "neg_root_mean_squared_error": (root_mean_squared_error, -1.0),
    "neg_mean_absolute_error": (mean_absolute_error, -1.0),
}


class ForecastScorer(_MetadataRequester):
    """Scorer ``scorer(estimator, t, y)`` of forecasts from each trajectory's start.

    Made by :func:`make_forecast_scorer`; see there.
    """

    def __init__(self, metric: Metric, sign: float, name: str) -> None:
        self.metric = metric
        self.sign = sign
        self.name = name
        self._metadata_request = MetadataRequest(owner=self)

    def set_score_request(self, *, y0: Any = None, u: Any = None) -> ForecastScorer:
        """Ask scikit-learn's metadata routing for the held-out trajectories' ``y0``/``u``.

        With ``sklearn.set_config(enable_metadata_routing=True)``,
        ``scorer.set_score_request(y0=True)`` makes ``cross_validate``,
        ``GridSearchCV`` and friends pass the ``y0`` given in ``params=`` to this scorer,
        sliced to the held-out trajectories like ``t`` and ``y`` (ask the estimator for
        it too: ``est.set_fit_request(y0=True)``).

        Parameters
        ----------
        y0, u : bool, str or None, default=None
            True to receive the metadata of that name, False not to, a string to receive
            it under another name (an alias), None to raise if it is passed.

        Returns
        -------
        self : ForecastScorer
        """
        if not _routing_enabled():
            raise RuntimeError(
                "set_score_request needs scikit-learn's metadata routing: call "
                "sklearn.set_config(enable_metadata_routing=True) first."
            )
        for param, alias in (("y0", y0), ("u", u)):
            self._metadata_request.score.add_request(param=param, alias=alias)
        return self

    def _get_metadata_request(self) -> MetadataRequest:
        return self._metadata_request

    def __repr__(self) -> str:
        return f"make_forecast_scorer({self.name!r})"

    def __call__(self, estimator: Any, t: Any, y: Any, y0: Any = None, u: Any = None) -> float:
        """Score the fitted ``estimator`` on observations ``(t, y)``.

        Parameters
        ----------
        estimator : fitted NeuralODERegressor or UniversalODERegressor
        t, y
            Held-out observations in any layout ``fit`` accepts.
        y0, u : optional
            Known initial states and external inputs of those trajectories, as in
            ``fit`` (routed by scikit-learn's metadata routing, or passed directly).

        Returns
        -------
        score : float
            Greater is better (errors are negated).
        """
        batch = validate_trajectories(t, y)
        observed = [batch.states[row, :length] for row, length in enumerate(batch.lengths)]
        times = [batch.times[row, :length] for row, length in enumerate(batch.lengths)]
        predicted = estimator._forecast(batch, times, y0, u)
        stacked_observed = np.concatenate(observed)
        stacked_predicted = np.concatenate(predicted)
        values = []
        for state in range(stacked_observed.shape[1]):
            seen = ~np.isnan(stacked_observed[:, state])
            if seen.any():  # a hidden state has nothing to score
                values.append(
                    self.metric(stacked_observed[seen, state], stacked_predicted[seen, state])
                )
        return self.sign * float(np.mean(values))


def make_forecast_scorer(
    metric: str | Metric = "neg_mean_squared_error", *, greater_is_better: bool = True
) -> ForecastScorer:
    """A scorer that forecasts every trajectory from its first observed state.

    Use it as ``scoring=`` of ``cross_val_score``, ``GridSearchCV`` and friends when
    they split across trajectories (2-D ``t``): held-out trajectories need their own
    initial states, which the plain string scorers cannot pass to ``predict``. A single
    trajectory scored by a model fitted on one trajectory is forecast from the fitted
    initial state instead, as ``score`` does. The metric is computed per state on the
    observed (non-``NaN``) values and averaged over states.

    Parameters
    ----------
    metric : str or callable, default="neg_mean_squared_error"
        "r2", "explained_variance", "neg_mean_squared_error",
        "neg_root_mean_squared_error", "neg_mean_absolute_error", or a function
        ``metric(y_true, y_pred) -> float`` on 1-D arrays.
    greater_is_better : bool, default=True
        For a callable metric: False negates it (for errors), as in
        :func:`sklearn.metrics.make_scorer`.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, t, y) -> float``, greater is better.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.model_selection import KFold, cross_val_score
    >>> from skneuralode import NeuralODERegressor, make_forecast_scorer
    >>> t = np.tile(np.linspace(0, 2, 15), (4, 1))
    >>> y = np.exp(-t)[..., None] * np.array([1.0, 2.0, 3.0, 4.0])[:, None, None]
    >>> est = NeuralODERegressor(hidden_layer_sizes=(8,), max_iter=20, shooting=False,
    ...                          random_state=0, device="cpu")
    >>> scores = cross_val_score(est, t, y, cv=KFold(2),
    ...                          scoring=make_forecast_scorer("neg_mean_squared_error"))
    >>> scores.shape, bool(np.all(scores <= 0))
    ((2,), True)
    """
    if isinstance(metric, str):
        if metric not in _METRICS:
            raise ValueError(
                f"metric must be one of {sorted(_METRICS)} or a callable, got {metric!r}."
            )
        function, sign = _METRICS[metric]
        return ForecastScorer(function, sign, metric)
    if not callable(metric):
        raise TypeError(f"metric must be a string or a callable, got {type(metric).__name__}.")
    name = getattr(metric, "__name__", repr(metric))
    return ForecastScorer(metric, 1.0 if greater_is_better else -1.0, name)


def masked_r2_score(
    predicted: list[np.ndarray], observed: list[np.ndarray], weights: np.ndarray
) -> float:
    """R^2 over observed (non-NaN) entries, uniform average over the states observed
    (a hidden state, never observed, has no R^2 and does not count).

    ``weights`` holds one weight per trajectory (or per time point of a single one).
    """
    n_states = observed[0].shape[1]
    stacked_prediction = np.concatenate(predicted)
    stacked_observed = np.concatenate(observed)
    stacked_weight = np.concatenate(
        [np.broadcast_to(w, (len(o),)) for w, o in zip(weights, observed, strict=True)]
    )
    scores = []
    for state in range(n_states):
        seen = ~np.isnan(stacked_observed[:, state])
        values, fitted = stacked_observed[seen, state], stacked_prediction[seen, state]
        weight = stacked_weight[seen]
        if not np.any(weight > 0):
            continue
        mean = np.average(values, weights=weight)
        total = np.sum(weight * (values - mean) ** 2)
        residual = np.sum(weight * (values - fitted) ** 2)
        if total == 0:
            scores.append(1.0 if residual == 0 else 0.0)
        else:
            scores.append(1.0 - residual / total)
    if not scores:
        raise ValueError("y has no observation with a positive weight to score against.")
    return float(np.mean(scores))
