"""Plots of fitted estimators: data vs fit, phase portrait, training curve, vector field.

Every function draws on matplotlib axes (new ones unless given) and returns them, so the
figure can be adjusted and saved by the caller. matplotlib is an optional dependency:
``pip install 'skneuralode[plot]'``.

Examples
--------
>>> import matplotlib
>>> matplotlib.use("Agg")
>>> import numpy as np
>>> from skneuralode import NeuralODERegressor
>>> from skneuralode.plotting import plot_fit, plot_training_curve
>>> t = np.linspace(0, 2, 20)
>>> y = np.exp(-t)[:, None] * np.array([1.0, -1.0])
>>> est = NeuralODERegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0,
...                          device="cpu").fit(t, y)
>>> axes = plot_fit(est, t, y)
>>> len(axes)
2
>>> plot_training_curve(est).get_yscale()
'log'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._data import validate_trajectories

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._base import BaseODERegressor

__all__ = [
    "plot_fit",
    "plot_parameter_intervals",
    "plot_phase_portrait",
    "plot_training_curve",
    "plot_vector_field",
]

_INSTALL_HINT = (
    "Plots need matplotlib: pip install 'skneuralode[plot]' (or pip install matplotlib)."
)


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return plt


def _state_labels(n_states: int, state_names: Sequence[str] | None) -> list[str]:
    if state_names is None:
        return [f"y{state}" for state in range(n_states)]
    names = [str(name) for name in state_names]
    if len(names) != n_states:
        raise ValueError(f"state_names has {len(names)} names but the model has {n_states} states.")
    return names


def _forecasts(
    estimator: BaseODERegressor,
    t: Any,
    y: Any,
    n_points: int,
    return_std: bool = False,
    y0: Any = None,
    u: Any = None,
) -> tuple[list[np.ndarray], ...]:
    """Observed times and states per trajectory, and the model's forecast of each on a
    fine grid over its span: from the fitted initial state when one trajectory is shown
    for a one-trajectory model (like ``score``), else from each one's first observed state
    (with ``return_std``, also the forecasts' standard deviations); finite entries of
    ``y0`` (known initial states) take precedence, as in ``score``; ``u`` are the
    trajectories' inputs, as in ``score`` (sampled inputs are read between samples as
    the fit read them).
    """
    check_is_fitted(estimator, "module_")
    batch = validate_trajectories(t, y)
    times = [batch.times[row, :length] for row, length in enumerate(batch.lengths)]
    states = [batch.states[row, :length] for row, length in enumerate(batch.lengths)]
    grids = [np.linspace(row[0], row[-1], n_points) for row in times]
    if return_std:
        return times, states, grids, *estimator._forecast(batch, grids, y0, u, return_std=True)
    return times, states, grids, estimator._forecast(batch, grids, y0, u)


def _has_band(estimator: BaseODERegressor) -> bool:
    """Whether the fit recorded what ``predict(..., return_std=True)`` needs."""
    return hasattr(estimator, "_theta_prior_variance_")


def plot_fit(
    estimator: BaseODERegressor,
    t: Any,
    y: Any,
    *,
    axes: Sequence[Axes] | None = None,
    state_names: Sequence[str] | None = None,
    n_points: int = 200,
    band: bool | None = None,
    confidence: float = 0.95,
    y0: Any = None,
    u: Any = None,
) -> np.ndarray:
    """Data (markers) and the fitted model (lines), one panel per state.

    A single trajectory of a model fitted on one trajectory is forecast from the fitted
    initial state; otherwise each trajectory is forecast from its first observed state
    (as :meth:`~skneuralode.NeuralODERegressor.score` does). ``NaN`` values are not drawn.
    When the fit recorded its uncertainty, the prediction band of a new observation
    (``predict(..., return_std=True)``: model and noise) is shaded around each curve.

    Parameters
    ----------
    estimator : fitted NeuralODERegressor or UniversalODERegressor
    t, y
        Observations, in any layout ``fit`` accepts.
    axes : sequence of matplotlib Axes, optional
        One per state; by default a new figure with one row per state.
    state_names : sequence of str, optional
        Panel labels; "y0", "y1", ... by default.
    n_points : int, default=200
        Points of the fitted curve per trajectory.
    band : bool or None, default=None
        Shade the prediction band; None shades it when the estimator has one.
    confidence : float, default=0.95
        Coverage of the band (normal quantile of ``return_std``'s standard deviation).
    y0 : array-like of shape (n_states,) or (n_traj, n_states), optional
        Known initial states to forecast from (``NaN`` where unknown), as in ``score``.
    u : array-like, list of arrays, ConstantInputs or callable, optional
        External inputs of the trajectories shown, as in ``fit``: required for a model
        fitted with sampled inputs (a model fitted with a callable ``u(t)`` uses it when
        none is given).

    Returns
    -------
    axes : ndarray of matplotlib Axes
        One per column of ``y`` (the observed quantities of a model with ``observe``).
    """
    plt = _pyplot()
    draw_band = _has_band(estimator) if band is None else bool(band)
    if draw_band:
        times, states, grids, fitted, spreads = _forecasts(estimator, t, y, n_points, True, y0, u)
        quantile = _normal_quantile(confidence)
    else:
        times, states, grids, fitted = _forecasts(estimator, t, y, n_points, y0=y0, u=u)
        spreads = [None] * len(fitted)
    n_states = estimator.module_.spec.n_observed  # what y holds
    labels = _state_labels(n_states, state_names)
    if axes is None:
        _, axes = plt.subplots(
            n_states,
            1,
            sharex=True,
            figsize=(7, 2.2 * n_states + 0.6),
            squeeze=False,
            layout="constrained",
        )
        axes = axes[:, 0]
    axes = np.asarray(axes, dtype=object).ravel()
    if axes.size != n_states:
        raise ValueError(f"axes must hold one Axes per state ({n_states}), got {axes.size}.")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (observed_t, observed_y, grid, curve, spread) in enumerate(
        zip(times, states, grids, fitted, spreads, strict=True)
    ):
        colour = colours[row % len(colours)]
        for state, ax in enumerate(axes):
            if spread is not None:
                half = quantile * spread[:, state]
                low, high = curve[:, state] - half, curve[:, state] + half
                ax.fill_between(grid, low, high, color=colour, alpha=0.2, linewidth=0)
            ax.plot(observed_t, observed_y[:, state], "o", color=colour, markersize=3, alpha=0.6)
            ax.plot(grid, curve[:, state], "-", color=colour, linewidth=1.5)
    for ax, label in zip(axes, labels, strict=True):
        ax.set_ylabel(label)
    axes[0].plot([], [], "ko", markersize=3, label="data")
    axes[0].plot([], [], "k-", label="fit")
    if draw_band:
        axes[0].fill_between([], [], [], color="k", alpha=0.2, label=f"{confidence:.0%} band")
    axes[0].legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("t")
    return axes


def _normal_quantile(confidence: float) -> float:
    from scipy.stats import norm

    from ._uncertainty import check_confidence

    return float(norm.ppf(0.5 + check_confidence(confidence) / 2.0))


def plot_parameter_intervals(
    estimator: Any,
    *,
    confidence: float = 0.95,
    method: str = "wald",
    t: Any = None,
    y: Any = None,
    truth: Mapping[str, float] | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Confidence intervals of a universal ODE's physical parameters, one row each.

    Each interval is drawn relative to its estimate (the estimate at 1), so parameters
    of any units share one axis; the label gives the values.

    Parameters
    ----------
    estimator : fitted UniversalODERegressor
        With learned ``params``.
    confidence : float, default=0.95
    method : {"wald", "profile"}, default="wald"
        As in :meth:`~skneuralode.UniversalODERegressor.param_intervals` (``"profile"``
        needs the training data ``t``, ``y``).
    t, y : array-like, optional
        The training data, for ``method="profile"``.
    truth : mapping of str to float, optional
        Known true values, marked on each row (e.g. for simulated data).
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import numpy as np
    >>> from skneuralode import UniversalODERegressor
    >>> from skneuralode.plotting import plot_parameter_intervals
    >>> def decay(t, y, p):
    ...     return -p["k"] * y
    >>> t = np.linspace(0, 2, 30)
    >>> y = 3.0 * np.exp(-1.5 * t)[:, None] * (1 + 0.02 * np.sin(7 * t))[:, None]
    >>> est = UniversalODERegressor(known=decay, params={"k": 1.0}, hidden_layer_sizes=(),
    ...                             random_state=0).fit(t, y)
    >>> plot_parameter_intervals(est, truth={"k": 1.5}).get_xlabel()
    'value / estimate'
    """
    plt = _pyplot()
    check_is_fitted(estimator, "module_")
    intervals = estimator.param_intervals(confidence, method, t=t, y=y)
    estimates = estimator.params_
    names = list(intervals)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.6 * len(names) + 1.2), layout="constrained")
    rows = np.arange(len(names))[::-1]
    for row, name in zip(rows, names, strict=True):
        estimate = estimates[name]
        low, high = intervals[name]
        scale = abs(estimate) if estimate != 0 else 1.0
        relative = (low / scale, estimate / scale, high / scale)
        ax.plot([relative[0], relative[2]], [row, row], "-", color="C0", linewidth=2.5)
        ax.plot(relative[1], row, "o", color="C0")
        if truth is not None and name in truth:
            ax.plot(truth[name] / scale, row, "x", color="C3", markersize=8)
    labels = [
        f"{name} = {estimates[name]:.4g}  [{intervals[name][0]:.4g}, {intervals[name][1]:.4g}]"
        for name in names
    ]
    ax.set_yticks(rows, labels)
    ax.axvline(1.0, color="0.7", linewidth=0.8, linestyle=":")
    ax.set_xlabel("value / estimate")
    ax.set_title(f"{confidence:.0%} intervals ({method})", fontsize=10)
    if truth is not None:
        ax.plot([], [], "x", color="C3", label="truth")
        ax.legend(loc="best", fontsize=8)
    return ax


