"""``fit(..., t0=...)``: the initial state at a time before the first observation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from skneuralode import UniversalODERegressor

K = 0.8


def decay(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    return -p["k"] * y


def forced_decay(t: torch.Tensor, y: torch.Tensor, p: dict, u: torch.Tensor) -> torch.Tensor:
    return -p["k"] * y + u


def classical(**settings) -> UniversalODERegressor:
    options = dict(
        known=decay,
        params={"k": 0.5},
        param_constraints="positive",
        hidden_layer_sizes=(),
        random_state=0,
        device="cpu",
    )
    options.update(settings)
    return UniversalODERegressor(**options)


def sampled(first: float = 1.0, n: int = 12, dose: float = 10.0) -> tuple[np.ndarray, ...]:
    """A dose of ``dose`` at t = 0, sampled from ``first`` on."""
    t = np.linspace(first, 6.0, n)
    return t, (dose * np.exp(-K * t))[:, None]


def test_a_dose_before_the_first_sample_is_placed_at_t0() -> None:
    t, y = sampled()
    est = classical().fit(t, y, y0=[10.0], t0=0.0)
    assert est.t0_ == pytest.approx(0.0, abs=1e-12)
    assert est.y0_ == pytest.approx([10.0], abs=1e-12)
    assert est.params_["k"] == pytest.approx(K, rel=1e-3)
    np.testing.assert_allclose(est.predict(t), y, rtol=1e-3)
    # Without t0 the dose would be put at the first sample, and k be wrong.
    with pytest.warns(ConvergenceWarning):
        wrong = classical().fit(t, y, y0=[10.0])
    assert abs(wrong.params_["k"] - K) > 0.1


def test_t0_is_an_unobserved_row_at_t0() -> None:
    t, y = sampled()
    with_t0 = classical().fit(t, y[:, 0], t0=0.0)
    row = classical().fit(np.concatenate([[0.0], t]), np.concatenate([[np.nan], y[:, 0]]))
    np.testing.assert_array_equal(with_t0.predict(t), row.predict(t))
    assert with_t0.predict(t).shape == t.shape  # one state given without its axis


def test_each_trajectory_gets_its_own_t0_and_keeps_its_layout() -> None:
    t = np.tile(np.linspace(1.0, 6.0, 10), (3, 1))
    doses = np.array([5.0, 10.0, 20.0])
    starts = np.array([0.0, 0.5, 1.0])  # the last one is sampled at its dose time
    y = doses[:, None, None] * np.exp(-K * (t - starts[:, None]))[..., None]
    y0 = doses[:, None]
    est = classical().fit(t, y, y0=y0, t0=starts)
    np.testing.assert_allclose(est.t0_, starts, atol=1e-12)
    assert est.params_["k"] == pytest.approx(K, rel=1e-3)
    predicted = est.predict(t)
    assert predicted.shape == y.shape
    np.testing.assert_allclose(predicted, y, rtol=1e-3)


def test_sampled_inputs_start_at_t0_too() -> None:
    t = np.linspace(1.0, 6.0, 15)
    u = np.full((15, 1), 0.5)
    # y' = -k y + 0.5 from y(0) = 2: y = 0.5/k + (2 - 0.5/k) exp(-k t)
    y = (0.5 / K + (2.0 - 0.5 / K) * np.exp(-K * t))[:, None]
    est = classical(known=forced_decay).fit(t, y, y0=[2.0], u=u, t0=0.0)
    assert est.params_["k"] == pytest.approx(K, rel=1e-3)


@pytest.mark.parametrize(
    ("t0", "error", "match"),
    [
        (2.0, ValueError, r"t0 must be at or before the first time \(1\), got 2"),
        ([0.0, 0.5], ValueError, r"t0 must be one time, or one per trajectory \(shape \(1,\)\)"),
        (np.nan, ValueError, "t0 must be finite"),
        ("start", (TypeError, ValueError), "t0"),
    ],
)
def test_bad_t0_is_refused_naming_it(t0: object, error: type, match: str) -> None:
    t, y = sampled()
    with pytest.raises(error, match=match):
        classical().fit(t, y, t0=t0)


def test_a_late_t0_names_the_trajectory() -> None:
    t = np.tile(np.linspace(1.0, 6.0, 10), (2, 1))
    y = np.exp(-K * t)[..., None]
    with pytest.raises(ValueError, match=r"first time of trajectory 1 \(1\), got 3"):
        classical().fit(t, y, t0=[0.0, 3.0])
