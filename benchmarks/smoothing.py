"""Smoothing and derivative estimates: the smoother before issue 12 beside today's.

The collocation warm start regresses the vector field on smoothed states and their
derivative estimates, so the derivative error is what decides how good it is. The peer is
the smoother of commit ``5cede65`` (one discrepancy strength per series, noise from third
differences, ``scipy.interpolate.make_smoothing_spline`` fitted 17 times per series),
loaded from git history; it is run on the same data, in the same process.

Derivative cases (relative L2 error of dy/dt against the exact field at the clean
states, averaged over the states; noisy cases: mean and worst over ``--draws`` noise
draws, draw 0 being the one the other benchmarks use; CPU milliseconds per smoothing,
single-threaded, as the machine may be shared; wall seconds are in the JSON):

``spiral clean 1000``       seed spiral, 1000 clean points on [0, 25]
``spiral irregular 200``    200 times uniform in [0, 25], 5 % noise (benchmarks/spiral.py)
``spiral 10``               10 even points on [0, 25], 5 % noise (about 2 radians a step)
``oscillator 10``           damped oscillator, 10 points, 10 % noise (benchmarks/hard_fits.py)
``lotka-volterra 31``       31 points on [0, 3], 5 % of each state's mean (lotka_volterra.py)
``oscillator 1e4 ms``       damped oscillator x 1e4 over 6 ms, 60 clean points (scale)
``oscillator 1e4 ms noisy`` the same with 5 % noise
``sine 120``, ``sine irregular 120``, ``pendulum 50``   guards: stationary noisy series
``10000 pendulums x 50``    one grid, 2 % noise: 20 000 series smoothed as one group

Then collocation alone (``NeuralODERegressor(shooting=False, polish=False)``, random
states 0-5) on the irregular noisy spiral with each smoother, R^2 against the clean
1000-point truth; and one fit with ``max_iter=1`` of a single 10^6-point spiral, in its
own single-threaded process, with the time of each phase (``--fit-old`` also fits with
the old smoother: about 8 minutes).

Run from the repository root::

    python benchmarks/smoothing.py                  # everything but the old 10^6 fit
    python benchmarks/smoothing.py --quick          # the derivative table only
    python benchmarks/smoothing.py --fit-old --json benchmarks/results/smoothing.json
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ROOT,
    THREAD_VARIABLES,
    environment_summary,
    peak_rss_mb,
    run_worker,
    stage_summary,
    write_document,
)

sys.path.insert(0, str(ROOT))  # measure the checkout this script lives in

BASE = "5cede65"  # the last commit with the smoother before issue 12
FIT_TIMES = 1_000_000
COLLOCATION_SEEDS = range(6)

#: t (n,), observed y and exact dy/dt: (n, n_states), or (n_traj, n, n_states) on one grid
Case = tuple[np.ndarray, np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------ smoothers
@functools.cache
def old_smoothing() -> types.ModuleType:
    """``skneuralode/_smoothing.py`` as it was at ``BASE`` (it imports only numpy, scipy)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{BASE}:skneuralode/_smoothing.py"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    module = types.ModuleType("skneuralode_smoothing_before_issue_12")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BASE}:skneuralode/_smoothing.py", "exec"), module.__dict__)
    return module


def smoother(name: str) -> Callable[..., Any]:
    if name == "old":
        return old_smoothing().smooth_trajectories
    from skneuralode._smoothing import smooth_trajectories

    return smooth_trajectories


# ---------------------------------------------------------------------------------- cases
def _rates(rhs: Callable, states: np.ndarray) -> np.ndarray:
    return np.array([rhs(0.0, state) for state in states])


def spiral_clean(draw: int) -> Case:
    from skneuralode.datasets import make_spiral, spiral_rhs

    t, y = make_spiral(n_times=1000)
    return t, y, _rates(spiral_rhs, y)


