"""Equation discovery: sparse regression of a learned term, with ``pysindy``.

The network of a universal differential equation is a black box; along the fitted
trajectories it is a smooth function of the states, and a sparse combination of a few
library terms often describes it (Rackauckas et al. 2020, after Brunton et al. 2016).
``pysindy`` is an optional dependency (the ``[discovery]`` extra).

Along one trajectory the library columns (1, x, z, x^2, x z, ...) are nearly collinear,
and sequentially thresholded least squares then keeps many terms whose large
coefficients cancel. Here the candidate structures of each equation come from
best-subset selection on the residual: for every number of terms, the subset that
leaves the least residual. When the library is small (at most ``MAX_EXHAUSTIVE_TERMS``
terms) every subset is tried, which costs little since each is a tiny least-squares
problem; greedy elimination can miss the best small subset precisely when columns are
collinear. Larger libraries fall back to backward stepwise elimination (pysindy's
``SSR`` with ``criteria="model_residual"``): the term whose removal costs least goes
first.

Which structure is kept is decided by the dynamics, not by the network's term: the
network is least accurate where the data say least, so a term that is right can leave a
good part of the network's output unexplained. Sparsest first, each candidate's
coefficients are refitted through the ODE (``_discovery_refit``) so that the rebuilt
model, known part + discovered terms, reproduces the fitted trajectories; the sparsest
structure that does so to within ``threshold`` of the states' spread is kept.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._discovery_refit import Rates, Refit, refit_through_trajectories

_INSTALL_HINT = (
    "Equation discovery needs the optional dependency pysindy: "
    "pip install 'skneuralode[discovery]' (or pip install pysindy)."
)


def import_pysindy() -> Any:
    """Import ``pysindy`` or say which extra to install."""
    try:
        import pysindy
    except ImportError as error:
        raise ImportError(_INSTALL_HINT) from error
    return pysindy


@dataclass
class EquationDiscovery:
    """A sparse description of a learned term, in the caller's units.

    Attributes
    ----------
    library : pysindy.PolynomialLibrary
        The fitted candidate terms, built from the states in ``input_states``.
    coefficients : ndarray of shape (n_states, n_terms)
        Coefficient of each library term in each state's equation (zero rows for the
        states without a network term).
    term_names : list of str
        Names of the library terms (columns of ``coefficients``).
    input_states : tuple of int
        States the library is built from.
    output_states : tuple of int
        States whose term was regressed.
    unexplained : ndarray of shape (n_states,)
        Fraction of each regressed term's RMS the equation leaves unexplained along the
        sampled trajectories (zero for the other states).
    trajectory_error : float
        RMS by which the rebuilt model (known part + discovered terms) misses the fitted
        trajectories (at most ``MAX_REFIT_TRAJECTORIES`` of them, evenly spread), as a
        fraction of each state's standard deviation along them.
    """

    library: Any
    coefficients: np.ndarray
    term_names: list[str]
    input_states: tuple[int, ...]
    output_states: tuple[int, ...]
    unexplained: np.ndarray
    trajectory_error: float

    @property
    def n_states(self) -> int:
        return self.coefficients.shape[0]

    def equations(self, precision: int = 3) -> list[str]:
        """The discovered term of every state's right-hand side ("0" where none)."""
        equations = []
        for state, row in enumerate(self.coefficients):
            if state not in self.output_states:
                equations.append("0")
                continue
            terms = [
                f"{value:.{precision}f}" + ("" if name == "1" else f" {name}")
                for value, name in zip(row, self.term_names, strict=True)
                if round(value, precision) != 0
            ]
            equations.append(" + ".join(terms).replace("+ -", "- ") if terms else "0")
        return equations

    def rates(self, y: Any) -> np.ndarray:
        """The discovered term at states ``y`` of shape (n_samples, n_states)."""
        states = np.atleast_2d(np.asarray(y, dtype=float))
        features = np.asarray(self.library.transform(states[:, list(self.input_states)]))
        return (features @ self.coefficients.T).reshape(np.shape(y))


