"""Seed-spiral benchmark: skneuralode's defaults against torchdiffeq's ``ode_demo.py`` loop.

The problem is the cubic spiral of the torchdiffeq and DiffEqFlux demos,
``du/dt = (u**3) @ A`` with ``A = [[-0.1, 2.0], [-2.0, -0.1]]`` from ``u0 = (2, 0)`` at
``t = 0``, solved exactly by :func:`skneuralode.datasets.make_spiral`. Two scenarios:

``dense``
    1000 clean points on an even grid over ``[0, 25]``; R^2 over those points.
``irregular``
    200 times drawn uniformly in ``[0, 25]`` (sorted, fixed seed), 5 % Gaussian noise of
    each state's standard deviation; R^2 against the clean truth on the dense grid.

Two methods, each in its own subprocess (so peak RSS is per method), on one torch thread:

``torchdiffeq-demo``
    The training loop a user writes by hand today: a faithful copy of torchdiffeq's
    ``examples/ode_demo.py`` (commit 657943a) -- float32, ``ODEFunc`` = MLP 2-50-tanh-2 on
    ``y**3`` with N(0, 0.1) weights and zero biases, RMSprop lr 1e-3, L1 loss on 20 random
    windows of 10 consecutive points, ``odeint`` with dopri5 and its default tolerances,
    2000 iterations, a full-trajectory test solve every 20 iterations (part of the demo,
    so part of its time). The final R^2 integrates the whole trajectory once.
    On irregular data the demo's ``batch_t = t[:batch_time]`` is wrong (each window has its
    own time stamps), so the one change is: ``batch_t`` is the sorted union of every
    window's stamps relative to its own start, one batched ``odeint`` call integrates all
    windows over it, and each window's predictions are gathered at its own stamps. The
    test solve and the final forecast start from the first (noisy) observation, at its
    own time, as a user would; the forecast runs backwards from there to ``t = 0``.
``skneuralode``
    ``NeuralODERegressor(random_state=0)`` with every other setting at its default:
    ``fit(t, y)`` then ``score(t_dense, y_dense_clean)``.

Wall seconds are the training only (``fit``; the demo's loop); the speed-up is the demo's
seconds divided by the method's, per scenario. Run from the repository root::

    python benchmarks/spiral.py                       # full run (~25 CPU-minutes)
    python benchmarks/spiral.py --quick               # smoke run: 100 demo iterations
    python benchmarks/spiral.py --json benchmarks/results/spiral.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment_summary, peak_rss_mb, source_fingerprint, stage_summary

METHODS = ("torchdiffeq-demo", "skneuralode")
SCENARIOS = ("dense", "irregular")
PEER = "torchdiffeq-demo"

N_DENSE = 1000
T_END = 25.0
N_IRREGULAR = 200
NOISE_FRACTION = 0.05
TIMES_SEED = 0
NOISE_SEED = 1
TRAINING_SEED = 0

# torchdiffeq examples/ode_demo.py defaults
DEMO_ITERATIONS = 2000
QUICK_DEMO_ITERATIONS = 100
DEMO_BATCH_TIME = 10
DEMO_BATCH_SIZE = 20
DEMO_TEST_FREQ = 20
DEMO_LEARNING_RATE = 1e-3

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

Problem = dict[str, np.ndarray]


# ------------------------------------------------------------------------------- data
def make_problem(scenario: str) -> Problem:
    """Training data and clean dense truth of one scenario.

    Returns ``t_train``, ``y_train`` (what the methods fit), ``t_dense``, ``y_dense``
    (the clean 1000-point truth that R^2 is measured on).
    """
    from skneuralode.datasets import add_noise, make_spiral

    t_dense, y_dense = make_spiral(n_times=N_DENSE, t_end=T_END)
    if scenario == "dense":
        return {"t_train": t_dense, "y_train": y_dense, "t_dense": t_dense, "y_dense": y_dense}
    if scenario != "irregular":
        raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
    rng = np.random.default_rng(TIMES_SEED)
    t_irregular = np.sort(rng.uniform(0.0, T_END, N_IRREGULAR))
    # make_spiral puts u0 at the first of the given times; prepend t = 0 so the samples lie
    # on the same trajectory as the dense truth, then drop it.
    _, y_clean = make_spiral(times=np.concatenate([[0.0], t_irregular]))
    y_noisy = add_noise(y_clean[1:], NOISE_FRACTION, seed=NOISE_SEED)
    return {"t_train": t_irregular, "y_train": y_noisy, "t_dense": t_dense, "y_dense": y_dense}


# ---------------------------------------------------------------- torchdiffeq demo loop
def run_torchdiffeq_demo(problem: Problem, iterations: int) -> dict[str, Any]:
    """torchdiffeq's ``examples/ode_demo.py`` training loop on ``problem``."""
    import torch
    from sklearn.metrics import r2_score
    from torch import nn, optim
    from torchdiffeq import odeint

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    class ODEFunc(nn.Module):
        """The demo's field: MLP 2-50-tanh-2 applied to y**3."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2))
            for module in self.net.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, mean=0, std=0.1)
                    nn.init.constant_(module.bias, val=0)

        def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(y**3)

    class RunningAverageMeter:
        """Exponential running average, as in the demo."""

        def __init__(self, momentum: float = 0.99) -> None:
            self.momentum = momentum
            self.val: float | None = None
            self.avg = 0.0

        def update(self, val: float) -> None:
            if self.val is None:
                self.avg = val
            else:
                self.avg = self.avg * self.momentum + val * (1 - self.momentum)
            self.val = val

    # The demo seeds nothing; seeded here for reproducibility. RandomState(seed).choice draws
    # what np.random.seed(seed) + np.random.choice (the demo's calls) would.
    random_state = np.random.RandomState(TRAINING_SEED)
    torch.manual_seed(TRAINING_SEED)

    t_numpy = problem["t_train"]
    n_points = len(t_numpy)
    t = torch.tensor(t_numpy, dtype=torch.float32, device=device)
    true_y = torch.tensor(problem["y_train"], dtype=torch.float32, device=device)[:, None, :]
    true_y0 = true_y[0]  # (1, D): exactly (2, 0) on the dense grid, the first sample otherwise
    even_grid_from_zero = bool(t_numpy[0] == 0.0 and np.allclose(np.diff(t_numpy), t_numpy[1]))

    def get_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        s_numpy = random_state.choice(
            np.arange(n_points - DEMO_BATCH_TIME, dtype=np.int64), DEMO_BATCH_SIZE, replace=False
        )
        s = torch.from_numpy(s_numpy)
        batch_y0 = true_y[s]  # (M, 1, D)
        batch_y = torch.stack([true_y[s + i] for i in range(DEMO_BATCH_TIME)], dim=0)
        if even_grid_from_zero:  # the demo, verbatim
            return batch_y0, t[:DEMO_BATCH_TIME], batch_y, None
        # Irregular times: every window has its own stamps relative to its start.
        windows = s_numpy[None, :] + np.arange(DEMO_BATCH_TIME)[:, None]  # (T, M)
        relative = (t_numpy[windows] - t_numpy[s_numpy][None, :]).astype(np.float32)
        batch_t, index = np.unique(relative, return_inverse=True)
        gather = torch.from_numpy(index.reshape(relative.shape)).to(device)
        return batch_y0, torch.from_numpy(batch_t).to(device), batch_y, gather

    func = ODEFunc().to(device)
    optimizer = optim.RMSprop(func.parameters(), lr=DEMO_LEARNING_RATE)
    loss_meter = RunningAverageMeter(0.97)
    test_losses: list[float] = []
    test_seconds = 0.0
    columns = torch.arange(DEMO_BATCH_SIZE, device=device)[None, :]

    start, cpu_start = time.perf_counter(), time.process_time()
    for itr in range(1, iterations + 1):
        optimizer.zero_grad()
        batch_y0, batch_t, batch_y, gather = get_batch()
        pred_y = odeint(func, batch_y0, batch_t).to(device)
        if gather is not None:
            pred_y = pred_y[gather, columns]  # (T, M, 1, D) at each window's own stamps
        loss = torch.mean(torch.abs(pred_y - batch_y))
        loss.backward()
        optimizer.step()
        loss_meter.update(loss.item())

        if itr % DEMO_TEST_FREQ == 0:
            test_start = time.perf_counter()
            with torch.no_grad():
                pred_y = odeint(func, true_y0, t)
                test_losses.append(torch.mean(torch.abs(pred_y - true_y)).item())
            test_seconds += time.perf_counter() - test_start
    fit_seconds = time.perf_counter() - start
    fit_cpu_seconds = time.process_time() - cpu_start
    fit_peak = peak_rss_mb()

    # Full-trajectory forecast on the dense grid, from the first observation at its time
    # (backwards to the grid points before it, if any).
    t_dense = problem["t_dense"]
    t_first = float(t_numpy[0])
    forecast = np.empty_like(problem["y_dense"])
    forecast[t_dense == t_first] = problem["y_train"][0]
    with torch.no_grad():
        for side in (t_dense < t_first, t_dense > t_first):
            if not side.any():
                continue
            times = t_dense[side] if side[-1] else t_dense[side][::-1]
            grid = torch.tensor(np.concatenate([[t_first], times]), dtype=torch.float32)
            path = odeint(func, true_y0, grid.to(device))[1:, 0, :].double().cpu().numpy()
            forecast[side] = path if side[-1] else path[::-1]
    finite = bool(np.all(np.isfinite(forecast)))
    r2 = float(r2_score(problem["y_dense"], forecast)) if finite else float("nan")
    return {
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu_seconds,
        "r2": r2,
        "fit_peak_rss_mb": fit_peak,
        "details": {
            "device": str(device),
            "dtype": "float32",
            "iterations": iterations,
            "test_solves": len(test_losses),
            "test_solve_seconds": test_seconds,
            "final_running_train_loss": loss_meter.avg,
            "final_test_l1_loss": test_losses[-1] if test_losses else None,
            "batch_grid": "demo t[:batch_time]" if even_grid_from_zero else "union of windows",
        },
    }


# ------------------------------------------------------------------------- skneuralode
def run_skneuralode(problem: Problem) -> dict[str, Any]:
    """``NeuralODERegressor(random_state=0)`` with defaults: fit, then score on the truth."""
    from skneuralode import NeuralODERegressor

    estimator = NeuralODERegressor(random_state=TRAINING_SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start, cpu_start = time.perf_counter(), time.process_time()
        estimator.fit(problem["t_train"], problem["y_train"])
        fit_seconds = time.perf_counter() - start
        fit_cpu_seconds = time.process_time() - cpu_start
        fit_peak = peak_rss_mb()
        r2 = float(estimator.score(problem["t_dense"], problem["y_dense"]))

    stages = stage_summary(estimator)
    parameter = next(estimator.module_.parameters())
    return {
        "fit_seconds": fit_seconds,
        "fit_cpu_seconds": fit_cpu_seconds,
        "r2": r2,
        "fit_peak_rss_mb": fit_peak,
        "details": {
            "device": str(parameter.device),
            "dtype": str(parameter.dtype).removeprefix("torch."),
            "n_iter": estimator.n_iter_,
            "loss": estimator.loss_,
            "stages": stages,
            "seconds_outside_stages": fit_seconds - sum(stage["seconds"] for stage in stages),
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        },
    }


def worker(method: str, scenario: str, iterations: int) -> dict[str, Any]:
    """One method on one scenario, in this (fresh) process."""
    import torch
    import torch._dynamo  # one-time ~3 s import that torch.optim triggers; not charged

    torch.set_num_threads(1)
    fingerprint = source_fingerprint()
    problem = make_problem(scenario)
    baseline = peak_rss_mb()
    if method == PEER:
        outcome = run_torchdiffeq_demo(problem, iterations)
    elif method == "skneuralode":
        outcome = run_skneuralode(problem)
    else:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    return {
        "method": method,
        "scenario": scenario,
        **outcome,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_fit_mb": baseline,
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": list(os.getloadavg()),
        "skneuralode_sources": fingerprint,
    }


# ------------------------------------------------------------------------------ driver
def run_in_subprocess(method: str, scenario: str, iterations: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter and return its JSON record."""
    environment = dict(os.environ)
    for name in THREAD_VARIABLES:
        environment[name] = "1"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        scenario,
        "--demo-iterations",
        str(iterations),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{method} on {scenario} failed (exit {completed.returncode}):\n{completed.stderr}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def add_speedups(results: list[dict[str, Any]]) -> None:
    """Speed-up of every method over the demo loop in the same scenario."""
    peers = {r["scenario"]: r for r in results if r["method"] == PEER}
    for record in results:
        peer = peers.get(record["scenario"])
        for key, name in (("fit_seconds", "speedup_vs_demo"), ("fit_cpu_seconds", "cpu_speedup")):
            record[name] = None if peer is None else peer[key] / record[key]


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The figures as a plain-text table."""

    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}x"

    header = (
        f"{'method':<18} {'scenario':<10} {'fit s':>8} {'R^2':>8} {'peak RSS MB':>12} "
        f"{'speed-up':>9} {'fit CPU s':>10} {'CPU speed-up':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['method']:<18} {r['scenario']:<10} {r['fit_seconds']:>8.1f} {r['r2']:>8.4f} "
            f"{r['peak_rss_mb']:>12.0f} {ratio(r.get('speedup_vs_demo')):>9} "
            f"{r['fit_cpu_seconds']:>10.1f} {ratio(r.get('cpu_speedup')):>13}"
        )
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_DEMO_ITERATIONS} demo iterations instead of {DEMO_ITERATIONS}",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument(
        "--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS), metavar="NAME"
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), metavar="NAME"
    )
    parser.add_argument("--demo-iterations", type=int, help="override the demo's iterations")
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "SCENARIO"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    iterations = arguments.demo_iterations or (
        QUICK_DEMO_ITERATIONS if arguments.quick else DEMO_ITERATIONS
    )
    if arguments.worker:
        method, scenario = arguments.worker
        print(json.dumps(worker(method, scenario, iterations)))
        return 0

    document: dict[str, Any] = {
        "benchmark": "spiral",
        "settings": {
            "quick": arguments.quick,
            "demo_iterations": iterations,
            "demo_batch_time": DEMO_BATCH_TIME,
            "demo_batch_size": DEMO_BATCH_SIZE,
            "demo_test_freq": DEMO_TEST_FREQ,
            "n_dense": N_DENSE,
            "n_irregular": N_IRREGULAR,
            "noise_fraction": NOISE_FRACTION,
            "t_end": T_END,
            "seeds": {"times": TIMES_SEED, "noise": NOISE_SEED, "training": TRAINING_SEED},
        },
        "environment": environment_summary(),
        "results": [],
    }
    results: list[dict[str, Any]] = document["results"]
    for scenario in arguments.scenarios:
        for method in arguments.methods:
            print(f"running {method} on {scenario} ...", file=sys.stderr, flush=True)
            results.append(run_in_subprocess(method, scenario, iterations))
    add_speedups(results)

    text = json.dumps(document, indent=2)
    print(text)
    print()
    print(format_table(results))
    if arguments.json is not None:
        arguments.json.parent.mkdir(parents=True, exist_ok=True)
        arguments.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
