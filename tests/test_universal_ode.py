"""UniversalODERegressor: the hybrid field, physical parameters, known-only fits,
identifiability, persistence, model selection and the errors at the door."""

from __future__ import annotations

import inspect
import io
import math
import pickle
import warnings
from typing import Any

import joblib
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from torch import nn

from skneuralode import NeuralODERegressor, Polish, UniversalODERegressor
from skneuralode._hybrid_field import squared_weights
from skneuralode._physical_parameters import PhysicalParameters
from skneuralode.datasets import make_damped_oscillator

torch.set_num_threads(1)

#: Budgets that keep every fit here to a few seconds.
QUICK: dict[str, Any] = {"max_iter": 200, "shooting": False, "polish": False}
#: Known-only fits: collocation to convergence, then a few L-BFGS steps on the trajectory.
KNOWN_ONLY: dict[str, Any] = {
    "hidden_layer_sizes": (),
    "shooting": False,
    "polish": Polish(max_iter=10),
}


# ------------------------------------------------------------ module-level known physics
def decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``dy/dt = -k y``."""
    return -p["k"] * y


def logistic(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``dy/dt = r y (1 - y / K)``."""
    return p["r"] * y * (1.0 - y / p["K"])


def forced_decay(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``dy/dt = -k y + sin(t)``: needs the caller's (physical) time."""
    return -p["k"] * y + torch.sin(t)[..., None]


def spring(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """``x' = v, v' = -omega2 x`` (the damping is left to the network)."""
    return torch.stack([y[..., 1], -p["omega2"] * y[..., 0]], dim=-1)


def cascade(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Known ``x' = -a x``; the second state's equation is left to the network."""
    return torch.stack([-p["a"] * y[..., 0], torch.zeros_like(y[..., 1])], dim=-1)


def wrong_shape(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return y[..., :1]


def not_finite(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return y / 0.0


def returns_numpy(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> Any:
    return -y.detach().numpy()


def needs_missing_name(t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor]) -> Any:
    return -p["missing"] * y


def cube(y: torch.Tensor) -> torch.Tensor:
    return y**3


# ---------------------------------------------------------------------------- data
def decay_data(k: float = 1.5, y0: float = 3.0, n_times: int = 30) -> tuple[np.ndarray, ...]:
    t = np.linspace(0.0, 2.0, n_times)
    return t, (y0 * np.exp(-k * t))[:, None]


def cascade_data() -> tuple[np.ndarray, np.ndarray]:
    """x' = -0.7 x, z' = x - z**2 (the network's job), from (2, 0.1)."""

    def rhs(t: float, u: np.ndarray) -> np.ndarray:
        return np.array([-0.7 * u[0], u[0] - u[1] ** 2])

    t = np.linspace(0.0, 4.0, 40)
    solution = solve_ivp(rhs, (0, 4), [2.0, 0.1], t_eval=t, rtol=1e-10, atol=1e-10)
    return t, solution.y.T


@pytest.fixture(scope="module")
def damped() -> tuple[np.ndarray, np.ndarray]:
    """Damped oscillator x'' = -4 x - 0.4 x' from (1, 0)."""
    return make_damped_oscillator(n_times=40, t_end=6.0)


@pytest.fixture(scope="module")
def spring_fit(damped: tuple[np.ndarray, np.ndarray]) -> UniversalODERegressor:
    """Spring with learned omega2 plus a network of the velocity on the velocity's
    equation: the damping -0.4 v (shared, do not refit)."""
    t, y = damped
    return UniversalODERegressor(
        known=spring,
        params={"omega2": 3.0},
        network_outputs=[1],
        network_inputs=[1],  # a network of v cannot mimic -omega2 x: identifiable
        hidden_layer_sizes=(16,),
        random_state=0,
        **QUICK,
    ).fit(t, y)


# ----------------------------------------------------------------- the hybrid field
def test_field_is_known_plus_masked_network_in_physical_units(
    spring_fit: UniversalODERegressor, damped: tuple[np.ndarray, np.ndarray]
) -> None:
    _, y = damped
    known = spring_fit.known_term(y)
    omega2 = spring_fit.params_["omega2"]
    # atol: the states cross zero, where rtol alone asks for bit equality after scaling.
    expected = np.stack([y[:, 1], -omega2 * y[:, 0]], 1)
    np.testing.assert_allclose(known, expected, rtol=1e-10, atol=1e-12)
    network = spring_fit.network_term(y)
    assert np.all(network[:, 0] == 0.0)  # network_outputs=[1]
    assert np.abs(network[:, 1]).max() > 0.0
    np.testing.assert_allclose(spring_fit.vector_field(y), known + network, atol=1e-12)


def test_fit_recovers_the_physics_when_the_network_is_confined(
    spring_fit: UniversalODERegressor, damped: tuple[np.ndarray, np.ndarray]
) -> None:
    t, y = damped
    assert spring_fit.score(t, y) > 0.99
    assert spring_fit.params_["omega2"] == pytest.approx(4.0, rel=0.05)
    # the network supplies the damping -0.4 v
    np.testing.assert_allclose(spring_fit.network_term(y)[:, 1], -0.4 * y[:, 1], atol=0.1)


def test_network_sees_only_network_inputs() -> None:
    t, y = cascade_data()
    est = UniversalODERegressor(
        known=cascade,
        params={"a": 1.0},
        network_outputs=[1],
        network_inputs=[0, 1],
        hidden_layer_sizes=(8,),
        random_state=0,
        max_iter=20,
        collocation=True,
        shooting=False,
        polish=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(t, y)
        blind = clone(est).set_params(network_inputs=[1]).fit(t, y)
    states = np.array([[1.0, 0.5], [-3.0, 0.5]])
    seeing = est.network_term(states)[:, 1]
    unseeing = blind.network_term(states)[:, 1]
    assert seeing[0] != seeing[1]
    assert unseeing[0] == unseeing[1]  # the first state is hidden from the network


def test_structural_identifiability_recovers_the_known_rate() -> None:
    t, y = cascade_data()
    est = UniversalODERegressor(
        known=cascade,
        params={"a": 0.3},
        param_constraints="positive",
        network_outputs=[1],
        hidden_layer_sizes=(16,),
        random_state=0,
        **QUICK,
    ).fit(t, y)
    assert est.params_["a"] == pytest.approx(0.7, rel=0.02)
    assert est.score(t, y) > 0.99


def test_minimal_norm_penalty_hands_what_physics_explains_to_the_physics() -> None:
    """A network on the same state could absorb -k y; the penalty moves it to k."""
    t, y = decay_data(k=1.5)
    settings = dict(
        known=decay,
        params={"k": 0.5},
        hidden_layer_sizes=(8,),
        physics_first=False,  # the penalty alone
        random_state=0,
        shooting=False,
        polish=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        free = UniversalODERegressor(network_penalty=0.0, **settings).fit(t, y)
        penalised = UniversalODERegressor(network_penalty=1e-2, **settings).fit(t, y)
    assert free.score(t, y) > 0.999 and penalised.score(t, y) > 0.999
    assert abs(free.params_["k"] - 1.5) > 0.5  # the network took most of the decay
    assert abs(penalised.params_["k"] - 1.5) < 0.5 * abs(free.params_["k"] - 1.5)
    assert np.abs(penalised.network_term(y)).mean() < 0.5 * np.abs(free.network_term(y)).mean()


def test_weight_decay_is_added_to_the_penalty_and_shrinks_the_weights(
    damped: tuple[np.ndarray, np.ndarray],
) -> None:
    """``network_weight_decay`` adds its weight times the squared weights (not biases)."""
    t, y = damped
    settings = dict(
        known=spring,
        fixed_params={"omega2": 4.0},
        network_outputs=[1],
        network_inputs=[1],
        hidden_layer_sizes=(8,),
        network_penalty=0.0,
        random_state=0,
        **QUICK,
    )
    free = UniversalODERegressor(**settings).fit(t, y)
    decayed = UniversalODERegressor(network_weight_decay=0.1, **settings).fit(t, y)
    field = decayed.module_.field
    weights = [layer.weight for layer in field.network.modules() if isinstance(layer, nn.Linear)]
    z = torch.zeros(3, 2, dtype=torch.float64)
    with torch.no_grad():
        expected = 0.1 * sum(float((weight**2).sum()) for weight in weights)
        assert float(field.penalty(torch.zeros(()), z)) == pytest.approx(expected, rel=1e-12)
        assert float(free.module_.field.penalty(torch.zeros(()), z)) == 0.0
        assert squared_weights(field.network) < 0.5 * squared_weights(free.module_.field.network)


def test_physics_first_then_penalty_recover_the_physics() -> None:
    t, y = decay_data(k=1.5)
    est = UniversalODERegressor(
        known=decay,
        params={"k": 0.5},
        hidden_layer_sizes=(8,),
        random_state=0,
        shooting=False,
        polish=False,
    ).fit(t, y)
    assert [result.stage for result in est.stage_results_] == ["physics", "collocation"]
    assert est.params_["k"] == pytest.approx(1.5, rel=0.05)
    field_rms = np.sqrt(np.mean(est.vector_field(y) ** 2))
    assert np.sqrt(np.mean(est.network_term(y) ** 2)) < 0.05 * field_rms


def test_feature_map_and_augmented_dimensions() -> None:
    t, y = decay_data()
    est = UniversalODERegressor(
        known=decay,
        params={"k": 1.0},
        feature_map=cube,
        augment_dim=1,
        hidden_layer_sizes=(8,),
        random_state=0,
        **QUICK,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(t, y)
    assert est.module_.n_total_states == 2
    assert est.predict(t).shape == y.shape
    assert np.isfinite(est.params_["k"])


# ------------------------------------------------------------- physical parameters
def test_parameter_transforms_start_at_the_given_values() -> None:
    parameters = PhysicalParameters(
        {"free": -2.5, "zero": 0.0, "positive": 0.3, "bounded": 0.75},
        {"positive": "positive", "bounded": (0.5, 1.5)},
        {"constant": 9.81},
    )
    values = {name: float(value.detach()) for name, value in parameters().items()}
    assert values == pytest.approx(
        {"free": -2.5, "zero": 0.0, "positive": 0.3, "bounded": 0.75, "constant": 9.81}
    )
    assert parameters.as_floats().keys() == {"free", "zero", "positive", "bounded"}
    with torch.no_grad():
        parameters.raw.copy_(torch.tensor([3.0, 1.0, -50.0, 60.0], dtype=torch.float64))
    values = parameters.as_floats()
    assert values["free"] == pytest.approx(3.0 * 2.5)  # steps relative to |start|
    assert values["zero"] == pytest.approx(1.0)
    assert 0.0 < values["positive"] < 1e-20  # log-parametrisation never crosses zero
    assert 0.5 < values["bounded"] <= 1.5


def test_known_only_fit_is_classical_parameter_estimation() -> None:
    t = np.linspace(0.0, 6.0, 25)
    y = (5.0 / (1.0 + 4.0 * np.exp(-1.2 * t)))[:, None]  # logistic, r = 1.2, K = 5, y0 = 1
    est = UniversalODERegressor(
        known=logistic,
        params={"r": 0.5, "K": 2.0},
        param_constraints="positive",
        random_state=0,
        **KNOWN_ONLY,
    ).fit(t, y)
    assert est.params_ == pytest.approx({"r": 1.2, "K": 5.0}, rel=1e-3)
    assert est.module_.field.network is None
    assert est.score(t, y) > 0.9999


def test_fixed_params_reach_known_and_are_not_learned() -> None:
    t, y = decay_data(k=1.5)
    est = UniversalODERegressor(
        known=logistic,
        params={"r": 1.0},
        fixed_params={"K": 1e6},  # practically no crowding: exponential growth...
        random_state=0,
        **KNOWN_ONLY,
    ).fit(t, y)
    assert set(est.params_) == {"r"}
    assert est.params_["r"] == pytest.approx(-1.5, rel=1e-3)  # ...at a negative rate


def test_interval_constraint_keeps_the_parameter_inside() -> None:
    t, y = decay_data(k=1.5)
    est = UniversalODERegressor(
        known=decay,
        params={"k": 0.5},
        param_constraints={"k": (0.1, 1.0)},  # the truth (1.5) lies outside
        random_state=0,
        **KNOWN_ONLY,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(t, y)
    assert 0.9 < est.params_["k"] < 1.0


def test_known_gets_physical_time(damped: tuple[np.ndarray, np.ndarray]) -> None:
    """Forcing sin(t) only fits if known sees the caller's clock (t from 100 to 104)."""
    t = np.linspace(100.0, 104.0, 40)

    def rhs(time: float, u: np.ndarray) -> np.ndarray:
        return -0.8 * u + np.sin(time)

    y = solve_ivp(rhs, (100, 104), [1.0], t_eval=t, rtol=1e-10, atol=1e-10).y.T
    est = UniversalODERegressor(
        known=forced_decay, params={"k": 0.3}, random_state=0, **KNOWN_ONLY
    ).fit(t, y)
    assert est.params_["k"] == pytest.approx(0.8, rel=1e-3)
    np.testing.assert_allclose(
        est.known_term(np.array([[2.0]]), t=101.0), [[-0.8 * 2.0 + np.sin(101.0)]], rtol=1e-3
    )


def test_warm_start_continues_from_the_fitted_parameters() -> None:
    t, y = decay_data(k=1.5)
    est = UniversalODERegressor(
        known=decay,
        params={"k": 0.5},
        random_state=0,
        **{**KNOWN_ONLY, "max_iter": 20, "polish": False},
    ).fit(t, y)
    first = est.params_["k"]
    est.set_params(warm_start=True, collocation=False, polish=True).fit(t, y)
    assert abs(est.params_["k"] - 1.5) <= abs(first - 1.5) + 1e-12
    assert len(est.history_) > est.n_iter_


# ------------------------------------------------------- persistence and model selection
def test_pickle_and_joblib_round_trips_predict_identically(
    spring_fit: UniversalODERegressor, damped: tuple[np.ndarray, np.ndarray]
) -> None:
    t, _ = damped
    buffer = io.BytesIO()
    joblib.dump(spring_fit, buffer)
    buffer.seek(0)
    for restored in (pickle.loads(pickle.dumps(spring_fit)), joblib.load(buffer)):
        np.testing.assert_array_equal(restored.predict(t), spring_fit.predict(t))
        assert restored.params_ == spring_fit.params_


def test_random_state_makes_fits_bit_reproducible(damped: tuple[np.ndarray, ...]) -> None:
    t, y = damped
    est = UniversalODERegressor(
        known=spring,
        params={"omega2": 3.0},
        hidden_layer_sizes=(8,),
        max_iter=30,
        shooting=False,
        polish=False,
        random_state=3,
    )
    first, second = clone(est).fit(t, y), clone(est).fit(t, y)
    np.testing.assert_array_equal(first.predict(t), second.predict(t))
    assert first.params_ == second.params_


def test_clone_and_get_params_keep_every_ude_argument() -> None:
    est = UniversalODERegressor(
        known=decay,
        params={"k": 2.0},
        fixed_params={"c": 1.0},
        network_outputs=[0],
        network_inputs=[0],
        param_constraints={"k": "positive"},
        network_penalty=0.5,
        network_weight_decay=1e-4,
    )
    copy = clone(est)
    assert copy.get_params() == est.get_params()
    assert copy.params is not est.params  # clone copies the mappings
    copy.set_params(params={"k": 3.0})
    assert est.params == {"k": 2.0}


def test_constructor_mirrors_neural_ode_regressor() -> None:
    """Every NeuralODERegressor argument exists with the same default (stages aside)."""
    neural = inspect.signature(NeuralODERegressor).parameters
    universal = inspect.signature(UniversalODERegressor).parameters
    # polish on by default: physical parameters need a second-order polish
    deliberate = {"polish"}
    for name, parameter in neural.items():
        assert name in universal, name
        if name not in deliberate:
            assert universal[name].default == parameter.default, name


def test_grid_search_over_ude_settings() -> None:
    t = np.linspace(0.0, 2.0, 15)
    starts = np.array([1.0, 2.0, 3.0, 4.0])
    y = starts[:, None, None] * np.exp(-1.5 * t)[None, :, None]
    times = np.tile(t, (len(starts), 1))  # 2-D t: sklearn splits by trajectory
    search = GridSearchCV(
        UniversalODERegressor(known=decay, random_state=0, **KNOWN_ONLY),
        {"params": [{"k": 0.5}], "param_constraints": [None, "positive"]},
        cv=2,
    )
    search.fit(times, y)
    assert len(search.cv_results_["params"]) == 2
    assert search.best_score_ > 0.99
    assert search.best_estimator_.params_["k"] == pytest.approx(1.5, rel=1e-3)


# ------------------------------------------------------------------ errors at the door
@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"known": "not a function"}, (TypeError, ValueError), "known"),
        ({"known": decay, "params": [("k", 1.0)]}, (TypeError, ValueError), "params"),
        ({"known": decay, "params": {"k": float("nan")}}, ValueError, "finite"),
        ({"known": decay, "params": {"k": math.inf}}, ValueError, "finite"),
        ({"known": decay, "params": {"k": "fast"}}, TypeError, "real number"),
        ({"known": decay, "params": {"k": True}}, TypeError, "real number"),
        ({"known": decay, "params": {"k": [1.0, 2.0]}}, TypeError, "real number"),
        ({"known": decay, "params": {1: 1.0}}, TypeError, "strings"),
        ({"known": decay, "fixed_params": {"k": complex(1, 1)}}, TypeError, "fixed_params"),
        ({"known": decay, "params": {"k": 1.0}, "fixed_params": {"k": 2.0}}, ValueError, "both"),
        ({"params": {"k": 1.0}}, ValueError, "known is None"),
        (
            {"known": decay, "params": {"k": -1.0}, "param_constraints": "positive"},
            ValueError,
            "> 0",
        ),
        (
            {"known": decay, "params": {"k": 1.0}, "param_constraints": {"q": "positive"}},
            ValueError,
            "not a learned parameter",
        ),
        (
            {"known": decay, "params": {"k": 1.0}, "param_constraints": {"k": (2.0, 3.0)}},
            ValueError,
            "inside its bounds",
        ),
        (
            {"known": decay, "params": {"k": 1.0}, "param_constraints": {"k": "big"}},
            ValueError,
            "low, high",
        ),
        ({"known": decay, "hidden_layer_sizes": ()}, ValueError, "Nothing to learn"),
        (
            {"known": decay, "params": {"k": 1.0}, "hidden_layer_sizes": (), "augment_dim": 1},
            ValueError,
            "augment_dim",
        ),
        ({"known": decay, "network_outputs": [2]}, ValueError, "out of range"),
        ({"known": decay, "network_outputs": [0, 0]}, ValueError, "repeated"),
        ({"known": decay, "network_inputs": [0.5]}, TypeError, "integer"),
        ({"known": wrong_shape}, ValueError, r"shape of y"),
        ({"known": not_finite}, ValueError, "non-finite"),
        ({"known": returns_numpy}, TypeError, "torch.Tensor"),
        ({"known": needs_missing_name, "params": {"k": 1.0}}, ValueError, "KeyError"),
        ({"known": decay, "network_penalty": -1.0}, ValueError, "network_penalty"),
        ({"known": decay, "network_weight_decay": -1.0}, ValueError, "network_weight_decay"),
    ],
)
def test_bad_arguments_get_clear_errors(
    arguments: dict[str, Any], error: type[Exception], match: str
) -> None:
    t = np.linspace(0.0, 1.0, 10)
    y = np.exp(-t)[:, None] * np.array([1.0, 2.0])
    with pytest.raises(error, match=match):
        UniversalODERegressor(**arguments, max_iter=2).fit(t, y)


def test_inspection_methods_need_a_fit() -> None:
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        UniversalODERegressor(known=decay).network_term(np.ones((2, 1)))


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (
            {},
            [
                "PhysicsFirstStage",
                "CollocationStage",
                "GaussNewtonStage",
                "RescueStage",
                "PhysicsAloneCheck",
            ],
        ),
        (
            {"shooting": True},
            [
                "PhysicsFirstStage",
                "CollocationStage",
                "ShootingStage",
                "GaussNewtonStage",
                "PhysicsAloneCheck",
            ],
        ),
        (
            {"shooting": "auto", "polish": False},
            ["PhysicsFirstStage", "CollocationStage", "ShootingStage"],
        ),
        (
            {"shooting": False},
            ["PhysicsFirstStage", "CollocationStage", "GaussNewtonStage", "PhysicsAloneCheck"],
        ),
    ],
)
def test_auto_shooting_is_a_rescue_of_the_polish(setting: dict, expected: list[str]) -> None:
    """By default shooting runs only where the polished fit is still far off; asked for
    (True), it runs between collocation and the polish; without a polish it stays. With a
    polish, the physics alone is checked against the network's fit at the end."""
    estimator = UniversalODERegressor(known=decay, params={"k": 1.0}, **setting)
    assert [type(stage).__name__ for stage in estimator._stages()] == expected


def test_ude_shooting_checks_decide_only_near_the_data() -> None:
    """A UDE's shooting is not ended by idle full-trajectory checks while the whole
    trajectory is far off (its parameters bring it into phase only at the end); a neural
    ODE's is (its checks stop it fitting the noise of a few points)."""
    stages = UniversalODERegressor(known=decay, params={"k": 1.0})._stages()
    rescue = next(stage for stage in stages if type(stage).__name__ == "RescueStage")
    forced = UniversalODERegressor(known=decay, params={"k": 1.0}, shooting=True)._stages()
    neural = NeuralODERegressor()._stages()
    assert rescue.shooting.checks_decide_below == pytest.approx(0.5)
    assert [s.checks_decide_below for s in forced if s.name == "shooting"] == [0.5]
    assert [s.checks_decide_below for s in neural if s.name == "shooting"] == [math.inf]