def plot_phase_portrait(
    estimator: BaseODERegressor,
    t: Any,
    y: Any,
    *,
    states: tuple[int, int] = (0, 1),
    field: bool | None = None,
    ax: Axes | None = None,
    state_names: Sequence[str] | None = None,
    n_points: int = 400,
) -> Axes:
    """Trajectories in the plane of two states: data, fitted model and learned field.

    Parameters
    ----------
    estimator : fitted NeuralODERegressor or UniversalODERegressor
        With at least two states.
    t, y
        Observations, in any layout ``fit`` accepts.
    states : (int, int), default=(0, 1)
        The states on the horizontal and vertical axes.
    field : bool or None, default=None
        Draw the learned vector field behind the trajectories (see
        :func:`plot_vector_field`); None draws it for two-state models only, where the
        plane shows the whole field.
    ax : matplotlib Axes, optional
    state_names : sequence of str, optional
    n_points : int, default=400
        Points of each fitted trajectory.

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    n_states = estimator.n_features_in_
    if n_states < 2:
        raise ValueError("A phase portrait needs a model with at least two states.")
    first, second = _check_state_pair(states, n_states)
    labels = _state_labels(n_states, state_names)
    _, observed, _, fitted = _forecasts(estimator, t, y, n_points)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 5), layout="constrained")
    if field if field is not None else n_states == 2:
        everything = np.concatenate([*observed, *fitted])
        plot_vector_field(
            estimator,
            states=(first, second),
            bounds=_padded_bounds(everything[:, [first, second]]),
            ax=ax,
            colorbar=False,
            alpha=0.45,
        )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, (data, curve) in enumerate(zip(observed, fitted, strict=True)):
        colour = colours[row % len(colours)]
        ax.plot(data[:, first], data[:, second], "o", color=colour, markersize=3, alpha=0.6)
        ax.plot(curve[:, first], curve[:, second], "-", color=colour, linewidth=1.5)
    ax.plot([], [], "ko", markersize=3, label="data")
    ax.plot([], [], "k-", label="fit")
    ax.legend(loc="best", fontsize=8)
    ax.set_xlabel(labels[first])
    ax.set_ylabel(labels[second])
    return ax


def plot_training_curve(
    estimator_or_history: BaseODERegressor | Sequence[Mapping[str, Any]],
    *,
    ax: Axes | None = None,
    log: bool = True,
) -> Axes:
    """Loss per optimiser step, coloured by training stage.

    Parameters
    ----------
    estimator_or_history : fitted estimator or list of dict
        An estimator (its ``history_`` is used) or a history: records with ``stage``
        and ``loss``.
    ax : matplotlib Axes, optional
    log : bool, default=True
        Logarithmic loss axis (when every loss is positive).

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    history = getattr(estimator_or_history, "history_", estimator_or_history)
    if isinstance(history, str) or not isinstance(history, Sequence):
        check_is_fitted(estimator_or_history, "history_")
    records = list(history)
    if not records or not all("stage" in record and "loss" in record for record in records):
        raise ValueError("The history is empty or its records lack 'stage' and 'loss'.")
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5), layout="constrained")
    steps = np.arange(len(records))
    losses = np.array([float(record["loss"]) for record in records])
    stages = [str(record["stage"]) for record in records]
    starts = [0] + [i for i in range(1, len(stages)) if stages[i] != stages[i - 1]]
    ends = [*starts[1:], len(stages)]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = list(dict.fromkeys(stages))
    for start, end in zip(starts, ends, strict=True):
        stage = stages[start]
        colour = colours[order.index(stage) % len(colours)]
        first_of_stage = stages.index(stage) == start
        ax.plot(
            steps[start:end],
            losses[start:end],
            "-",
            color=colour,
            label=stage if first_of_stage else None,
        )
        if start:
            ax.axvline(start, color="0.7", linewidth=0.8, linestyle=":")
    finite = losses[np.isfinite(losses)]
    if log and finite.size and np.all(finite > 0):
        ax.set_yscale("log")
    ax.set_xlabel("optimiser step (all stages)")
    ax.set_ylabel("loss (scaled units)")
    ax.legend(loc="best", fontsize=8)
    return ax


