"""Cases of ``benchmarks/small_data.py``: noisy, irregular, short and huge series.

Every fit is ``NeuralODERegressor(random_state=seed)`` with every other setting at its
default unless the case says otherwise; ``cpu_s`` is ``time.process_time`` around
``fit``. R^2 is sklearn's ``r2_score`` (uniform average over the states), as ``score``.

``spiral irregular 200``
    benchmarks/spiral.py's irregular scenario (200 times uniform in [0, 25], 5 % noise;
    seed s: times seed s, noise seed s + 1, so seed 0 is spiral.py's data). R^2 against
    the clean 1000-point truth from the fitted initial state (``r2``, what ``score``
    does), and from the TRUE state where the fitted one holds, at the first observation
    (``r2_true_y0``: the field is right, not only the fit; both scored on the dense
    times after that observation, ``r2_fitted_y0`` the fitted state's figure on them).
    ``r2_true_y0_at_0`` integrates from ``(2, 0)`` at ``t = 0``, before the first
    observation (t = 0.068 for seed 0): it also asks the network to extrapolate to the
    fastest, outermost stretch of the spiral, which no observation covers.
``spiral irregular 200 collocation``
    the same data, collocation alone (``shooting=False``), R^2 as above.
``spiral 10``
    10 even points on [0, 25] with 5 % noise; R^2 against the clean dense truth.
``lynx-hare 21 yearly``, ``damped oscillator 25``, ``van der pol 30``
    short oscillating series a user brings: a predator-prey cycle observed yearly for 21
    years (10 % noise), a damped oscillator (25 points, 5 %), Van der Pol with mu = 1
    over two cycles (30 points, 5 %). ``r2_in_sample`` scores the noisy data the fit saw,
    ``r2_clean`` the clean values at the same times. The ``... long polish`` cases fit
    the same data with ``polish=Polish(max_iter=200)``: the reference of what a fit can
    reach on these points (current code only).
``spiral 1e6 max_iter=1``
    one clean 10^6-point spiral, ``fit(max_iter=1)``: the time the data layer and the
    smoother take (current code only: the issue measured 489 s before).
``seed spiral vs torchdiffeq demo``
    benchmarks/spiral.py's dense scenario, both methods run by its own functions in this
    process: ``cpu_s`` and ``r2`` are ours, ``demo_cpu_s`` and ``demo_r2`` the demo
    loop's (2000 iterations), ``cpu_speedup_vs_demo`` their ratio.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import spiral
from scipy.integrate import solve_ivp

SPIRAL_Y0 = np.array([2.0, 0.0])
#: In the flat names both codes once had; :func:`fit` maps them per code version.
LONG_POLISH = {"polish": True, "polish_max_iter": 200}

#: t (n,), noisy y (n, n_states), clean y (n, n_states)
Series = tuple[np.ndarray, np.ndarray, np.ndarray]


# ------------------------------------------------------------------------------ fitting
def fit(
    t: np.ndarray, y: np.ndarray, seed: int, y0: np.ndarray | None = None, **settings: Any
) -> tuple[Any, float]:
    """A default ``NeuralODERegressor`` (plus ``settings``) fitted to ``(t, y)``, with the
    initial state ``y0`` known if given; CPU s.

    ``settings`` use the flat names (``polish_max_iter``) the baseline package takes; the
    current code has settings objects (``polish=Polish(max_iter=...)``), onto which its
    own reader of old files maps them."""
    from skneuralode import NeuralODERegressor

    try:  # the current code: settings objects
        from skneuralode._flat_settings import settings_from_flat
    except ImportError:  # the baseline: flat names
        pass
    else:
        settings = settings_from_flat(NeuralODERegressor, settings)
    estimator = NeuralODERegressor(random_state=seed, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.process_time()
        if y0 is None:  # the baseline package's fit takes no y0
            estimator.fit(t, y)
        else:
            estimator.fit(t, y, y0=y0)
        return estimator, time.process_time() - start


def r2(truth: np.ndarray, prediction: np.ndarray) -> float:
    from sklearn.metrics import r2_score

    if not np.all(np.isfinite(prediction)):
        return float("nan")
    return float(r2_score(truth, prediction))


# ------------------------------------------------------------------------------- spiral
def spiral_figures(
    estimator: Any, cpu_s: float, t_dense: np.ndarray, y_dense: np.ndarray, t_first: float
) -> dict:
    """R^2 against the clean truth from the fitted and from the true initial state.

    ``t_first`` is the time of the first observation, where the fitted initial state
    holds; the true state there is integrated over the dense times after it.
    """
    from skneuralode.datasets import make_spiral

    after = t_dense > t_first
    grid = np.concatenate([[t_first], t_dense[after]])
    true_first = SPIRAL_Y0 if t_first <= 0.0 else make_spiral(times=np.array([0.0, t_first]))[1][1]
    from_true = estimator.predict(grid, y0=true_first)[1:]
    from_fitted = estimator.predict(grid)[1:]
    from_zero = estimator.predict(t_dense, y0=SPIRAL_Y0)  # t_dense starts at t = 0
    return {
        "cpu_s": cpu_s,
        "r2": float(estimator.score(t_dense, y_dense)),
        "r2_true_y0": r2(y_dense[after], from_true),
        "r2_fitted_y0": r2(y_dense[after], from_fitted),
        "r2_true_y0_at_0": r2(y_dense, from_zero),
    }


def spiral_irregular(seed: int, **settings: Any) -> dict[str, Any]:
    from skneuralode.datasets import add_noise, make_spiral

    t_dense, y_dense = make_spiral(n_times=spiral.N_DENSE, t_end=spiral.T_END)
    times = np.random.default_rng(seed).uniform(0.0, spiral.T_END, spiral.N_IRREGULAR)
    t = np.sort(times)
    _, clean = make_spiral(times=np.concatenate([[0.0], t]))
    y = add_noise(clean[1:], spiral.NOISE_FRACTION, seed=seed + 1)
    estimator, cpu_s = fit(t, y, seed, **settings)
    return spiral_figures(estimator, cpu_s, t_dense, y_dense, float(t[0]))


def spiral_ten(seed: int) -> dict[str, Any]:
    from skneuralode.datasets import add_noise, make_spiral

    t_dense, y_dense = make_spiral(n_times=spiral.N_DENSE, t_end=spiral.T_END)
    t, clean = make_spiral(n_times=10, t_end=spiral.T_END)
    estimator, cpu_s = fit(t, add_noise(clean, spiral.NOISE_FRACTION, seed=seed + 1), seed)
    return spiral_figures(estimator, cpu_s, t_dense, y_dense, float(t[0]))


def spiral_million(seed: int) -> dict[str, Any]:
    from skneuralode.datasets import make_spiral

    t, y = make_spiral(n_times=1_000_000, t_end=spiral.T_END)
    _, cpu_s = fit(t, y, seed, max_iter=1)
    return {"cpu_s": cpu_s}


def seed_spiral_against_demo(seed: int) -> dict[str, Any]:
    problem = spiral.make_problem("dense")
    demo = spiral.run_torchdiffeq_demo(problem, spiral.DEMO_ITERATIONS)
    ours = spiral.run_skneuralode(problem)
    return {
        "cpu_s": ours["fit_cpu_seconds"],
        "r2": ours["r2"],
        "demo_cpu_s": demo["fit_cpu_seconds"],
        "demo_r2": demo["r2"],
        "cpu_speedup_vs_demo": demo["fit_cpu_seconds"] / ours["fit_cpu_seconds"],
    }


# -------------------------------------------------------------------------- short series
def _simulate(rhs: Callable, y0: list[float], t: np.ndarray) -> np.ndarray:
    solution = solve_ivp(rhs, (t[0], t[-1]), y0, t_eval=t, method="LSODA", rtol=1e-10, atol=1e-10)
    return solution.y.T


def _noisy(clean: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``fraction`` of each state's standard deviation as Gaussian noise."""
    rng = np.random.default_rng(seed)
    return clean + fraction * clean.std(axis=0) * rng.standard_normal(clean.shape)


