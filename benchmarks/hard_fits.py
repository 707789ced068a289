"""Hard fits: how ``NeuralODERegressor`` ends on data that make neural-ODE training fail.

Every case must end in bounded time (the solver's ``max_num_steps`` budget, a stiff
fallback for solves that need no gradient), with finite predictions over the training
span, and with a ``ConvergenceWarning`` that says what happened and what to try whenever
the fit is poor. The table shows, per case, the wall seconds of ``fit``, R^2 on the
training data (``score``), whether predictions on a dense grid over the training span
are finite, how each stage ended and the warnings raised.

Cases (see :mod:`skneuralode.datasets`):

``van_der_pol_mu100``  relaxation oscillations, jumps of duration 1/mu between slow drifts
``robertson``          Robertson's stiff kinetics on log-spaced times; one state near 3e-5
``blow_up``            ``dy/dt = y**2`` up to t = 0.95, twenty-fold growth at the end
``unit_scale``         damped oscillator, 60 points: the reference for the two below
``scale_1e-8``         the same with states and times multiplied by 1e-8
``scale_1e8``          the same with states and times multiplied by 1e8
``ten_noisy_points``   damped oscillator, 10 points, 10 % noise (R^2 against the noisy data)
``near_constant``      two states constant up to 1e-9 relative noise

All cases use one setting, ``SETTINGS`` below (a short training budget, as in the test
suite's hard-fit tests), on one torch thread. Run from the repository root::

    python benchmarks/hard_fits.py                  # all cases, markdown table
    python benchmarks/hard_fits.py --cases blow_up robertson
    python benchmarks/hard_fits.py --json benchmarks/results/hard_fits.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skneuralode import NeuralODERegressor, Solver
from skneuralode.datasets import (
    add_noise,
    make_blow_up,
    make_damped_oscillator,
    make_robertson,
    make_van_der_pol,
)

#: One setting for every case: small network, short budget (as in tests/test_reliability).
SETTINGS: dict[str, Any] = {
    "hidden_layer_sizes": (16, 16),
    "max_iter": 100,
    "solver": Solver(max_num_steps=1000),
    "random_state": 0,
}

Data = tuple[np.ndarray, np.ndarray]


def scaled_oscillator(factor: float) -> Data:
    t, y = make_damped_oscillator(n_times=60, t_end=6.0)
    return t * factor, y * factor


def ten_noisy_points() -> Data:
    t, y = make_damped_oscillator(n_times=10, t_end=6.0)
    return t, add_noise(y, 0.1, seed=1)


def near_constant() -> Data:
    t = np.linspace(0.0, 10.0, 50)
    noise = np.random.default_rng(0).standard_normal((50, 2))
    return t, np.array([5.0, -2.0]) * (1.0 + 1e-9 * noise)


CASES: dict[str, Callable[[], Data]] = {
    "van_der_pol_mu100": lambda: make_van_der_pol(n_times=200, t_end=200.0),
    "robertson": lambda: make_robertson(n_times=40),
    "blow_up": lambda: make_blow_up(n_times=40),
    "unit_scale": lambda: scaled_oscillator(1.0),
    "scale_1e-8": lambda: scaled_oscillator(1e-8),
    "scale_1e8": lambda: scaled_oscillator(1e8),
    "ten_noisy_points": ten_noisy_points,
    "near_constant": near_constant,
}


def run_case(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Fit one case and describe how it ended."""
    t, y = CASES[name]()
    estimator = NeuralODERegressor(**settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        estimator.fit(t, y)
        seconds = time.perf_counter() - start
        dense = np.linspace(t.min(), t.max(), 500)
        finite = bool(np.all(np.isfinite(estimator.predict(dense))))
        r2 = estimator.score(t, y)
    return {
        "case": name,
        "n_times": len(t),
        "seconds": seconds,
        "r2": r2,
        "finite": finite,
        "stages": [f"{result.stage}:{result.status}" for result in estimator.stage_results_],
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | points | fit (s) | R^2 | finite | stages | warnings |",
        "| --- | ---: | ---: | ---: | :---: | --- | --- |",
    ]
    for row in rows:
        warned = "<br>".join(row["warnings"]) or "none"
        lines.append(
            f"| {row['case']} | {row['n_times']} | {row['seconds']:.1f} | {row['r2']:.4f} | "
            f"{'yes' if row['finite'] else 'NO'} | {', '.join(row['stages'])} | {warned} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--max-iter", type=int, default=SETTINGS["max_iter"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = {**SETTINGS, "max_iter": args.max_iter}
    NeuralODERegressor(hidden_layer_sizes=(4,), max_iter=5, shooting=False).fit(
        *scaled_oscillator(1.0)
    )  # warm-up: torch's first backward pass is slow
    rows = []
    for name in args.cases:
        rows.append(run_case(name, settings))
        print(f"{name}: {rows[-1]['seconds']:.1f} s, R^2 {rows[-1]['r2']:.4f}", flush=True)
    print(f"\nNeuralODERegressor({', '.join(f'{k}={v!r}' for k, v in settings.items())})\n")
    print(markdown_table(rows))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