def plot_vector_field(
    estimator: BaseODERegressor,
    *,
    states: tuple[int, int] = (0, 1),
    bounds: Sequence[tuple[float, float]] | None = None,
    fixed: Any = None,
    grid_size: int = 25,
    ax: Axes | None = None,
    colorbar: bool = True,
    alpha: float = 1.0,
    state_names: Sequence[str] | None = None,
) -> Axes:
    """The learned right-hand side ``dy/dt = f(y)``.

    Two or more states: streamlines in the plane of ``states``, coloured by speed, with
    the other states held at ``fixed``. One state: ``dy/dt`` against ``y``.

    Parameters
    ----------
    estimator : fitted NeuralODERegressor or UniversalODERegressor
    states : (int, int), default=(0, 1)
        The states spanning the plane (ignored for one-state models).
    bounds : sequence of (low, high), optional
        Ranges of the plotted states (one pair per plotted state); by default the
        training data's mean +- 2.5 standard deviations.
    fixed : array-like of shape (n_states,), optional
        Values of the states outside the plane; by default the training data's means.
    grid_size : int, default=25
        Grid points per axis.
    ax : matplotlib Axes, optional
    colorbar : bool, default=True
        Add a colour bar of the speed ``|dy/dt|`` in the plane.
    alpha : float, default=1.0
        Opacity of the streamlines (lower it to draw the field behind other data).
    state_names : sequence of str, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    plt = _pyplot()
    check_is_fitted(estimator, "module_")
    n_states = estimator.n_features_in_
    labels = _state_labels(n_states, state_names)
    centre = estimator.module_.scaling.state_offset
    spread = estimator.module_.scaling.state_scale
    base = centre.copy() if fixed is None else np.asarray(fixed, dtype=float).reshape(-1)
    if base.shape != (n_states,):
        raise ValueError(f"fixed must have shape ({n_states},), got {base.shape}.")
    plotted = [0] if n_states == 1 else list(_check_state_pair(states, n_states))
    if bounds is None:
        bounds = [(centre[s] - 2.5 * spread[s], centre[s] + 2.5 * spread[s]) for s in plotted]
    bounds = [(float(low), float(high)) for low, high in bounds]
    if len(bounds) != len(plotted) or any(low >= high for low, high in bounds):
        raise ValueError(f"bounds must give {len(plotted)} (low, high) pair(s) with low < high.")
    if ax is None:
        figsize = (5.5, 5) if n_states > 1 else (6, 3.5)
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    if n_states == 1:
        grid = np.linspace(*bounds[0], grid_size * 4)
        ax.plot(grid, estimator.vector_field(grid[:, None])[:, 0], "-")
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(f"d{labels[0]}/dt")
        return ax
    first, second = plotted
    axis_1 = np.linspace(*bounds[0], grid_size)
    axis_2 = np.linspace(*bounds[1], grid_size)
    mesh_1, mesh_2 = np.meshgrid(axis_1, axis_2)
    points = np.tile(base, (mesh_1.size, 1))
    points[:, first], points[:, second] = mesh_1.ravel(), mesh_2.ravel()
    rates = estimator.vector_field(points)
    rate_1 = rates[:, first].reshape(mesh_1.shape)
    rate_2 = rates[:, second].reshape(mesh_1.shape)
    speed = np.hypot(rate_1, rate_2)
    streams = ax.streamplot(
        axis_1, axis_2, rate_1, rate_2, color=speed, cmap="viridis", density=1.1, linewidth=0.8
    )
    streams.lines.set_alpha(alpha)
    streams.arrows.set_alpha(alpha)
    if colorbar:
        ax.figure.colorbar(streams.lines, ax=ax, label="speed |dy/dt| in the plane")
    ax.set_xlim(*bounds[0])
    ax.set_ylim(*bounds[1])
    ax.set_xlabel(labels[first])
    ax.set_ylabel(labels[second])
    return ax


def _check_state_pair(states: Sequence[int], n_states: int) -> tuple[int, int]:
    pair = tuple(int(state) for state in states)
    if len(pair) != 2 or pair[0] == pair[1] or not all(0 <= s < n_states for s in pair):
        raise ValueError(
            f"states must be two different state indices below {n_states}, got {states!r}."
        )
    return pair  # type: ignore[return-value]


def _padded_bounds(points: np.ndarray) -> list[tuple[float, float]]:
    """Ranges of finite ``points`` columns, widened by 10 % on each side."""
    low = np.nanmin(points, axis=0)
    high = np.nanmax(points, axis=0)
    pad = np.where(high > low, 0.1 * (high - low), 1.0)
    return [(float(a), float(b)) for a, b in zip(low - pad, high + pad, strict=True)]
