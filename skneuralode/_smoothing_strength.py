"""How strongly to smooth each observed series, point by point.

The discrepancy principle chooses one strength per series: the largest whose residual
RMS stays within the noise. One strength over-smooths where the dynamics are fast: on
the noisy irregular spiral the residual in the fast first tenth is several times the
noise at the strength that suits the rest. So a point whose residual, averaged over its
``2 * _LOCAL_WINDOW + 1`` neighbours, exceeds the noise by more than chance allows
(``_LACK_OF_FIT_Z`` standard errors of such an average of squared noise) is smoothed
less, down to the strength at which it no longer does; elsewhere the series' strength
holds (letting every point find its own strength chases noise in the local averages and
doubles the slope error of a plain noisy sine). Near the ends of a series a natural
spline's slope is biased (it forces a zero second derivative there), so the strength is
lowered by up to ``_BOUNDARY_DROP`` decades within about one bandwidth of each end.

Strengths live on a lattice of decades, ``lam_k = spacing**3 * 10**k`` in positions
normalised to [0, 1]: rung ``k`` smooths over about ``10**(k / 4)`` mean spacings, so
the lattice means the same at 30 points and at 10^6; the bottom rung interpolates. Each
rung is one banded solve of all series of a group at once; a point's strength is
interpolated between the two rungs its residual crosses, and its value and slope are
blended from their splines. Only a bounded number of rungs is fitted on the full series:
a strided subsample of at most ``_SUBSAMPLE_POINTS`` points tells where to start, and
the scan goes outward from there until every crossing is bracketed.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from scipy.ndimage import convolve1d

from ._spline_fit import NaturalSplineSmoother

_LOCAL_WINDOW = 10  # neighbours each side whose residuals judge a point's fit
_LACK_OF_FIT_Z = 3.0  # standard errors of a local mean square that count as lack of fit
_LOWEST_RUNG = -8  # lam = 0 (interpolation); the rung above smooths over 0.02 spacings
_LONGEST_SCAN = 6  # rungs fitted on the full series above the start, and as many below
_SUBSAMPLE_POINTS = 2000
_SUBSAMPLE_SERIES = 64  # series of a group that place the start
_BOUNDARY_DROP = 1.0  # decades of strength taken off at the ends of a series
_CACHED_VALUES = 2**24  # coefficients kept for reuse, in values (128 MB)


class _Rungs:
    """Splines of one group of series at the rungs of its lattice, fitted on demand."""

    def __init__(self, positions: np.ndarray, values: np.ndarray) -> None:
        self.smoother = NaturalSplineSmoother(positions)
        self.values = values  # (n, n_series)
        n = positions.shape[0]
        self.log_unit = 3.0 * np.log10((positions[-1] - positions[0]) / (n - 1))
        self.highest = int(np.ceil(4.0 * np.log10(10.0 * n)))  # wider than the series
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._capacity = max(3, _CACHED_VALUES // values.size)

    def strength(self, rung: int) -> float:
        return 0.0 if rung <= _LOWEST_RUNG else 10.0 ** (self.log_unit + rung)

    def coefficients(self, rung: int) -> np.ndarray:
        """Natural-basis coefficients at ``rung``, (n, n_series)."""
        if rung in self._cache:
            self._cache.move_to_end(rung)
            return self._cache[rung]
        coefficients = self.smoother.solve(self.values, self.strength(rung))
        self._cache[rung] = coefficients
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return coefficients

    def squared_residuals(self, rung: int) -> np.ndarray:
        fitted = self.smoother.fitted_values(self.coefficients(rung))
        return (fitted - self.values) ** 2  # (n, n_series)


def _window_counts(n: int, window: int) -> np.ndarray:
    """How many points lie within ``window`` of each of ``n`` points (fewer at the ends)."""
    index = np.arange(n)
    return (np.minimum(index + window + 1, n) - np.maximum(index - window, 0)).astype(float)


def _windowed_mean(squared: np.ndarray, window: int) -> np.ndarray:
    """Mean of each column over each point's neighbours within ``window``, (n, n_series).

    A direct sum, not a difference of cumulative sums, which loses the small residuals
    of a quiet stretch to rounding once a loud one has passed.
    """
    sums = convolve1d(squared, np.ones(2 * window + 1), axis=0, mode="constant")
    return sums / _window_counts(squared.shape[0], window)[:, None]


class _Crossing:
    """Where residuals, scanned rung by rung, cross their targets (in log).

    The crossing is the last rung within the target, plus the fraction of the way to
    the next rung (linear in the log residual) when that one is not.
    """

    def __init__(self, log_targets: np.ndarray) -> None:
        self.log_targets = log_targets
        self.best = np.full(log_targets.shape, -np.inf)

    def take(self, rung: int, log_residual: np.ndarray, above: np.ndarray | None) -> None:
        """Record ``rung``'s residual; ``above`` is the residual one rung up, if fitted."""
        within = log_residual <= self.log_targets
        candidate = np.where(within, float(rung), -np.inf)
        if above is not None:
            crossing = within & (above > self.log_targets)
            share = (self.log_targets - log_residual) / np.maximum(above - log_residual, 1e-12)
            candidate = np.where(crossing, rung + np.clip(share, 0.0, 1.0), candidate)
        np.maximum(self.best, candidate, out=self.best)

    def result(self, lowest: int) -> np.ndarray:
        """Crossings; ``lowest`` (the lowest rung scanned) where none was within."""
        return np.where(np.isfinite(self.best), self.best, float(lowest))


