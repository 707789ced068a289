"""Which physical parameters the data determine, and which combinations of them.

The information matrix of the raw physical parameters (network fixed, initial states
re-fitted) is taken to *relative* coordinates, ``d p / |p|`` (for a positive parameter,
learned on a log scale, that is ``d log p``), so that its eigenvalues compare parameters
of any units. A direction ``v`` of relative change is determined to a standard deviation
of ``1 / sqrt(lambda)``; a direction known to no better than 100 % (or one numerically
without information) is *undetermined*.

For ``x' = a b x`` the information is ``(1, 1) (1, 1)^T`` in ``(log a, log b)``: the
direction ``(1, -1)`` carries none, so ``a`` and ``b`` are not determined separately,
and the direction orthogonal to it, ``log a + log b``, is: only ``a*b`` is determined.
The determined combinations of the parameters involved in undetermined directions are
written as products of powers when those parameters are positive (log-parametrised),
and as linear combinations (linearised at the fit) otherwise.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np

#: Relative standard deviation beyond which a direction counts as undetermined.
UNDETERMINED_RELATIVE_STD = 1.0
_NUMERICAL_FLOOR = 1e-9  # eigenvalues below this fraction of the largest: no information
_INVOLVED_LOADING = 0.05  # a parameter with this much squared loading takes part
_COMPLEMENT_TOLERANCE = 0.5  # eigenvalue of the complement projector taken as one


class IdentifiabilityWarning(UserWarning):
    """The data do not determine some physical parameters (only combinations of them).

    Issued by :meth:`UniversalODERegressor.fit`; the numbers are in ``identifiability_``.
    Filter it like any warning, e.g. ``warnings.simplefilter("error",
    IdentifiabilityWarning)`` to stop a pipeline on a model the data cannot pin down.

    Parameters
    ----------
    message : str
        Which parameters are not determined and which combinations of them are.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)


def relative_information(
    information: np.ndarray, values: np.ndarray, derivatives: np.ndarray
) -> np.ndarray:
    """The information in relative coordinates ``d p / |p|``.

    Parameters
    ----------
    information : ndarray of shape (n, n)
        Information about the raw parameters.
    values : ndarray of shape (n,)
        The fitted physical values.
    derivatives : ndarray of shape (n,)
        ``dp / draw`` at the fit.
    """
    magnitude = np.where(values != 0.0, np.abs(values), np.abs(derivatives))
    raw_per_relative = magnitude / derivatives  # d raw / d(relative change)
    return information * np.outer(raw_per_relative, raw_per_relative)


def _simple_number(value: float) -> str:
    """A coefficient as a short fraction when it is one (1/2, 2, -1/3), else 3 digits."""
    fraction = Fraction(value).limit_denominator(4)
    if abs(float(fraction) - value) < 0.02:
        return str(fraction)
    return f"{value:.3g}"


def _power_product(names: Sequence[str], powers: np.ndarray) -> str:
    """``a*b``, ``a/b``, ``a^2*b/c`` from exponents."""

    def factor(name: str, power: float) -> str:
        text = _simple_number(abs(power))
        return name if text == "1" else f"{name}^{text}"

    top = [factor(name, power) for name, power in zip(names, powers, strict=True) if power > 0]
    bottom = [factor(name, power) for name, power in zip(names, powers, strict=True) if power < 0]
    numerator = "*".join(top) if top else "1"
    if not bottom:
        return numerator
    denominator = bottom[0] if len(bottom) == 1 else "(" + "*".join(bottom) + ")"
    return f"{numerator}/{denominator}"


def _linear_combination(names: Sequence[str], coefficients: np.ndarray) -> str:
    terms = []
    for name, coefficient in zip(names, coefficients, strict=True):
        text = _simple_number(abs(coefficient))
        term = name if text == "1" else f"{text}*{name}"
        sign = "-" if coefficient < 0 else "+"
        terms.append(f"{sign} {term}" if terms else ("-" + term if coefficient < 0 else term))
    return " ".join(terms)


