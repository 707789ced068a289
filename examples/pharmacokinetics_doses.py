"""
Pharmacokinetics: a dose per subject into a gut compartment nobody measures
===========================================================================

12 subjects, each sampled at its own times over 24 h after an oral dose. The dose is
the initial amount in the gut (a hidden state: its column of ``y`` is NaN, its initial
value is known and given in ``y0``, one row per subject); the plasma concentration is
measured. ``UniversalODERegressor`` with one-compartment kinetics estimates the
absorption rate ka, the elimination rate ke and the volume V from a start 3x off.

Run from the repository root::

    python examples/pharmacokinetics_doses.py

It prints the estimates and writes ``pharmacokinetics_doses.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from skneuralode import UniversalODERegressor
from skneuralode.datasets import PHARMACOKINETICS, make_pharmacokinetics, one_compartment_known


def main(output: Path = Path("pharmacokinetics_doses.png")) -> dict[str, float]:
    """Fit, report and plot; return the fitted parameters."""
    t, y, y0 = make_pharmacokinetics(n_subjects=12, seed=0)
    start = {"ka": 4.5, "ke": 0.027, "V": 96.0}  # 3x off the truth
    estimator = UniversalODERegressor(
        known=one_compartment_known,
        params=start,
        param_constraints="positive",
        hidden_layer_sizes=(),
        random_state=0,
    ).fit(t, y, y0=y0)
    for name, value in estimator.params_.items():
        truth = PHARMACOKINETICS[name]
        print(f"{name} = {value:.4g} (truth {truth}, error {100 * abs(value / truth - 1):.1f} %)")

    figure, axis = plt.subplots(figsize=(7, 4))
    for subject in range(3):
        fine = np.linspace(0.0, t[subject][-1], 200)
        curve = estimator.predict(fine, y0=y0[subject])
        (line,) = axis.plot(
            fine, curve[:, 1], "-", label=f"subject {subject}, dose {y0[subject, 0]:.0f}"
        )
        axis.plot(t[subject], y[subject][:, 1], "o", color=line.get_color())
    axis.set_xlabel("hours")
    axis.set_ylabel("concentration")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")
    return dict(estimator.params_)


if __name__ == "__main__":
    main()
