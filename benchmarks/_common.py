"""Helpers the benchmarks share: subprocess runs, RSS, versions, stage timings.

Every measured configuration runs in a fresh interpreter (so peak RSS and one-time
imports are per configuration) on the number of torch threads asked for, with the
OpenMP/MKL/OpenBLAS variables set to match before torch starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
ROOT = Path(__file__).resolve().parent.parent


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / kB


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB (Linux; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
    except OSError:
        return peak_rss_mb()
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def source_fingerprint() -> str:
    """Short SHA-256 of skneuralode's Python sources, to tell which code a run measured."""
    package = ROOT / "skneuralode"
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def environment_summary() -> dict[str, Any]:
    """Versions and machine facts that the figures depend on."""
    versions = {}
    for package in ("torch", "torchdiffeq", "scikit-learn", "numpy", "scipy", "skneuralode"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None

    def git(*arguments: str) -> str:
        completed = subprocess.run(
            ["git", "-C", str(ROOT), *arguments], capture_output=True, text=True, check=False
        )
        return completed.stdout.strip()

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()),
        "git_revision": git("rev-parse", "--short", "HEAD") or None,
        "skneuralode_modified": bool(git("status", "--porcelain", "--", "skneuralode")),
        "skneuralode_sources": source_fingerprint(),
        "versions": versions,
    }


def stage_summary(estimator: Any) -> list[dict[str, Any]]:
    """How each training stage of a fitted estimator ended, with its seconds."""
    stages, elapsed = [], 0.0
    for result in estimator.stage_results_:
        records = [entry for entry in estimator.history_ if entry["stage"] == result.stage]
        ended = records[-1]["seconds"] if records else elapsed
        stages.append(
            {
                "stage": result.stage,
                "n_iter": result.n_iter,
                "status": result.status,
                "loss": result.loss,
                "seconds": ended - elapsed,
            }
        )
        elapsed = ended
    return stages


def run_worker(
    script: Path,
    arguments: Sequence[str],
    threads: int,
    pythonpath: Path | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run ``script --worker ...`` in a fresh interpreter; return its last JSON line.

    ``pythonpath`` (put first on the worker's ``PYTHONPATH``) chooses which copy of the
    package the worker imports; ``timeout`` (seconds) raises ``subprocess.TimeoutExpired``.
    """
    environment = dict(os.environ)
    for name in THREAD_VARIABLES:
        environment[name] = str(threads)
    if pythonpath is not None:
        inherited = environment.get("PYTHONPATH")
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath), *([inherited] if inherited else [])]
        )
    command = [sys.executable, str(script), *arguments]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=environment, check=False, timeout=timeout
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"{' '.join(arguments)} failed (exit {completed.returncode}):\n{completed.stderr}"
        )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cuda_skip_reason(device: str) -> str | None:
    """Why a run asked to use ``device`` cannot, or None when it can."""
    if not device.startswith("cuda"):
        return None
    import torch

    if not torch.cuda.is_available():
        return f"device={device!r} was asked for but CUDA is not available on this machine"
    return None


def write_document(document: dict[str, Any], table: str, path: Path | None) -> None:
    """Print the JSON document then the table to stdout; also save the JSON to ``path``."""
    text = json.dumps(document, indent=2)
    print(text)
    print()
    print(table)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


@contextlib.contextmanager
def baseline_package(commit: str) -> Iterator[Path]:
    """A temporary folder holding ``skneuralode`` as it was at ``commit`` (``git archive``)."""
    with tempfile.TemporaryDirectory(prefix="skneuralode-base-") as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "skneuralode"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)