def _series_start(full: _Rungs, positions: np.ndarray, targets: np.ndarray) -> int:
    """A rung near the strength the whole-series discrepancy principle picks.

    Found on a strided subsample of at most ``_SUBSAMPLE_POINTS`` points and
    ``_SUBSAMPLE_SERIES`` series, and moved to the full series' lattice (same bandwidth
    in time: the rung grows by 4 log10(stride)).
    """
    stride = int(np.ceil(positions.shape[0] / _SUBSAMPLE_POINTS))
    n_series = full.values.shape[1]
    series = np.unique(np.linspace(0, n_series - 1, min(n_series, _SUBSAMPLE_SERIES)).round())
    if stride == 1 and series.size == n_series:
        rungs = full  # the fits are the full series' own: keep them
    else:
        sampled = full.values[::stride][:, series.astype(int)]
        rungs = _Rungs(positions[::stride], np.ascontiguousarray(sampled))
    log_targets = np.log(targets[series.astype(int)] + 1e-300)
    crossings = np.full(series.size, float(_LOWEST_RUNG))
    for rung in range(_LOWEST_RUNG, rungs.highest + 1):
        within = 0.5 * np.log(rungs.squared_residuals(rung).mean(axis=0)) <= log_targets
        crossings[within] = rung
        if not within.any():
            break
    start = float(np.median(crossings))
    if start > _LOWEST_RUNG:  # an interpolating series stays on the bottom rung
        start += 4.0 * np.log10(stride)
    return int(np.clip(round(start), _LOWEST_RUNG, full.highest))


