"""Cubic smoothing splines whose cost is linear in the number of points.

:func:`scipy.interpolate.make_smoothing_spline` solves the right problem in the right
basis (natural splines, a banded system that is not squared into normal equations, so it
stays accurate up to a straight-line fit), but builds that system in Python loops over
the points: 20 s per fit of 10^6 points. :class:`NaturalSplineSmoother` builds the same
system with array operations once per set of positions and then fits any number of
smoothing strengths and series at one banded solve each.
"""

from __future__ import annotations

import numpy as np
from scipy.interpolate import BSpline
from scipy.linalg import solve_banded

_DEGREE = 3


def divided_difference_coefficients(
    positions: np.ndarray, order: int, starts: np.ndarray | None = None
) -> np.ndarray:
    """Weights of the divided differences of ``order`` over consecutive points.

    Row ``i`` holds the ``order + 1`` weights that give ``f[x_s, ..., x_{s+order}]`` from
    ``f(x_s), ..., f(x_{s+order})`` for the ``i``-th window start ``s`` (``starts``, all
    ``n - order`` windows by default); shape (n_windows, order + 1).
    """
    if starts is None:
        starts = np.arange(positions.shape[0] - order)
    window = [positions[starts + offset] for offset in range(order + 1)]
    products = np.ones((starts.shape[0], order + 1))
    for own in range(order + 1):
        for other in range(order + 1):
            if other != own:
                products[:, own] *= window[own] - window[other]
    return 1.0 / products


class NaturalSplineSmoother:
    """Cubic smoothing splines through fixed, strictly increasing positions.

    Minimises ``sum(weights * (values - f(positions))**2) + lam * integral(f''**2)``,
    exactly as :func:`scipy.interpolate.make_smoothing_spline` (same basis, same banded
    system), for every column of ``values`` at once.

    Parameters
    ----------
    positions : ndarray of shape (n,)
        At least 5 strictly increasing abscissas.
    weights : ndarray of shape (n,), optional
        Positive weights of the squared residuals; ones by default.
    """

    def __init__(self, positions: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = np.ascontiguousarray(positions, dtype=float)
        n = x.shape[0]
        self.positions = x
        self.knots = np.r_[[x[0]] * _DEGREE, x, [x[-1]] * _DEGREE]
        self.design = self._natural_design(x, self.knots)  # (5, n) banded
        self.penalty = self._penalty(x)  # (5, n) banded
        if weights is not None:
            # Entry (r, j) of the banded penalty belongs to row j + r - 2.
            rows = np.arange(n)[None, :] + np.arange(5)[:, None] - 2
            inverse = 1.0 / np.asarray(weights, dtype=float)
            self.penalty = self.penalty * inverse[np.clip(rows, 0, n - 1)]

    @staticmethod
    def _natural_design(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
        """The collocation matrix in the basis of natural splines, banded (2, 2)."""
        n = x.shape[0]
        bspline = BSpline.design_matrix(x, knots, _DEGREE).tocsr()
        design = np.zeros((5, n))
        for row in range(1, 4):
            # natural basis function c (interior) is B-spline c + 1; entry (c + row - 2, c)
            design[row, 2:-2] = bspline.diagonal(3 - row)[row : row + n - 4]
        first, last = bspline[:3, :3].toarray(), bspline[-3:, -3:].toarray()
        design[1, 1] = first[0, 0]
        design[2, :2] = ((x[2] + x[1] - 2 * x[0]) * first[0, 0], first[1, 1] + first[1, 2])
        design[3, :2] = ((x[2] - x[0]) * first[1, 1], first[2, 2])
        design[1, -2:] = (last[0, 0], (x[-1] - x[-3]) * last[1, 1])
        design[2, -2:] = (last[1, 0] + last[1, 1], (2 * x[-1] - x[-2] - x[-3]) * last[2, 2])
        design[3, -2] = last[2, 2]
        return design

    @staticmethod
    def _penalty(x: np.ndarray) -> np.ndarray:
        """The roughness penalty in the same basis, banded (2, 2), unweighted."""
        n = x.shape[0]
        penalty = np.zeros((5, n))
        penalty[2:, 0] = divided_difference_coefficients(x[:3], 2)[0]
        penalty[1:, 1] = divided_difference_coefficients(x[:4], 3)[0]
        inner = divided_difference_coefficients(x, 4)  # (n - 4, 5)
        penalty[:, 2:-2] = ((x[4:] - x[:-4])[:, None] * inner).T
        penalty[:-1, -2] = -divided_difference_coefficients(x[-4:], 3)[0]
        penalty[:-2, -1] = divided_difference_coefficients(x[-3:], 2)[0]
        return 6.0 * penalty

    def solve(self, values: np.ndarray, lam: float) -> np.ndarray:
        """Coefficients in the natural basis of the spline of each column of ``values``.

        ``values`` of shape (n, k) gives (n, k); ``lam = 0`` interpolates.
        """
        return solve_banded((2, 2), self.design + lam * self.penalty, values, check_finite=False)

    def fitted_values(self, coefficients: np.ndarray) -> np.ndarray:
        """The spline at its own positions, (n, k), from :meth:`solve`'s coefficients."""
        design, n = self.design, coefficients.shape[0]
        values = design[2, :, None] * coefficients
        for offset in (1, 2):  # entry (i, i + offset) sits in row 2 - offset, and mirrored
            values[:-offset] += design[2 - offset, offset:, None] * coefficients[offset:]
            values[offset:] += design[2 + offset, : n - offset, None] * coefficients[: n - offset]
        return values

    def spline(self, coefficients: np.ndarray) -> BSpline:
        """The :class:`~scipy.interpolate.BSpline` of :meth:`solve`'s coefficients."""
        knots = self.knots
        first, second = coefficients[0:1], coefficients[1:2]
        last, before_last = coefficients[-1:], coefficients[-2:-1]
        bspline_coefficients = np.concatenate(
            [
                first * (knots[5] + knots[4] - 2 * knots[3]) + second,
                first * (knots[5] - knots[3]) + second,
                coefficients[1:-1],
                last * (knots[-4] - knots[-6]) + before_last,
                last * (2 * knots[-4] - knots[-5] - knots[-6]) + before_last,
            ]
        )
        return BSpline.construct_fast(knots, bspline_coefficients, _DEGREE)

    def fit(self, values: np.ndarray, lam: float) -> BSpline:
        """The smoothing spline of every column of ``values`` (shape (n,) or (n, k))."""
        return self.spline(self.solve(values, lam))