def spiral_irregular(draw: int) -> Case:
    """benchmarks/spiral.py's irregular scenario for draw 0 (times seed 0, noise seed 1)."""
    from skneuralode.datasets import add_noise, make_spiral, spiral_rhs

    t = np.sort(np.random.default_rng(draw).uniform(0.0, 25.0, 200))
    _, clean = make_spiral(times=np.concatenate([[0.0], t]))
    clean = clean[1:]
    return t, add_noise(clean, 0.05, seed=draw + 1), _rates(spiral_rhs, clean)


def spiral_ten(draw: int) -> Case:
    from skneuralode.datasets import add_noise, make_spiral, spiral_rhs

    t, clean = make_spiral(n_times=10)
    return t, add_noise(clean, 0.05, seed=draw + 1), _rates(spiral_rhs, clean)


def oscillator_ten(draw: int) -> Case:
    """benchmarks/hard_fits.py's ``ten_noisy_points`` for draw 0."""
    from skneuralode.datasets import add_noise, damped_oscillator_rhs, make_damped_oscillator

    t, clean = make_damped_oscillator(n_times=10, t_end=6.0)
    return t, add_noise(clean, 0.1, seed=draw + 1), _rates(damped_oscillator_rhs, clean)


def lotka_volterra(draw: int) -> Case:
    """benchmarks/lotka_volterra.py's data for noise seed ``draw``."""
    from skneuralode.datasets import lotka_volterra_rhs, make_lotka_volterra

    t, clean = make_lotka_volterra()
    rng = np.random.default_rng(draw)
    noisy = clean + 0.05 * clean.mean(axis=0) * rng.standard_normal(clean.shape)
    return t, noisy, _rates(lotka_volterra_rhs, clean)


def oscillator_milliseconds(draw: int, noise: float = 0.0) -> Case:
    from skneuralode.datasets import add_noise, damped_oscillator_rhs, make_damped_oscillator

    t, clean = make_damped_oscillator(n_times=60, t_end=6.0)
    rates = _rates(damped_oscillator_rhs, clean) * 1e4 / 1e-3
    observed = add_noise(clean * 1e4, noise, seed=draw) if noise else clean * 1e4
    return t * 1e-3, observed, rates


def sine(draw: int, irregular: bool = False) -> Case:
    rng = np.random.default_rng(draw + (100 if irregular else 0))
    t = np.sort(rng.uniform(0.0, 6.0, 120)) if irregular else np.linspace(0.0, 6.0, 120)
    noisy = np.sin(t) + 0.05 * rng.standard_normal(t.size)
    return t, noisy[:, None], np.cos(t)[:, None]


def pendulum(draw: int) -> Case:
    from skneuralode.datasets import add_noise, make_pendulum, pendulum_rhs

    t, clean = make_pendulum(y0=[1.0, 0.0], n_times=50)
    return t, add_noise(clean, 0.05, seed=draw), pendulum_rhs(0.0, clean)


def pendulums(draw: int) -> Case:
    from skneuralode.datasets import make_pendulum, pendulum_rhs

    t, clean = make_pendulum(n_trajectories=10_000, n_times=50)
    noisy = clean + 0.02 * np.random.default_rng(draw).standard_normal(clean.shape)
    return t, noisy, pendulum_rhs(0.0, clean)


#: name -> (case, noisy: averaged over draws)
CASES: dict[str, tuple[Callable[[int], Case], bool]] = {
    "spiral clean 1000": (spiral_clean, False),
    "spiral irregular 200": (spiral_irregular, True),
    "spiral 10": (spiral_ten, True),
    "oscillator 10": (oscillator_ten, True),
    "lotka-volterra 31": (lotka_volterra, True),
    "oscillator 1e4 ms": (oscillator_milliseconds, False),
    "oscillator 1e4 ms noisy": (functools.partial(oscillator_milliseconds, noise=0.05), True),
    "sine 120": (sine, True),
    "sine irregular 120": (functools.partial(sine, irregular=True), True),
    "pendulum 50": (pendulum, True),
    "10000 pendulums x 50": (pendulums, False),
}