def _determined_combinations(
    names: Sequence[str],
    undetermined: np.ndarray,
    involved: np.ndarray,
    values: np.ndarray,
    log_scaled: np.ndarray,
) -> list[str]:
    """Combinations of the involved parameters orthogonal to the undetermined
    directions (relative coordinates), in words."""
    basis = undetermined[involved]  # (n_involved, n_undetermined)
    complement = np.eye(basis.shape[0]) - basis @ basis.T
    eigenvalues, vectors = np.linalg.eigh(complement)
    kept = vectors[:, eigenvalues > _COMPLEMENT_TOLERANCE]
    chosen = [names[index] for index in np.flatnonzero(involved)]
    texts = []
    for column in kept.T:
        coefficients = column / np.abs(column).max()
        significant = np.abs(coefficients) > 1e-2
        # A direction's sign is arbitrary (the eigensolver's): name it with the first
        # parameter's power positive, so the same data always read "a/b", never "b/a".
        if coefficients[np.flatnonzero(significant)[0]] < 0:
            coefficients = -coefficients
        if np.all(log_scaled[involved]):  # products of powers
            texts.append(
                _power_product(
                    [n for n, s in zip(chosen, significant, strict=True) if s],
                    coefficients[significant],
                )
            )
        else:
            linear = coefficients / np.abs(values[involved])  # per unit of each parameter
            linear = linear / np.abs(linear).max()
            texts.append(
                _linear_combination(
                    [n for n, s in zip(chosen, significant, strict=True) if s],
                    linear[significant],
                )
            )
    return texts


def analyse_identifiability(
    information: np.ndarray,
    names: Sequence[str],
    values: np.ndarray,
    derivatives: np.ndarray,
    log_scaled: np.ndarray,
) -> dict[str, Any]:
    """Eigen-analysis of the relative information about physical parameters.

    Parameters
    ----------
    information : ndarray of shape (n, n)
        Information about the raw parameters (network fixed, initial states eliminated).
    names : sequence of str
    values, derivatives : ndarray of shape (n,)
        Fitted values and ``dp / draw``.
    log_scaled : ndarray of bool, shape (n,)
        Which parameters are learned on a log scale (constrained positive).

    Returns
    -------
    dict
        ``parameter_names``, ``eigenvalues`` (ascending), ``directions`` (columns, unit
        vectors of relative change), ``relative_std`` (of each direction),
        ``condition_number``, ``undetermined`` (names) and ``determined_combinations``
        (strings); see :attr:`UniversalODERegressor.identifiability_`.
    """
    relative = relative_information(information, values, derivatives)
    eigenvalues, directions = np.linalg.eigh((relative + relative.T) / 2.0)
    largest = float(eigenvalues.max(initial=0.0))
    positive = np.maximum(eigenvalues, 0.0)
    with np.errstate(divide="ignore"):
        relative_std = np.where(positive > 0, 1.0 / np.sqrt(positive), np.inf)
    numerically_null = eigenvalues <= _NUMERICAL_FLOOR * max(largest, 1e-300)
    flagged = numerically_null | (relative_std > UNDETERMINED_RELATIVE_STD)
    undetermined_directions = directions[:, flagged]
    loading = np.sum(undetermined_directions**2, axis=1)
    involved = loading > _INVOLVED_LOADING
    combinations: list[str] = []
    log_scaled_combinations = bool(np.all(log_scaled[involved]))
    if flagged.any():
        combinations = _determined_combinations(
            names, undetermined_directions, involved, values, log_scaled
        )
    smallest = float(eigenvalues[0]) if eigenvalues.size else 0.0
    condition = largest / smallest if smallest > 0 else np.inf
    return {
        "parameter_names": list(names),
        "eigenvalues": eigenvalues,
        "directions": directions,
        "relative_std": relative_std,
        "condition_number": float(condition),
        "undetermined": [name for name, flag in zip(names, involved, strict=True) if flag],
        "determined_combinations": combinations,
        "log_scaled_combinations": log_scaled_combinations,
    }


def _in_words(names: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def identifiability_message(analysis: dict[str, Any]) -> str | None:
    """The warning text for undetermined parameters, or None when all are determined."""
    undetermined = analysis["undetermined"]
    if not undetermined:
        return None
    listed = _in_words(undetermined)
    if len(undetermined) == 1:
        text = f"The data do not determine the parameter {listed}"
    else:
        text = f"The data do not determine the parameters {listed} separately"
    text += (
        f" (some combination of them is known to no better than "
        f"{UNDETERMINED_RELATIVE_STD:.0%} relative standard deviation)"
    )
    combinations = analysis["determined_combinations"]
    if combinations:
        verb = "is" if len(combinations) == 1 else "are"
        text += f"; only {_in_words(combinations)} {verb} determined"
        if not analysis["log_scaled_combinations"]:
            text += " (linearised at the fit)"
    return (
        text + ". Their intervals are not meaningful: fix some of them (fixed_params), "
        "reparametrise, or add data that separate them; identifiability_ has the numbers."
    )


def warn_about_identifiability(analysis: dict[str, Any]) -> None:
    """Issue an :class:`IdentifiabilityWarning` when some parameters are undetermined."""
    message = identifiability_message(analysis)
    if message is not None:
        warnings.warn(message, IdentifiabilityWarning, stacklevel=4)
