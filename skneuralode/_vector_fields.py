"""Torch modules for the learned dynamics, all in the scaled units of ``_scaling``.

A field is called as ``field(t, z)`` with ``z`` of shape ``(..., n_total_states)`` and
``t`` either a 0-d tensor or of shape ``z.shape[:-1]``; it returns ``dz/ds`` of the same
shape as ``z``. :class:`ODEModel` is built from a :class:`~skneuralode._spec.ModelSpec`
alone (field, learned initial states) and is the estimator's ``module_``;
:class:`NeuralFieldSpec` describes the field of :class:`NeuralODERegressor`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._forcing import ForcedField, InputStandardiser
from ._scaling import Scaling
from ._spec import (
    FieldSpec,
    ModelSpec,
    check_finite_vector,
    check_layer_sizes,
    mlp_parameter_count,
)

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}

_OUTPUT_INIT_SCALE = 0.1

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def multilayer_perceptron(
    n_inputs: int, hidden_layer_sizes: Sequence[int], n_outputs: int, activation: str
) -> nn.Sequential:
    """Dense network; the output layer starts small so the initial field is gentle."""
    widths = [n_inputs, *hidden_layer_sizes]
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(widths):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
    output = nn.Linear(widths[-1], n_outputs)
    with torch.no_grad():
        output.weight.mul_(_OUTPUT_INIT_SCALE)
        output.bias.zero_()
    layers.append(output)
    return nn.Sequential(*layers)


def feature_statistics(
    feature_map: FeatureMap, physical_states: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of ``feature_map`` at reference states, checked.

    Called once per fit (never when a model is loaded), so that a ``feature_map`` that
    fails or returns the wrong thing is reported as such rather than from deep inside
    training.

    Parameters
    ----------
    feature_map : callable
        Torch function of physical states ``(..., n_states) -> (..., n_features)``.
    physical_states : ndarray of shape (n_points, n_states)

    Returns
    -------
    mean, std : ndarray of shape (n_features,)
    """
    shape = physical_states.shape
    states = torch.as_tensor(physical_states, dtype=torch.float64)
    try:
        with torch.no_grad():
            features = feature_map(states)
    except Exception as error:
        raise ValueError(
            f"feature_map raised {type(error).__name__}: {error} when called on physical "
            f"states of shape {shape}; it must map (..., n_states) to (..., n_features)."
        ) from error
    if not isinstance(features, torch.Tensor):
        raise TypeError(
            f"feature_map must return a torch.Tensor, got {type(features).__name__}; build it "
            "from its torch input (e.g. torch.cat([y, y**3], dim=-1))."
        )
    if features.ndim != 2 or features.shape[0] != shape[0] or features.shape[1] == 0:
        raise ValueError(
            f"feature_map must map states of shape (..., n_states) to (..., n_features); on "
            f"states of shape {shape} it returned shape {tuple(features.shape)}."
        )
    values = features.detach().cpu().numpy().astype(np.float64)
    if not np.all(np.isfinite(values)):
        bad_row = int(np.argmin(np.isfinite(values).all(axis=1)))
        raise ValueError(
            f"feature_map returned non-finite values (NaN or inf), e.g. at the state "
            f"{physical_states[bad_row].tolist()} of the data."
        )
    std = values.std(axis=0)
    return values.mean(axis=0), np.where(std > 0, std, 1.0)


