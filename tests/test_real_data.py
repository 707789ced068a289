"""Real scientific data: hidden states, known initial states, external inputs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, KFold
from sklearn_helpers import (  # noqa: F401 (one_torch_thread is an autouse fixture)
    counted_solver_work,
    one_torch_thread,
    oscillator,
    oscillator_family,
)

from skneuralode import (
    ConstantInputs,
    MultipleShooting,
    NeuralODERegressor,
    Polish,
    Solver,
    UniversalODERegressor,
    load,
    make_forecast_scorer,
)
from skneuralode._data import validate_trajectories
from skneuralode._problem import build_problem
from skneuralode.datasets import (
    SIR,
    make_forced_oscillator,
    make_lotka_volterra,
    make_pharmacokinetics,
    make_sir,
    one_compartment_known,
    sir_known,
    sum_of_sines,
)

T = np.linspace(0.0, 6.0, 40)


def training_force(t: torch.Tensor) -> torch.Tensor:
    """A module-level u(t), so a model fitted with it saves by import path."""
    return torch.sin(1.3 * t)[:, None]


def forced_known(
    t: torch.Tensor, y: torch.Tensor, p: dict[str, torch.Tensor], u: torch.Tensor
) -> torch.Tensor:
    """Damped oscillator driven by u: the known part receives the inputs."""
    return torch.stack([y[..., 1], -p["k"] * y[..., 0] - 0.4 * y[..., 1] + u[..., 0]], dim=-1)


def quiet(estimator, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(*args, **kwargs)


# ------------------------------------------------------------------ hidden states, y0
def sir_estimator() -> UniversalODERegressor:
    """Classical SIR with beta and gamma learned from (1.0, 0.3)."""
    return UniversalODERegressor(
        known=sir_known,
        params={"beta": 1.0, "gamma": 0.3},
        fixed_params={"population": SIR["population"]},
        param_constraints="positive",
        hidden_layer_sizes=(),
        random_state=0,
        device="cpu",
    )


@pytest.fixture(scope="module")
def epidemic() -> UniversalODERegressor:
    t, y, y0 = make_sir(noise=0.05, seed=1)
    return quiet(sir_estimator(), t, y, y0=y0)


def test_sir_with_the_susceptible_hidden_recovers_the_rates(
    epidemic: UniversalODERegressor,
) -> None:
    assert epidemic.hidden_states_ == [0]
    assert epidemic.params_["beta"] == pytest.approx(SIR["beta"], rel=0.1)
    assert epidemic.params_["gamma"] == pytest.approx(SIR["gamma"], rel=0.1)
    # the known initial state is held, not learned
    np.testing.assert_allclose(epidemic.y0_, [SIR["population"] - 1.0, 1.0], rtol=1e-12)
    t, y, _ = make_sir(noise=0.0)
    assert epidemic.score(t, y) > 0.95  # scored on I only: S has no observation
    susceptible = epidemic.predict(t)[:, 0]
    assert np.all(np.diff(susceptible) < 0) and susceptible[-1] < 0.5 * susceptible[0]


def test_polish_cuts_short_the_line_search_trials_that_make_the_dynamics_stiff() -> None:
    """On this draw the L-BFGS line search tries rates at which the epidemic is stiff;
    each such trial used to run the explicit solver to its 10 000-step budget (with a
    gradient graph), 50 CPU s for 14 points. Trials are now cut at 20x the first
    solve's steps (plus 100) and count as failed, so the search backs off."""
    t, y, y0 = make_sir(noise=0.1, seed=1)
    estimator = sir_estimator()
    with counted_solver_work() as work:
        quiet(estimator, t, y, y0=y0)
    assert max(work.steps) < 1000  # uncut, one trial ran to the 10 000-step budget
    assert estimator.params_["beta"] == pytest.approx(SIR["beta"], rel=0.1)


def test_nan_entries_of_y0_are_learned(epidemic: UniversalODERegressor) -> None:
    t, y, _ = make_sir(noise=0.05, seed=1)
    partly = quiet(
        UniversalODERegressor(**{**epidemic.get_params(), "max_iter": 50}),
        t,
        y,
        y0=[SIR["population"] - 1.0, np.nan],
    )
    assert partly.y0_[0] == pytest.approx(SIR["population"] - 1.0, rel=1e-12)
    assert partly.y0_[1] != pytest.approx(1.0, rel=1e-6)  # learned, from the data


