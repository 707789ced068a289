"""How sure is the fit: coverage, calibration and cost of skneuralode's uncertainty.

Sections (all on this project's systems, noise from ``add_noise``: Gaussian, 5 % of each
state's standard deviation, a fresh seed per data set):

1. **Parameter coverage, Lotka-Volterra**: 31 points on [0, 3] (the UDE paper's
   setting), classical model without a network, a and b learned (positive) with c and d
   known. Share of data sets whose 95 % interval contains the truth, Wald (default) and
   profile likelihood; target 90-98 %. A second row learns all four parameters.
2. **Parameter coverage, SIR**: beta = 0.6, gamma = 0.2, S0 = 0.98, I0 = 0.02, 14 points
   on [0, 26], S and I both observed; same figures. A second row observes I only: S is a
   hidden state (its column NaN) whose start S0 is given to ``fit`` as ``y0=[S0, nan]``
   (with S unseen, beta and S0 are not separately determined), I0 is learned.
3. **Identifiability**: ``x' = a*b*x`` fitted to exponential growth must warn and name
   a*b (positive parameters, then unconstrained ones); Lotka-Volterra with all four
   parameters and a good data set (61 points on [0, 6], two cycles) must not warn (data
   sets that warn, out of twice the band sets; the coverage section also counts the
   warnings on the paper's shorter series).
4. **Prediction bands**, damped oscillator (60 points on [0, 6]): the 95 % band of
   ``predict(t, return_std=True)`` against fresh noisy observations at the midpoints of
   the training grid (held out, inside the span; target 85-99 %) and beyond it (t in
   (6, 9], no target), for ``NeuralODERegressor()`` and a UDE with a network (spring
   known, omega^2 learned, a 16-unit network on the velocity for the damping). Beside
   the shipped linearised Laplace: a deep ensemble of 5 members (different seeds; model
   part = the members' spread, noise part = their mean noise level) and the noise alone.
   ``mean z^2`` is the mean squared standardised error (1 when calibrated).
5. **Cost**: process (CPU) seconds of the uncertainty step at the end of ``fit``
   relative to the whole fit (target <= 20 % for the classical models), of a profile,
   and of ``predict(t, return_std=True)`` on 1000 time points (target < 1 s).

Run ``python benchmarks/uncertainty.py`` (``--quick`` for a smoke run with fewer data
sets, ``--jobs 2`` to use two processes, ``--json PATH`` to save the figures).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed, parallel_config
from scipy.integrate import solve_ivp

import skneuralode._base as base_module
from skneuralode import (
    IdentifiabilityWarning,
    NeuralODERegressor,
    Polish,
    UniversalODERegressor,
)
from skneuralode.datasets import (
    LOTKA_VOLTERRA,
    add_noise,
    make_damped_oscillator,
    make_lotka_volterra,
)

NOISE = 0.05
CONFIDENCE = 0.95
Z_95 = 1.959963984540054
SIR_TRUTH = {"beta": 0.6, "gamma": 0.2}
SIR_START = (0.98, 0.02)
ENSEMBLE_SIZE = 5
#: A UDE with a network, on a budget that fits the oscillator to R^2 > 0.999.
UDE_NETWORK: dict[str, Any] = {
    "hidden_layer_sizes": (16,),
    "network_outputs": [1],
    "network_inputs": [1],
    "max_iter": 300,
    "polish": Polish(max_iter=30),
}


# ------------------------------------------------------------------------ the systems
def lotka_volterra(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x - p["b"] * x * z, p["c"] * x * z - p["d"] * z], dim=-1)


def sir(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    susceptible, infected = y[..., 0], y[..., 1]
    infection = p["beta"] * susceptible * infected
    return torch.stack([-infection, infection - p["gamma"] * infected], dim=-1)


def growth(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return p["a"] * p["b"] * y


def spring(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)


def make_sir(times: np.ndarray) -> np.ndarray:
    beta, gamma = SIR_TRUTH["beta"], SIR_TRUTH["gamma"]

    def rates(_: float, u: np.ndarray) -> list[float]:
        infection = beta * u[0] * u[1]
        return [-infection, infection - gamma * u[1]]

    solution = solve_ivp(
        rates, (times[0], times[-1]), SIR_START, t_eval=times, rtol=1e-10, atol=1e-12
    )
    return solution.y.T


# ---------------------------------------------------------------------------- helpers
def timed_fit(estimator: Any, t: np.ndarray, y: np.ndarray, **fit_params: Any) -> dict[str, Any]:
    """Fit; CPU seconds of the fit and of its uncertainty step; the warnings raised."""
    torch.set_num_threads(1)
    spent: list[float] = []
    original = base_module.record_fit_uncertainty

    def recorded(*arguments: Any, **keywords: Any) -> Any:
        start = time.process_time()
        try:
            return original(*arguments, **keywords)
        finally:
            spent.append(time.process_time() - start)

    base_module.record_fit_uncertainty = recorded
    start = time.process_time()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            estimator.fit(t, y, **fit_params)
    finally:
        base_module.record_fit_uncertainty = original
    return {
        "fit_seconds": time.process_time() - start,
        "uncertainty_seconds": sum(spent),
        "identifiability_warning": [
            str(w.message) for w in caught if issubclass(w.category, IdentifiabilityWarning)
        ],
        "failed": not math.isfinite(estimator.loss_)
        or not hasattr(estimator, "_theta_prior_variance_"),
    }


def covers(interval: tuple[float, float], truth: float) -> bool:
    return bool(interval[0] <= truth <= interval[1])


def run_parallel(function: Callable[..., dict], seeds: list[int], jobs: int) -> list[dict]:
    with parallel_config(backend="loky", inner_max_num_threads=1):
        return Parallel(n_jobs=jobs)(delayed(function)(seed) for seed in seeds)


# ------------------------------------------------------------- 1-2: parameter coverage
def classical_set(
    system: str, seed: int, profile: bool, learned: tuple[str, ...] = ("a", "b")
) -> dict[str, Any]:
    """One data set: fit, Wald and (optionally) profile intervals, and whether each
    contains the truth."""
    if system == "lotka_volterra":
        t, clean = make_lotka_volterra()
        truth = {name: LOTKA_VOLTERRA[name] for name in learned}
        fixed = {k: v for k, v in LOTKA_VOLTERRA.items() if k not in learned}
        estimator = UniversalODERegressor(
            known=lotka_volterra,
            params=dict.fromkeys(learned, 1.0),
            fixed_params=fixed,
            param_constraints="positive",
            hidden_layer_sizes=(),
            random_state=0,
        )
    else:  # "sir" or "sir_hidden"
        t = np.linspace(0.0, 26.0, 14)
        clean = make_sir(t)
        truth = dict(SIR_TRUTH)
        estimator = UniversalODERegressor(
            known=sir,
            params={"beta": 0.3, "gamma": 0.1},
            param_constraints="positive",
            hidden_layer_sizes=(),
            random_state=0,
        )
    y = add_noise(clean, NOISE, seed=seed)
    fit_params: dict[str, Any] = {}
    if system == "sir_hidden":
        y[:, 0] = np.nan
        fit_params["y0"] = [SIR_START[0], np.nan]
    record = timed_fit(estimator, t, y, **fit_params)
    if record["failed"]:
        return record
    wald = estimator.param_intervals(CONFIDENCE)
    record["wald"] = {name: covers(wald[name], truth[name]) for name in truth}
    record["wald_width"] = {name: wald[name][1] - wald[name][0] for name in truth}
    if profile:
        start = time.process_time()
        intervals = estimator.param_intervals(CONFIDENCE, method="profile", t=t, y=y)
        record["profile_seconds"] = time.process_time() - start
        record["profile"] = {name: covers(intervals[name], truth[name]) for name in truth}
    if seed == 0:
        times = np.linspace(t[0], t[-1], 1000)
        start, wall = time.process_time(), time.perf_counter()
        estimator.predict(times, return_std=True)
        record["return_std_seconds"] = time.process_time() - start
        record["return_std_wall_seconds"] = time.perf_counter() - wall
    return record


def summarise_coverage(records: list[dict], names: tuple[str, ...]) -> dict[str, Any]:
    kept = [record for record in records if not record["failed"]]
    summary: dict[str, Any] = {"data_sets": len(records), "failed_fits": len(records) - len(kept)}
    for method in ("wald", "profile"):
        with_method = [record for record in kept if method in record]
        if with_method:
            summary[method] = {
                name: float(np.mean([record[method][name] for record in with_method]))
                for name in names
            }
            summary[f"{method}_sets"] = len(with_method)
    profiled = [record for record in kept if "profile" in record]
    if profiled:  # the Wald intervals of the same data sets, to compare like with like
        summary["wald_on_profile_sets"] = {
            name: float(np.mean([record["wald"][name] for record in profiled])) for name in names
        }
    summary["wald_median_width"] = {
        name: float(np.median([record["wald_width"][name] for record in kept])) for name in names
    }
    ratios = [record["uncertainty_seconds"] / record["fit_seconds"] for record in kept]
    summary["uncertainty_share_of_fit"] = {
        "median": float(np.median(ratios)),
        "max": float(np.max(ratios)),
    }
    summary["fit_seconds_median"] = float(np.median([record["fit_seconds"] for record in kept]))
    profiles = [record["profile_seconds"] for record in kept if "profile_seconds" in record]
    if profiles:
        summary["profile_seconds_median"] = float(np.median(profiles))
    summary["identifiability_warnings"] = sum(
        bool(record["identifiability_warning"]) for record in kept
    )
    for record in kept:
        if "return_std_seconds" in record:
            summary["return_std_1000_points_cpu_seconds"] = record["return_std_seconds"]
            summary["return_std_1000_points_wall_seconds"] = record["return_std_wall_seconds"]
    return summary


# ------------------------------------------------------------------ 3: identifiability
def identifiability_cases() -> dict[str, Any]:
    t = np.linspace(0.0, 2.0, 25)
    y = add_noise((0.5 * np.exp(0.9 * t))[:, None], NOISE, seed=0)
    cases = {}
    for label, constraints in (("a*b*x, positive", "positive"), ("a*b*x, unconstrained", None)):
        estimator = UniversalODERegressor(
            known=growth,
            params={"a": 1.0, "b": 2.0},
            param_constraints=constraints,
            hidden_layer_sizes=(),
            random_state=0,
        )
        record = timed_fit(estimator, t, y)
        analysis = estimator.identifiability_
        cases[label] = {
            "warning": record["identifiability_warning"],
            "determined": analysis["determined_combinations"],
            "condition_number": analysis["condition_number"],
        }
    return cases


def lotka_volterra_good_data(seed: int) -> dict[str, Any]:
    """All four parameters learned from a good data set: two cycles (61 points on
    [0, 6]) at 5 % noise; the paper's 31 points on [0, 3] see less than one cycle of the
    predator, and c is known there to only about +-40 % (see the coverage section)."""
    t, clean = make_lotka_volterra(n_times=61, t_end=6.0)
    estimator = UniversalODERegressor(
        known=lotka_volterra,
        params=dict.fromkeys(LOTKA_VOLTERRA, 1.0),
        param_constraints="positive",
        hidden_layer_sizes=(),
        random_state=0,
    )
    record = timed_fit(estimator, t, add_noise(clean, NOISE, seed=seed))
    intervals = estimator.param_intervals(CONFIDENCE)
    record["wald"] = {name: covers(intervals[name], LOTKA_VOLTERRA[name]) for name in intervals}
    record["worst_relative_std"] = float(estimator.identifiability_["relative_std"].max())
    return record


# ----------------------------------------------------------------- 4: prediction bands
def oscillator_sets(seed: int) -> tuple[np.ndarray, ...]:
    t, clean = make_damped_oscillator(n_times=60)
    spread = NOISE * clean.std(axis=0)
    y = add_noise(clean, NOISE, seed=seed)
    rng = np.random.default_rng(10_000 + seed)
    inside = t[:-1] + (t[1] - t[0]) / 2.0
    beyond = np.linspace(6.1, 9.0, 30)
    truths = [make_damped_oscillator(np.r_[0.0, times])[1][1:] for times in (inside, beyond)]
    observed = [truth + spread * rng.standard_normal(truth.shape) for truth in truths]
    return t, y, inside, beyond, observed[0], observed[1]


def new_estimator(kind: str, seed: int) -> Any:
    if kind == "neural_ode":
        return NeuralODERegressor(random_state=seed)
    return UniversalODERegressor(
        known=spring,
        params={"omega2": 3.0},
        param_constraints="positive",
        random_state=seed,
        **UDE_NETWORK,
    )


def band_scores(mean: np.ndarray, std: np.ndarray, observed: np.ndarray) -> dict[str, float]:
    z = (observed - mean) / std
    return {"coverage": float(np.mean(np.abs(z) <= Z_95)), "mean_z2": float(np.mean(z**2))}


def band_set(kind: str, seed: int, ensemble_size: int = ENSEMBLE_SIZE) -> dict[str, Any]:
    t, y, inside, beyond, observed_inside, observed_beyond = oscillator_sets(seed)
    estimator = new_estimator(kind, seed)
    record = timed_fit(estimator, t, y)
    if record["failed"]:
        return record
    members = []
    ensemble_seconds = record["fit_seconds"]
    for member in range(1, ensemble_size):
        other = new_estimator(kind, 1000 * member + seed)
        ensemble_seconds += timed_fit(other, t, y)["fit_seconds"]
        members.append(other)
    members.insert(0, estimator)
    record["ensemble_seconds"] = ensemble_seconds
    for where, times, observed in (
        ("inside", inside, observed_inside),
        ("beyond", beyond, observed_beyond),
    ):
        start = time.process_time()
        mean, std = estimator.predict(times, return_std=True)
        record[f"return_std_seconds_{where}"] = time.process_time() - start
        record[f"laplace_{where}"] = band_scores(mean, std, observed)
        noise_only = np.broadcast_to(estimator.noise_std_, mean.shape)
        record[f"noise_only_{where}"] = band_scores(mean, noise_only, observed)
        if len(members) < 2:
            continue
        predictions = np.stack([member.predict(times) for member in members])
        noise = np.sqrt(np.mean([member.noise_std_**2 for member in members], axis=0))
        spread = predictions.std(axis=0, ddof=1)
        record[f"ensemble_{where}"] = band_scores(
            predictions.mean(axis=0), np.sqrt(spread**2 + noise**2), observed
        )
    if seed == 0:
        times = np.linspace(0.0, 6.0, 1000)
        start, wall = time.process_time(), time.perf_counter()
        estimator.predict(times, return_std=True)
        record["return_std_seconds"] = time.process_time() - start
        record["return_std_wall_seconds"] = time.perf_counter() - wall
    return record


def summarise_bands(records: list[dict]) -> dict[str, Any]:
    kept = [record for record in records if not record["failed"]]
    summary: dict[str, Any] = {"data_sets": len(records), "failed_fits": len(records) - len(kept)}
    for method in ("laplace", "ensemble", "noise_only"):
        for where in ("inside", "beyond"):
            scores = [
                record[f"{method}_{where}"] for record in kept if method + "_" + where in record
            ]
            if not scores:
                continue
            summary[f"{method}_{where}"] = {
                "coverage": float(np.mean([score["coverage"] for score in scores])),
                "coverage_min": float(np.min([score["coverage"] for score in scores])),
                "mean_z2": float(np.mean([score["mean_z2"] for score in scores])),
            }
    summary["fit_seconds_median"] = float(np.median([r["fit_seconds"] for r in kept]))
    summary["laplace_seconds_median"] = float(np.median([r["uncertainty_seconds"] for r in kept]))
    summary["ensemble_seconds_median"] = float(np.median([r["ensemble_seconds"] for r in kept]))
    for record in kept:
        if "return_std_seconds" in record:
            summary["return_std_1000_points_cpu_seconds"] = record["return_std_seconds"]
            summary["return_std_1000_points_wall_seconds"] = record["return_std_wall_seconds"]
    return summary


# ------------------------------------------------------------------------------ table
def percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def table(document: dict[str, Any]) -> str:
    lines = ["| case | method | coverage of the truth (95 % intervals) | data sets |"]
    lines.append("| --- | --- | --- | ---: |")
    for label, key, names in (
        ("Lotka-Volterra, a and b", "lotka_volterra", ("a", "b")),
        ("Lotka-Volterra, all four", "lotka_volterra_four", ("a", "b", "c", "d")),
        ("SIR, beta and gamma", "sir", ("beta", "gamma")),
        ("SIR, I only (S hidden, S0 given)", "sir_hidden", ("beta", "gamma")),
    ):
        summary = document.get(key)
        if summary is None:
            continue
        for method, sets in (
            ("wald", "wald_sets"),
            ("wald_on_profile_sets", "profile_sets"),
            ("profile", "profile_sets"),
        ):
            if method in summary:
                text = ", ".join(f"{n} {percent(summary[method][n])}" for n in names)
                lines.append(f"| {label} | {method} | {text} | {summary[sets]} |")
    lines += ["", "| system | band | inside the span (z^2) | beyond (z^2) | CPU s |"]
    lines.append("| --- | --- | --- | --- | ---: |")
    for key in ("neural_ode", "ude_network"):
        summary = document.get(f"bands_{key}")
        if summary is None:
            continue
        for method, seconds in (
            ("laplace", summary["laplace_seconds_median"]),
            ("ensemble", summary["ensemble_seconds_median"]),
            ("noise_only", 0.0),
        ):
            if f"{method}_inside" not in summary:
                continue
            inside, beyond = summary[f"{method}_inside"], summary[f"{method}_beyond"]
            lines.append(
                f"| {key} | {method} | {percent(inside['coverage'])} ({inside['mean_z2']:.2f}) "
                f"| {percent(beyond['coverage'])} ({beyond['mean_z2']:.2f}) | {seconds:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 data sets, 3 for the bands")
    parser.add_argument("--sets", type=int, default=200, help="data sets per coverage case")
    parser.add_argument("--profile-sets", type=int, default=None, help="with profiles")
    parser.add_argument("--band-sets", type=int, default=10, help="oscillator data sets")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--ensemble-size", type=int, default=ENSEMBLE_SIZE, help="1: no deep ensemble beside"
    )
    parser.add_argument("--sections", nargs="*", default=["coverage", "identifiability", "bands"])
    coverage_cases = ["lotka_volterra", "sir", "sir_hidden", "lotka_volterra_four"]
    parser.add_argument("--coverage-cases", nargs="*", default=coverage_cases)
    parser.add_argument("--json", type=Path, default=None)
    arguments = parser.parse_args()
    sets = 20 if arguments.quick else arguments.sets
    band_sets = 3 if arguments.quick else arguments.band_sets
    profile_sets = sets if arguments.profile_sets is None else arguments.profile_sets
    document: dict[str, Any] = {"noise": NOISE, "confidence": CONFIDENCE}
    jobs = arguments.jobs
    if "coverage" in arguments.sections:
        for key, system, learned in (
            ("lotka_volterra", "lotka_volterra", ("a", "b")),
            ("sir", "sir", ("beta", "gamma")),
            ("sir_hidden", "sir_hidden", ("beta", "gamma")),
            ("lotka_volterra_four", "lotka_volterra", ("a", "b", "c", "d")),
        ):
            if key not in arguments.coverage_cases:
                continue
            count = sets if key != "lotka_volterra_four" else max(sets // 4, 3)

            def one(seed: int, system: str = system, learned: tuple = learned) -> dict:
                profile = seed < profile_sets and learned != ("a", "b", "c", "d")
                return classical_set(system, seed, profile, learned)

            records = run_parallel(one, list(range(count)), jobs)
            document[key] = summarise_coverage(records, learned)
            print(key, json.dumps(document[key]), flush=True)
    if "identifiability" in arguments.sections:
        document["identifiability"] = identifiability_cases()
        records = run_parallel(lotka_volterra_good_data, list(range(band_sets * 2)), jobs)
        document["identifiability"]["lotka_volterra_four_good_data"] = {
            "data_sets": len(records),
            "warned": sum(bool(record["identifiability_warning"]) for record in records),
            "worst_relative_std_max": max(record["worst_relative_std"] for record in records),
            "wald": {
                name: float(np.mean([record["wald"][name] for record in records]))
                for name in LOTKA_VOLTERRA
            },
        }
        print("identifiability", json.dumps(document["identifiability"]), flush=True)
    if "bands" in arguments.sections:
        for kind in ("neural_ode", "ude_network"):

            def band(seed: int, kind: str = kind) -> dict:
                return band_set(kind, seed, arguments.ensemble_size)

            records = run_parallel(band, list(range(band_sets)), jobs)
            document[f"bands_{kind}"] = summarise_bands(records)
            print(kind, json.dumps(document[f"bands_{kind}"]), flush=True)
    text = json.dumps(document, indent=2)
    print(text)
    print()
    print(table(document))
    if arguments.json is not None:
        arguments.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