class NetworkInputs(nn.Module):
    """What the network sees: scaled states, or a standardised ``feature_map`` of the
    physical states, followed by the augmented dimensions.

    Parameters
    ----------
    scaling : Scaling
        The scaling of the states the network sees.
    feature_map : callable or None
    feature_mean, feature_std : ndarray of shape (n_features,) or None
        Statistics of ``feature_map`` on the training data (None without a feature map).
    """

    def __init__(
        self,
        scaling: Scaling,
        feature_map: FeatureMap | None,
        feature_mean: np.ndarray | None,
        feature_std: np.ndarray | None,
    ) -> None:
        super().__init__()
        self.scaling = scaling
        self.n_states = scaling.n_states
        self.feature_map = feature_map
        if feature_mean is None or feature_std is None:
            feature_mean, feature_std = np.zeros(self.n_states), np.ones(self.n_states)
        self.register_buffer("feature_mean", torch.as_tensor(feature_mean, dtype=torch.float64))
        self.register_buffer("feature_std", torch.as_tensor(feature_std, dtype=torch.float64))

    @property
    def n_features(self) -> int:
        return self.feature_mean.shape[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.feature_map is None and z.shape[-1] == self.n_states:
            return z  # the common case, kept free of per-evaluation overhead
        observed_part, augmented_part = z[..., : self.n_states], z[..., self.n_states :]
        if self.feature_map is None:
            features = observed_part
        else:
            raw = self.feature_map(self.scaling.unscale_states(observed_part))
            features = (raw - self.feature_mean) / self.feature_std
        return torch.cat([features, augmented_part], dim=-1)


class NeuralField(nn.Module):
    """``dz/ds = MLP(inputs(z), u)``: the field of :class:`NeuralODERegressor`.

    With external inputs (``input_scaler`` given) the network also sees the standardised
    inputs ``u`` (the third argument); without, it is a field of the state alone.
    """

    depends_on_time = False  # lets the solver skip computing real times

    def __init__(
        self,
        inputs: NetworkInputs,
        network: nn.Module,
        input_scaler: InputStandardiser | None = None,
    ) -> None:
        super().__init__()
        self.inputs = inputs
        self.network = network
        self.input_scaler = input_scaler

    @property
    def dtype_agnostic(self) -> bool:
        """Whether the field computes in whatever dtype its parameters have: no user code
        (a ``feature_map``) that may build tensors of a fixed dtype runs inside it, so a
        float32 copy of it can be trained (see :class:`~skneuralode._training.collocation.
        CollocationStage`)."""
        return self.inputs.feature_map is None

    def forward(
        self, t: torch.Tensor, z: torch.Tensor, u: torch.Tensor | None = None
    ) -> torch.Tensor:
        features = self.inputs(z)
        if self.input_scaler is not None:
            features = torch.cat([features, self.input_scaler(u)], dim=-1)
        return self.network(features)


def check_feature_statistics(feature_map: Any, mean: Any, std: Any, where: str) -> int:
    """Number of network input features; the statistics must match ``feature_map``."""
    if feature_map is None:
        if mean is not None or std is not None:
            raise ValueError(f"{where}: feature statistics without a feature_map.")
        return 0
    if not callable(feature_map):
        raise ValueError(f"{where}: feature_map must be callable.")
    if not isinstance(mean, np.ndarray) or mean.ndim != 1 or mean.shape[0] < 1:
        raise ValueError(f"{where}: feature statistics must be 1-D float arrays.")
    check_finite_vector(mean, f"{where} feature mean", mean.shape[0])
    check_finite_vector(std, f"{where} feature std", mean.shape[0], positive=True)
    return int(mean.shape[0])


@dataclass(frozen=True, eq=False)
class NeuralFieldSpec(FieldSpec):
    """The field of :class:`NeuralODERegressor`: ``MLP(features(y), augmented)``.

    Attributes
    ----------
    hidden_layer_sizes : tuple of int
    activation : str
    feature_map : callable or None
    feature_mean, feature_std : ndarray of shape (n_features,) or None
        Statistics of ``feature_map`` on the training data (None without one).
    """

    hidden_layer_sizes: tuple[int, ...]
    activation: str
    feature_map: FeatureMap | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None

    def _n_features(self, spec: ModelSpec) -> int:
        return spec.n_states if self.feature_mean is None else int(self.feature_mean.shape[0])

    def build(self, spec: ModelSpec) -> nn.Module:
        inputs = NetworkInputs(spec.scaling, self.feature_map, self.feature_mean, self.feature_std)
        network = multilayer_perceptron(
            inputs.n_features + spec.n_augmented + spec.n_inputs,
            self.hidden_layer_sizes,
            spec.n_total_states,
            self.activation,
        )
        return NeuralField(inputs, network, input_scaler(spec))

    def check(self, spec: ModelSpec) -> None:
        check_layer_sizes(self.hidden_layer_sizes)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}.")
        check_feature_statistics(self.feature_map, self.feature_mean, self.feature_std, "field")

    def n_parameters(self, spec: ModelSpec) -> int:
        n_features = self._n_features(spec)
        network = mlp_parameter_count(
            n_features + spec.n_augmented + spec.n_inputs,
            self.hidden_layer_sizes,
            spec.n_total_states,
        )
        return network + 2 * n_features + 2 * spec.n_inputs

    def architecture(self) -> tuple[Any, ...]:
        return (self.hidden_layer_sizes, self.activation, self.feature_map)


def input_scaler(spec: ModelSpec) -> InputStandardiser | None:
    """What the network of a model with inputs uses to see them (None without inputs)."""
    if not spec.n_inputs:
        return None
    return InputStandardiser(spec.input_mean, spec.input_std)