def test_pharmacokinetics_with_a_dose_per_subject() -> None:
    t, y, y0 = make_pharmacokinetics(n_subjects=6, noise=0.02, seed=3)
    estimator = UniversalODERegressor(
        known=one_compartment_known,
        params={"ka": 3.0, "ke": 0.2, "V": 60.0},
        param_constraints="positive",
        hidden_layer_sizes=(),
        max_iter=300,
        random_state=0,
        device="cpu",
    )
    quiet(estimator, t, y, y0=y0)
    for name, truth in {"ka": 1.5, "ke": 0.08, "V": 32.0}.items():
        assert estimator.params_[name] == pytest.approx(truth, rel=0.15), name
    np.testing.assert_allclose(estimator.y0_[:, 0], y0[:, 0], rtol=1e-12)


def test_neural_ode_with_a_hidden_state_reports_it() -> None:
    t, y = oscillator(n_times=40)
    hidden = np.column_stack([y[:, 0], np.full(len(t), np.nan)])
    estimator = quiet(
        NeuralODERegressor(hidden_layer_sizes=(8,), max_iter=60, random_state=0, device="cpu"),
        t,
        hidden,
    )
    assert estimator.hidden_states_ == [1]
    assert estimator.predict(t).shape == hidden.shape
    assert np.all(np.isfinite(estimator.predict(t)))
    with pytest.raises(ValueError, match=r"NaN is accepted only for hidden states, \[1\]"):
        estimator.predict(t, y0=[np.nan, 0.0])
    assert np.all(np.isfinite(estimator.predict(t, y0=[1.0, np.nan])))


def test_a_hidden_state_is_first_guessed_as_the_velocity_of_an_observed_one() -> None:
    t, y = oscillator(n_times=40)
    positions = np.column_stack([y[:, 0], np.full(len(t), np.nan)])
    problem = build_problem(
        validate_trajectories(t, positions),
        device=torch.device("cpu"),
        dtype=torch.float64,
        relative_noise=None,
        hidden_guess="derivative",
    )
    guess = problem.smoothed_states[0, :, 1].numpy()
    np.testing.assert_allclose(guess, problem.smoothed_derivatives[0, :, 0].numpy())
    assert np.corrcoef(guess, y[:, 1])[0, 1] > 0.999  # the true velocity, up to scale
    assert problem.smoothing_weight[0, :, 1].sum() > 0  # collocation fits its derivative


def test_lotka_volterra_observing_only_the_prey_forecasts_past_the_data() -> None:
    """The user guide's recipe for a neural ODE with a hidden state
    (``docs/user_guide/real_data.md``; issue 11's fourth case, small): fit on
    [0, 10] from the prey alone, forecast to t = 15."""
    t = np.linspace(0.0, 15.0, 61)
    _, truth = make_lotka_volterra(times=t)
    n_fit = 41
    prey_only = np.column_stack([truth[:n_fit, 0], np.full(n_fit, np.nan)])
    estimator = NeuralODERegressor(
        hidden_layer_sizes=(8, 8),
        max_iter=100,
        shooting=MultipleShooting(learning_rate=1e-2),
        polish=Polish(max_iter=10),
        solver=Solver(rtol=1e-4, atol=1e-6),
        random_state=0,
        device="cpu",
    )
    predicted = quiet(estimator, t[:n_fit], prey_only).predict(t)[:, 0]
    assert estimator.hidden_states_ == [1]
    assert r2_score(truth[:n_fit, 0], predicted[:n_fit]) >= 0.95
    assert r2_score(truth[n_fit:, 0], predicted[n_fit:]) >= 0.8


def test_a_hidden_state_nothing_can_learn_is_refused() -> None:
    t, y, _ = make_sir()
    estimator = UniversalODERegressor(
        known=None, network_outputs=[1], hidden_layer_sizes=(4,), device="cpu"
    )
    with pytest.raises(ValueError, match=r"y: state 0 is never observed .* nothing could learn"):
        estimator.fit(t, y)


