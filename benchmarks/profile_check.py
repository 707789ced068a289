"""Profile-likelihood intervals against brute-force refits, on four classical models.

For each case a ``UniversalODERegressor`` with no network is fitted with the defaults,
then ``param_intervals(method="profile")`` is compared with a brute force that knows
nothing of skneuralode's profile: for each parameter, on a grid of fixed values (log
spaced for positive parameters) every other parameter and every initial state is
re-fitted by ``scipy.optimize.least_squares`` over ``solve_ivp`` (LSODA, rtol 1e-9),
from both the optimum and the neighbouring grid point (the better kept), and the
crossing of ``chi2_min + t_{0.975, dof}^2`` is located by ``brentq`` on those refits.
Both use the fit's noise levels (``noise_std_``) and degrees of freedom, so they
measure the same threshold.

Cases (data generated here, seeded):

- ``lotka_volterra``: 18 irregular times over 17 days, 15 % multiplicative noise;
  four rates started 30 % off.
- ``boundary``: ``y' = -k1 y - k2 y^2`` fitted to data of ``y' = -k1 y + 0.04 y^2``
  with ``k2`` constrained positive: the constrained optimum sits at ``k2 = 0``, whose
  interval must start at the boundary (and be flagged).
- ``ridge``: Michaelis-Menten depletion ``S' = -Vmax S / (Km + S)`` from S0 = 20 with
  Km = 8: Vmax and Km are strongly correlated (a curved ridge).
- ``sir``: S and I of an epidemic (beta 0.5, gamma 0.2, 25 daily points, 4 % noise),
  plus the derived ``R0 = beta / gamma`` (profiled through the ``functions`` argument;
  its brute force re-fits at fixed ``beta / gamma``).

Prints, per parameter, the profile's ends, the brute force's, the larger relative
error (to the brute-force end's value; to the half-width too), the Wald interval, and
the CPU s of the fit, the profile and the brute force. The goal: every end within 5 %.

Run: ``python benchmarks/profile_check.py`` (about 5 CPU min; ``--quick`` runs the
boundary and ridge cases only).
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import brentq, least_squares
from scipy.stats import t as student

from skneuralode import UniversalODERegressor

torch.set_num_threads(1)


@dataclass
class Case:
    """One classical model: its torch field, its scipy right-hand side and its data."""

    name: str
    known: Callable
    rhs: Callable  # rhs(t, y, *params) for solve_ivp
    start: dict[str, float]
    t: np.ndarray
    y: np.ndarray
    constraints: str | dict | None = "positive"
    functions: dict[str, tuple[Callable, Callable]] = field(default_factory=dict)
    # name -> (torch function of p, numpy function of the parameter vector)


# ------------------------------------------------------------------------------ models
def lv_known(t, y, p):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x - p["b"] * x * z, -p["c"] * z + p["d"] * x * z], -1)


def lv_rhs(t, y, a, b, c, d):
    return [a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]]


def decay_known(t, y, p):
    return -p["k1"] * y - p["k2"] * y**2


def decay_rhs(t, y, k1, k2):
    return [-k1 * y[0] - k2 * y[0] ** 2]


def mm_known(t, y, p):
    return -p["vmax"] * y / (p["km"] + y)


def mm_rhs(t, y, vmax, km):
    return [-vmax * y[0] / (km + y[0])]


def sir_known(t, y, p):
    s, i = y[..., 0], y[..., 1]
    return torch.stack([-p["beta"] * s * i, p["beta"] * s * i - p["gamma"] * i], -1)


def sir_rhs(t, y, beta, gamma):
    return [-beta * y[0] * y[1], beta * y[0] * y[1] - gamma * y[1]]


def r0_torch(p):
    return p["beta"] / p["gamma"]


def r0_numpy(theta):
    return theta[0] / theta[1]


def simulate(rhs, params, y0, t):
    return solve_ivp(rhs, (t[0], t[-1]), y0, t_eval=t, args=params, rtol=1e-10, atol=1e-12).y.T


def cases() -> list[Case]:
    rng = np.random.default_rng(1)
    t_lv = np.sort(np.concatenate([[0.0], rng.uniform(0, 17, 17)]))
    lv_truth = (0.8, 0.04, 0.6, 0.02)
    y_lv = simulate(lv_rhs, lv_truth, [40.0, 15.0], t_lv)
    y_lv = y_lv * (1 + 0.15 * rng.standard_normal(y_lv.shape))
    t_decay = np.linspace(0, 4, 20)
    y_decay = simulate(lambda t, y: [-1.0 * y[0] + 0.04 * y[0] ** 2], (), [5.0], t_decay)
    y_decay = y_decay + 0.05 * rng.standard_normal(y_decay.shape)
    t_mm = np.linspace(0, 14, 15)
    y_mm = simulate(mm_rhs, (2.0, 8.0), [20.0], t_mm)
    y_mm = y_mm + 0.3 * rng.standard_normal(y_mm.shape)
    t_sir = np.arange(25.0)
    y_sir = simulate(sir_rhs, (0.5, 0.2), [0.98, 0.02], t_sir)
    y_sir = y_sir * (1 + 0.04 * rng.standard_normal(y_sir.shape))
    return [
        Case(
            "lotka_volterra",
            lv_known,
            lv_rhs,
            dict(a=1.04, b=0.052, c=0.78, d=0.026),
            t_lv,
            y_lv,
        ),
        Case("boundary", decay_known, decay_rhs, dict(k1=0.8, k2=0.05), t_decay, y_decay),
        Case("ridge", mm_known, mm_rhs, dict(vmax=1.5, km=5.0), t_mm, y_mm),
        Case(
            "sir",
            sir_known,
            sir_rhs,
            dict(beta=0.4, gamma=0.25),
            t_sir,
            y_sir,
            functions={"R0": (r0_torch, r0_numpy)},
        ),
    ]


# ------------------------------------------------------------------------- brute force
class BruteForce:
    """Re-fits by scipy with some parameters (or a function of them) held."""

    def __init__(self, case: Case, sigma: np.ndarray, theta: np.ndarray, y0: np.ndarray):
        self.case, self.sigma = case, sigma
        self.n_params = len(theta)
        self.best = self._fit(np.concatenate([np.log(theta), y0]))

    def residuals(self, vector: np.ndarray) -> np.ndarray:
        theta, y0 = np.exp(vector[: self.n_params]), vector[self.n_params :]
        t = self.case.t
        if not (np.all(np.isfinite(theta)) and np.all(np.isfinite(y0))):
            return np.full(self.case.y.size, 1e3)
        solution = solve_ivp(
            self.case.rhs, (t[0], t[-1]), y0, t_eval=t, args=tuple(theta),
            method="LSODA", rtol=1e-9, atol=1e-11,
        )  # fmt: skip
        if solution.y.shape[1] != len(t):
            return np.full(self.case.y.size, 1e3)
        return ((solution.y.T - self.case.y) / self.sigma).ravel()

    def _fit(self, start: np.ndarray, held: Callable | int | None = None) -> np.ndarray:
        """Least squares from ``start``: everything free, or entry ``held`` (an index)
        fixed at its start value, or ``held(vector)`` (a function) appended as a penalty
        residual."""
        free = np.ones(start.size, dtype=bool)
        if isinstance(held, int):
            free[held] = False

        def full(values):
            vector = start.copy()
            vector[free] = values
            return vector

        def residuals(values):
            base = self.residuals(full(values))
            return base if held is None or isinstance(held, int) else np.append(
                base, held(full(values))
            )  # fmt: skip

        solution = least_squares(residuals, start[free], method="lm", xtol=1e-10, ftol=1e-10)
        return full(solution.x)

    def chi2(self, vector: np.ndarray) -> float:
        return float(np.sum(self.residuals(vector) ** 2))

    def increase_at(
        self, held: Callable | int, value: float, starts: list[np.ndarray]
    ) -> tuple[float, np.ndarray]:
        """Smallest chi2 increase over re-fits from ``starts`` with ``held`` (an index set
        to log ``value``, or a penalty function) held."""
        best_chi2, best = math.inf, starts[0]
        for start in starts:
            start = start.copy()
            if isinstance(held, int):
                start[held] = math.log(value)
            solution = self._fit(start, held)
            chi2 = self.chi2(solution)
            if chi2 < best_chi2:
                best_chi2, best = chi2, solution
        return best_chi2 - self.chi2(self.best), best

    def crossings(
        self,
        value_of: Callable | int,
        centre: float,
        threshold: float,
        reference: float,
    ) -> tuple[float, float]:
        """Both crossings of ``threshold`` by the profile of ``value_of(vector)``
        (positive); an estimate below ``1e-6 * reference`` is at the boundary 0, and its
        upper crossing is searched from ``1e-4 * reference`` up."""
        ends = []
        at_boundary = centre < 1e-6 * reference
        if at_boundary:
            ends.append(0.0)
            centre = 1e-4 * reference
        for direction in (1.0,) if at_boundary else (-1.0, 1.0):
            warm = self.best.copy()

            def increase(value):
                nonlocal warm
                scale = 1e-5 * max(abs(value), 1e-12)

                def penalty(vector):
                    return (value_of(vector) - value) / scale

                held = value_of if isinstance(value_of, int) else penalty
                result, solution = self.increase_at(held, value, [warm, self.best])
                warm = solution
                return result - threshold

            previous = centre
            end = direction * math.inf
            growth = 0.4 if at_boundary else 0.08  # per step, in log of the value
            for count in range(1, 61):
                value = centre * math.exp(direction * growth * count)
                if increase(value) > 0:
                    end = brentq(
                        increase, min(previous, value), max(previous, value), xtol=1e-5 * centre
                    )
                    break
                previous = value
            ends.append(end)
        return ends[0], ends[1]


# ------------------------------------------------------------------------------ running
def run(case: Case) -> list[dict]:
    est = UniversalODERegressor(
        known=case.known,
        params=case.start,
        param_constraints=case.constraints,
        hidden_layer_sizes=(),
        random_state=0,
        device="cpu",
    )
    started = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(case.t, case.y)
    fit_seconds = time.process_time() - started
    torch_functions = {name: pair[0] for name, pair in case.functions.items()}
    wald = est.param_intervals(functions=torch_functions or None)
    started = time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        profile = est.param_intervals(
            method="profile", t=case.t, y=case.y, functions=torch_functions or None
        )
    profile_seconds = time.process_time() - started
    notes = sorted({str(w.message)[:90] for w in caught})
    y0 = np.atleast_2d(est.y0_)[0]
    floor = 1e-12 * np.array(list(case.start.values()))  # a parameter at 0: log-able
    theta = np.maximum(np.array(list(est.params_.values())), floor)
    brute = BruteForce(case, est.noise_std_, theta, y0)
    dof = float(est._residual_dof_[0])
    threshold = student.ppf(0.975, dof) ** 2
    started = time.process_time()
    rows = []
    targets = [(name, index, None) for index, name in enumerate(est.params_)]
    targets += [(name, None, pair[1]) for name, pair in case.functions.items()]
    for name, index, numpy_function in targets:
        if index is not None:
            value_of, centre = index, math.exp(brute.best[index])
        else:

            def value_of(vector, function=numpy_function):
                return function(np.exp(vector[: brute.n_params]))

            centre = value_of(brute.best)
        reference = case.start[name] if index is not None else abs(centre)
        low, high = brute.crossings(value_of, centre, threshold, reference)
        rows.append(
            dict(
                case=case.name,
                name=name,
                estimate=centre,
                profile=profile[name],
                brute=(low, high),
                wald=wald[name],
            )
        )
    brute_seconds = time.process_time() - started
    for row in rows:
        row.update(fit=fit_seconds, profile_s=profile_seconds, brute_s=brute_seconds)
        row["notes"] = notes
    return rows


def relative_errors(row: dict) -> tuple[float, float]:
    """Largest error of the profile's ends, relative to the brute-force end's value and
    to its distance from the estimate (the half-width)."""
    by_value, by_width = 0.0, 0.0
    for mine, truth in zip(row["profile"], row["brute"], strict=True):
        if math.isinf(truth) or truth == 0.0:
            error = 0.0 if mine == truth else math.inf
            by_value, by_width = max(by_value, error), max(by_width, error)
            continue
        by_value = max(by_value, abs(mine - truth) / abs(truth))
        by_width = max(by_width, abs(mine - truth) / abs(truth - row["estimate"]))
    return by_value, by_width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="boundary and ridge only")
    args = parser.parse_args()
    selected = [c for c in cases() if not args.quick or c.name in ("boundary", "ridge")]
    header = (
        f"{'case':15s} {'param':6s} {'profile':>22s} {'brute force':>22s} "
        f"{'err/val':>8s} {'err/hw':>7s} {'wald':>22s}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for case in selected:
        rows = run(case)
        for row in rows:
            by_value, by_width = relative_errors(row)
            worst = max(worst, by_value)
            print(
                f"{row['case']:15s} {row['name']:6s} "
                f"[{row['profile'][0]:9.4g}, {row['profile'][1]:9.4g}] "
                f"[{row['brute'][0]:9.4g}, {row['brute'][1]:9.4g}] "
                f"{by_value:8.2%} {by_width:7.1%} "
                f"[{row['wald'][0]:9.4g}, {row['wald'][1]:9.4g}]"
            )
        print(
            f"{'':15s} CPU s: fit {rows[0]['fit']:.1f}, profile {rows[0]['profile_s']:.1f}, "
            f"brute force {rows[0]['brute_s']:.1f}"
        )
        for note in rows[0]["notes"]:
            print(f"{'':15s} warning: {note}...")
    print(f"\nlargest error relative to the brute-force end: {worst:.2%} (goal <= 5 %)")


if __name__ == "__main__":
    main()
