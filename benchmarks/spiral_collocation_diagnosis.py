"""Why collocation alone misses on the noisy irregular spiral (issue 12).

The data are ``_small_data_noisy``'s case ``spiral irregular 200`` (200 times uniform in
[0, 25], 5 % noise; seed s: times seed s, noise seed s + 1). For each seed this prints

- ``target``: relative RMS error of the smoother's derivative estimates (the collocation
  targets) against the true rates at the observed times, in the first fifth
  (``t < 5``, undersampled) and the rest; ``radial`` and ``rotation``: the mean absolute
  error of the targets' radial and tangential components, relative to the true
  components' mean magnitude (the radial part, the spiral's decay, is ~5 % of the rate);
- ``colloc``: R^2 of collocation alone (``shooting=False``) against the clean dense truth,
  from the fitted initial state (as ``score``);
- ``clean_obs``: the same fit on noise-free values at the same 200 times (sampling only);
- ``exact_obs``: the same stage regressing on the TRUE states and rates at the 200
  observed times (the smoother's replaced, but for the first state, which stays the
  fitted initial state, as in ``colloc``), and ``exact_obs_true_y0`` from the true state
  at the first observation: what any target estimator at these times could give this
  regression at best;
- ``clean_dense``: noise-free values at 1000 even times (enough samples, no noise).

Then the sensitivity of R^2 to a uniform relative error of the true field's rotation
rate or damping (integrated from (2, 0), scored on the dense truth): what accuracy the
field needs. Run from the repository root::

    python benchmarks/spiral_collocation_diagnosis.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp
from sklearn.metrics import r2_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spiral

SPIRAL_MATRIX = np.array([[-0.1, 2.0], [-2.0, -0.1]])
FIRST_FIFTH = 5.0
SENSITIVITY_ERRORS = (0.01, 0.02, 0.05, 0.1)


def true_rates(states: np.ndarray) -> np.ndarray:
    """The spiral's field ``(u**3) A`` at ``states`` (n, 2)."""
    return (states**3) @ SPIRAL_MATRIX


def relative_rms(error: np.ndarray, reference: np.ndarray) -> float:
    return float(np.sqrt(np.mean(error**2) / np.mean(reference**2)))


