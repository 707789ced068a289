"""Declared constraints of the shared constructor arguments (checked at ``fit``)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

from sklearn.utils._param_validation import Interval, StrOptions

from ._solve import SOLVER_NAMES
from ._vector_fields import ACTIVATIONS

COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "hidden_layer_sizes": ["array-like"],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "augment_dim": [Interval(Integral, 0, None, closed="left")],
    "solver": [StrOptions(set(SOLVER_NAMES))],
    "rtol": [Interval(Real, 0, None, closed="neither")],
    "atol": [Interval(Real, 0, None, closed="neither")],
    "adjoint": ["boolean"],
    "compile_field": ["boolean"],
    "step_size": [Interval(Real, 0, None, closed="neither"), None],
    "max_num_steps": [Interval(Integral, 1, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "collocation": ["boolean"],
    "shooting": ["boolean", StrOptions({"auto"})],
    "polish": ["boolean"],
    "polish_max_iter": [Interval(Integral, 1, None, closed="left")],
    "smoothing": [StrOptions({"auto"}), Interval(Real, 0, None, closed="left")],
    "collocation_learning_rate": [Interval(Real, 0, None, closed="neither")],
    "shooting_learning_rate": [Interval(Real, 0, None, closed="neither")],
    "segment_length": [Interval(Integral, 2, None, closed="left"), None],
    "segment_growth": ["boolean"],
    "segment_batch_size": [Interval(Integral, 1, None, closed="left")],
    "continuity_weight": [Interval(Real, 0, None, closed="left")],
    "tol": [Interval(Real, 0, None, closed="left")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "callbacks": [list, tuple, None],
    "random_state": ["random_state"],
    "device": [str],
    "dtype": [StrOptions({"auto", "float32", "float64"})],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "on_interrupt": [StrOptions({"raise", "keep_best"})],
}


def check_hidden_layer_sizes(value: Any) -> tuple[int, ...]:
    """A tuple of positive layer widths (``()`` = no hidden layer)."""
    try:
        widths = tuple(value)
    except TypeError:
        raise TypeError(
            f"hidden_layer_sizes must be a tuple of positive integers, got {value!r}."
        ) from None
    for width in widths:
        if isinstance(width, bool) or not isinstance(width, Integral) or width < 1:
            raise ValueError(
                f"hidden_layer_sizes must be a tuple of positive integers, got {value!r}."
            )
    return tuple(int(width) for width in widths)


def check_callbacks(callbacks: Any) -> tuple[Any, ...]:
    """Every callback must be callable."""
    callbacks = tuple(callbacks or ())
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables, got {callback!r}.")
    return callbacks
