"""Bergman's glucose minimal model with the defaults, against scipy ``least_squares``.

G' = -(p1 + X) G + p1 Gb,  X' = -p2 X + p3 (I(t) - Ib): glucose G observed, remote
insulin action X hidden with X(0) = 0 known, plasma insulin I(t) an input (a callable,
so both fits see the same I). An intravenous glucose tolerance test in spirit: 24 samples
over 180 min (dense early), G(0) = 280 mg/dL, Gb = 92, Ib = 11, true p1 = 0.031,
p2 = 0.019, p3 = 1.2e-5 (published orders of magnitude), 2 % noise (seed 0). Both fits
start at the true values; the package fits p1, p2, p3 and G(0) with
``param_constraints="positive"`` and without, scipy fits the same four (log-scaled
rates). Success: every parameter within 5 % of scipy's optimum. Prints the parameters,
CPU s (``time.process_time``, one thread) and the warnings the fit raised.
Run: ``PYTHONPATH=. python benchmarks/glucose_minimal_model.py`` (about 1 CPU min).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from skneuralode import UniversalODERegressor

torch.set_num_threads(1)

GB, IB = 92.0, 11.0
TRUTH = {"p1": 0.031, "p2": 0.019, "p3": 1.2e-5}
G0 = 280.0
TIMES = np.array(
    [
        2,
        4,
        6,
        8,
        10,
        12,
        14,
        16,
        19,
        22,
        25,
        30,
        35,
        40,
        50,
        60,
        70,
        80,
        90,
        100,
        120,
        140,
        160,
        180,
    ],
    dtype=float,
)


def insulin_numpy(t: np.ndarray) -> np.ndarray:
    """Plasma insulin (uU/mL): a first-phase spike and a second-phase hump over Ib."""
    return IB + 90.0 * np.exp(-t / 8.0) + 25.0 * (t / 40.0) * np.exp(1.0 - t / 40.0)


def insulin(t: torch.Tensor) -> torch.Tensor:
    return IB + 90.0 * torch.exp(-t / 8.0) + 25.0 * (t / 40.0) * torch.exp(1.0 - t / 40.0)


def minimal_model(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor], u: torch.Tensor
) -> torch.Tensor:
    g, x = y[..., 0], y[..., 1]
    dg = -(p["p1"] + x) * g + p["p1"] * GB
    dx = -p["p2"] * x + p["p3"] * (u[..., 0] - IB)
    return torch.stack([dg, dx], dim=-1)


def rhs(t: float, y: np.ndarray, p1: float, p2: float, p3: float) -> list[float]:
    g, x = y
    return [-(p1 + x) * g + p1 * GB, -p2 * x + p3 * (insulin_numpy(np.asarray(t)) - IB)]


def simulate(p1: float, p2: float, p3: float, g0: float, t: np.ndarray) -> np.ndarray:
    sol = solve_ivp(rhs, (0.0, t[-1]), [g0, 0.0], t_eval=t, args=(p1, p2, p3), rtol=1e-9)
    return sol.y.T if sol.y.shape[1] == t.size else np.full((t.size, 2), np.nan)


def data(seed: int = 0, noise: float = 0.02) -> tuple[np.ndarray, np.ndarray]:
    t = np.concatenate([[0.0], TIMES])
    clean = simulate(*TRUTH.values(), G0, t)
    rng = np.random.default_rng(seed)
    y = clean.copy()
    y[:, 0] *= 1.0 + noise * rng.standard_normal(t.size)
    y[:, 1] = np.nan  # X is never measured
    return t, y


def scipy_optimum(t: np.ndarray, y: np.ndarray) -> dict[str, float]:
    def residuals(theta: np.ndarray) -> np.ndarray:
        p1, p2, p3 = np.exp(theta[:3])
        predicted = simulate(p1, p2, p3, theta[3], t)[:, 0]
        return np.nan_to_num((predicted - y[:, 0]) / np.nanstd(y[:, 0]), nan=1e3)

    start = np.array([*np.log(list(TRUTH.values())), G0])
    theta = least_squares(residuals, start, x_scale="jac").x
    return {**dict(zip(TRUTH, np.exp(theta[:3]), strict=True)), "G0": float(theta[3])}


def fit(t: np.ndarray, y: np.ndarray, **settings: object) -> tuple[dict, float, list[str]]:
    start = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = UniversalODERegressor(
            known=minimal_model,
            params=dict(TRUTH),
            hidden_layer_sizes=(),
            random_state=0,
            **settings,
        ).fit(t, y, y0=np.array([np.nan, 0.0]), u=insulin)
    seconds = time.process_time() - start
    fitted = {**est.params_, "G0": float(est.y0_[0])}
    stages = [(r.stage, r.n_iter, r.status) for r in est.stage_results_]
    return fitted, seconds, [str(w.message)[:240] for w in caught] + [str(stages)]


def within(fitted: dict[str, float], optimum: dict[str, float], tolerance: float = 0.05) -> bool:
    return all(abs(fitted[k] / optimum[k] - 1.0) <= tolerance for k in optimum)


if __name__ == "__main__":
    t, y = data()
    start = time.process_time()
    optimum = scipy_optimum(t, y)
    print(
        f"scipy least_squares  {time.process_time() - start:5.1f} CPU s  ",
        _fmt := {k: float(f"{v:.4g}") for k, v in optimum.items()},
    )
    for constraints in ("positive", None):
        fitted, seconds, notes = fit(t, y, param_constraints=constraints)
        shown = {k: float(f"{v:.4g}") for k, v in fitted.items()}
        ok = "ok" if within(fitted, optimum) else "MISSED"
        print(f"skneuralode {constraints!s:8s} {seconds:5.1f} CPU s  {shown}  {ok}")
        for note in notes:
            print("   ", note)
