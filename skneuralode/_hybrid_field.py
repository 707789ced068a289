"""The field of :class:`UniversalODERegressor`: known physics plus a neural network.

In physical units the model is ``dy/dt = known(t, y, p) + NN(y)``. The training stages
see it in the scaled units of ``_problem`` (``z = (y - offset) / scale`` and
``s = (t - origin) / tau``), where it reads

    dz/ds = (tau / scale) * known(t(s), y(z), p) + mask * NN(z)

with ``mask`` selecting the states that get a network term (``network_outputs``).

The physical parameters ``p`` and their transforms live in ``_physical_parameters``.

Identifiability. A network that sees the states can also represent a known term, so the
data alone do not fix the split between physics and network. :meth:`HybridField.penalty`
adds the minimal-norm term of APHYNITY (Yin et al. 2021), the mean squared network
contribution, so that among the fits that explain the data the one where the physics
explains the most is preferred. Its weight is tied to the estimated noise variance of the
data (in scaled units): the penalty may cost about as much as the noise does, and no
more, so the data fit comes first (the constraint form of APHYNITY, in the spirit of
Morozov's discrepancy principle). The physics-first stage (``_training.physics_first``)
starts training with the physics alone, so the parameters begin at the minimal-norm
split rather than having to crawl there along the flat valley the penalty only tilts.

Regularity. Along a few short, noisy trajectories the data pin the network's term down
only weakly, least at the ends of the series, where the trajectories visit states seen
nowhere else and the smoothed derivatives of the collocation start are biased; an
unpenalised network keeps whatever it learned there. An optional weight decay on the
network's weights (``weight_decay``) keeps the term smooth across the states instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._forcing import InputStandardiser
from ._physical_parameters import (
    Constraint,
    PhysicalParameters,
    check_constraints,
    check_parameter_mapping,
)
from ._scaling import Scaling
from ._spec import FieldSpec, ModelSpec, check_finite, check_layer_sizes, mlp_parameter_count
from ._vector_fields import (
    ACTIVATIONS,
    FeatureMap,
    NetworkInputs,
    check_feature_statistics,
    input_scaler,
    multilayer_perceptron,
)

KnownPhysics = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


class NetworkFeatures(nn.Module):
    """What the network sees: the chosen states (scaled, or a standardised
    ``feature_map`` of their physical values), then the augmented dimensions.

    Parameters
    ----------
    state_indices : sequence of int
        Observed states the network sees (sorted).
    n_states : int
        Number of observed states.
    n_total_states : int
        Observed plus augmented dimensions.
    featurizer : NetworkInputs or None
        Applies ``feature_map`` to the chosen states; None feeds them as they are.
    """

    def __init__(
        self,
        state_indices: Sequence[int],
        n_states: int,
        n_total_states: int,
        featurizer: NetworkInputs | None,
    ) -> None:
        super().__init__()
        self.register_buffer("state_indices", torch.as_tensor(list(state_indices)))
        self.selects_all = tuple(state_indices) == tuple(range(n_states))
        self.n_states = n_states
        self.n_augmented = n_total_states - n_states
        self.featurizer = featurizer

    @property
    def n_features(self) -> int:
        """Width of the network's input."""
        seen = len(self.state_indices) if self.featurizer is None else self.featurizer.n_features
        return seen + self.n_augmented

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.selects_all and self.featurizer is None:
            return z
        selected = z.index_select(-1, self.state_indices)
        if self.n_augmented:
            selected = torch.cat([selected, z[..., self.n_states :]], dim=-1)
        return selected if self.featurizer is None else self.featurizer(selected)


