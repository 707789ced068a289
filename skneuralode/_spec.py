"""The data-free specification of a fitted model, and the field specifications it holds.

``fit`` computes a :class:`ModelSpec` once from the constructor arguments and the data
(sizes, scaling, feature statistics, penalty weights, solver settings); the fitted torch
module is built from it by :func:`~skneuralode._vector_fields.ODEModel` and nothing else,
``predict`` reads only it and the module, and a saved file stores it as a plain record
and rebuilds the model through the same constructor. No training data is needed for any
of that.

A spec can be checked (:meth:`ModelSpec.check`) before anything is allocated: a file's
spec passes the same limits as a fit's arguments, and its parameter count is known
before a single layer is built, so a hostile file cannot make the loader allocate more
than its weights hold.
"""

from __future__ import annotations

import itertools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from ._scaling import Scaling
from ._solve import SOLVER_NAMES, SolverSettings

if TYPE_CHECKING:
    from torch import nn

DType = Literal["float32", "float64"]
TORCH_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64}

# Bounds every model description respects, whoever wrote it (a fit or a file). The
# constructor's constraints (``_params``) use the same numbers.

#: Most iterations, solver steps, time points per segment and segments per batch.
#: torchdiffeq keeps ``max_num_steps`` in an int32 tensor (10**30 overflowed there), and
#: our step budget adds one to it; 10**9 stays inside int32 with room to spare, and is
#: more steps than any fit finishes (at a microsecond a step, a quarter of an hour per
#: solve).
MAX_ITERATIONS = 10**9

#: Widest hidden layer. One dense layer between two such widths holds 2**30 weights
#: (8 GiB in float64), below the 2**31 elements where int32 indexing in BLAS and in some
#: torch kernels ends; no vector field needs a fraction of it.
MAX_LAYER_WIDTH = 2**15

#: Most augmented dimensions: they widen the network's input and output layers and every
#: trajectory's initial state, so they are capped as a layer width is.
MAX_AUGMENT_DIM = MAX_LAYER_WIDTH

#: Most hidden layers. Each is a torch module called at every field evaluation; a
#: thousand is already far deeper than a vector field is ever trained, and a tuple of
#: millions of narrow layers would exhaust memory in Python objects, not in weights.
MAX_HIDDEN_LAYERS = 1_000

#: Most weights and biases of the network. 10**8 float64 parameters are 800 MB; training
#: keeps the gradients, the optimiser's two moments and a copy of the best weights, which
#: makes about 4 GB. Typical neural-ODE fields have 10**3 to 10**5.
MAX_PARAMETERS = 10**8

#: Most observed states, and most trajectories of one fit.
MAX_STATES = 10_000
MAX_TRAJECTORIES = 10_000_000


class FieldSpec(ABC):
    """How to build a model's vector field, as plain data (one subclass per field kind)."""

    @abstractmethod
    def build(self, spec: ModelSpec) -> nn.Module:
        """The scaled field ``field(t, z)`` with freshly initialised parameters."""

    @abstractmethod
    def check(self, spec: ModelSpec) -> None:
        """Raise ``ValueError`` naming what is wrong if the description is invalid."""

    @abstractmethod
    def n_parameters(self, spec: ModelSpec) -> int:
        """Number of scalars in the field's ``state_dict`` (computed without building it)."""

    @abstractmethod
    def architecture(self) -> tuple[Any, ...]:
        """What a continued fit (``warm_start``) must keep unchanged."""


def mlp_parameter_count(n_inputs: int, hidden_layer_sizes: Sequence[int], n_outputs: int) -> int:
    """Weights and biases of :func:`~skneuralode._vector_fields.multilayer_perceptron`."""
    widths = [n_inputs, *hidden_layer_sizes, n_outputs]
    return sum((width_in + 1) * width_out for width_in, width_out in itertools.pairwise(widths))


