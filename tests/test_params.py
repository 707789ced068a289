"""The caps of the settings (``skneuralode._params``): where they lie and why they hold.

That every setting beyond its cap, and every NaN or infinite real setting, is refused
with the argument named is part of the bad-input battery
(``tests/reliability/test_bad_input.py``); here: the caps themselves are accepted and
safe for the libraries underneath, and networks are counted before they are built.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skneuralode._params
from skneuralode import (
    Collocation,
    MultipleShooting,
    NeuralODERegressor,
    Polish,
    Solver,
    UniversalODERegressor,
)
from skneuralode._params import (
    MAX_AUGMENT_DIM,
    MAX_HIDDEN_LAYERS,
    MAX_ITERATIONS,
    MAX_LAYER_WIDTH,
    check_hidden_layer_sizes,
    check_total_parameters,
)
from skneuralode._solve import SolverSettings, solve
from skneuralode._vector_fields import multilayer_perceptron

AT_THE_CAPS = {
    "solver": Solver(max_num_steps=MAX_ITERATIONS),
    "max_iter": MAX_ITERATIONS,
    "collocation": Collocation(n_iter_no_change=MAX_ITERATIONS, max_iter=MAX_ITERATIONS),
    "polish": Polish(max_iter=MAX_ITERATIONS),
    "shooting": MultipleShooting(
        batch_size=MAX_ITERATIONS,
        n_iter_no_change=MAX_ITERATIONS,
        segment_length=MAX_ITERATIONS,
        max_iter=MAX_ITERATIONS,
    ),
    "augment_dim": MAX_AUGMENT_DIM,
    "verbose": MAX_ITERATIONS,
}


@pytest.mark.parametrize("estimator_class", [NeuralODERegressor, UniversalODERegressor])
def test_every_cap_itself_is_a_valid_setting(estimator_class: type) -> None:
    estimator_class(**AT_THE_CAPS)._check_arguments()  # what fit checks first
    assert check_hidden_layer_sizes([MAX_LAYER_WIDTH] * 2) == (MAX_LAYER_WIDTH,) * 2
    assert len(check_hidden_layer_sizes((1,) * MAX_HIDDEN_LAYERS)) == MAX_HIDDEN_LAYERS


def test_the_caps_fit_the_libraries_underneath() -> None:
    int32 = np.iinfo(np.int32).max
    assert MAX_ITERATIONS + 1 <= int32  # the step budget passes max_num_steps + 1 on
    assert (MAX_LAYER_WIDTH + 1) * MAX_LAYER_WIDTH < 2**31  # one layer's weights and biases
    assert (MAX_AUGMENT_DIM + 1) * MAX_LAYER_WIDTH < 2**31


def test_a_solve_under_the_largest_step_budget_runs() -> None:
    """torchdiffeq holds max_num_steps in an int32 tensor: 10**30 overflowed there."""

    def decay(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return -z

    times = torch.linspace(0.0, 1.0, 5, dtype=torch.float64)[None]
    settings = SolverSettings(max_num_steps=MAX_ITERATIONS)
    result = solve(decay, torch.ones(1, 1, dtype=torch.float64), times, settings, shared_grid=True)
    assert result.ok, result.failure
    assert float(result.states[0, -1, 0]) == pytest.approx(np.exp(-1.0), abs=1e-6)


@pytest.mark.parametrize(
    ("n_inputs", "hidden", "n_outputs"),
    [(2, (64, 64), 2), (3, (), 3), (5, (7,), 1), (1, (4, 3, 2), 6)],
)
def test_the_parameter_count_is_that_of_the_network_built(
    n_inputs: int, hidden: tuple[int, ...], n_outputs: int
) -> None:
    network = multilayer_perceptron(n_inputs, hidden, n_outputs, "tanh")
    expected = sum(parameter.numel() for parameter in network.parameters())
    assert check_total_parameters(n_inputs, hidden, n_outputs) == expected


def test_a_network_beyond_the_parameter_cap_is_refused_before_it_is_built() -> None:
    widths = (MAX_LAYER_WIDTH, MAX_LAYER_WIDTH)  # each width allowed, together 2**30 weights
    with pytest.raises(ValueError, match=r"^hidden_layer_sizes=\(32768, 32768\) with 2 inputs"):
        check_total_parameters(2, widths, 2)


def test_the_parameter_cap_is_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skneuralode._params, "MAX_PARAMETERS", 4482)
    assert check_total_parameters(2, (64, 64), 2) == 4482
    monkeypatch.setattr(skneuralode._params, "MAX_PARAMETERS", 4481)
    with pytest.raises(ValueError, match=r"4,482 parameters; at most MAX_PARAMETERS=4,481"):
        check_total_parameters(2, (64, 64), 2)


def test_the_parameter_count_checks_the_widths_too() -> None:
    with pytest.raises(ValueError, match="hidden_layer_sizes must be a tuple of positive"):
        check_total_parameters(2, (8, 0), 2)
    with pytest.raises(ValueError, match="hidden_layer_sizes holds a layer of width"):
        check_total_parameters(2, (MAX_LAYER_WIDTH + 1,), 2)