class HybridField(nn.Module):
    """``dz/ds = (tau / scale) * known(t, y, p) + mask * NN(features(z))``, scaled units.

    Parameters
    ----------
    known : callable or None
        ``known(t, y, p)`` on physical torch tensors, ``y`` of shape (..., n_states) and
        ``t`` of shape ``y.shape[:-1]``; returns (..., n_states). None means no known part.
    parameters : PhysicalParameters
    scaling : Scaling
    n_states : int
        Observed states (the rest of ``z`` are augmented dimensions).
    network : nn.Module or None
        Maps the features to (..., n_total_states); None means no network.
    features : NetworkFeatures or None
        What the network sees.
    output_mask : Tensor of shape (n_total_states,)
        1.0 where the network's term is added, 0.0 elsewhere.
    penalty_weight : float
        Weight of the minimal-norm penalty on the network's term (scaled units).
    weight_decay : float, default=0.0
        Weight of the L2 penalty on the network's weights (not its biases).
    """

    def __init__(
        self,
        known: KnownPhysics | None,
        parameters: PhysicalParameters,
        scaling: Scaling,
        n_states: int,
        network: nn.Module | None,
        features: NetworkFeatures | None,
        output_mask: torch.Tensor,
        penalty_weight: float,
        weight_decay: float = 0.0,
        input_scaler: InputStandardiser | None = None,
    ) -> None:
        super().__init__()
        self.known = known
        self.physical_parameters = parameters
        self.scaling = scaling
        self.n_states = n_states
        self.network = network
        self.features = features
        self.register_buffer("output_mask", output_mask)
        self.masks_nothing = bool(output_mask.all())
        self.penalty_weight = float(penalty_weight)
        self.weight_decay = float(weight_decay)
        self.network_enabled = True
        self.input_scaler = input_scaler

    @property
    def has_network(self) -> bool:
        return self.network is not None

    def silence_network(self) -> None:
        """Zero the network's output layer: the model becomes the known part alone, and
        the network grows from there (its hidden layers keep their random start)."""
        if self.network is None:
            return
        output = [module for module in self.network.modules() if isinstance(module, nn.Linear)][-1]
        with torch.no_grad():
            output.weight.zero_()
            output.bias.zero_()

    def known_rates(self, t: Tensor, z: Tensor, u: Tensor | None = None) -> Tensor:
        """Scaled rates of the known part, shape (..., n_states); ``known`` gets the
        physical inputs ``u`` as a fourth argument when the model has inputs."""
        observed = z[..., : self.n_states]
        if self.known is None:
            return torch.zeros_like(observed)
        states = self.scaling.unscale_states(observed)
        times = self.scaling.unscale_times(torch.broadcast_to(t, observed.shape[:-1]))
        extra = () if self.input_scaler is None else (u,)
        rates = self.known(times, states, self.physical_parameters(), *extra)
        return self.scaling.scale_rates(rates)

    def network_rates(self, t: Tensor, z: Tensor, u: Tensor | None = None) -> Tensor:
        """Scaled rates of the network's term (zero off ``output_mask``), shape like ``z``."""
        if self.network is None or not self.network_enabled:
            return torch.zeros_like(z)
        features = self.features(z)
        if self.input_scaler is not None:
            features = torch.cat([features, self.input_scaler(u)], dim=-1)
        rates = self.network(features)
        return rates if self.masks_nothing else rates * self.output_mask

    def rates_of_part(self, t: Tensor, z: Tensor, part: str, u: Tensor | None = None) -> Tensor:
        """Scaled rates of one term, ``"known"`` or ``"network"``, shape (..., n_states)."""
        if part == "known":
            return self.known_rates(t, z, u)
        if part == "network":
            return self.network_rates(t, z, u)[..., : self.n_states]
        raise ValueError(f"part must be 'known' or 'network', got {part!r}.")

    def forward(self, t: Tensor, z: Tensor, u: Tensor | None = None) -> Tensor:
        rates = self.known_rates(t, z, u)
        n_augmented = z.shape[-1] - self.n_states
        if n_augmented:
            rates = torch.cat([rates, rates.new_zeros(*rates.shape[:-1], n_augmented)], dim=-1)
        if self.network is not None and self.network_enabled:
            rates = rates + self.network_rates(t, z, u)
        return rates

    def penalty(self, t: Tensor, z: Tensor, u: Tensor | None = None) -> Tensor:
        """Minimal-norm penalty (weighted mean square of the network's term at ``z``) plus
        weight decay (weighted sum of the network's squared weights)."""
        if self.network is None or not self.network_enabled:
            return z.new_zeros(())
        penalty = z.new_zeros(())
        if self.penalty_weight != 0.0:
            squares = self.network_rates(t, z, u) ** 2
            n_outputs = self.output_mask.sum().clamp_min(1.0)
            penalty = penalty + self.penalty_weight * squares.sum(dim=-1).mean() / n_outputs
        if self.weight_decay != 0.0:
            penalty = penalty + self.weight_decay * squared_weights(self.network)
        return penalty


