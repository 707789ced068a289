"""Does ``torch.compile`` of the vector field pay? Eager against compiled, side by side.

The field is skneuralode's default one (``NeuralODERegressor()``'s MLP 2-64-tanh-64-tanh-2
on scaled states), taken from a short fit on the pendulum family. Two workloads, each the
inner loop of one training stage:

``collocation``
    One forward and backward pass of the field on a mini-batch of (state, rate) pairs:
    the collocation step (500 pairs = the whole of 10 trajectories, 1024 = the default
    mini-batch, and 4096).
``solve``
    One batched dopri5 solve (``skneuralode._solve.solve``, default tolerances) of 100 or
    1000 pendulum trajectories over their 50-point grid, forward and backward: a shooting
    or polish step.

For each, the median seconds of a step over ``--repeats`` after warm-up, and the seconds
of the first compiled call (the compilation a fit would pay once per input shape). The
break-even is how many steps the compiled version needs to win its compilation back.
Each mode runs in its own subprocess. Run from the repository root::

    python benchmarks/compile_field.py
    python benchmarks/compile_field.py --quick --json benchmarks/results/compile.json
    python benchmarks/compile_field.py --device cuda     # skips cleanly without CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cuda_skip_reason, environment_summary, run_worker, write_document

MODES = ("eager", "compiled")
COLLOCATION_BATCHES = (500, 1024, 4096)
SOLVE_BATCHES = (100, 1000)
QUICK_COLLOCATION_BATCHES = (1024,)
QUICK_SOLVE_BATCHES = (100,)


def _median_seconds(step: Callable[[], None], repeats: int, device: str) -> tuple[float, float]:
    """Seconds of the first call and median seconds of ``repeats`` later calls."""
    import torch

    def timed() -> float:
        start = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = timed()
    for _ in range(2):
        timed()
    return first, statistics.median(timed() for _ in range(repeats))


def worker(mode: str, device: str, repeats: int, quick: bool) -> dict[str, Any]:
    """Time both workloads with the field eager or compiled, in this fresh process."""
    import torch

    from skneuralode import NeuralODERegressor
    from skneuralode._solve import SolverSettings, solve
    from skneuralode.datasets import make_pendulum

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t, y = make_pendulum(max(SOLVE_BATCHES), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = NeuralODERegressor(max_iter=20, shooting=False, random_state=0, device=device)
        estimator.fit(t[:10], y[:10, :10])
    model = estimator.module_
    field = torch.compile(model.field) if mode == "compiled" else model.field
    parameter = next(model.parameters())
    dtype = parameter.dtype
    generator = torch.Generator().manual_seed(0)
    records: list[dict[str, Any]] = []

    for batch in QUICK_COLLOCATION_BATCHES if quick else COLLOCATION_BATCHES:
        states = torch.randn(batch, 2, generator=generator).to(device=device, dtype=dtype)
        rates = torch.randn(batch, 2, generator=generator).to(device=device, dtype=dtype)
        pair_times = torch.zeros(batch, dtype=dtype, device=device)

        def collocation_step(
            states: torch.Tensor = states,
            rates: torch.Tensor = rates,
            pair_times: torch.Tensor = pair_times,
        ) -> None:
            loss = ((field(pair_times, states) - rates) ** 2).mean()
            loss.backward()

        first, median = _median_seconds(collocation_step, repeats, device)
        records.append(
            {"workload": "collocation", "batch": batch, "first_s": first, "median_s": median}
        )

    scaled_times = model.scaling.time_scale
    grid = torch.as_tensor(t / scaled_times, dtype=dtype, device=device)
    for batch in QUICK_SOLVE_BATCHES if quick else SOLVE_BATCHES:
        initial = torch.as_tensor(
            (y[:batch, 0] - model.scaling.state_offset.cpu().numpy())
            / model.scaling.state_scale.cpu().numpy(),
            dtype=dtype,
            device=device,
        )
        times = grid.expand(batch, -1)

        def solve_step(initial: torch.Tensor = initial, times: torch.Tensor = times) -> None:
            result = solve(field, initial, times, SolverSettings(), shared_grid=True)
            result.states.pow(2).mean().backward()

        first, median = _median_seconds(solve_step, max(3, repeats // 10), device)
        records.append({"workload": "solve", "batch": batch, "first_s": first, "median_s": median})
    return {
        "mode": mode,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": list(os.getloadavg()),
        "records": records,
    }


def compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per workload and batch: eager and compiled step, speed-up and break-even steps."""
    by_mode = {r["mode"]: {(x["workload"], x["batch"]): x for x in r["records"]} for r in results}
    rows = []
    for key, eager in by_mode.get("eager", {}).items():
        compiled = by_mode.get("compiled", {}).get(key)
        if compiled is None:
            continue
        saving = eager["median_s"] - compiled["median_s"]
        compile_cost = compiled["first_s"] - eager["first_s"]
        rows.append(
            {
                "workload": key[0],
                "batch": key[1],
                "eager_ms": 1e3 * eager["median_s"],
                "compiled_ms": 1e3 * compiled["median_s"],
                "speedup": eager["median_s"] / compiled["median_s"],
                "compile_s": compiled["first_s"],
                "break_even_steps": compile_cost / saving if saving > 0 else None,
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    header = (
        f"{'workload':<12} {'batch':>6} {'eager ms':>10} {'compiled ms':>12} {'speed-up':>9} "
        f"{'1st compiled call s':>20} {'break-even steps':>17}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        even = "never" if row["break_even_steps"] is None else f"{row['break_even_steps']:.0f}"
        lines.append(
            f"{row['workload']:<12} {row['batch']:>6} {row['eager_ms']:>10.2f} "
            f"{row['compiled_ms']:>12.2f} {row['speedup']:>8.2f}x {row['compile_s']:>20.1f} "
            f"{even:>17}"
        )
    return "\n".join(lines)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one batch size per workload")
    parser.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda' or 'cuda:N'")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=50, help="timed collocation steps")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.worker:
        record = worker(arguments.worker, arguments.device, arguments.repeats, arguments.quick)
        print(json.dumps(record))
        return 0
    skip = cuda_skip_reason(arguments.device)
    if skip is not None:
        print(f"skipped: {skip}", file=sys.stderr)
        write_document({"benchmark": "compile_field", "skipped": skip}, f"skipped ({skip})", None)
        return 0
    shared = ["--device", arguments.device, "--repeats", str(arguments.repeats)]
    if arguments.quick:
        shared.append("--quick")
    results = []
    for mode in MODES:
        print(f"running {mode} ...", file=sys.stderr, flush=True)
        results.append(
            run_worker(Path(__file__).resolve(), ["--worker", mode, *shared], arguments.threads)
        )
    rows = compare(results)
    document = {
        "benchmark": "compile_field",
        "settings": {"device": arguments.device, "threads": arguments.threads},
        "environment": environment_summary(),
        "results": results,
        "comparison": rows,
    }
    write_document(document, format_table(rows), arguments.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
