"""Torch modules for the learned dynamics, all in the scaled units of ``_problem``.

A field is called as ``field(t, z)`` with ``z`` of shape ``(..., n_total_states)`` and
``t`` either a 0-d tensor or of shape ``z.shape[:-1]``; it returns ``dz/ds`` of the same
shape as ``z``. :class:`ODEModel` bundles a field with the scaling and the learned initial
states: it is the estimator's ``module_``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ._problem import Scaling

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


class StateScaling(nn.Module):
    """Buffers of a :class:`~skneuralode._problem.Scaling`, moved with the module."""

    def __init__(self, scaling: Scaling) -> None:
        super().__init__()
        self.register_buffer("state_offset", torch.as_tensor(scaling.state_offset))
        self.register_buffer("state_scale", torch.as_tensor(scaling.state_scale))
        # Plain floats: float32 buffers would lose a time origin such as 1.7e9 seconds.
        self.time_origin = float(scaling.time_origin)
        self.time_scale = float(scaling.time_scale)

    def to_physical_states(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled * self.state_scale + self.state_offset

    def to_physical_times(self, scaled: torch.Tensor) -> torch.Tensor:
        return scaled * self.time_scale + self.time_origin

    def to_physical_rates(self, scaled_rates: torch.Tensor) -> torch.Tensor:
        """``dy/dt`` from ``dz/ds`` for the observed states."""
        return scaled_rates * self.state_scale / self.time_scale


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


def checked_features(
    raw_features: Callable[[torch.Tensor], torch.Tensor],
    scaled_states: torch.Tensor,
    scaling: StateScaling,
) -> np.ndarray:
    """``feature_map`` at reference states, checked: a finite tensor (n_points, n_features).

    Called once when a model is built, so that a ``feature_map`` that fails or returns the
    wrong thing is reported as such rather than from deep inside training.
    """
    shape = tuple(scaled_states.shape)
    try:
        with torch.no_grad():
            features = raw_features(scaled_states)
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
    values = features.detach().cpu().numpy()
    if not np.all(np.isfinite(values)):
        physical = scaling.to_physical_states(scaled_states).cpu().numpy()
        bad_row = int(np.argmin(np.isfinite(values).all(axis=1)))
        raise ValueError(
            f"feature_map returned non-finite values (NaN or inf), e.g. at the state "
            f"{physical[bad_row].tolist()} of the data."
        )
    return values


class NetworkInputs(nn.Module):
    """What the network sees: scaled states, or a standardised ``feature_map`` of the
    physical states, followed by the augmented dimensions."""

    def __init__(
        self,
        scaling: StateScaling,
        n_states: int,
        feature_map: FeatureMap | None,
        reference_states: np.ndarray,
    ) -> None:
        super().__init__()
        self.scaling = scaling
        self.n_states = n_states
        self.feature_map = feature_map
        if feature_map is None:
            mean, std = np.zeros(n_states), np.ones(n_states)
        else:
            reference = torch.as_tensor(reference_states, dtype=scaling.state_scale.dtype)
            features = checked_features(self._raw_features, reference, scaling)
            mean, std = features.mean(axis=0), features.std(axis=0)
            std = np.where(std > 0, std, 1.0)
        self.register_buffer("feature_mean", torch.as_tensor(mean))
        self.register_buffer("feature_std", torch.as_tensor(std))

    @property
    def n_features(self) -> int:
        return self.feature_mean.shape[0]

    def _raw_features(self, scaled_states: torch.Tensor) -> torch.Tensor:
        if self.feature_map is None:
            return scaled_states
        return self.feature_map(self.scaling.to_physical_states(scaled_states))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.feature_map is None and z.shape[-1] == self.n_states:
            return z  # the common case, kept free of per-evaluation overhead
        observed_part, augmented_part = z[..., : self.n_states], z[..., self.n_states :]
        features = (self._raw_features(observed_part) - self.feature_mean) / self.feature_std
        return torch.cat([features, augmented_part], dim=-1)


class NeuralField(nn.Module):
    """``dz/ds = MLP(inputs(z))``: the field of :class:`NeuralODERegressor`."""

    depends_on_time = False  # lets the solver skip computing real times

    def __init__(self, inputs: NetworkInputs, network: nn.Module) -> None:
        super().__init__()
        self.inputs = inputs
        self.network = network

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.network(self.inputs(z))


class ODEModel(nn.Module):
    """A fitted model: field, scaling and the learned initial state of each trajectory.

    Parameters
    ----------
    field : nn.Module
        Scaled dynamics ``field(t, z)``.
    scaling : StateScaling
        Maps between scaled and physical units.
    initial_states : Tensor of shape (n_traj, n_total_states)
        Scaled initial states, learned during training.
    initial_times : Tensor of shape (n_traj,)
        Scaled times at which ``initial_states`` hold.
    n_states : int
        Number of observed states (the rest are augmented dimensions).
    """

    def __init__(
        self,
        field: nn.Module,
        scaling: StateScaling,
        initial_states: torch.Tensor,
        initial_times: torch.Tensor,
        n_states: int,
    ) -> None:
        super().__init__()
        self.field = field
        self.scaling = scaling
        self.initial_states = nn.Parameter(initial_states)
        self.register_buffer("initial_times", initial_times)
        self.n_states = n_states

    @property
    def n_total_states(self) -> int:
        return self.initial_states.shape[1]

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.field(t, z)

    def regularisation(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Penalty the field adds to every training loss at states ``z`` (times ``t``);
        zero unless the field defines ``penalty(t, z)`` (e.g. a minimal-norm term)."""
        penalty = getattr(self.field, "penalty", None)
        if penalty is None:
            return z.new_zeros(())
        return penalty(t, z)

    def physical_rates(self, states: torch.Tensor) -> torch.Tensor:
        """``dy/dt`` at physical states of shape (n, n_states); augmented dims at zero."""
        scaled = (states - self.scaling.state_offset) / self.scaling.state_scale
        padding = scaled.new_zeros(scaled.shape[0], self.n_total_states - self.n_states)
        scaled_rates = self.field(
            torch.zeros((), dtype=states.dtype, device=states.device),
            torch.cat([scaled, padding], dim=-1),
        )
        return self.scaling.to_physical_rates(scaled_rates[..., : self.n_states])
