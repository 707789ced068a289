"""Size and speed of a persisted model: pickle, joblib and the safe format side by side.

Run from the repository root::

    python benchmarks/persistence.py            # default NeuralODERegressor, spiral, 200 points
    python benchmarks/persistence.py --quick    # max_iter=100: seconds instead of minutes

The fit uses default settings (a 2 x 64 network), so the sizes are those of a typical
model; write and read times are the best of 20 repetitions, in memory for pickle and
joblib and on disk for ``save``/``skneuralode.load``.
"""

from __future__ import annotations

import argparse
import io
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import torch

import skneuralode
from skneuralode import NeuralODERegressor
from skneuralode.datasets import make_spiral


def best_seconds(action: Callable[[], object], repeat: int = 20) -> float:
    """Fastest of ``repeat`` runs of ``action``."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def main(quick: bool = False) -> None:
    """Fit, persist three ways, print a table."""
    torch.set_num_threads(1)
    t, y = make_spiral(n_times=200)
    settings = {"max_iter": 100} if quick else {}
    started = time.perf_counter()
    estimator = NeuralODERegressor(random_state=0, device="cpu", **settings).fit(t, y)
    n_parameters = sum(p.numel() for p in estimator.module_.parameters())
    print(
        f"fit {time.perf_counter() - started:.1f} s, R^2 {estimator.score(t, y):.4f}, "
        f"{n_parameters} parameters, {len(estimator.history_)} history records"
    )
    pickled = pickle.dumps(estimator)
    buffer = io.BytesIO()
    joblib.dump(estimator, buffer)
    joblibbed = buffer.getvalue()
    path = Path(tempfile.mkdtemp()) / "model.skn"
    estimator.save(path)
    rows = [
        (
            "pickle",
            len(pickled),
            best_seconds(lambda: pickle.dumps(estimator)),
            best_seconds(lambda: pickle.loads(pickled)),
        ),
        (
            "joblib",
            len(joblibbed),
            best_seconds(lambda: joblib.dump(estimator, io.BytesIO())),
            best_seconds(lambda: joblib.load(io.BytesIO(joblibbed))),
        ),
        (
            "save/load",
            path.stat().st_size,
            best_seconds(lambda: estimator.save(path)),
            best_seconds(lambda: skneuralode.load(path)),
        ),
    ]
    print(f"{'format':<10} {'size':>10} {'write':>10} {'read':>10}")
    for name, size, write, read in rows:
        print(f"{name:<10} {size / 1024:>6.1f} KiB {1e3 * write:>7.1f} ms {1e3 * read:>7.1f} ms")
    without_history = pickle.loads(pickled)
    without_history.history_ = []
    print(f"pickle without history_: {len(pickle.dumps(without_history)) / 1024:.1f} KiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="max_iter=100 instead of 1000")
    main(parser.parse_args().quick)
