"""
An epidemic of which only the sick were counted: SIR with a hidden susceptible state
====================================================================================

14 daily counts of the infected at the scale of the 1978 boarding-school influenza
outbreak (763 boys, one sick on day 0), 10 % noise. The susceptible were never counted:
their column of ``y`` is NaN everywhere, and their initial value (N - 1) is known and
given as ``y0``. ``UniversalODERegressor`` with the SIR equations and no network
estimates the infection and recovery rates and R0.

Run from the repository root::

    python examples/sir_hidden_state.py

It prints the estimates and writes ``sir_hidden_state.png``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from skneuralode import UniversalODERegressor
from skneuralode.datasets import SIR, make_sir, sir_known


def main(output: Path = Path("sir_hidden_state.png")) -> dict[str, float]:
    """Fit, report and plot; return the fitted parameters."""
    t, y, y0 = make_sir(noise=0.1, seed=0)
    estimator = UniversalODERegressor(
        known=sir_known,
        params={"beta": 1.0, "gamma": 0.3},
        fixed_params={"population": SIR["population"]},
        param_constraints="positive",
        hidden_layer_sizes=(),
        random_state=0,
    ).fit(t, y, y0=y0)
    beta, gamma = estimator.params_["beta"], estimator.params_["gamma"]
    print(f"hidden states: {estimator.hidden_states_} (S), initial state held at {estimator.y0_}")
    print(f"beta = {beta:.3f} (truth {SIR['beta']}), gamma = {gamma:.3f} (truth {SIR['gamma']})")
    print(f"R0 = {beta / gamma:.2f} (truth {SIR['beta'] / SIR['gamma']:.2f})")
    print(f"R^2 on the counted infected: {estimator.score(t, y):.3f}")

    fine = np.linspace(0.0, 20.0, 200)
    predicted = estimator.predict(fine)
    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(t, y[:, 1], "o", label="infected (counted)")
    axis.plot(fine, predicted[:, 1], "-", label="infected (model)")
    axis.plot(fine, predicted[:, 0], "--", label="susceptible (hidden, inferred)")
    axis.set_xlabel("day")
    axis.legend()
    axis.set_title(f"SIR with the susceptible never counted: R0 = {beta / gamma:.2f}")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    print(f"wrote {output}")
    return dict(estimator.params_)


if __name__ == "__main__":
    main()
