"""Memory benchmark: peak RSS of training on 1000-point trajectories, with and without the adjoint.

The data are pendulums (:func:`skneuralode.datasets.make_pendulum`) observed at 1000 points
over ``[0, 50]`` (about eight periods). Each configuration (number of trajectories, adjoint
off or on) runs in its own subprocess on one torch thread and measures two things:

``gradient``
    One gradient of the full-trajectory loss, the operation the adjoint changes: a batched
    solve of all trajectories through ``skneuralode._solve.solve`` (dopri5, default
    tolerances) with the default field of a ``NeuralODERegressor`` (trained by collocation
    on 10 of the trajectories, so the solver takes realistic steps), then ``backward``.
    The peak is taken with the kernel's high-water mark reset just before
    (``/proc/self/clear_refs``), so it is the gradient's own memory above the RSS at its
    start.
``fit``
    The same through the public API: ``NeuralODERegressor(solver=Solver(adjoint=...))`` with
    ``collocation=False``, one shooting segment per trajectory (the whole 1000 points),
    all trajectories per step and one step (``max_iter=1``). Its peak (above the RSS before
    ``fit``) also holds what any fit needs: smoothing the data, the final evaluation.

Run from the repository root::

    python benchmarks/memory.py                          # 100 trajectories (~2 min)
    python benchmarks/memory.py --sizes 100 1000         # 1000 takes ~15 min with adjoint
    python benchmarks/memory.py --quick                  # 20 trajectories, gradient only
    python benchmarks/memory.py --json benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    current_rss_mb,
    environment_summary,
    peak_rss_mb,
    run_worker,
    source_fingerprint,
    write_document,
)

N_TIMES = 1000
T_END = 50.0
DEFAULT_SIZES = (100,)
QUICK_SIZES = (20,)
SEED = 0
FIELD_TRAJECTORIES = 10


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return True


def high_water_mb() -> float:
    """Peak RSS since the last :func:`reset_peak` (Linux), else since the process started."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    return peak_rss_mb()


def measure_gradient(size: int, adjoint: bool) -> dict[str, Any]:
    """Peak memory and seconds of one full-trajectory gradient."""
    import torch

    from skneuralode import NeuralODERegressor
    from skneuralode._solve import SolverSettings, solve
    from skneuralode.datasets import make_pendulum

    t, y = make_pendulum(size, n_times=N_TIMES, t_end=T_END, seed=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A collocation fit on a few of the trajectories: the default field, trained to
        # roughly the data's dynamics and scaling, so the solver takes realistic steps.
        model = (
            NeuralODERegressor(max_iter=200, shooting=False, random_state=SEED)
            .fit(t, y[:FIELD_TRAJECTORIES])
            .module_
        )
    scaling = model.scaling
    dtype = scaling.state_scale.dtype
    initial = (torch.as_tensor(y[:, 0], dtype=dtype) - scaling.state_offset) / scaling.state_scale
    target = (torch.as_tensor(y, dtype=dtype) - scaling.state_offset) / scaling.state_scale
    times = torch.as_tensor((t - scaling.time_origin) / scaling.time_scale, dtype=dtype)
    settings = SolverSettings(adjoint=adjoint)
    exact = reset_peak()
    before = current_rss_mb()
    start = time.perf_counter()
    result = solve(model.field, initial, times.expand(size, -1), settings, shared_grid=True)
    if not result.ok:
        raise RuntimeError(result.failure)
    ((result.states - target) ** 2).mean().backward()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_above_start_mb": high_water_mb() - before,
        "rss_at_start_mb": before,
        "peak_reset": exact,
    }


def measure_fit(size: int, adjoint: bool) -> dict[str, Any]:
    """Peak memory and seconds of a one-step public fit through whole trajectories."""
    from skneuralode import MultipleShooting, NeuralODERegressor, Solver
    from skneuralode.datasets import make_pendulum

    t, y = make_pendulum(size, n_times=N_TIMES, t_end=T_END, seed=SEED)
    estimator = NeuralODERegressor(
        collocation=False,
        shooting=MultipleShooting(segment_length=N_TIMES, batch_size=size, only_if_needed=False),
        max_iter=1,
        solver=Solver(adjoint=adjoint),
        random_state=SEED,
    )
    exact = reset_peak()
    before = current_rss_mb()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one step of a fresh network fits poorly, by design
        estimator.fit(t, y)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_above_start_mb": high_water_mb() - before,
        "rss_at_start_mb": before,
        "peak_reset": exact,
        "stages": [(r.stage, r.n_iter, r.status) for r in estimator.stage_results_],
    }


def worker(measurement: str, size: int, adjoint: bool) -> dict[str, Any]:
    """One measurement in this (fresh) process."""
    import torch
    import torch._dynamo  # one-time import that torch.optim triggers; not measured

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if measurement == "gradient":
        outcome = measure_gradient(size, adjoint)
    elif measurement == "fit":
        outcome = measure_fit(size, adjoint)
    else:
        raise ValueError(f"unknown measurement {measurement!r}")
    return {
        "measurement": measurement,
        "n_trajectories": size,
        "n_times": N_TIMES,
        "adjoint": adjoint,
        **outcome,
        "process_peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": list(os.getloadavg()),
        "skneuralode_sources": source_fingerprint(),
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'n_traj':>7} {'n_times':>8} {'measurement':<12} {'adjoint':>8} {'seconds':>9} "
        f"{'peak above start MB':>20} {'process peak RSS MB':>20}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r['n_trajectories']:>7} {r['n_times']:>8} {r['measurement']:<12} "
            f"{'yes' if r['adjoint'] else 'no':>8} {r['seconds']:>9.1f} "
            f"{r['peak_above_start_mb']:>20.0f} {r['process_peak_rss_mb']:>20.0f}"
        )
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, metavar="N", help="numbers of trajectories")
    parser.add_argument(
        "--quick", action="store_true", help=f"sizes {QUICK_SIZES}, gradient measurement only"
    )
    parser.add_argument(
        "--measurements", nargs="+", choices=("gradient", "fit"), default=["gradient", "fit"]
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument(
        "--worker", nargs=3, metavar=("WHAT", "SIZE", "ADJ"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.worker:
        measurement, size, adjoint = arguments.worker
        print(json.dumps(worker(measurement, int(size), adjoint == "1")))
        return 0
    sizes = arguments.sizes or list(QUICK_SIZES if arguments.quick else DEFAULT_SIZES)
    measurements = ["gradient"] if arguments.quick else arguments.measurements
    document: dict[str, Any] = {
        "benchmark": "memory",
        "settings": {"sizes": sizes, "n_times": N_TIMES, "t_end": T_END, "seed": SEED},
        "environment": environment_summary(),
        "results": [],
    }
    results: list[dict[str, Any]] = document["results"]
    for size in sizes:
        for measurement in measurements:
            for adjoint in (False, True):
                print(
                    f"running {measurement} on {size} trajectories, adjoint={adjoint} ...",
                    file=sys.stderr,
                    flush=True,
                )
                worker_arguments = ["--worker", measurement, str(size), "1" if adjoint else "0"]
                results.append(
                    run_worker(Path(__file__).resolve(), worker_arguments, arguments.threads)
                )
    write_document(document, format_table(results), arguments.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
