"""Small, noisy, irregular data (issue 12): today's code beside the defaults before it.

"Before" is the package at commit ``5cede65`` (the last commit before the issue-12 work),
extracted with ``git archive`` into a temporary folder; "current" is the checkout this
script lives in. Every case runs once per seed and per code in its own fresh,
single-threaded interpreter whose ``PYTHONPATH`` starts with that code, so both are
measured in the same run on the same machine.

Cases live in modules ``benchmarks/_small_data_*.py``, found by name. Each exposes

``CASES: dict[str, Callable[[int], dict[str, Any]]]``
    case name -> function of the seed returning its figures: ``"cpu_s"`` (CPU seconds of
    the fit, ``time.process_time``) and the R^2 figures, as plain floats (other JSON
    values, e.g. ``"notes"``, are kept in the JSON but not tabulated). A case must run
    with both the old and the current package: it imports ``skneuralode`` inside the
    function (the driver lists cases without importing the package), and it uses only
    the public API both have.
``BASELINE_SKIP: dict[str, str]`` (optional)
    case name -> why the old code is not run on it (e.g. it would take too long).

Run from the repository root::

    python benchmarks/small_data.py                               # every case, seed 0
    python benchmarks/small_data.py --cases "spiral 10" --seeds 0 1 2
    python benchmarks/small_data.py --skip-baseline --json benchmarks/results/small_data.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    ROOT,
    baseline_package,
    environment_summary,
    peak_rss_mb,
    run_worker,
    write_document,
)

BASE = "5cede65"  # the last commit before the issue-12 work
CODES = ("baseline", "current")
CASE_PREFIX = "_small_data_"
BENCHMARKS = Path(__file__).resolve().parent

Case = Callable[[int], dict[str, Any]]


# -------------------------------------------------------------------------- discovery
def case_modules() -> list[str]:
    """Names of the case modules next to this script, sorted."""
    return sorted(path.stem for path in BENCHMARKS.glob(f"{CASE_PREFIX}*.py"))


def discover() -> dict[str, tuple[str, str | None]]:
    """Every case name -> (its module, why the baseline skips it or None)."""
    found: dict[str, tuple[str, str | None]] = {}
    for module_name in case_modules():
        module = importlib.import_module(module_name)
        skips: dict[str, str] = getattr(module, "BASELINE_SKIP", {})
        for case in module.CASES:
            if case in found:
                raise ValueError(f"case {case!r} is defined in {found[case][0]} and {module_name}")
            found[case] = (module_name, skips.get(case))
    return found


# ----------------------------------------------------------------------------- worker
def worker(module_name: str, case: str, seed: int) -> dict[str, Any]:
    """One case with one seed, in this (fresh) process, on one torch thread."""
    import torch
    import torch._dynamo  # one-time ~3 s import that torch.optim triggers; not charged

    torch.set_num_threads(1)
    import skneuralode

    module = importlib.import_module(module_name)
    figures = module.CASES[case](seed)
    return {
        **figures,
        "peak_rss_mb": peak_rss_mb(),
        "package": str(Path(skneuralode.__file__).parent),
        "load_average_at_end": list(os.getloadavg()),
    }


def run_case(
    module_name: str, case: str, seed: int, package_root: Path, timeout: float | None
) -> dict[str, Any]:
    """Run one case in a fresh single-threaded interpreter importing ``package_root``."""
    start = time.perf_counter()
    try:
        record = run_worker(
            Path(__file__).resolve(),
            ["--worker", module_name, case, str(seed)],
            threads=1,
            pythonpath=package_root,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        record = {"error": f"stopped after {timeout:.0f} wall seconds (--timeout)"}
    except RuntimeError as error:
        record = {"error": str(error).strip().splitlines()[-1]}
    record["wall_s"] = time.perf_counter() - start
    return record


# ------------------------------------------------------------------------------ table
def format_table(results: Sequence[dict[str, Any]]) -> str:
    """One row per case, seed and figure: baseline, current and their ratio."""
    header = (
        f"{'case':<34} {'seed':>4} {'figure':<22} {'baseline':>10} {'current':>10} {'ratio':>7}"
    )
    lines = [header, "-" * len(header)]
    for result in results:
        codes = {code: result.get(code) or {} for code in CODES}
        names = [
            name
            for name in dict.fromkeys([*codes["baseline"], *codes["current"]])
            if name not in ("peak_rss_mb", "wall_s", "load_average_at_end")
            and any(isinstance(codes[code].get(name), (int, float)) for code in CODES)
        ]
        for code in CODES:
            if "error" in codes[code] or "skipped" in codes[code]:
                reason = codes[code].get("error") or codes[code]["skipped"]
                names.append(f"({code}: {reason})")
        for name in names:
            values = [codes[code].get(name) for code in CODES]
            cells = [f"{v:>10.4g}" if isinstance(v, (int, float)) else f"{'':>10}" for v in values]
            ratio = ""
            if name == "cpu_s" and all(isinstance(v, (int, float)) and v > 0 for v in values):
                ratio = f"{values[0] / values[1]:.1f}x"
            label = f"{result['case']:<34} {result['seed']:>4} {name:<22}"
            if name.startswith("("):
                lines.append(f"{result['case']:<34} {result['seed']:>4} {name}")
            else:
                lines.append(f"{label} {cells[0]} {cells[1]} {ratio:>7}")
    lines.append("ratio: baseline CPU seconds / current CPU seconds (above 1 = faster now)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver
def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", metavar="NAME", help="cases to run (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="SEED")
    parser.add_argument(
        "--skip-baseline", action="store_true", help=f"run only the current code, not {BASE}"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="wall seconds a worker may take (3600: a loaded machine stretches wall time)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="workers run at once (each on one thread; 1)"
    )
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument(
        "--worker", nargs=3, metavar=("MODULE", "CASE", "SEED"), help=argparse.SUPPRESS
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    if arguments.worker:
        module_name, case, seed = arguments.worker
        print(json.dumps(worker(module_name, case, int(seed))))
        return 0

    cases = discover()
    if arguments.list:
        for name, (module_name, skip) in cases.items():
            print(f"{name:<34} {module_name}" + (f"  (baseline skipped: {skip})" if skip else ""))
        return 0
    chosen = arguments.cases or list(cases)
    unknown = [name for name in chosen if name not in cases]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; --list shows them")

    document: dict[str, Any] = {
        "benchmark": "small_data",
        "settings": {"baseline": BASE, "seeds": arguments.seeds, "cases": chosen},
        "environment": environment_summary(),
        "results": [],
    }
    results = [{"case": name, "seed": seed} for name in chosen for seed in arguments.seeds]
    with (
        baseline_package(BASE) as old_root,
        concurrent.futures.ThreadPoolExecutor(max(arguments.jobs, 1)) as pool,
    ):
        futures = {}
        for result in results:
            module_name, skip = cases[result["case"]]
            for code in CODES:
                if code == "baseline" and (arguments.skip_baseline or skip):
                    result[code] = {"skipped": skip or "--skip-baseline"}
                    continue
                root = old_root if code == "baseline" else ROOT
                task = (module_name, result["case"], result["seed"], root, arguments.timeout)
                futures[pool.submit(run_case, *task)] = (result, code)
        for future in concurrent.futures.as_completed(futures):
            result, code = futures[future]
            result[code] = future.result()
            figures = {
                key: round(value, 4)
                for key, value in result[code].items()
                if isinstance(value, float) and key != "load_average_at_end"
            }
            label = f"{result['case']} seed {result['seed']} on {code}"
            print(f"{label}: {figures or result[code]}", file=sys.stderr, flush=True)
    document["results"] = results
    write_document(document, format_table(document["results"]), arguments.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