#: Libraries up to this many terms are searched exhaustively (2^15 tiny fits at most).
MAX_EXHAUSTIVE_TERMS = 15
#: Candidate structures refitted through the ODE at most (sparsest first).
MAX_REFITS = 30
#: Trajectories the refits integrate at most (evenly spread over the fitted ones).
MAX_REFIT_TRAJECTORIES = 20


def _best_subsets(features: np.ndarray, target: np.ndarray) -> list[np.ndarray]:
    """Support of the least-residual subset of every size 1..n_terms (exhaustive).

    All subsets of one size are solved together through the normal equations of the
    unit-norm columns (batched); the caller refits the chosen support by least squares.
    """
    n_terms = features.shape[1]
    scale = np.linalg.norm(features, axis=0)
    scale[scale == 0] = 1.0
    columns = features / scale
    gram, moments = columns.T @ columns, columns.T @ target
    supports = []
    for size in range(1, n_terms + 1):
        subsets = np.array(list(itertools.combinations(range(n_terms), size)))
        grams = gram[subsets[:, :, None], subsets[:, None, :]]  # (n_subsets, size, size)
        rhs = moments[subsets]  # (n_subsets, size)
        solutions = np.einsum("sij,sj->si", np.linalg.pinv(grams, hermitian=True), rhs)
        explained = np.einsum("si,si->s", solutions, rhs)  # the residual is |y|^2 - this
        support = np.zeros(n_terms, dtype=bool)
        support[subsets[int(np.argmax(explained))]] = True
        supports.append(support)
    return supports


def _backward_path(features: np.ndarray, target: np.ndarray, pysindy: Any) -> list[np.ndarray]:
    """Supports along pysindy's backward elimination (SSR), from the full model down."""
    n_terms = features.shape[1]
    optimizer = pysindy.SSR(
        alpha=1e-10, max_iter=n_terms, criteria="model_residual", normalize_columns=True
    )
    optimizer.fit(features, target)
    # history_[0] is the full model (pysindy keeps it by reference, so rebuild it)
    supports = [np.ones(n_terms, dtype=bool)]
    supports += [np.asarray(step).reshape(-1) != 0 for step in optimizer.history_[1:]]
    return supports


def candidate_supports(
    features: np.ndarray,
    target: np.ndarray,
    pysindy: Any,
    max_exhaustive: int = MAX_EXHAUSTIVE_TERMS,
) -> list[np.ndarray]:
    """Candidate structures of one equation, sparsest first.

    The least-residual subset of every size when the library has at most
    ``max_exhaustive`` terms, the backward elimination path otherwise.
    """
    if features.shape[1] <= max_exhaustive:
        supports = _best_subsets(features, target)
    else:
        supports = _backward_path(features, target, pysindy)
    return sorted((support for support in supports if support.any()), key=np.sum)


def _structures_by_size(counts: Sequence[int]) -> list[tuple[int, ...]]:
    """Index tuples (one candidate per equation), fewest terms in all first."""
    return sorted(itertools.product(*(range(count) for count in counts)), key=sum)


def _least_squares_on_term(
    features: np.ndarray, targets: np.ndarray, supports: dict[int, np.ndarray], n_states: int
) -> np.ndarray:
    coefficients = np.zeros((n_states, features.shape[1]))
    for state, support in supports.items():
        solution = np.linalg.lstsq(features[:, support], targets[:, state], rcond=None)[0]
        coefficients[state, support] = solution
    return coefficients