def _chosen_rungs(rungs: _Rungs, targets: np.ndarray, start: int) -> np.ndarray:
    """Per point and series, the (fractional) rung to smooth at, (n, n_series).

    The series' discrepancy rung, lowered where the local residual shows lack of fit.
    Scans up from ``start`` until every series' RMS residual is above its target, and
    down until every series' is within and no point lacks fit, at most
    ``_LONGEST_SCAN`` rungs each way.
    """
    log_targets = np.log(targets + 1e-300)
    series = _Crossing(log_targets)
    counts = _window_counts(rungs.values.shape[0], _LOCAL_WINDOW)
    allowance = 0.5 * np.log1p(_LACK_OF_FIT_Z * np.sqrt(2.0 / counts))
    local = _Crossing(log_targets[None, :] + allowance[:, None])

    def residuals(rung: int) -> tuple[np.ndarray, np.ndarray]:
        squared = rungs.squared_residuals(rung)
        windowed = _windowed_mean(squared, _LOCAL_WINDOW)
        return 0.5 * np.log(squared.mean(axis=0) + 1e-300), 0.5 * np.log(windowed + 1e-300)

    start_residuals = below = residuals(start)
    highest = lowest = start
    for rung in range(start + 1, min(start + _LONGEST_SCAN, rungs.highest) + 1):
        if (below[0] > log_targets).all():
            break
        current = residuals(rung)
        series.take(rung - 1, below[0], current[0])
        local.take(rung - 1, below[1], current[1])
        below, highest = current, rung
    series.take(highest, below[0], None)
    local.take(highest, below[1], None)
    above = start_residuals
    for rung in range(start - 1, max(start - _LONGEST_SCAN, _LOWEST_RUNG) - 1, -1):
        if (above[0] <= log_targets).all() and (above[1] <= local.log_targets).all():
            break
        current = residuals(rung)
        series.take(rung, current[0], above[0])
        local.take(rung, current[1], above[1])
        above, lowest = current, rung
    return np.minimum(local.result(lowest), series.result(lowest)[None, :])


def _lowered_at_the_ends(rungs: _Rungs, positions: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """``chosen`` less up to ``_BOUNDARY_DROP`` decades within a bandwidth of either end."""
    lowered = chosen.copy()
    for end, inward in ((0, 1), (-1, -2)):
        spacing = abs(positions[inward] - positions[end])
        # bandwidth of a cubic smoothing spline: (lam * spacing)**(1/4) in positions
        bandwidth = (10.0 ** (rungs.log_unit + chosen[end]) * spacing) ** 0.25  # (n_series,)
        distance = np.abs(positions - positions[end])[:, None] / np.maximum(bandwidth, 1e-300)
        lowered = np.minimum(lowered, chosen - _BOUNDARY_DROP * np.exp(-distance))
    return np.clip(lowered, _LOWEST_RUNG, rungs.highest)


def smooth_locally(
    positions: np.ndarray, values: np.ndarray, query_positions: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed values and slopes (per unit position) of each column at ``query_positions``.

    ``positions`` (n >= 5, increasing, from 0 to 1) and ``values`` (n, n_series) are the
    observations; ``targets`` (n_series,) the residual RMS each series may leave. Returns
    two arrays of shape (n_query, n_series).
    """
    rungs = _Rungs(positions, values)
    start = _series_start(rungs, positions, targets)
    chosen = _lowered_at_the_ends(rungs, positions, _chosen_rungs(rungs, targets, start))
    # Linear interpolation of every column at once: query points in gaps, or the same.
    right = np.clip(np.searchsorted(positions, query_positions), 1, positions.shape[0] - 1)
    weight = (query_positions - positions[right - 1]) / (positions[right] - positions[right - 1])
    weight = np.clip(weight, 0.0, 1.0)[:, None]
    at_query = (1.0 - weight) * chosen[right - 1] + weight * chosen[right]  # (n_query, n_series)
    lower = np.floor(at_query).astype(int)
    fraction = at_query - lower
    smoothed = np.zeros((query_positions.shape[0], values.shape[1]))
    slopes = np.zeros_like(smoothed)
    for rung in np.unique(np.concatenate([lower.ravel(), lower.ravel() + 1])):
        share = np.where(lower == rung, 1.0 - fraction, 0.0)
        share += np.where(lower + 1 == rung, fraction, 0.0)
        rows = np.flatnonzero(share.any(axis=1))  # each point needs two rungs at most
        if rows.size == 0:
            continue
        spline = rungs.smoother.spline(rungs.coefficients(int(rung)))
        smoothed[rows] += share[rows] * spline(query_positions[rows])
        slopes[rows] += share[rows] * spline.derivative()(query_positions[rows])
    return smoothed, slopes