def check_count(value: Any, name: str, low: int, high: int) -> int:
    """An int in ``[low, high]``, or a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}.")
    return int(value)


def check_layer_sizes(value: Any, name: str = "hidden_layer_sizes") -> tuple[int, ...]:
    """A tuple of layer widths within the bounds above."""
    if not isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be a tuple of positive integers, got {value!r}.")
    check_count(len(value), f"the number of layers in {name}", 0, MAX_HIDDEN_LAYERS)
    return tuple(check_count(width, f"{name} width", 1, MAX_LAYER_WIDTH) for width in value)


def check_finite_vector(value: Any, name: str, length: int, *, positive: bool = False) -> None:
    """A float64 array of shape ``(length,)`` with finite (positive) entries."""
    if not isinstance(value, np.ndarray) or value.shape != (length,) or value.dtype.kind != "f":
        raise ValueError(f"{name} must be a float array of shape ({length},).")
    if not np.all(np.isfinite(value)) or (positive and not np.all(value > 0)):
        raise ValueError(f"{name} must be finite{' and positive' if positive else ''}.")


def check_finite(
    value: Any, name: str, *, positive: bool = False, allow_none: bool = False
) -> None:
    """A finite real number (positive if asked)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}.")
    if positive and not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}.")


def check_solver_settings(solver: Any) -> None:
    """Solver settings a fit would accept (the same limits as the constructor's)."""
    if not isinstance(solver, SolverSettings):
        raise ValueError("solver settings are missing.")
    if solver.method not in SOLVER_NAMES:
        raise ValueError(f"solver must be one of {sorted(SOLVER_NAMES)}, got {solver.method!r}.")
    check_finite(solver.rtol, "rtol", positive=True)
    check_finite(solver.atol, "atol", positive=True)
    check_finite(solver.step_size, "step_size", positive=True, allow_none=True)
    check_count(solver.max_num_steps, "max_num_steps", 1, MAX_ITERATIONS)
    if not isinstance(solver.adjoint, bool) or not isinstance(solver.stiff_fallback, bool):
        raise ValueError("adjoint and stiff_fallback must be booleans.")