def derivative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Relative L2 error of each state's derivative, averaged over the states."""
    estimate, truth = estimate.reshape(-1, truth.shape[-1]), truth.reshape(-1, truth.shape[-1])
    errors = np.linalg.norm(estimate - truth, axis=0) / np.linalg.norm(truth, axis=0)
    return float(np.mean(errors))


def smooth_case(smooth: Callable[..., Any], t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivative estimates of one case, shaped like its ``y``."""
    states = y.reshape(-1, len(t), y.shape[-1])  # (n_traj, n, n_states)
    times = np.broadcast_to(t, states.shape[:2]).copy()
    lengths = np.full(states.shape[0], len(t))
    return smooth(times, states, lengths, None).derivatives.reshape(y.shape)


def derivative_rows(draws: int) -> list[dict[str, Any]]:
    rows = []
    for name, (make, noisy) in CASES.items():
        row: dict[str, Any] = {"case": name}
        cases = [make(draw) for draw in range(draws if noisy else 1)]
        row["n_times"], row["draws"] = cases[0][1].size // cases[0][1].shape[-1], len(cases)
        for which in ("old", "new"):
            smooth = smoother(which)
            errors, seconds, cpu_seconds = [], [], []
            for t, y, rates in cases:
                wall, cpu = time.perf_counter(), time.process_time()
                derivatives = smooth_case(smooth, t, y.reshape(*y.shape[:-1], -1))
                seconds.append(time.perf_counter() - wall)
                cpu_seconds.append(time.process_time() - cpu)
                errors.append(derivative_error(derivatives, rates))
            row[which] = {
                "error": float(np.mean(errors)),
                "worst_error": float(np.max(errors)),
                "seconds": float(np.mean(seconds)),
                "cpu_seconds": float(np.mean(cpu_seconds)),
            }
        rows.append(row)
        print(
            f"{name}: {row['old']['error']:.3f} -> {row['new']['error']:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return rows


# ---------------------------------------------------------------- collocation alone
@contextlib.contextmanager
def smoothing_in_fit(which: str) -> Iterator[None]:
    """Make ``fit`` smooth with ``which`` ("old" or "new")."""
    import skneuralode._problem as problem

    today = problem.smooth_trajectories
    problem.smooth_trajectories = smoother(which)
    try:
        yield
    finally:
        problem.smooth_trajectories = today


def collocation_rows() -> list[dict[str, Any]]:
    from sklearn.metrics import r2_score

    from skneuralode import NeuralODERegressor
    from skneuralode.datasets import make_spiral

    t, y, _ = spiral_irregular(0)
    t_dense, y_dense = make_spiral(n_times=1000)
    rows = []
    for which in ("old", "new"):
        scores, seconds = [], []
        for seed in COLLOCATION_SEEDS:
            estimator = NeuralODERegressor(
                shooting=False, polish=False, device="cpu", random_state=seed
            )
            with smoothing_in_fit(which), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                estimator.fit(t, y)
                seconds.append(time.perf_counter() - start)
            scores.append(float(r2_score(y_dense, estimator.predict(t_dense))))
        rows.append({"smoother": which, "r2": scores, "seconds": seconds})
        print(f"collocation alone, {which}: R^2 {np.round(scores, 3)}", file=sys.stderr)
    return rows


# ----------------------------------------------------------------------- the 10^6 fit
class _PhaseClock:
    """Wall and CPU seconds spent inside wrapped functions, by phase."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, phase: str, function: Callable) -> Callable:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall
                self.cpu[phase] = self.cpu.get(phase, 0.0) + time.process_time() - cpu
                self.calls[phase] = self.calls.get(phase, 0) + 1

        return timed


def fit_worker(which: str, n_times: int) -> dict[str, Any]:
    """One ``fit(max_iter=1)`` of one ``n_times``-point spiral, timed by phase."""
    import torch
    import torch._dynamo  # one-time ~3-6 s import that torch.optim triggers: not charged

    import skneuralode._base as base
    import skneuralode._problem as problem
    import skneuralode._training.runner as training
    from skneuralode import NeuralODERegressor
    from skneuralode._training import TrainingStage
    from skneuralode.datasets import make_spiral

    torch.set_num_threads(1)
    t, y = make_spiral(n_times=n_times)
    clock = _PhaseClock()
    problem.smooth_trajectories = clock.wrap("smoothing", smoother(which))
    base.validate_trajectories = clock.wrap("validation", base.validate_trajectories)
    base.build_problem = clock.wrap("problem (with smoothing)", base.build_problem)
    training._evaluate = clock.wrap("evaluation solves", training._evaluate)
    for stage in TrainingStage.__subclasses__():
        stage.run = clock.wrap(f"stage {stage.__name__}", stage.run)
    estimator = NeuralODERegressor(max_iter=1, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        estimator.fit(t, y)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "smoother": which,
        "n_times": n_times,
        "fit_seconds": wall,
        "fit_cpu_seconds": cpu,
        "phases_wall": clock.wall,
        "phases_cpu": clock.cpu,
        "calls": clock.calls,
        "stages": stage_summary(estimator),
        "peak_rss_mb": peak_rss_mb(),
    }


# ------------------------------------------------------------------------------- tables
def tables(document: dict[str, Any]) -> str:
    lines = [
        "| case | points | draws | old error | new error | old worst | new worst "
        "| old CPU ms | new CPU ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in document["derivatives"]:
        old, new = row["old"], row["new"]
        lines.append(
            f"| {row['case']} | {row['n_times']} | {row['draws']} | {old['error']:.3f} | "
            f"**{new['error']:.3f}** | {old['worst_error']:.3f} | {new['worst_error']:.3f} | "
            f"{1e3 * old['cpu_seconds']:.1f} | {1e3 * new['cpu_seconds']:.1f} |"
        )
    if document.get("collocation"):
        lines += ["", "| smoother | collocation-alone R^2, random_state 0-5 | median |"]
        lines.append("| --- | --- | ---: |")
        for row in document["collocation"]:
            scores = ", ".join(f"{score:.3f}" for score in row["r2"])
            lines.append(f"| {row['smoother']} | {scores} | {np.median(row['r2']):.3f} |")
    for row in document.get("fits", []):
        lines += [
            "",
            f"fit(max_iter=1), {row['n_times']} points, {row['smoother']} smoother: "
            f"{row['fit_seconds']:.1f} s wall, {row['fit_cpu_seconds']:.1f} s CPU, "
            f"peak RSS {row['peak_rss_mb']:.0f} MB",
            "",
            "| phase | calls | wall s | CPU s |",
            "| --- | ---: | ---: | ---: |",
        ]
        for phase, wall in row["phases_wall"].items():
            lines.append(
                f"| {phase} | {row['calls'][phase]} | {wall:.1f} | {row['phases_cpu'][phase]:.1f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=8, help="noise draws per noisy case")
    parser.add_argument("--quick", action="store_true", help="the derivative table only")
    parser.add_argument("--fit-old", action="store_true", help="also the old 10^6 fit")
    parser.add_argument("--fit-times", type=int, default=FIT_TIMES)
    parser.add_argument("--json", type=Path, help="also write the JSON document here")
    parser.add_argument("--worker", choices=["old", "new"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(fit_worker(args.worker, args.fit_times)))
        return
    import torch

    torch.set_num_threads(1)
    document: dict[str, Any] = {
        "environment": environment_summary(),
        "thread_variables": {name: "1" for name in THREAD_VARIABLES},
        "base": BASE,
        "derivatives": derivative_rows(args.draws),
    }
    if not args.quick:
        document["collocation"] = collocation_rows()
        document["fits"] = []
        for which in ("new", "old") if args.fit_old else ("new",):
            print(f"fit of {args.fit_times} points, {which} smoother ...", file=sys.stderr)
            arguments = ["--worker", which, "--fit-times", str(args.fit_times)]
            document["fits"].append(run_worker(Path(__file__), arguments, threads=1))
    write_document(document, tables(document), args.json)


if __name__ == "__main__":
    main()