class ODEModel(nn.Module):
    """A fitted model: the field and the learned initial state of each trajectory.

    Built from a :class:`~skneuralode._spec.ModelSpec` alone, with fresh parameters;
    training (or a file's weights) then sets them.

    Parameters
    ----------
    spec : ModelSpec

    Attributes
    ----------
    field : nn.Module
        Scaled dynamics ``field(t, z)``.
    initial_states : Parameter of shape (n_trajectories, n_total_states)
        Scaled initial states, learned during training.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.field = spec.field.build(spec)
        self.initial_states = nn.Parameter(
            torch.zeros(spec.n_trajectories, spec.n_total_states, dtype=torch.float64)
        )
        self.hold_known_initial_states(spec)
        self.to(dtype=spec.torch_dtype)

    def observation(self, z: torch.Tensor) -> torch.Tensor:
        """What the data measured, scaled (..., n_observed), at scaled states ``z``
        (..., n_total_states): the states themselves unless the field observes a function
        of them (``observe``); every loss compares this with the observations."""
        if self.spec.observation_scaling is None:
            return z[..., : self.spec.n_states]
        return self.field.observation(z)

    def physical_observations(self, scaled_states: np.ndarray) -> np.ndarray:
        """Observed quantities in the caller's units (n, n_observed) at scaled states
        (n, n_total_states)."""
        spec = self.spec
        if spec.observation_scaling is None:
            return spec.scaling.unscale_states(scaled_states[:, : spec.n_states])
        like = self.initial_states
        z = torch.as_tensor(scaled_states, dtype=like.dtype, device=like.device)
        with torch.no_grad():
            scaled = self.observation(z).detach().cpu().numpy().astype(np.float64)
        return spec.observation_scaling.unscale_states(scaled)

    def hold_known_initial_states(self, spec: ModelSpec) -> None:
        """Take ``spec`` as the model's and fix the initial values it says are known.

        The known values are buffers derived from the spec (not stored with the weights):
        :meth:`initial_values` puts them in place of the learned ones, so they are never
        changed by training.
        """
        self.spec = spec
        mask = np.zeros((spec.n_trajectories, spec.n_total_states), dtype=bool)
        values = np.zeros((spec.n_trajectories, spec.n_total_states))
        if spec.known_initial_states is not None:
            known = spec.scaling.scale_states(spec.known_initial_states)
            mask[:, : spec.n_states] = ~np.isnan(known)
            values[:, : spec.n_states] = np.nan_to_num(known)
        like = self.initial_states
        self.register_buffer("known_initial_mask", torch.as_tensor(mask), persistent=False)
        self.register_buffer(
            "known_initial_values",
            torch.as_tensor(values, dtype=like.dtype, device=like.device),
            persistent=False,
        )
        self.has_known_initial_states = bool(mask.any())

    def initial_values(self) -> torch.Tensor:
        """Initial states (n_trajectories, n_total_states), scaled: the learned ones with
        the known values in place."""
        if not self.has_known_initial_states:
            return self.initial_states
        mask = self.known_initial_mask.to(self.initial_states.device)
        return torch.where(mask, self.known_initial_values, self.initial_states)

    @property
    def scaling(self) -> Scaling:
        return self.spec.scaling

    @property
    def n_states(self) -> int:
        return self.spec.n_states

    @property
    def n_total_states(self) -> int:
        return self.spec.n_total_states

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.field(t, z)

    def regularisation(
        self, t: torch.Tensor, z: torch.Tensor, u: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Penalty the field adds to every training loss at states ``z`` (times ``t``,
        inputs ``u``); zero unless the field defines ``penalty`` (e.g. a minimal-norm
        term)."""
        penalty = getattr(self.field, "penalty", None)
        if penalty is None:
            return z.new_zeros(())
        return penalty(t, z) if u is None else penalty(t, z, u)

    def forced(self, signal: nn.Module | None, members: torch.Tensor) -> nn.Module:
        """The field as the solver calls it, ``f(t, z)``: with the inputs of ``signal`` for
        the trajectories ``members`` of the batch when the model has inputs."""
        if not self.spec.n_inputs:
            return self.field
        return ForcedField(self.field, signal, members)

    def physical_rates(
        self,
        states: np.ndarray,
        times: np.ndarray | None = None,
        part: str = "total",
        inputs: np.ndarray | None = None,
    ) -> np.ndarray:
        """``dy/dt`` at physical states: the one way the field is evaluated for a caller.

        Parameters
        ----------
        states : ndarray of shape (n, n_states)
            Physical states; augmented dimensions are taken at zero.
        times : ndarray of shape (n,), optional
            Physical times (for fields that read time); the earliest training time if None.
        part : {"total", "known", "network"}
            The whole field, or one term of a field that has terms (``rates_of_part``).
        inputs : ndarray of shape (n, n_inputs), optional
            External inputs at those states (required when the model has inputs).

        Returns
        -------
        ndarray of shape (n, n_states)
        """
        parameter = self.initial_states
        as_tensor = torch.as_tensor(states, dtype=parameter.dtype, device=parameter.device)
        scaled = self.scaling.scale_states(as_tensor)
        padding = scaled.new_zeros(scaled.shape[0], self.n_total_states - self.n_states)
        z = torch.cat([scaled, padding], dim=-1)
        if times is None:
            s = torch.zeros((), dtype=parameter.dtype, device=parameter.device)
        else:
            s = torch.as_tensor(
                self.scaling.scale_times(times), dtype=parameter.dtype, device=parameter.device
            )
        extra = ()
        if inputs is not None:
            extra = (torch.as_tensor(inputs, dtype=parameter.dtype, device=parameter.device),)
        with torch.no_grad():
            if part == "total":
                scaled_rates = self.field(s, z, *extra)
            else:
                scaled_rates = self.field.rates_of_part(s, z, part, *extra)
        rates = self.scaling.unscale_rates(scaled_rates[..., : self.n_states])
        return rates.cpu().numpy()
