"""What a fit spends besides training: the previous code (``BASE``) against this one.

A neural ODE with the defaults and ``max_iter=1`` on 200 states (sines of random
frequency and phase, 5 % noise), 30 points per trajectory, on 1, 5 and 16 trajectories:
CPU seconds of the whole ``fit`` and of its uncertainty record, each case in a fresh
single-threaded interpreter importing either package (``git archive BASE``).

Run from the repository root: ``python benchmarks/side_budget.py`` (about 1 CPU min).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import ROOT, baseline_package

BASE = "73a21ae"
TRAJECTORIES = (1, 5, 16)

WORKER = r"""
import json, sys, time
import numpy as np
import torch._dynamo  # the one-time import torch.optim triggers, off the clock
import skneuralode._base as base
import skneuralode._uncertainty as uncertainty
from skneuralode import NeuralODERegressor

n_states, n_traj = 200, int(sys.argv[1])
rng = np.random.default_rng(0)
t = np.linspace(0.0, 10.0, 30)
frequencies = rng.uniform(0.5, 2.0, n_states)
phases = rng.uniform(0.0, 6.0, (n_traj, 1, n_states))
y = np.sin(t[None, :, None] * frequencies + phases)
y = y + 0.05 * rng.standard_normal(y.shape)
spent = {"record": 0.0}
record = uncertainty.record_fit_uncertainty

def timed(*args, **kwargs):
    start = time.process_time()
    try:
        return record(*args, **kwargs)
    finally:
        spent["record"] += time.process_time() - start

base.record_fit_uncertainty = timed
start = time.process_time()
estimator = NeuralODERegressor(max_iter=1, random_state=0).fit(np.tile(t, (n_traj, 1)), y)
total = time.process_time() - start
note = getattr(estimator, "_uncertainty_note", None)
print(json.dumps({"fit_cpu_s": total, "record_cpu_s": spent["record"], "note": note}))
"""


def run(package: Path, n_traj: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(package), "OMP_NUM_THREADS": "1"}
    env.update(MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", WORKER, str(n_traj)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=tempfile.gettempdir(),
    )
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with baseline_package(BASE) as folder:
        print(f"{'trajectories':>12} {'code':>8} {'fit CPU s':>10} {'record CPU s':>13}  note")
        for n_traj in TRAJECTORIES:
            for label, package in (("base", folder), ("current", ROOT)):
                result = run(package, n_traj)
                if "error" in result:
                    print(f"{n_traj:>12} {label:>8}  error: {result['error']}")
                    continue
                note = (result["note"] or "")[:60]
                print(
                    f"{n_traj:>12} {label:>8} {result['fit_cpu_s']:>10.2f} "
                    f"{result['record_cpu_s']:>13.2f}  {note}"
                )


if __name__ == "__main__":
    main()