def lynx_hare(seed: int) -> Series:
    """A Lotka-Volterra cycle with the classic lynx-hare rates, 21 yearly counts, 10 %."""
    a, b, c, d = 0.55, 0.028, 0.84, 0.026

    def rhs(_: float, u: np.ndarray) -> list[float]:
        return [a * u[0] - b * u[0] * u[1], d * u[0] * u[1] - c * u[1]]

    t = np.arange(21.0)
    clean = _simulate(rhs, [30.0, 4.0], t)
    return t, _noisy(clean, 0.10, seed), clean


def damped_oscillator(seed: int) -> Series:
    """x'' + 0.2 x' + 4 x = 0 from (1, 0): 25 points over 10 time units, 5 %."""

    def rhs(_: float, u: np.ndarray) -> list[float]:
        return [u[1], -4.0 * u[0] - 0.2 * u[1]]

    t = np.linspace(0.0, 10.0, 25)
    clean = _simulate(rhs, [1.0, 0.0], t)
    return t, _noisy(clean, 0.05, seed), clean


def van_der_pol(seed: int) -> Series:
    """Van der Pol with mu = 1 from (2, 0): 30 points over two cycles (t in [0, 13]), 5 %."""

    def rhs(_: float, u: np.ndarray) -> list[float]:
        return [u[1], (1.0 - u[0] ** 2) * u[1] - u[0]]

    t = np.linspace(0.0, 13.0, 30)
    clean = _simulate(rhs, [2.0, 0.0], t)
    return t, _noisy(clean, 0.05, seed), clean


def short_series(make: Callable[[int], Series], seed: int, **settings: Any) -> dict[str, Any]:
    t, y, clean = make(seed)
    estimator, cpu_s = fit(t, y, seed, **settings)
    return {
        "cpu_s": cpu_s,
        "r2_in_sample": float(estimator.score(t, y)),
        "r2_clean": float(estimator.score(t, clean)),
    }


SHORT_SERIES: dict[str, Callable[[int], Series]] = {
    "lynx-hare 21 yearly": lynx_hare,
    "damped oscillator 25": damped_oscillator,
    "van der pol 30": van_der_pol,
}

CASES: dict[str, Callable[[int], dict[str, Any]]] = {
    "spiral irregular 200": spiral_irregular,
    "spiral irregular 200 collocation": functools.partial(spiral_irregular, shooting=False),
    "spiral 10": spiral_ten,
    **{name: functools.partial(short_series, make) for name, make in SHORT_SERIES.items()},
    **{
        f"{name} long polish": functools.partial(short_series, make, **LONG_POLISH)
        for name, make in SHORT_SERIES.items()
    },
    "spiral 1e6 max_iter=1": spiral_million,
    "seed spiral vs torchdiffeq demo": seed_spiral_against_demo,
}

BASELINE_SKIP: dict[str, str] = {
    **{f"{name} long polish": "a reference, not a comparison" for name in SHORT_SERIES},
    "spiral 1e6 max_iter=1": "489 CPU s in the issue; too long to repeat every run",
}
