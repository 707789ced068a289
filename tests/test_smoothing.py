"""Smoothing and derivative estimates (``_smoothing``, ``_smoothing_strength``, ``_spline_fit``)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.interpolate import make_smoothing_spline

from skneuralode import _smoothing_strength
from skneuralode._smoothing import estimate_noise_level, smooth_trajectories
from skneuralode._spline_fit import NaturalSplineSmoother
from skneuralode.datasets import LOTKA_VOLTERRA_Y0, lotka_volterra_rhs, make_lotka_volterra


def _smooth_one(t: np.ndarray, values: np.ndarray, relative_noise: float | None = None):
    """Smooth the series of one trajectory (``values`` (n,) or (n, n_states))."""
    states = values.reshape(1, t.size, -1)
    return smooth_trajectories(t[None, :], states, np.array([t.size]), relative_noise)


def _relative_error(estimate: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(estimate - truth) / np.linalg.norm(truth))


@pytest.mark.parametrize("sigma", [0.02, 0.1])
def test_noise_level_estimate(sigma: float) -> None:
    t = np.linspace(0.0, 4.0, 400)
    noisy = np.sin(t) + sigma * np.random.default_rng(0).standard_normal(t.size)
    assert estimate_noise_level(noisy) == pytest.approx(sigma, rel=0.2)


def test_noise_level_of_clean_or_short_series() -> None:
    t = np.linspace(0.0, 4.0, 200)
    assert estimate_noise_level(np.sin(t)) < 1e-4
    assert estimate_noise_level(np.array([1.0, 5.0, -3.0])) == 0.0


def test_noise_level_on_uneven_spacing() -> None:
    rng = np.random.default_rng(4)
    t = np.sort(rng.uniform(0.0, 6.0, 300))
    # Divided differences annihilate low-degree polynomials on any spacing ...
    quadratic = 1.0 + 2.0 * t + 3.0 * t**2
    assert estimate_noise_level(quadratic, t) < 1e-9
    assert estimate_noise_level(quadratic) > 1e-3  # ... plain differences do not.
    noisy = np.sin(3.0 * t) + 0.05 * rng.standard_normal(t.size)
    assert estimate_noise_level(noisy, t) == pytest.approx(0.05, rel=0.15)


def test_noise_level_of_short_oscillations() -> None:
    """10 points of an oscillation: the signal dominates third differences (~4x the
    noise); the higher orders resolve it better and the median over orders is kept."""
    t = np.linspace(0.0, 6.0, 10)
    values = np.cos(2.0 * t) * np.exp(-0.2 * t)
    estimates = [
        estimate_noise_level(values + 0.05 * np.random.default_rng(seed).standard_normal(10), t)
        for seed in range(20)
    ]
    # Third differences alone: median 4.3x the noise.
    assert np.median(estimates) < 3.0 * 0.05


def test_clean_data_is_nearly_interpolated_and_differentiated() -> None:
    t = np.linspace(0.0, 6.0, 60)
    smoothed = _smooth_one(t, np.sin(t))
    # The residual allowed is the noise estimate, which on clean data is tiny (3e-4).
    residual = smoothed.states[0, :, 0] - np.sin(t)
    assert np.sqrt(np.mean(residual**2)) < 3e-4
    assert_allclose(smoothed.states[0, :, 0], np.sin(t), atol=2e-3)
    interior = slice(3, -3)
    assert_allclose(smoothed.derivatives[0, interior, 0], np.cos(t[interior]), atol=3e-3)
    assert smoothed.inside.all()


def test_noisy_data_is_smoothed() -> None:
    t = np.linspace(0.0, 6.0, 120)
    noise = 0.05 * np.random.default_rng(1).standard_normal(t.size)
    smoothed = _smooth_one(t, np.sin(t) + noise)
    state_error = smoothed.states[0, :, 0] - np.sin(t)
    assert np.sqrt(np.mean(state_error**2)) < 0.5 * np.sqrt(np.mean(noise**2))
    slope_error = smoothed.derivatives[0, 5:-5, 0] - np.cos(t[5:-5])
    # A finite difference of the raw data would be off by about 0.05 * sqrt(2) / dt = 1.4.
    assert np.sqrt(np.mean(slope_error**2)) < 0.15
    assert smoothed.noise_level[0] == pytest.approx(0.05, rel=0.3)


def test_zero_relative_noise_interpolates() -> None:
    t = np.linspace(0.0, 3.0, 30)
    values = np.sin(t) + 0.1 * np.random.default_rng(2).standard_normal(t.size)
    smoothed = _smooth_one(t, values, relative_noise=0.0)
    assert_allclose(smoothed.states[0, :, 0], values, atol=1e-4)


def test_derivatives_are_in_the_units_of_time() -> None:
    t = np.linspace(0.0, 6.0, 60)
    seconds = _smooth_one(t, np.sin(t))
    milliseconds = _smooth_one(1000.0 * t + 5.0e6, np.sin(t))
    assert_allclose(milliseconds.derivatives, seconds.derivatives / 1000.0, rtol=1e-6, atol=1e-9)


def test_missing_values_are_skipped_and_filled() -> None:
    t = np.linspace(0.0, 6.0, 60)
    values = np.sin(t)
    values[[0, 1, 30, 31, 32]] = np.nan
    smoothed = _smooth_one(t, values)
    # Inside the observed span the gap is interpolated ...
    assert_allclose(smoothed.states[0, 30:33, 0], np.sin(t[30:33]), atol=1e-3)
    assert_allclose(smoothed.derivatives[0, 30:33, 0], np.cos(t[30:33]), atol=1e-2)
    # ... while times before the first observation are flagged as extrapolation.
    assert_array_equal(smoothed.inside[0, :, 0], t >= t[2])


def test_padding_and_states_seen_once() -> None:
    t = np.array([np.linspace(0.0, 1.0, 8), np.r_[np.linspace(0.0, 1.0, 6), 1.0, 1.0]])
    states = np.full((2, 8, 2), np.nan)
    states[0, :, 0] = 2.0 * t[0]
    states[0, :, 1] = 3.0 * t[0]
    states[1, :6, 0] = -t[1, :6]
    states[1, 4, 1] = 7.0  # seen once: a constant, never "inside"
    smoothed = smooth_trajectories(t, states, np.array([8, 6]))
    assert_allclose(smoothed.derivatives[0], [[2.0, 3.0]] * 8, atol=1e-6)
    assert_allclose(smoothed.derivatives[1, :6, 0], -1.0, atol=1e-6)
    assert not smoothed.inside[1, 6:].any()
    assert_array_equal(smoothed.derivatives[1, 6:], 0.0)
    assert_allclose(smoothed.states[1, :6, 1], 7.0)
    assert not smoothed.inside[1, :, 1].any()


def test_short_series_fall_back_to_linear_interpolation() -> None:
    t = np.array([0.0, 1.0, 3.0])
    smoothed = _smooth_one(t, np.array([1.0, 3.0, 7.0]))
    assert_allclose(smoothed.states[0, :, 0], [1.0, 3.0, 7.0])
    assert_allclose(smoothed.derivatives[0, :, 0], 2.0)


# ------------------------------------------------------------ the banded spline fit
@pytest.mark.parametrize("n", [5, 6, 9, 200])
@pytest.mark.parametrize("lam", [1e-9, 1e-4, 1e-1])
def test_spline_fit_is_scipys_smoothing_spline(n: int, lam: float) -> None:
    rng = np.random.default_rng(n)
    positions = np.sort(rng.uniform(0.0, 1.0, n))
    values = rng.standard_normal((n, 3))
    weights = rng.uniform(0.5, 2.0, n)
    ours = NaturalSplineSmoother(positions, weights).fit(values, lam)
    theirs = make_smoothing_spline(positions, values, w=weights, lam=lam)
    grid = np.linspace(-0.1, 1.1, 50)
    # The same banded system: equal up to its conditioning (large lam, many points).
    assert_allclose(ours(grid), theirs(grid), rtol=1e-6, atol=1e-6)
    assert_allclose(ours.derivative()(grid), theirs.derivative()(grid), rtol=1e-6, atol=1e-5)


def test_spline_fitted_values_and_interpolation() -> None:
    rng = np.random.default_rng(3)
    positions = np.sort(rng.uniform(0.0, 1.0, 40))
    values = rng.standard_normal((40, 2))
    smoother = NaturalSplineSmoother(positions)
    coefficients = smoother.solve(values, 1e-5)
    assert_allclose(
        smoother.fitted_values(coefficients), smoother.spline(coefficients)(positions), atol=1e-12
    )
    assert_allclose(smoother.fit(values, 0.0)(positions), values, atol=1e-10)


# ------------------------------------------------ accuracy of the derivative estimates
def test_fast_stretch_of_a_chirp_is_smoothed_less() -> None:
    """One strength for the whole series over-smooths the fast end of sin(t**2)."""
    t = np.linspace(0.0, 6.0, 300)
    noisy = np.sin(t**2) + 0.05 * np.random.default_rng(0).standard_normal(t.size)
    slopes = _smooth_one(t, noisy).derivatives[0, :, 0]
    truth = 2.0 * t * np.cos(t**2)
    fast = t > 4.0
    # one strength for the whole series (before local strengths): 0.14
    assert _relative_error(slopes[fast], truth[fast]) < 0.12
    assert _relative_error(slopes, truth) < 0.11


def test_irregular_noisy_sine() -> None:
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0.0, 6.0, 150))  # closest pair 1e-4 apart
    noisy = np.sin(t) + 0.05 * rng.standard_normal(t.size)
    # even-spacing noise estimate and one strength: 0.37
    assert _relative_error(_smooth_one(t, noisy).derivatives[0, :, 0], np.cos(t)) < 0.1


def test_lotka_volterra_short_noisy_series_and_its_ends() -> None:
    """31 points, 5 % noise (the UDE paper's setting): a natural spline's slope is biased
    at the ends, where it forces a zero second derivative; the strength is lowered there."""
    t, clean = make_lotka_volterra()
    rng = np.random.default_rng(0)
    noisy = clean + 0.05 * clean.mean(axis=0) * rng.standard_normal(clean.shape)
    truth = np.array([lotka_volterra_rhs(0.0, state) for state in clean])
    slopes = _smooth_one(t, noisy).derivatives[0]
    assert_allclose(clean[0], LOTKA_VOLTERRA_Y0)
    # before: 0.27 and 0.09; x' at t = 0 off by 0.79 (truth -1.26)
    assert _relative_error(slopes[:, 0], truth[:, 0]) < 0.22
    assert _relative_error(slopes[:, 1], truth[:, 1]) < 0.09
    assert abs(slopes[0, 0] - truth[0, 0]) < 0.65


def test_series_of_one_group_take_their_own_strengths() -> None:
    """Two trajectories on one grid share the spline solves but not the smoothing."""
    t = np.linspace(0.0, 6.0, 100)
    clean = np.sin(t)
    noisy = np.sin(t) + 0.1 * np.random.default_rng(2).standard_normal(t.size)
    states = np.stack([clean, noisy])[:, :, None]  # (2, 100, 1)
    smoothed = smooth_trajectories(np.stack([t, t]), states, np.array([100, 100]))
    assert_allclose(smoothed.states[0, :, 0], clean, atol=1e-3)
    assert np.sqrt(np.mean((smoothed.states[1, :, 0] - clean) ** 2)) < 0.05
    assert smoothed.noise_level[0] == pytest.approx(0.1 / np.sqrt(2), rel=0.3)


def test_five_points_are_enough_for_a_spline() -> None:
    t = np.array([0.0, 0.5, 1.1, 1.5, 2.0])
    smoothed = _smooth_one(t, t**2)
    assert_allclose(smoothed.states[0, :, 0], t**2, atol=1e-8)  # no noise: interpolated
    assert_allclose(smoothed.derivatives[0, 1:-1, 0], 2.0 * t[1:-1], atol=0.1)


def test_zero_relative_noise_interpolates_long_series() -> None:
    """Above the subsample size the strength search starts from a subsample; 0 still
    means interpolation."""
    t = np.linspace(0.0, 30.0, 3 * _smoothing_strength._SUBSAMPLE_POINTS)
    values = np.sin(t) + 0.1 * np.random.default_rng(3).standard_normal(t.size)
    assert_allclose(_smooth_one(t, values, relative_noise=0.0).states[0, :, 0], values, atol=1e-8)


def test_nan_gap_in_a_noisy_irregular_series() -> None:
    rng = np.random.default_rng(6)
    t = np.sort(rng.uniform(0.0, 10.0, 200))
    values = np.sin(t) + 0.05 * rng.standard_normal(t.size)
    gap = (t > 4.0) & (t < 5.0)
    values[gap] = np.nan
    smoothed = _smooth_one(t, values)
    assert smoothed.inside.all()
    assert_allclose(smoothed.states[0, gap, 0], np.sin(t[gap]), atol=0.05)
    assert_allclose(smoothed.derivatives[0, gap, 0], np.cos(t[gap]), atol=0.15)


# ------------------------------------------------------------------- cost grows linearly
def test_work_grows_linearly_with_the_series(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bounded number of banded solves of the full series, whatever its length
    (before: 17 per series, and each built in Python loops over the points)."""
    solved_lengths: list[int] = []
    solve = NaturalSplineSmoother.solve

    def counting_solve(self, values, lam):
        solved_lengths.append(values.shape[0])
        return solve(self, values, lam)

    monkeypatch.setattr(NaturalSplineSmoother, "solve", counting_solve)
    most_full_solves = 2 * _smoothing_strength._LONGEST_SCAN + 3
    for n in (10_000, 100_000):
        t = np.linspace(0.0, 60.0, n)
        rng = np.random.default_rng(0)
        values = np.column_stack([np.sin(t), np.cos(1.3 * t)]) + 0.02 * rng.standard_normal((n, 2))
        solved_lengths.clear()
        _smooth_one(t, values)
        assert sum(length == n for length in solved_lengths) <= most_full_solves
        longer = [length for length in solved_lengths if length > 2000]
        assert all(length == n for length in longer)  # the rest: the strided subsample
        assert sum(solved_lengths) <= (most_full_solves + 1) * n


def test_windowed_residuals_of_a_quiet_stretch_after_a_loud_one() -> None:
    squared = np.concatenate([np.full(10, 1e10), np.full(1000, 1e-10)])[:, None]
    windowed = _smoothing_strength._windowed_mean(squared, 10)
    assert_allclose(windowed[30:, 0], 1e-10, rtol=1e-9)
    assert windowed[0, 0] == pytest.approx(1e10 * 10 / 11)  # 11 points at the first
