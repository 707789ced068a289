"""Where the Lotka-Volterra UDE's missing-term error lies (issue 12, "lv ude default").

For each noise seed of ``_small_data_ude``'s Lotka-Volterra data this prints

- ``target``: the relative L2 error of the collocation targets themselves (smoothed
  derivative minus the known part, against the true interactions at the smoothed
  states): what the warm start regresses on;
- ``colloc`` and ``final``: the missing-term error after the collocation stage alone
  (``polish=False``) and after the whole default fit;
- ``ends``: the share of the final squared error at the first and last five points;
- ``chi2``: the mean squared misfit to the noisy data in units of the true noise
  variance, of the fit and of the noise-free truth. A fit far below the truth has
  explained noise with its network (it is under-regularised);
- ``noise``: the package's estimate of the noise variance (the one the evidence weight
  decay uses: mean over states in standardised units) over the true one;
- ``y0_dev``: the largest deviation of the fitted initial state from the noise-free one,
  in noise standard deviations (a first observation far off pulls it, and the field
  bends near the start to follow);
- ``cpu_s``: CPU seconds of the default fit.

Settings other than the data are passed as JSON, e.g. ``--settings '{"network_weight_decay":
1e-3}'``. Run from the repository root::

    python benchmarks/lv_ude_diagnosis.py --seeds 0 1 2 3 4

``--true-y0`` passes the noise-free initial state as known (``fit(..., y0=...)``): how much
of the error the fitted initial state accounts for.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _small_data_ude import LV_TRUTH, NOISE_FRACTION, _timed_fit, lotka_volterra_known

END_POINTS = 5


def missing_term(states: np.ndarray) -> np.ndarray:
    """The true interactions ``(-b x z, c x z)`` at ``states`` (n, 2)."""
    interaction = states[:, 0] * states[:, 1]
    return np.stack([-LV_TRUTH["b"] * interaction, LV_TRUTH["c"] * interaction], axis=1)


def relative_error(learned: np.ndarray, truth: np.ndarray) -> float:
    """Relative L2 error of ``learned`` against ``truth``."""
    return float(np.linalg.norm(learned - truth) / np.linalg.norm(truth))


def smoothing_figures(
    times: np.ndarray, noisy: np.ndarray, noise: np.ndarray
) -> tuple[float, float]:
    """Relative error of the collocation targets (smoothed derivative minus known part),
    and the estimated noise variance over the true one (standardised units)."""
    from skneuralode._smoothing import smooth_trajectories

    smoothed = smooth_trajectories(times[None], noisy[None], np.array([len(times)]))
    states, rates = smoothed.states[0], smoothed.derivatives[0]
    known = np.stack([LV_TRUTH["a"] * states[:, 0], -LV_TRUTH["d"] * states[:, 1]], axis=1)
    scale = noisy.std(axis=0)  # the package standardises each state by its spread
    estimated = np.mean((smoothed.noise_level / scale) ** 2)
    return relative_error(rates - known, missing_term(states)), float(
        estimated / np.mean((noise / scale) ** 2)
    )


def fitted(
    times: np.ndarray,
    noisy: np.ndarray,
    seed: int,
    settings: dict[str, Any],
    initial_state: np.ndarray | None = None,
) -> Any:
    """A Lotka-Volterra UDE fitted with ``settings`` and its CPU seconds."""
    from skneuralode import UniversalODERegressor

    estimator = UniversalODERegressor(
        known=lotka_volterra_known,
        fixed_params={"a": LV_TRUTH["a"], "d": LV_TRUTH["d"]},
        random_state=seed,
        **settings,
    )
    return estimator, _timed_fit(estimator, times, noisy, y0=initial_state)


def diagnose(seed: int, settings: dict[str, Any], true_y0: bool = False) -> dict[str, float]:
    """The figures of the module docstring for one noise seed."""
    from skneuralode.datasets import make_lotka_volterra

    times, clean = make_lotka_volterra()
    noise = NOISE_FRACTION * clean.mean(axis=0)
    noisy = clean + noise * np.random.default_rng(seed).standard_normal(clean.shape)
    truth = missing_term(clean)
    initial_state = clean[0] if true_y0 else None
    warm, _ = fitted(times, noisy, seed, {**settings, "polish": False}, initial_state)
    estimator, cpu = fitted(times, noisy, seed, settings, initial_state)
    learned = estimator.network_term(clean)
    squared = ((learned - truth) ** 2).sum(axis=1)
    ends = squared[:END_POINTS].sum() + squared[-END_POINTS:].sum()
    target, noise_ratio = smoothing_figures(times, noisy, noise)
    return {
        "target": target,
        "colloc": relative_error(warm.network_term(clean), truth),
        "final": relative_error(learned, truth),
        "ends": float(ends / squared.sum()),
        "chi2_fit": float((((estimator.predict(times) - noisy) / noise) ** 2).mean()),
        "chi2_truth": float((((clean - noisy) / noise) ** 2).mean()),
        "noise": noise_ratio,
        "y0_dev": float(np.abs((estimator.y0_.ravel() - clean[0]) / noise).max()),
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--settings", default="{}", help="estimator settings as JSON")
    parser.add_argument(
        "--true-y0", action="store_true", help="fit with the noise-free initial state known"
    )
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    settings = json.loads(arguments.settings)
    if "hidden_layer_sizes" in settings:
        settings["hidden_layer_sizes"] = tuple(settings["hidden_layer_sizes"])
    print("seed  target  colloc  final   ends  chi2_fit  chi2_truth  noise  y0_dev  cpu_s")
    for seed in arguments.seeds:
        row = diagnose(seed, settings, arguments.true_y0)
        print(
            f"{seed:4d}  {row['target']:6.3f}  {row['colloc']:6.3f}  {row['final']:5.3f}  "
            f"{row['ends']:5.2f}  {row['chi2_fit']:8.3f}  {row['chi2_truth']:10.3f}  "
            f"{row['noise']:5.2f}  {row['y0_dev']:6.2f}  {row['cpu_s']:5.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
