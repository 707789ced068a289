"""Training tolerances matched to the noise of the data.

A solve during training only has to be accurate to well below what the data can tell
apart: with 5 % noise an integration error of 10^-6 buys nothing over 10^-4, and a
looser adaptive solve takes far fewer steps (irregular noisy spiral: shooting 57 -> 11
CPU s for the same R^2). The stages that integrate to *train* (multiple shooting, the
checks of the full-trajectory fit) use these tolerances; the runner's comparison of
models, the polish (whose quasi-Newton steps need exact gradients) and predictions keep
the user's ``rtol`` and ``atol``. On clean data the noise estimate is tiny and the
user's tolerances are kept.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .._solve import SolverSettings

#: Training rtol per unit of the estimated noise standard deviation (scaled units).
RTOL_PER_NOISE = 2e-3
#: Training atol relative to the training rtol (scaled states are of order one).
ATOL_PER_RTOL = 1e-2


def noise_matched(
    solver: SolverSettings, noise_variance: float, largest_trusted_noise: float
) -> SolverSettings:
    """``solver`` with tolerances no tighter than the noise needs (never tighter than asked).

    Parameters
    ----------
    solver : SolverSettings
        The user's settings.
    noise_variance : float
        Estimated noise variance in scaled units; counted up to ``largest_trusted_noise``.
    largest_trusted_noise : float
        Cap of the noise variance (the estimate carries signal on short series).
    """
    if solver.is_fixed_step:
        return solver
    noise_std = math.sqrt(max(min(noise_variance, largest_trusted_noise), 0.0))
    rtol = max(solver.rtol, RTOL_PER_NOISE * noise_std)
    atol = max(solver.atol, ATOL_PER_RTOL * rtol)
    return replace(solver, rtol=rtol, atol=atol)