@dataclass(frozen=True, eq=False)
class ModelSpec:
    """Everything needed to build a fitted model, without its data.

    Attributes
    ----------
    field : FieldSpec
        The vector field (network architecture, known physics, feature statistics...).
    n_states : int
        States of the model: those the caller observes and predicts, unless the field
        observes a function of them (``observation_scaling``).
    n_augmented : int
        Extra states that are never observed (augmented dimensions).
    initial_times : ndarray of shape (n_trajectories,)
        Physical times at which the fitted initial states hold.
    scaling : Scaling
    solver : SolverSettings
        How the fitted model is integrated (those of the fit).
    dtype : {"float32", "float64"}
        Precision of the module.
    squeeze_states : bool
        The caller gave one state without a state axis; predictions drop it too.
    one_trajectory : bool
        The caller gave one trajectory without a trajectory axis (1-D ``t``); the fitted
        ``t0_`` and ``y0_`` drop that axis too.
    known_initial_states : ndarray of shape (n_trajectories, n_states) or None
        Initial values given to ``fit`` (physical units, NaN where learned); these are
        held fixed, never learned.
    hidden_states : tuple of int
        States never observed in the training data (learned through the dynamics).
    n_inputs : int
        External inputs ``u(t)`` the field reads (0: none).
    input_interpolation : {"linear", "previous"}
        How sampled inputs are read between samples.
    input_mean, input_std : ndarray of shape (n_inputs,) or None
        Statistics of the training inputs (the network sees them standardised).
    input_function : callable or None
        The caller's ``u(t)`` when the model was fitted with one (used when ``predict``
        is given no inputs).
    observation_scaling : Scaling or None
        Scaling of the observed quantities when ``y`` holds a function of the states
        (the field's ``observe``); None when ``y`` holds the states themselves. Its time
        origin and unit are those of ``scaling``.
    """

    field: FieldSpec
    n_states: int
    n_augmented: int
    initial_times: np.ndarray
    scaling: Scaling
    solver: SolverSettings
    dtype: DType = "float64"
    squeeze_states: bool = False
    one_trajectory: bool = False
    known_initial_states: np.ndarray | None = None
    hidden_states: tuple[int, ...] = ()
    n_inputs: int = 0
    input_interpolation: str = "linear"
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None
    input_function: Callable[..., Any] | None = None
    observation_scaling: Scaling | None = None

    @property
    def n_observed(self) -> int:
        """Columns of ``y``: the observed quantities (the states without ``observe``)."""
        if self.observation_scaling is None:
            return self.n_states
        return self.observation_scaling.n_states

    @property
    def observed_scaling(self) -> Scaling:
        """The scaling of what ``y`` holds: the observation scaling, else the states'."""
        return self.scaling if self.observation_scaling is None else self.observation_scaling

    @property
    def n_trajectories(self) -> int:
        return int(self.initial_times.shape[0])

    @property
    def n_total_states(self) -> int:
        return self.n_states + self.n_augmented

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    def _check_inputs(self) -> None:
        n_inputs = check_count(self.n_inputs, "the number of inputs", 0, MAX_STATES)
        if self.input_interpolation not in ("linear", "previous"):
            raise ValueError("input_interpolation must be 'linear' or 'previous'.")
        if self.input_function is not None and not callable(self.input_function):
            raise ValueError("the input function must be callable.")
        if n_inputs == 0:
            if self.input_mean is not None or self.input_std is not None:
                raise ValueError("input statistics without inputs.")
            return
        check_finite_vector(self.input_mean, "the input mean", n_inputs)
        check_finite_vector(self.input_std, "the input std", n_inputs, positive=True)

    def _check_observation(self) -> None:
        observation = self.observation_scaling
        if observation is None:
            return
        if not isinstance(observation, Scaling):
            raise ValueError("the observation scaling must be a Scaling.")
        if getattr(self.field, "observe", None) is None:
            raise ValueError("an observation scaling without an observe function.")
        n_observed = check_count(observation.n_states, "the number of observed", 1, MAX_STATES)
        check_finite_vector(observation.state_offset, "the observation offset", n_observed)
        check_finite_vector(
            observation.state_scale, "the observation scale", n_observed, positive=True
        )
        if (observation.time_origin, observation.time_scale) != (
            self.scaling.time_origin,
            self.scaling.time_scale,
        ):
            raise ValueError("the observation scaling must share the states' time scaling.")

    def n_parameters(self) -> int:
        """Scalars in the model's ``state_dict``: field plus initial states."""
        return self.field.n_parameters(self) + self.n_trajectories * self.n_total_states

    def check(self) -> None:
        """Raise ``ValueError`` naming the first thing out of bounds or inconsistent."""
        n_states = check_count(self.n_states, "the number of states", 1, MAX_STATES)
        check_count(self.n_augmented, "augment_dim", 0, MAX_AUGMENT_DIM)
        times = self.initial_times
        if not isinstance(times, np.ndarray) or times.ndim != 1 or times.dtype.kind != "f":
            raise ValueError("the initial times must be a 1-D float array.")
        check_count(times.shape[0], "the number of trajectories", 1, MAX_TRAJECTORIES)
        if not np.all(np.isfinite(times)):
            raise ValueError("the initial times must be finite.")
        if not isinstance(self.scaling, Scaling):
            raise ValueError("the scaling is missing.")
        check_finite_vector(self.scaling.state_offset, "the state offset", n_states)
        check_finite_vector(self.scaling.state_scale, "the state scale", n_states, positive=True)
        check_finite(self.scaling.time_origin, "the time origin")
        check_finite(self.scaling.time_scale, "the time scale", positive=True)
        check_solver_settings(self.solver)
        if self.dtype not in TORCH_DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}.")
        if not isinstance(self.squeeze_states, bool) or not isinstance(self.one_trajectory, bool):
            raise ValueError("squeeze_states and one_trajectory must be booleans.")
        if self.one_trajectory and times.shape[0] != 1:
            raise ValueError("a one-trajectory model must have one initial time.")
        known = self.known_initial_states
        if known is not None and (
            not isinstance(known, np.ndarray)
            or known.shape != (times.shape[0], n_states)
            or known.dtype.kind != "f"
            or np.isinf(known).any()
        ):
            raise ValueError("the known initial states must be a float array, NaN where learned.")
        hidden = self.hidden_states
        if not isinstance(hidden, tuple) or not all(
            type(i) is int and 0 <= i < n_states for i in hidden
        ):
            raise ValueError("hidden_states must be a tuple of state indices.")
        self._check_inputs()
        self._check_observation()
        if not isinstance(self.field, FieldSpec):
            raise ValueError("the field description is missing.")
        self.field.check(self)
        count = self.n_parameters()
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"the model (hidden_layer_sizes, augment_dim, the number of trajectories) "
                f"would have {count:,} parameters; at most MAX_PARAMETERS={MAX_PARAMETERS:,} "
                "are allowed."
            )
