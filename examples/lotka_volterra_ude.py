"""
Universal differential equation on Lotka–Volterra (the UDE paper's example)
===========================================================================

Predator–prey data x' = a x - b x z, z' = c x z - d z (31 noisy points on [0, 3]).
We know the prey grows (a x) and the predator dies (-d z); the interactions are left to
a neural network. The UDE learns them, sparse regression (pysindy) reads the equations
off the network, and the model rebuilt from the known and discovered terms forecasts far
beyond the data — where the network alone cannot go.

Run from the repository root::

    python examples/lotka_volterra_ude.py

It prints the fit, the discovered terms and the forecasts' R^2, and writes
``lotka_volterra_ude.png`` (data, fit, forecast to t = 6, learned vs true missing term).
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.integrate import solve_ivp

from skneuralode import UniversalODERegressor
from skneuralode.datasets import LOTKA_VOLTERRA, make_lotka_volterra

A, D = LOTKA_VOLTERRA["a"], LOTKA_VOLTERRA["d"]


def known(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """What we know: the prey grows, the predator dies."""
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x, -p["d"] * z], dim=-1)


def r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    if not np.all(np.isfinite(predicted)):
        return float("-inf")
    residual = ((truth - predicted) ** 2).sum(axis=0)
    return float(np.mean(1.0 - residual / ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)))


def main(output: Path = Path("lotka_volterra_ude.png"), seed: int = 0) -> dict[str, float]:
    """Fit, discover, forecast and plot; return the headline figures."""
    torch.set_num_threads(1)
    t, clean = make_lotka_volterra()  # 31 points on [0, 3]
    rng = np.random.default_rng(seed)
    y = clean + 0.05 * clean.mean(axis=0) * rng.standard_normal(clean.shape)

    started = time.perf_counter()
    estimator = UniversalODERegressor(
        known=known,
        fixed_params={"a": A, "d": D},
        hidden_layer_sizes=(16, 16),
        activation="softplus",
        network_weight_decay=1e-4,  # smooth term where 31 noisy points say little
        random_state=seed,
    ).fit(t, y)
    seconds = time.perf_counter() - started
    true_missing = np.stack(
        [
            -LOTKA_VOLTERRA["b"] * clean[:, 0] * clean[:, 1],
            LOTKA_VOLTERRA["c"] * clean[:, 0] * clean[:, 1],
        ],
        axis=1,
    )
    learned_missing = estimator.network_term(clean)
    missing_error = np.linalg.norm(learned_missing - true_missing) / np.linalg.norm(true_missing)
    print(
        f"UDE fit in {seconds:.1f} s: R^2 vs truth {estimator.score(t, clean):.4f}, "
        f"missing term rel. L2 error {missing_error:.3f}"
    )

    long_t, long_truth = make_lotka_volterra(n_times=121, t_end=6.0)
    network_forecast = estimator.predict(long_t)
    figures = {
        "r2": estimator.score(t, clean),
        "missing_term_error": float(missing_error),
        "network_forecast_r2": r2(long_truth, network_forecast),
    }
    rebuilt_forecast = None
    try:
        equations = estimator.discover_equations(feature_names=["x", "z"])
    except ImportError as error:  # pysindy is the optional [discovery] extra
        print(error)
    else:
        print("discovered missing terms:", *(f"  {eq}" for eq in equations), sep="\n")
        discovery = estimator.discovery_

        def rebuilt(_: float, u: np.ndarray) -> np.ndarray:
            return np.array([A * u[0], -D * u[1]]) + discovery.rates(u[None])[0]

        solution = solve_ivp(
            rebuilt, (0.0, 6.0), estimator.y0_, t_eval=long_t, rtol=1e-8, atol=1e-10
        )
        rebuilt_forecast = np.full_like(long_truth, np.nan)
        rebuilt_forecast[: solution.y.shape[1]] = solution.y.T
        figures["rebuilt_forecast_r2"] = r2(long_truth, rebuilt_forecast)
    print(
        f"forecast to t = 6: R^2 {figures['network_forecast_r2']:.3f} with the network, "
        f"{figures.get('rebuilt_forecast_r2', float('nan')):.3f} with the discovered terms"
    )

    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    colours = ("tab:blue", "tab:orange")
    for state, (name, colour) in enumerate(zip(("prey x", "predator z"), colours, strict=True)):
        axes[0].plot(t, y[:, state], "o", color=colour, markersize=3, label=f"data {name}")
        axes[0].plot(t, estimator.predict(t)[:, state], "-", color=colour, label=f"fit {name}")
        axes[1].plot(
            long_t, long_truth[:, state], "-", color=colour, alpha=0.4, lw=3, label=f"truth {name}"
        )
        axes[1].plot(
            long_t, network_forecast[:, state], ":", color=colour, label=f"UDE (network) {name}"
        )
        if rebuilt_forecast is not None:
            axes[1].plot(
                long_t,
                rebuilt_forecast[:, state],
                "--",
                color=colour,
                label=f"known + discovered {name}",
            )
        axes[2].plot(
            t,
            true_missing[:, state],
            "-",
            color=colour,
            alpha=0.4,
            lw=3,
            label=f"true {('-b x z', 'c x z')[state]}",
        )
        axes[2].plot(
            t,
            learned_missing[:, state],
            "o--",
            color=colour,
            markersize=3,
            label=f"network, {name}",
        )
    axes[1].axvline(3.0, color="grey", lw=0.8)
    axes[1].set_ylim(-0.5, 1.5 * long_truth.max())
    titles = ("data and fit", "forecast to t = 6 (data up to t = 3)", "missing term along the data")
    for axis, title in zip(axes, titles, strict=True):
        axis.set_title(title)
        axis.set_xlabel("t")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")
    return figures


if __name__ == "__main__":
    main()
