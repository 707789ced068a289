"""Equation discovery: sparse regression (SINDy, via ``pysindy``) of a learned term.

The network of a universal differential equation is a black box; along the fitted
trajectories it is a smooth function of the states, and a sparse combination of a few
polynomial terms often describes it exactly (Rackauckas et al. 2020, after Brunton et al.
2016). ``pysindy`` is an optional dependency (the ``[discovery]`` extra).

The threshold is made scale free: each target is divided by its root-mean-square and the
library columns are normalised (``normalize_columns=True``), so ``threshold`` is the
smallest fraction of an equation's RMS a kept term contributes; the coefficients are
then brought back to the caller's units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    """A fitted sparse regression of a learned term, in the caller's units.

    Attributes
    ----------
    model : pysindy.SINDy
        Regression from the input states to the term on the output states.
    input_states : tuple of int
        States the library is built from.
    output_states : tuple of int
        States whose term was regressed (the others are zero).
    n_states : int
        Number of states of the system.
    """

    model: Any
    input_states: tuple[int, ...]
    output_states: tuple[int, ...]
    n_states: int

    def equations(self, precision: int = 3) -> list[str]:
        """The discovered term of every state's right-hand side ("0" where none)."""
        found = dict(zip(self.output_states, self.model.equations(precision), strict=True))
        return [found.get(state, "0").strip() for state in range(self.n_states)]

    @property
    def coefficients(self) -> np.ndarray:
        """Coefficients, shape (n_states, n_library_terms); zero rows off the outputs."""
        coefficients = np.zeros((self.n_states, self.model.coefficients().shape[1]))
        coefficients[list(self.output_states)] = self.model.coefficients()
        return coefficients

    @property
    def term_names(self) -> list[str]:
        """Names of the library terms (columns of :attr:`coefficients`)."""
        return list(self.model.get_feature_names())

    def rates(self, y: np.ndarray) -> np.ndarray:
        """The discovered term at states ``y`` of shape (n_samples, n_states)."""
        states = np.atleast_2d(np.asarray(y, dtype=float))
        rates = np.zeros(states.shape)
        predicted = self.model.predict(states[:, list(self.input_states)])
        rates[:, list(self.output_states)] = predicted
        return rates.reshape(np.shape(y))


def discover_network_term(
    states: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    times: Sequence[np.ndarray],
    *,
    input_states: Sequence[int],
    output_states: Sequence[int],
    degree: int,
    threshold: float,
    feature_names: Sequence[str] | None,
) -> EquationDiscovery:
    """Fit SINDy from ``states`` to ``targets`` (both lists of (n_points, n_states)).

    Parameters
    ----------
    states, targets : list of ndarray of shape (n_points, n_states)
        States along each trajectory and the learned term there.
    times : list of ndarray of shape (n_points,)
        Times of the samples (pysindy's bookkeeping; no derivative is estimated).
    input_states, output_states : sequence of int
        States the library uses and states whose term is regressed.
    degree : int
        Highest degree of the polynomial library.
    threshold : float
        Smallest kept contribution, as a fraction of an equation's RMS.
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
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}.")
    names = [f"x{i}" for i in range(n_states)] if feature_names is None else list(feature_names)
    if len(names) != n_states or not all(isinstance(name, str) for name in names):
        raise ValueError(f"feature_names must be {n_states} strings, got {feature_names!r}.")
    inputs, outputs = list(input_states), list(output_states)
    stacked = np.concatenate(targets)[:, outputs]
    target_rms = np.sqrt(np.mean(stacked**2, axis=0))
    target_rms = np.where(target_rms > 0, target_rms, 1.0)
    n_samples = stacked.shape[0]
    optimizer = pysindy.STLSQ(
        threshold=threshold * np.sqrt(n_samples), normalize_columns=True, alpha=1e-6 * n_samples
    )
    model = pysindy.SINDy(
        optimizer=optimizer, feature_library=pysindy.PolynomialLibrary(degree=degree)
    )
    model.fit(
        [np.ascontiguousarray(row[:, inputs]) for row in states],
        t=[np.asarray(grid, dtype=float) for grid in times],
        x_dot=[np.ascontiguousarray(row[:, outputs] / target_rms) for row in targets],
        feature_names=[names[i] for i in inputs],
    )
    model.optimizer.coef_ = model.optimizer.coef_ * target_rms[:, None]
    return EquationDiscovery(model, tuple(inputs), tuple(outputs), n_states)
