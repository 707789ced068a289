"""Tests of the reference systems in ``skneuralode.datasets``."""

from __future__ import annotations

import numpy as np

from skneuralode.datasets import make_pendulum, pendulum_rhs


def test_pendulum_family_shapes_and_seed() -> None:
    t, y = make_pendulum(n_trajectories=4, n_times=30, t_end=5.0, seed=3)
    assert t.shape == (30,)
    assert y.shape == (4, 30, 2)
    assert np.array_equal(make_pendulum(n_trajectories=4, n_times=30, t_end=5.0, seed=3)[1], y)
    assert not np.array_equal(make_pendulum(n_trajectories=4, n_times=30, seed=4)[1][:, 0], y[:, 0])
    assert np.all(np.abs(y[:, 0, 0]) <= np.pi / 2)
    assert np.all(np.abs(y[:, 0, 1]) <= 1.0)


def test_pendulum_family_matches_single_trajectories() -> None:
    t, y = make_pendulum(n_trajectories=3, n_times=40)
    for row in range(3):
        single_t, single = make_pendulum(y0=y[row, 0], n_times=40)
        assert single.shape == (40, 2)
        np.testing.assert_allclose(single, y[row], atol=1e-8)
    assert np.array_equal(single_t, t)


def test_pendulum_loses_energy_and_follows_its_equation() -> None:
    t, y = make_pendulum(n_trajectories=5, n_times=400, t_end=20.0, damping=0.1)
    energy = 0.5 * y[..., 1] ** 2 + (1.0 - np.cos(y[..., 0]))
    assert np.all(np.diff(energy, axis=1) <= 1e-9)
    # Finite differences of the solution agree with the right-hand side.
    slopes = np.gradient(y, t, axis=1)[:, 1:-1]
    rates = pendulum_rhs(0.0, y[:, 1:-1])
    np.testing.assert_allclose(slopes, rates, atol=5e-3)


def test_pendulum_given_times_are_sorted() -> None:
    t, y = make_pendulum(n_trajectories=2, times=np.array([2.0, 0.0, 1.0]))
    assert np.array_equal(t, [0.0, 1.0, 2.0])
    assert y.shape == (2, 3, 2)
