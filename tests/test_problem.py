"""Scaling and masking of the training problem (``skneuralode._problem``, ``_losses``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from skneuralode._data import validate_trajectories
from skneuralode._losses import masked_huber, masked_mean_squared_error
from skneuralode._problem import TrainingProblem, build_problem


def problem_of(t: np.ndarray, y: np.ndarray) -> TrainingProblem:
    return build_problem(
        validate_trajectories(t, y),
        device=torch.device("cpu"),
        dtype=torch.float64,
        relative_noise=None,
    )


def test_states_are_standardised_and_the_field_has_unit_size(oscillator) -> None:
    t, y = oscillator
    problem = problem_of(t, y)
    observations = problem.observations[0].numpy()
    assert_allclose(observations.mean(axis=0), 0.0, atol=1e-12)
    assert_allclose(observations.std(axis=0), 1.0)
    assert problem.times[0, 0] == 0.0
    inside = problem.smoothing_weight.numpy().astype(bool)
    rates = problem.smoothed_derivatives.numpy()[inside]
    assert np.sqrt(np.mean(rates**2)) == pytest.approx(1.0)


def test_scaled_problem_does_not_depend_on_units(oscillator) -> None:
    t, y = oscillator
    plain = problem_of(t, y)
    # Years since 1900 in milliseconds, and states 1e4 times larger.
    other = problem_of((t + 1900.0) * 1000.0, y * 1e4)
    assert other.scaling.time_origin == 1900.0 * 1000.0
    assert other.scaling.time_scale == pytest.approx(1000.0 * plain.scaling.time_scale)
    assert_allclose(other.scaling.state_scale, 1e4 * plain.scaling.state_scale)
    for name in ("times", "observations", "smoothed_states", "smoothed_derivatives"):
        assert_allclose(getattr(other, name), getattr(plain, name), atol=1e-8, err_msg=name)
    assert other.noise_variance == pytest.approx(plain.noise_variance, rel=1e-6)


def test_constant_state_keeps_a_finite_scale() -> None:
    t = np.linspace(0.0, 1.0, 10)
    y = np.column_stack([np.full(10, 5.0), t])
    problem = problem_of(t, y)
    assert np.isfinite(problem.scaling.state_scale).all()
    assert_array_equal(problem.observations[0, :, 0], 0.0)


def test_unobserved_values_are_masked(oscillator) -> None:
    t, y = oscillator
    gappy = y.copy()
    gappy[[3, 7], 0] = np.nan
    gappy[10, 1] = np.nan
    problem = problem_of(t, gappy)
    observed = problem.observed[0].numpy()
    assert_array_equal(observed, ~np.isnan(gappy))
    assert_array_equal(problem.observations[0].numpy()[~observed.astype(bool)], 0.0)
    assert torch.isfinite(problem.smoothed_states).all()


@pytest.mark.parametrize(
    "loss", [masked_mean_squared_error, lambda p, o, w: masked_huber(p, o, w, 1.0)]
)
def test_masked_losses_ignore_unobserved_entries(loss) -> None:
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    predicted = target + torch.tensor([[0.5, 0.0], [0.5, 0.5]], dtype=torch.float64)
    wild = predicted.clone()
    wild[0, 1] = 1e6  # where nothing was observed
    assert loss(wild, target, weight) == loss(predicted, target, weight)
    assert loss(predicted, target, weight) > 0.0