def polar_components(states: np.ndarray, rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial and tangential components of ``rates`` (n, 2) at ``states`` (n, 2)."""
    radial_direction = states / np.linalg.norm(states, axis=1, keepdims=True)
    tangential_direction = np.stack([-radial_direction[:, 1], radial_direction[:, 0]], axis=1)
    return (rates * radial_direction).sum(axis=1), (rates * tangential_direction).sum(axis=1)


def noisy_irregular(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Times, noisy values and clean values of ``spiral irregular 200`` for ``seed``."""
    from skneuralode.datasets import add_noise, make_spiral

    times = np.sort(np.random.default_rng(seed).uniform(0.0, spiral.T_END, spiral.N_IRREGULAR))
    _, clean = make_spiral(times=np.concatenate([[0.0], times]))
    clean = clean[1:]
    return times, add_noise(clean, spiral.NOISE_FRACTION, seed=seed + 1), clean


@contextlib.contextmanager
def exact_targets(
    states: np.ndarray, states_at: slice = slice(1, None), rates_at: slice = slice(None)
) -> Iterator[None]:
    """Fits inside regress on the true states and rates at their (single trajectory's)
    observed times instead of the smoother's: the states at ``states_at`` (by default all
    but the first, which stays the smoother's initial state) and the rates at
    ``rates_at`` (all by default)."""
    import skneuralode._base as base

    build_problem = base.build_problem

    def with_exact_targets(batch: Any, **settings: Any) -> Any:
        problem = build_problem(batch, **settings)
        dtype = problem.smoothed_states.dtype
        scaled_states = problem.scaling.scale_states(states[states_at])
        scaled_rates = problem.scaling.scale_rates(true_rates(states[rates_at]))
        problem.smoothed_states[0, states_at] = torch.as_tensor(scaled_states, dtype=dtype)
        problem.smoothed_derivatives[0, rates_at] = torch.as_tensor(scaled_rates, dtype=dtype)
        return problem

    base.build_problem = with_exact_targets
    try:
        yield
    finally:
        base.build_problem = build_problem


def collocation_fit(times: np.ndarray, values: np.ndarray, seed: int) -> Any:
    from skneuralode import NeuralODERegressor

    estimator = NeuralODERegressor(random_state=seed, shooting=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator.fit(times, values)


def seed_figures(seed: int) -> dict[str, float]:
    from skneuralode._smoothing import smooth_trajectories
    from skneuralode.datasets import make_spiral

    t_dense, y_dense = make_spiral(n_times=spiral.N_DENSE, t_end=spiral.T_END)
    times, noisy, clean = noisy_irregular(seed)
    smoothed = smooth_trajectories(times[None], noisy[None], np.array([times.size]))
    targets, truth = smoothed.derivatives[0], true_rates(clean)
    early = times < FIRST_FIFTH
    target_radial, target_rotation = polar_components(clean, targets)
    true_radial, true_rotation = polar_components(clean, truth)
    figures = {
        "target_first_fifth": relative_rms(targets[early] - truth[early], truth[early]),
        "target_rest": relative_rms(targets[~early] - truth[~early], truth[~early]),
        "target_radial": float(
            np.mean(np.abs(target_radial - true_radial)) / np.mean(np.abs(true_radial))
        ),
        "target_rotation": float(
            np.mean(np.abs(target_rotation - true_rotation)) / np.mean(np.abs(true_rotation))
        ),
        "colloc": float(collocation_fit(times, noisy, seed).score(t_dense, y_dense)),
        "clean_obs": float(collocation_fit(times, clean, seed).score(t_dense, y_dense)),
    }
    with exact_targets(clean):
        exact = collocation_fit(times, noisy, seed)
    after = t_dense > times[0]
    grid = np.concatenate([[times[0]], t_dense[after]])
    figures["exact_obs"] = float(exact.score(t_dense, y_dense))
    figures["exact_obs_true_y0"] = float(
        r2_score(y_dense[after], exact.predict(grid, y0=clean[0])[1:])
    )
    dense_fit = collocation_fit(t_dense, y_dense, seed)
    figures["clean_dense"] = float(dense_fit.score(t_dense, y_dense))
    return figures


def sensitivity() -> dict[str, float]:
    """R^2 of the true field with its rotation rate or damping off by a fraction."""
    from skneuralode.datasets import make_spiral

    t_dense, y_dense = make_spiral(n_times=spiral.N_DENSE, t_end=spiral.T_END)
    figures = {}
    for error in SENSITIVITY_ERRORS:
        rotation = SPIRAL_MATRIX * np.array([[1.0, 1.0 + error], [1.0 + error, 1.0]])
        damping = SPIRAL_MATRIX * np.array([[1.0 + error, 1.0], [1.0, 1.0 + error]])
        for name, matrix in (("rotation", rotation), ("damping", damping)):
            solution = solve_ivp(
                lambda _, u, m=matrix: (u**3) @ m,
                (0.0, spiral.T_END),
                [2.0, 0.0],
                t_eval=t_dense,
                rtol=1e-10,
                atol=1e-12,
            )
            figures[f"{name} +{error:.0%}"] = float(r2_score(y_dense, solution.y.T))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    seeds = parser.parse_args().seeds
    torch.set_num_threads(1)
    rows = {seed: seed_figures(seed) for seed in seeds}
    names = list(rows[seeds[0]])
    print("seed " + " ".join(f"{name:>18}" for name in names))
    for seed, figures in rows.items():
        print(f"{seed:4d} " + " ".join(f"{figures[name]:18.3f}" for name in names))
    print("R^2 of the true field with one part off (from (2, 0), dense truth):")
    for name, value in sensitivity().items():
        print(f"  {name:>16}: {value:.3f}")


if __name__ == "__main__":
    main()
