"""Profile-likelihood intervals that can be trusted: ends where a brute-force re-fit
crosses the threshold, parameters at a boundary flagged, unbounded sides reported, a
time cap, and intervals of functions of the parameters (delta method and profile)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from scipy.optimize import least_squares
from scipy.stats import t as student
from sklearn_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from skneuralode import UniversalODERegressor

VMAX, KM, S0 = 2.0, 8.0, 20.0


def michaelis_menten(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    return -p["vmax"] * y / (p["km"] + y)


def decay_two_ways(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    return -p["k1"] * y - p["k2"] * y**2


def decay_and_unused(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    return -p["k"] * y + 0.0 * p["c"]


def depletion_data() -> tuple[np.ndarray, np.ndarray]:
    """Substrate depletion from S0 = 20 with Km = 8: Vmax and Km lie on a curved ridge."""
    t = np.linspace(0.0, 14.0, 15)
    clean = solve_ivp(lambda t, s: -VMAX * s / (KM + s), (0, 14), [S0], t_eval=t, rtol=1e-10).y.T
    return t, clean + 0.3 * np.random.default_rng(1).standard_normal(clean.shape)


def classical(known, params: dict, **settings) -> UniversalODERegressor:
    options = dict(param_constraints="positive", hidden_layer_sizes=(), random_state=0)
    options.update(settings)
    return UniversalODERegressor(known=known, params=params, device="cpu", **options)


@pytest.fixture(scope="module")
def ridge() -> dict:
    t, y = depletion_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = classical(michaelis_menten, {"vmax": 1.5, "km": 5.0}).fit(t, y)
        functions = {"slope": lambda p: p["vmax"] / p["km"], "km_again": lambda p: 1.0 * p["km"]}
        profile = est.param_intervals(method="profile", t=t, y=y, functions=functions)
    return {"t": t, "y": y, "est": est, "profile": profile}


def refitted_increase(est, t, y, name: str, value: float) -> float:
    """chi2 increase with ``name`` held at ``value`` and the rest re-fitted by scipy."""
    sigma = est.noise_std_[0]
    names = list(est.params_)
    held = names.index(name)

    def residuals(free: np.ndarray, fixed: float | None) -> np.ndarray:
        theta = np.exp(free[:-1]) if fixed is None else np.insert(np.exp(free[:-1]), held, fixed)
        solution = solve_ivp(
            lambda _, s: -theta[0] * s / (theta[1] + s), (0, t[-1]), [free[-1]],
            t_eval=t, rtol=1e-10, atol=1e-12,
        )  # fmt: skip
        return (solution.y[0] - y[:, 0]) / sigma

    start = np.append(np.log(list(est.params_.values())), est.y0_[0])
    best = least_squares(residuals, start, args=(None,), method="lm")
    held_start = np.delete(best.x, held)
    at_value = least_squares(residuals, held_start, args=(value,), method="lm")
    return float(np.sum(at_value.fun**2) - np.sum(best.fun**2))


def test_profile_ends_are_where_a_scipy_refit_crosses_the_threshold(ridge: dict) -> None:
    est, t, y = ridge["est"], ridge["t"], ridge["y"]
    threshold = student.ppf(0.975, float(est._residual_dof_[0])) ** 2
    for name in ("vmax", "km"):
        low, high = ridge["profile"][name]
        assert low < est.params_[name] < high
        for end in (low, high):
            assert refitted_increase(est, t, y, name, end) == pytest.approx(threshold, rel=0.1)
    # On a curved ridge the profile is lopsided: wider above than Wald says.
    wald = est.param_intervals()
    assert ridge["profile"]["km"][1] > wald["km"][1]


def test_a_function_of_the_parameters_gets_delta_and_profile_intervals(ridge: dict) -> None:
    est = ridge["est"]
    functions = {"slope": lambda p: p["vmax"] / p["km"], "km_again": lambda p: 1.0 * p["km"]}
    wald = est.param_intervals(functions=functions)
    quantile = student.ppf(0.975, float(est._residual_dof_[0]))
    # The delta method on a parameter itself: its linearised half-width.
    low, high = wald["km_again"]
    assert (high - low) / 2 == pytest.approx(quantile * est.params_std_["km"], rel=1e-6)
    slope = est.params_["vmax"] / est.params_["km"]
    low, high = wald["slope"]
    assert low < slope < high
    # Profiled through its penalty, the function follows the parameter's own profile...
    profile = ridge["profile"]
    np.testing.assert_allclose(profile["km_again"], profile["km"], rtol=0.02)
    # ... and the initial slope, nearly linear in the data, stays close to its delta method.
    assert profile["slope"][0] < slope < profile["slope"][1]
    np.testing.assert_allclose(profile["slope"], wald["slope"], rtol=0.15)


def test_functions_are_checked(ridge: dict) -> None:
    est = ridge["est"]
    with pytest.raises(TypeError, match="functions must be a mapping"):
        est.param_intervals(functions=lambda p: p["vmax"])
    with pytest.raises(TypeError, match="functions must map names"):
        est.param_intervals(functions={"ratio": 2.0})
    with pytest.raises(ValueError, match=r"functions\['km'\].*already a parameter"):
        est.param_intervals(functions={"km": lambda p: p["km"]})
    with pytest.raises(ValueError, match=r"functions\['bad'\] failed.*\['km', 'vmax'\]"):
        est.param_intervals(functions={"bad": lambda p: p["kcat"]})
    with pytest.raises(ValueError, match=r"functions\['both'\] must return one number"):
        est.param_intervals(functions={"both": lambda p: torch.stack([p["km"], p["vmax"]])})
    with pytest.raises(ValueError, match=r"functions\['log0'\] is not finite"):
        est.param_intervals(functions={"log0": lambda p: torch.log(p["km"] - p["km"])})


def test_max_seconds_caps_the_profile_with_the_wald_ends(ridge: dict) -> None:
    est, t, y = ridge["est"], ridge["t"], ridge["y"]
    with pytest.warns(UserWarning, match="max_seconds ran out before the profile of vmax, km"):
        capped = est.param_intervals(method="profile", t=t, y=y, max_seconds=1e-9)
    wald = est.param_intervals()
    for name in ("vmax", "km"):
        np.testing.assert_allclose(capped[name], wald[name], rtol=5e-3)  # re-optimised centre
    for bad in (0, -1.0, "fast"):
        with pytest.raises(ValueError, match="max_seconds must be a positive number"):
            est.param_intervals(method="profile", t=t, y=y, max_seconds=bad)
    with pytest.raises(ValueError, match="only used by method='profile'"):
        est.param_intervals(max_seconds=10.0)


def test_a_parameter_pushed_to_its_boundary_is_flagged_with_an_interval_from_zero() -> None:
    t = np.linspace(0.0, 4.0, 20)
    rng = np.random.default_rng(1)
    # The data decay more slowly than first order: the best k2 is negative, so the
    # positive one sits at its boundary 0.
    clean = solve_ivp(lambda _, y: -y + 0.04 * y**2, (0, 4), [5.0], t_eval=t, rtol=1e-10).y.T
    y = clean + 0.05 * rng.standard_normal(clean.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = classical(decay_two_ways, {"k1": 0.8, "k2": 0.05}).fit(t, y)
    assert est.params_["k2"] < 1e-6 * 0.05
    with pytest.warns(UserWarning, match=r"boundary of their constraint: k2 at 0.*NaN"):
        wald = est.param_intervals()
    assert wald["k2"][0] == 0.0 and math.isnan(wald["k2"][1])
    assert wald["k1"][0] < est.params_["k1"] < wald["k1"][1]
    with pytest.warns(UserWarning, match=r"k2 at 0.*profile crosses the threshold"):
        profile = est.param_intervals(method="profile", t=t, y=y)
    low, high = profile["k2"]
    assert low == 0.0
    assert 1e-4 < high < 0.1  # the largest second-order rate the data allow


def test_a_side_the_data_do_not_bound_is_reported_unbounded() -> None:
    t = np.linspace(0.0, 2.0, 15)
    y = 3.0 * np.exp(-1.5 * t)[:, None] * (1 + 0.02 * np.random.default_rng(0).normal(size=(15, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = classical(
            decay_and_unused, {"k": 1.0, "c": 1.0}, param_constraints={"k": "positive"}
        ).fit(t, y)
    with pytest.warns(UserWarning, match=r"do not bound c below, c above"):
        profile = est.param_intervals(method="profile", t=t, y=y)
    assert profile["c"] == (-math.inf, math.inf)
    assert profile["k"][0] < 1.5 < profile["k"][1]