def test_y0_is_sliced_by_trajectory_in_model_selection() -> None:
    t, y = oscillator_family(n_traj=4, n_times=20)
    y0 = y[:, 0, :].copy()
    search = GridSearchCV(
        NeuralODERegressor(max_iter=20, shooting=False, random_state=0, device="cpu"),
        {"hidden_layer_sizes": [(4,)]},
        cv=KFold(2),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        search.fit(t, y, y0=y0)
    np.testing.assert_allclose(search.best_estimator_.y0_, y0, rtol=1e-12)


def test_bad_y0_is_refused_clearly() -> None:
    t, y = oscillator_family(n_traj=3, n_times=20)
    estimator = NeuralODERegressor(max_iter=5, device="cpu")
    with pytest.raises(ValueError, match=r"y0 must have shape \(2,\) or \(3, 2\)"):
        estimator.fit(t, y, y0=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="y0 contains inf"):
        estimator.fit(t, y, y0=[np.inf, 0.0])


# ------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def forced() -> tuple[NeuralODERegressor, np.ndarray, np.ndarray]:
    y, u = make_forced_oscillator(T)
    estimator = NeuralODERegressor(
        hidden_layer_sizes=(16, 16), max_iter=300, random_state=0, device="cpu"
    )
    return quiet(estimator, T, y, u=u), y, u


def test_neural_ode_with_inputs_fits_and_needs_them_to_predict(forced) -> None:  # type: ignore[no-untyped-def]
    estimator, y, u = forced
    assert estimator.score(T, y, u=u) > 0.9
    scorer = make_forecast_scorer("r2")
    assert scorer(estimator, T, y, u=u) == pytest.approx(estimator.score(T, y, u=u), rel=1e-9)
    with pytest.raises(ValueError, match="fitted with 1 external input"):
        estimator.predict(T)
    with pytest.raises(ValueError, match="u has 2 input"):
        estimator.predict(T, u=np.zeros((len(T), 2)))
    with pytest.raises(ValueError, match=r"u has 39 time points but the matching t has 40"):
        estimator.predict(T, u=u[:-1])
    with pytest.raises(ValueError, match="u must be finite"):
        estimator.predict(T, u=np.full_like(u, np.nan))
    with pytest.raises(ValueError, match=r"pass u"):
        estimator.vector_field([[0.0, 1.0]])
    assert estimator.vector_field([[0.0, 1.0]], u=[0.5]).shape == (1, 2)


def test_inputs_change_the_forecast(forced) -> None:  # type: ignore[no-untyped-def]
    estimator, _, u = forced
    other = sum_of_sines(T, (1.6, 3.5), (0.8, 0.6))[:, None]
    assert not np.allclose(estimator.predict(T, u=u), estimator.predict(T, u=other))
    # a zero-order hold and linear interpolation read the same samples differently
    held = estimator.predict(T, u=u)
    assert np.all(np.isfinite(held))


def test_model_without_inputs_refuses_them() -> None:
    t, y = oscillator(n_times=20)
    estimator = quiet(NeuralODERegressor(max_iter=5, device="cpu"), t, y)
    with pytest.raises(ValueError, match="fitted without external inputs"):
        estimator.predict(t, u=np.zeros((len(t), 1)))


def test_known_physics_receives_the_inputs_and_constant_inputs_work() -> None:
    y, u = make_forced_oscillator(T, frequencies=(1.3,), amplitudes=(1.0,), zeta=0.1)
    estimator = UniversalODERegressor(
        known=forced_known,
        params={"k": 2.0},
        hidden_layer_sizes=(),
        random_state=0,
        device="cpu",
    )
    quiet(estimator, T, y, u=u)
    assert estimator.params_["k"] == pytest.approx(4.0, rel=0.05)
    np.testing.assert_allclose(
        estimator.known_term([[1.0, 0.0]], u=[[2.0]]),
        [[0.0, -estimator.params_["k"] + 2.0]],
        rtol=1e-10,
        atol=1e-12,
    )
    doses = ConstantInputs([[0.0], [1.0]])
    family_t, family_y = oscillator_family(n_traj=2, n_times=20)
    network = quiet(
        NeuralODERegressor(hidden_layer_sizes=(4,), max_iter=10, device="cpu"),
        family_t,
        family_y,
        u=doses,
    )
    assert network.predict(family_t, u=doses).shape == family_y.shape


def test_callable_inputs_are_kept_and_saved(tmp_path: Path) -> None:
    y, _ = make_forced_oscillator(T, frequencies=(1.3,), amplitudes=(1.0,))
    estimator = quiet(
        NeuralODERegressor(
            hidden_layer_sizes=(8,),
            max_iter=30,
            input_interpolation="previous",
            random_state=0,
            device="cpu",
        ),
        T,
        y,
        u=training_force,
    )
    expected = estimator.predict(T)  # the fitted u(t) is used when none is given
    estimator.save(tmp_path / "forced.skn")
    with pytest.raises(ValueError, match="training_force"):
        load(tmp_path / "forced.skn")
    loaded = load(tmp_path / "forced.skn", allow_imports=["test_real_data"])
    assert loaded.module_.spec.input_interpolation == "previous"
    np.testing.assert_array_equal(loaded.predict(T), expected)