def discover_network_term(
    states: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    times: Sequence[np.ndarray],
    known_rates: Rates,
    *,
    input_states: Sequence[int],
    output_states: Sequence[int],
    degree: int,
    threshold: float,
    feature_names: Sequence[str] | None,
) -> EquationDiscovery:
    """The sparsest polynomial description of ``targets`` that reproduces the dynamics.

    Parameters
    ----------
    states, targets : list of ndarray of shape (n_points, n_states)
        States along each fitted trajectory and the learned term there.
    times : list of ndarray of shape (n_points,)
        Times of those states.
    known_rates : callable
        The known part of the right-hand side, ``known_rates(y)`` for states of shape
        (n_samples, n_states).
    input_states, output_states : sequence of int
        States the library uses and states whose term is described.
    degree : int
        Highest degree of the polynomial library.
    threshold : float
        Largest trajectory error (see :class:`EquationDiscovery`) a description may
        leave; when none is within it, the closest one tried is kept.
    feature_names : sequence of str or None
        Names of all states ("x0", "x1", ... by default).

    Returns
    -------
    EquationDiscovery
    """
    pysindy = import_pysindy()
    n_states = states[0].shape[1]
    if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)) or degree < 1:
        raise ValueError(f"degree must be a positive integer, got {degree!r}.")
    if not np.isfinite(threshold) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a fraction in [0, 1), got {threshold!r}.")
    names = [f"x{i}" for i in range(n_states)] if feature_names is None else list(feature_names)
    if len(names) != n_states or not all(isinstance(name, str) for name in names):
        raise ValueError(f"feature_names must be {n_states} strings, got {feature_names!r}.")
    inputs, outputs = list(input_states), list(output_states)
    library = pysindy.PolynomialLibrary(degree=degree)
    features = np.asarray(library.fit_transform(np.concatenate(states)[:, inputs]))
    stacked_targets = np.concatenate(targets)
    candidates = {
        state: candidate_supports(features, stacked_targets[:, state], pysindy) for state in outputs
    }

    def rebuilt_rates(coefficients: np.ndarray) -> Rates:
        def rates(y: np.ndarray) -> np.ndarray:
            terms = np.asarray(library.transform(y[:, inputs]))
            return known_rates(y) + terms @ coefficients.T

        return rates

    # Refits integrate every trajectory at every evaluation: a spread of them suffices.
    chosen = np.unique(np.linspace(0, len(states) - 1, MAX_REFIT_TRAJECTORIES).astype(int))
    refit_states, refit_times = [states[i] for i in chosen], [times[i] for i in chosen]
    best: tuple[int, Refit] | None = None
    structures = _structures_by_size([len(candidates[state]) for state in outputs])
    for structure in structures[:MAX_REFITS]:
        supports = {
            state: candidates[state][index] for state, index in zip(outputs, structure, strict=True)
        }
        size = sum(int(support.sum()) for support in supports.values())
        if best is not None and best[1].error <= threshold and size > best[0]:
            break  # the sparsest structures within the threshold have all been tried
        start = _least_squares_on_term(features, stacked_targets, supports, n_states)
        free = np.zeros_like(start, dtype=bool)
        for state, support in supports.items():
            free[state, support] = True
        refit = refit_through_trajectories(start, free, rebuilt_rates, refit_states, refit_times)
        if best is None or _better(refit, size, best, threshold):
            best = (size, refit)
    assert best is not None  # every output state has at least one candidate
    coefficients = best[1].coefficients
    residual = np.asarray(features @ coefficients.T) - stacked_targets
    norms = np.maximum(np.linalg.norm(stacked_targets, axis=0), np.finfo(float).tiny)
    unexplained = np.zeros(n_states)
    unexplained[outputs] = (np.linalg.norm(residual, axis=0) / norms)[outputs]
    return EquationDiscovery(
        library,
        coefficients,
        list(library.get_feature_names([names[i] for i in inputs])),
        tuple(inputs),
        tuple(outputs),
        unexplained,
        best[1].error,
    )


def _better(refit: Refit, size: int, best: tuple[int, Refit], threshold: float) -> bool:
    """Within the threshold the sparser, then the closer; outside it, the closer."""
    within, best_within = refit.error <= threshold, best[1].error <= threshold
    if within != best_within:
        return within
    if within and size != best[0]:
        return size < best[0]
    return refit.error < best[1].error
