"""Declared constraints of the shared constructor arguments (checked at ``fit``).

Every setting is bounded where the libraries underneath are, so that a value no machine
can honour is a ``ValueError`` naming it, at the door, rather than an overflow deep in
torch or torchdiffeq, or an allocation that exhausts memory. The caps are public names:
the file loader checks a saved model's settings against them before allocating anything.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from sklearn.utils._param_validation import StrOptions

from ._settings import SETTINGS_CONSTRAINTS, count
from ._spec import (
    MAX_AUGMENT_DIM,
    MAX_HIDDEN_LAYERS,
    MAX_ITERATIONS,  # noqa: F401  (re-exported: the caps are public names here)
    MAX_LAYER_WIDTH,
    MAX_PARAMETERS,
    mlp_parameter_count,
)
from ._vector_fields import ACTIVATIONS

COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "hidden_layer_sizes": ["array-like"],
    "activation": [StrOptions(set(ACTIVATIONS))],
    "augment_dim": [count(0, MAX_AUGMENT_DIM)],
    "max_iter": [count(1)],
    # solver, collocation, shooting, polish: a plain value or a settings object, whose
    # own settings are declared (and bounded the same way) in _settings.py
    **SETTINGS_CONSTRAINTS,
    "callbacks": [list, tuple, None],
    "random_state": ["random_state"],
    "device": [str],
    "dtype": [StrOptions({"auto", "float32", "float64"})],
    "verbose": [count(0), "boolean"],
    "warm_start": ["boolean"],
    "on_interrupt": [StrOptions({"raise", "keep_best"})],
}


def check_hidden_layer_sizes(value: Any) -> tuple[int, ...]:
    """A tuple of positive layer widths (``()`` = no hidden layer), within the caps.

    Parameters
    ----------
    value : sequence of int
        The ``hidden_layer_sizes`` setting.

    Returns
    -------
    tuple of int
        The widths as Python integers.

    Raises
    ------
    TypeError
        If ``value`` is not a sequence.
    ValueError
        If a width is not a positive integer up to :data:`MAX_LAYER_WIDTH`, or there are
        more than :data:`MAX_HIDDEN_LAYERS` layers.
    """
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
        if width > MAX_LAYER_WIDTH:
            raise ValueError(
                f"hidden_layer_sizes holds a layer of width {int(width)}; the widest allowed "
                f"is MAX_LAYER_WIDTH={MAX_LAYER_WIDTH} (one layer between two such widths "
                "already holds 2**30 weights)."
            )
    if len(widths) > MAX_HIDDEN_LAYERS:
        raise ValueError(
            f"hidden_layer_sizes has {len(widths)} layers; at most "
            f"MAX_HIDDEN_LAYERS={MAX_HIDDEN_LAYERS} are allowed."
        )
    return tuple(int(width) for width in widths)


def check_total_parameters(
    n_inputs: int, hidden_layer_sizes: tuple[int, ...], n_outputs: int
) -> int:
    """Count the weights and biases of a dense network, refusing more than the cap.

    Called before the network is built, so that a network too large for memory is a
    clear error rather than an allocation failure.

    Parameters
    ----------
    n_inputs : int
        Width of the network's input (features, augmented dimensions included).
    hidden_layer_sizes : tuple of int
        Hidden widths, as :func:`check_hidden_layer_sizes` accepts them.
    n_outputs : int
        Width of the network's output.

    Returns
    -------
    int
        ``sum((a + 1) * b)`` over consecutive widths ``a, b`` of
        ``(n_inputs, *hidden_layer_sizes, n_outputs)``: the parameters of
        ``multilayer_perceptron`` (no hidden layer: one linear map).

    Raises
    ------
    ValueError
        If the count exceeds :data:`MAX_PARAMETERS`; the message names
        ``hidden_layer_sizes`` and the count.

    Examples
    --------
    >>> check_total_parameters(2, (64, 64), 2)
    4482
    """
    widths = (int(n_inputs), *check_hidden_layer_sizes(hidden_layer_sizes), int(n_outputs))
    total = mlp_parameter_count(widths[0], widths[1:-1], widths[-1])
    if total > MAX_PARAMETERS:
        raise ValueError(
            f"hidden_layer_sizes={tuple(widths[1:-1])} with {widths[0]} inputs and "
            f"{widths[-1]} outputs makes a network of {total:,} parameters; at most "
            f"MAX_PARAMETERS={MAX_PARAMETERS:,} are allowed (about "
            f"{8 * total / 2**30:.1f} GiB of float64 weights before gradients and optimiser "
            "state). Use narrower or fewer layers."
        )
    return total


def check_callbacks(callbacks: Any) -> tuple[Any, ...]:
    """Every callback must be callable."""
    callbacks = tuple(callbacks or ())
    for callback in callbacks:
        if not callable(callback):
            raise TypeError(f"callbacks must be callables, got {callback!r}.")
    return callbacks