def squared_weights(network: nn.Module) -> torch.Tensor:
    """Sum of the squared weights (not biases) of the linear layers of ``network``."""
    return sum(
        (layer.weight**2).sum() for layer in network.modules() if isinstance(layer, nn.Linear)
    )


def output_mask(
    network_outputs: Sequence[int], n_states: int, augment_dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """1.0 on the states that get a network term and on every augmented dimension."""
    mask = np.zeros(n_states + augment_dim)
    mask[list(network_outputs)] = 1.0
    mask[n_states:] = 1.0
    return torch.as_tensor(mask, dtype=dtype)


@dataclass(frozen=True, eq=False)
class HybridFieldSpec(FieldSpec):
    """The field of :class:`UniversalODERegressor` as plain data.

    Attributes
    ----------
    known : callable or None
    params : dict of str to float
        Learned physical parameters and their starting values (the learned values are
        weights).
    constraints : dict of str to "positive" or (low, high)
    fixed : dict of str to float
    network_outputs, network_inputs : tuple of int
        States that get the network's term; states the network sees.
    hidden_layer_sizes : tuple of int
        ``()``: no network.
    activation : str
    feature_map : callable or None
    feature_mean, feature_std : ndarray of shape (n_features,) or None
        Statistics of ``feature_map`` on the seen states of the training data.
    penalty_weight, weight_decay : float
        Minimal-norm penalty and L2 weight decay of the network (scaled units).
    """

    known: KnownPhysics | None
    params: dict[str, float]
    constraints: dict[str, Constraint]
    fixed: dict[str, float]
    network_outputs: tuple[int, ...]
    network_inputs: tuple[int, ...]
    hidden_layer_sizes: tuple[int, ...]
    activation: str
    feature_map: FeatureMap | None = None
    feature_mean: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    penalty_weight: float = 0.0
    weight_decay: float = 0.0

    def has_network(self, spec: ModelSpec) -> bool:
        return bool(self.hidden_layer_sizes) and bool(self.network_outputs or spec.n_augmented)

    def _n_network_features(self, spec: ModelSpec) -> int:
        seen = len(self.network_inputs)
        if self.feature_mean is not None:
            seen = int(self.feature_mean.shape[0])
        return seen + spec.n_augmented

    def build(self, spec: ModelSpec) -> nn.Module:
        n_states, n_total = spec.n_states, spec.n_total_states
        features, network = None, None
        if self.has_network(spec):
            featurizer = None
            if self.feature_map is not None:
                featurizer = NetworkInputs(
                    spec.scaling.subset(self.network_inputs),
                    self.feature_map,
                    self.feature_mean,
                    self.feature_std,
                )
            features = NetworkFeatures(self.network_inputs, n_states, n_total, featurizer)
            network = multilayer_perceptron(
                features.n_features + spec.n_inputs,
                self.hidden_layer_sizes,
                n_total,
                self.activation,
            )
        return HybridField(
            self.known,
            PhysicalParameters(self.params, self.constraints, self.fixed),
            spec.scaling,
            n_states,
            network,
            features,
            output_mask(self.network_outputs, n_states, spec.n_augmented, torch.float64),
            self.penalty_weight,
            self.weight_decay,
            input_scaler(spec),
        )

    def check(self, spec: ModelSpec) -> None:
        if self.known is not None and not callable(self.known):
            raise ValueError("known must be callable.")
        params = check_parameter_mapping(self.params, "params")
        fixed = check_parameter_mapping(self.fixed, "fixed_params")
        if set(params) & set(fixed):
            raise ValueError("params and fixed_params share names.")
        if self.known is None and (params or fixed):
            raise ValueError("params and fixed_params are passed to known, but known is None.")
        check_constraints(self.constraints, params)
        for name in ("network_outputs", "network_inputs"):
            indices = getattr(self, name)
            if not isinstance(indices, tuple) or check_state_indices(
                indices, spec.n_states, name
            ) != tuple(indices):
                raise ValueError(f"{name} must be a sorted tuple of distinct state indices.")
        check_layer_sizes(self.hidden_layer_sizes)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}.")
        n_features = check_feature_statistics(
            self.feature_map, self.feature_mean, self.feature_std, "field"
        )
        if self.has_network(spec) and not (n_features or self.network_inputs or spec.n_augmented):
            raise ValueError("network_inputs is empty: the network would see nothing.")
        if spec.n_augmented and not self.hidden_layer_sizes:
            raise ValueError("augment_dim > 0 needs a network (non-empty hidden_layer_sizes).")
        check_finite(self.penalty_weight, "network_penalty")
        check_finite(self.weight_decay, "network_weight_decay")
        if self.penalty_weight < 0 or self.weight_decay < 0:
            raise ValueError("network_penalty and network_weight_decay must be >= 0.")

    def n_parameters(self, spec: ModelSpec) -> int:
        count = 5 * len(self.params) + len(self.fixed) + spec.n_total_states + 2 * spec.n_inputs
        if self.has_network(spec):
            count += len(self.network_inputs) + mlp_parameter_count(
                self._n_network_features(spec) + spec.n_inputs,
                self.hidden_layer_sizes,
                spec.n_total_states,
            )
            if self.feature_mean is not None:
                count += 2 * int(self.feature_mean.shape[0])
        return count

    def architecture(self) -> tuple[Any, ...]:
        return (
            self.known,
            tuple(self.params),
            dict(self.constraints),
            self.network_outputs,
            self.network_inputs,
            self.hidden_layer_sizes,
            self.activation,
            self.feature_map,
        )


