"""
Pharmacokinetics written in amounts, the concentration observed (``observe``)
=============================================================================

The physics of a one-compartment model is a mass balance: the dose leaves the gut at
rate ka and the central compartment at rate ke, ``gut' = -ka gut`` and
``central' = ka gut - ke central``, in amounts. A plasma sample measures neither: it
measures the concentration ``central / V``, with the volume V unknown. With
``observe=central_concentration`` the model keeps the physics in amounts, ``y`` holds
the concentrations, and V is learned with ka and ke; the doses are the known initial
gut amounts (``y0``, one row per subject, the central compartment empty at first).

12 subjects, each on its own times over 24 h, 5 % noise, start 3x off the truth.

Run from the repository root::

    python examples/observed_concentration.py

It prints the estimates and writes ``observed_concentration.png``.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from skneuralode import UniversalODERegressor
from skneuralode.datasets import (
    PHARMACOKINETICS,
    central_concentration,
    make_pharmacokinetics,
    one_compartment_amounts,
)


def main(output: Path = Path("observed_concentration.png")) -> dict[str, float]:
    """Fit, report and plot; return the fitted parameters."""
    t, y, doses = make_pharmacokinetics(n_subjects=12, seed=0)
    concentration = [values[:, 1:2] for values in y]  # what was measured
    start = {"ka": 4.5, "ke": 0.027, "V": 96.0}  # 3x off the truth
    estimator = UniversalODERegressor(
        known=one_compartment_amounts,
        params=start,
        # A concentration alone cannot tell absorption from elimination (ka <-> ke with
        # V -> V ke / ka gives the same curve): say that absorption is the faster one.
        param_constraints={"ka": (0.3, 30.0), "ke": (0.003, 0.3), "V": "positive"},
        hidden_layer_sizes=(),
        observe=central_concentration,
        random_state=0,
    )
    began = time.process_time()
    estimator.fit(t, concentration, y0=doses)  # y0: [dose, 0] per subject
    seconds = time.process_time() - began
    for name, value in estimator.params_.items():
        truth = PHARMACOKINETICS[name]
        print(f"{name} = {value:.4g} (truth {truth}, error {100 * abs(value / truth - 1):.1f} %)")
    print(f"R^2 of the concentrations: {estimator.score(t, concentration, y0=doses):.4f}")
    print(f"fit: {seconds:.1f} CPU s")

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for subject in range(3):
        fine = np.linspace(0.0, t[subject][-1], 200)
        curve = estimator.predict(fine, y0=doses[subject])
        amounts = estimator.predict_states(fine, y0=doses[subject])
        (line,) = left.plot(fine, curve[:, 0], "-", label=f"subject {subject}")
        left.plot(t[subject], concentration[subject][:, 0], "o", color=line.get_color())
        right.plot(fine, amounts[:, 0], "--", color=line.get_color())
        right.plot(fine, amounts[:, 1], "-", color=line.get_color())
    left.set(xlabel="hours", ylabel="concentration (observed)")
    right.set(xlabel="hours", ylabel="amount: gut (dashed), central (solid)")
    left.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")
    return dict(estimator.params_)


if __name__ == "__main__":
    main()
