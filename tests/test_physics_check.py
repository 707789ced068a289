"""After a universal ODE's fit: the physics alone is polished and kept, with a warning,
where the network does not pay for itself; a network that does is kept."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn_helpers import one_torch_thread  # noqa: F401 (an autouse fixture)

from skneuralode import Collocation, UniversalODERegressor
from skneuralode.datasets import add_noise, make_lotka_volterra


def lotka_volterra(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    x, z = y[..., 0], y[..., 1]
    return torch.stack(
        [p["alpha"] * x - p["beta"] * x * z, p["delta"] * x * z - p["gamma"] * z], dim=-1
    )


def growth_and_decay(t: torch.Tensor, y: torch.Tensor, p: dict) -> torch.Tensor:
    """Lotka-Volterra without the interaction terms: the network must supply them."""
    x, z = y[..., 0], y[..., 1]
    return torch.stack([p["alpha"] * x, -p["gamma"] * z], dim=-1)


class StopFirstPolish:
    """A callback that ends the first polish at its first step (a network fit that ended
    far from the data) and lets every later stage run."""

    def __init__(self) -> None:
        self.stopped = False

    def __call__(self, record: dict) -> bool:
        if record["stage"] == "polish" and not self.stopped:
            self.stopped = True
            return True
        return False


def ude(known, params: dict, **settings) -> UniversalODERegressor:
    options = dict(
        hidden_layer_sizes=(8,), param_constraints="positive", random_state=0, device="cpu"
    )
    options.update(settings)
    return UniversalODERegressor(known=known, params=params, **options)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    t, y = make_lotka_volterra(n_times=31, t_end=6.0)
    return t, add_noise(y, 0.03, seed=0)


def test_the_physics_alone_is_kept_where_the_network_does_not_pay(data) -> None:
    t, y = data
    params = {"alpha": 1.0, "beta": 0.7, "delta": 1.0, "gamma": 1.5}
    est = ude(
        lotka_volterra,
        params,
        collocation=Collocation(max_iter=20),
        shooting=False,  # no rescue: the network's fit stays where the polish stopped
        callbacks=[StopFirstPolish()],
    )
    with pytest.warns(ConvergenceWarning, match="network does not pay for itself"):
        est.fit(t, y)
    check = est.stage_results_[-1]
    assert check.stage == "physics check" and "physics alone was kept" in check.message
    np.testing.assert_allclose(est.network_term(y), 0.0, atol=1e-12)
    assert est.score(t, y) > 0.98
    classical = ude(lotka_volterra, params, hidden_layer_sizes=())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classical.fit(t, y)
    for name, value in classical.params_.items():
        assert est.params_[name] == pytest.approx(value, rel=0.02)


def test_a_network_that_supplies_missing_physics_is_kept(data) -> None:
    t, y = data
    est = ude(growth_and_decay, {"alpha": 1.0, "gamma": 2.0}, hidden_layer_sizes=(16,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(t, y)
    check = est.stage_results_[-1]
    assert check.stage == "physics check"
    assert check.status == "skipped" or "improves on the physics alone" in check.message
    assert np.abs(est.network_term(y)).max() > 0.1
    assert est.score(t, y) > 0.9