# ------------------------------------------------------------------------- validation
def check_state_indices(value: object, n_states: int, name: str) -> tuple[int, ...]:
    """None (all states) or distinct state indices in ``range(n_states)``, sorted."""
    if value is None:
        return tuple(range(n_states))
    try:
        indices = list(value)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"{name} must be None or a list of state indices, got {value!r}.") from None
    checked = []
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{name} must hold integer state indices, got {index!r}.")
        if not 0 <= index < n_states:
            raise ValueError(
                f"{name} index {index} is out of range for data with {n_states} state(s)."
            )
        checked.append(int(index))
    if len(set(checked)) != len(checked):
        raise ValueError(f"{name} has repeated state indices: {indices!r}.")
    return tuple(sorted(checked))


def check_known_output(
    field: HybridField,
    times: torch.Tensor,
    scaled_states: torch.Tensor,
    n_states: int,
    inputs: torch.Tensor | None = None,
) -> None:
    """Call ``known`` at the initial states (and inputs); it must return finite
    (n_traj, n_states)."""
    if field.known is None:
        return
    states = field.scaling.unscale_states(scaled_states)
    physical_times = field.scaling.unscale_times(times)
    extra = () if inputs is None else (inputs,)
    signature = "known(t, y, p)" if inputs is None else "known(t, y, p, u)"
    with torch.no_grad():
        try:
            rates = field.known(physical_times, states, field.physical_parameters(), *extra)
        except Exception as error:
            raise ValueError(
                f"{signature} raised {type(error).__name__}: {error} when called with t of "
                f"shape {tuple(physical_times.shape)}, y of shape {tuple(states.shape)} (the "
                f"initial states) and p with keys {sorted(field.physical_parameters())}."
            ) from error
    if not isinstance(rates, torch.Tensor):
        raise TypeError(
            f"known(t, y, p) must return a torch.Tensor, got {type(rates).__name__}; build it "
            "from the torch inputs (e.g. torch.stack([...], dim=-1))."
        )
    if tuple(rates.shape) != tuple(states.shape):
        raise ValueError(
            f"known(t, y, p) must return the shape of y, (..., n_states) = "
            f"{tuple(states.shape)} at the initial states, got {tuple(rates.shape)}."
        )
    if not bool(torch.isfinite(rates).all()):
        raise ValueError(
            "known(t, y, p) returned non-finite values (NaN or inf) at the initial states "
            f"{states.detach().cpu().numpy().tolist()}."
        )
