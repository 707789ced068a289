"""
Quick demo: fit the cubic spiral of the DiffEqFlux/torchdiffeq demos with default settings
==========================================================================================

Run from the repository root::

    python examples/quickstart.py

It prints the fit's R^2 and wall time and writes ``quickstart.png`` (data vs fit).
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from skneuralode import NeuralODERegressor
from skneuralode.datasets import make_spiral


def main(output: Path = Path("quickstart.png")) -> float:
    """Fit, report and plot; return the R^2 of the fit."""
    t, y = make_spiral(n_times=1000, t_end=25.0)
    started = time.perf_counter()
    estimator = NeuralODERegressor(random_state=0).fit(t, y)
    seconds = time.perf_counter() - started
    r2 = estimator.score(t, y)
    print(f"NeuralODERegressor on the cubic spiral: R^2 = {r2:.4f} in {seconds:.1f} s")
    for result in estimator.stage_results_:
        print(f"  {result.stage:<11s} {result.status:<9s} {result.n_iter:5d} steps")

    fitted = estimator.predict(t)
    figure, (states_axis, phase_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for state, colour in zip(range(2), ("tab:blue", "tab:orange"), strict=True):
        states_axis.plot(
            t, y[:, state], ".", color=colour, markersize=2, label=f"data u{state + 1}"
        )
        states_axis.plot(t, fitted[:, state], "-", color=colour, label=f"fit u{state + 1}")
    states_axis.set_xlabel("t")
    states_axis.legend(loc="upper right", fontsize=8)
    phase_axis.plot(y[:, 0], y[:, 1], ".", markersize=2, label="data")
    phase_axis.plot(fitted[:, 0], fitted[:, 1], "-", label="fit")
    phase_axis.set_xlabel("u1")
    phase_axis.set_ylabel("u2")
    phase_axis.legend(fontsize=8)
    figure.suptitle(f"Cubic spiral, default NeuralODERegressor: R^2 = {r2:.4f}, {seconds:.1f} s")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")
    return r2


if __name__ == "__main__":
    main()
