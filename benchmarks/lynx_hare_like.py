"""A lynx-hare-like classical Lotka-Volterra fit with the defaults, against scipy.

21 yearly points of LV (a 0.5, b 0.025, c 0.9, d 0.027; from (30, 4)) with 10 %
multiplicative noise (seed 0); UniversalODERegressor with hidden_layer_sizes=(), the four
rates from 0.1 each, no constraints, random_state=0; the reference is scipy
least_squares from the truth (states standardised, initial states fitted). Prints both,
the fit's CPU s and its stage results. Run: ``python benchmarks/lynx_hare_like.py``
(about 20 CPU s).
"""

import time
import warnings

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares

from skneuralode import UniversalODERegressor


def lv(t, y, p):
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["a"] * x - p["b"] * x * z, -p["c"] * z + p["d"] * x * z], -1)


truth = dict(a=0.5, b=0.025, c=0.9, d=0.027)


def rhs(t, y, a, b, c, d):
    return [a * y[0] - b * y[0] * y[1], -c * y[1] + d * y[0] * y[1]]


t = np.arange(21.0)
rng = np.random.default_rng(0)
clean = solve_ivp(rhs, (0, 20), [30.0, 4.0], t_eval=t, args=tuple(truth.values()), rtol=1e-10).y.T
y = clean * (1 + 0.1 * rng.standard_normal(clean.shape))


def res(theta):
    a, b, c, d, x0, z0 = theta
    s = solve_ivp(rhs, (0, 20), [x0, z0], t_eval=t, args=(a, b, c, d), rtol=1e-9)
    if s.y.shape[1] != t.size:
        return np.full(y.size, 1e3)
    return ((s.y.T - y) / y.std(0)).ravel()


opt = least_squares(res, [*truth.values(), 30.0, 4.0], x_scale="jac").x
print("scipy optimum", np.round(opt, 4))
c = time.process_time()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    est = UniversalODERegressor(
        known=lv, params={k: 0.1 for k in truth}, hidden_layer_sizes=(), random_state=0
    ).fit(t, y)
print(
    "skneuralode",
    {k: round(v, 4) for k, v in est.params_.items()},
    "cpu",
    round(time.process_time() - c, 1),
    "R2",
    round(est.score(t, y), 3),
)
print([(r.stage, r.n_iter, r.status, r.message[:150]) for r in est.stage_results_])
for x in w:
    print("W", str(x.message)[:300])
