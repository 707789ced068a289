"""Pictures of the three training stages, drawn at build time (``.. plot::`` directive).

One small problem, the damped oscillator of ``skneuralode.datasets`` (50 points, 5 %
noise), fitted three times with more of the stages switched on each time. Each function
draws one stage's picture on the current matplotlib figure.
"""

from __future__ import annotations

from functools import cache

import matplotlib.pyplot as plt
import numpy as np

from skneuralode import MultipleShooting, NeuralODERegressor, Polish
from skneuralode.datasets import add_noise, damped_oscillator_rhs, make_damped_oscillator

T, TRUTH = make_damped_oscillator(n_times=50)
Y = add_noise(TRUTH, 0.05, seed=0)
FINE = np.linspace(T[0], T[-1], 400)
SETTINGS = {"hidden_layer_sizes": (16, 16), "random_state": 0, "device": "cpu"}


@cache
def _fit(stage: str) -> NeuralODERegressor:
    if stage == "collocation":
        return NeuralODERegressor(shooting=False, **SETTINGS).fit(T, Y)
    shooting = MultipleShooting(segment_length=9, max_iter=300)
    polish = Polish(max_iter=30) if stage == "polish" else False
    return NeuralODERegressor(shooting=shooting, polish=polish, **SETTINGS).fit(T, Y)


def _data(axis: plt.Axes) -> None:
    for state, colour in enumerate(("tab:blue", "tab:orange")):
        axis.plot(T, Y[:, state], ".", color=colour, markersize=4, label=f"data y{state + 1}")
    axis.set_xlabel("t")


def collocation() -> None:
    """Collocation: the field regressed on (y, dy/dt) of the smoothed data; no solve."""
    estimator = _fit("collocation")
    _figure, (states, field) = plt.subplots(1, 2, figsize=(10, 3.6))
    _data(states)
    fitted = estimator.predict(FINE)
    for state, colour in enumerate(("tab:blue", "tab:orange")):
        states.plot(FINE, fitted[:, state], "-", color=colour, label=f"integrated y{state + 1}")
    states.set_title("data, and the collocation field integrated from y0_")
    states.legend(fontsize=7)
    rates_data = np.gradient(Y, T, axis=0)
    learned = estimator.vector_field(TRUTH)
    true = np.array([damped_oscillator_rhs(0.0, state) for state in TRUTH])
    field.plot(
        T, rates_data[:, 1], ".", color="0.6", markersize=4, label="finite differences of the data"
    )
    field.plot(T, true[:, 1], "k-", label="true dy2/dt")
    field.plot(T, learned[:, 1], "--", color="tab:orange", label="learned dy2/dt")
    field.set_xlabel("t")
    field.set_title("the rate the network learned, along the trajectory")
    field.legend(fontsize=7)


def shooting() -> None:
    """Multiple shooting: segments integrated from their own start states, batched."""
    estimator = _fit("shooting")
    _figure, axis = plt.subplots(figsize=(10, 3.6))
    _data(axis)
    starts = np.arange(0, len(T) - 1, 8)
    for number, start in enumerate(starts):
        stop = min(start + 9, len(T))
        segment_t = np.linspace(T[start], T[stop - 1], 40)
        segment = estimator.predict(segment_t, y0=Y[start])
        for state, colour in enumerate(("tab:blue", "tab:orange")):
            axis.plot(
                segment_t,
                segment[:, state],
                "-",
                color=colour,
                alpha=0.8,
                label="segments" if number == 0 and state == 0 else None,
            )
            axis.plot(
                T[start],
                Y[start, state],
                "s",
                color="k",
                markersize=4,
                label="segment starts" if number == 0 and state == 0 else None,
            )
    axis.set_title(
        "each segment starts from its own state (here: the data point); a penalty makes them meet"
    )
    axis.legend(fontsize=7)


def polish() -> None:
    """Polish: the whole trajectory from the learned initial state, L-BFGS."""
    _figure, axis = plt.subplots(figsize=(10, 3.6))
    axis.plot(T, Y[:, 0], ".", color="tab:blue", markersize=4, label="data y1")
    axis.plot(FINE, TRUTH_FINE[:, 0], "k:", label="truth")
    for stage, colour, name in (
        ("shooting", "0.6", "shooting"),
        ("polish", "tab:blue", "the polish"),
    ):
        estimator = _fit(stage)
        r2 = estimator.score(T, TRUTH)
        axis.plot(
            FINE, estimator.predict(FINE)[:, 0], color=colour, label=f"after {name} (R^2 {r2:.4f})"
        )
    axis.set_xlabel("t")
    axis.set_title("the whole trajectory from y0_, y1 (R^2 against the noise-free truth)")
    axis.legend(fontsize=7)


TRUTH_FINE = make_damped_oscillator(FINE)[1]
