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
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ._forcing import InputStandardiser
from ._physical_parameters import (
    PhysicalParameters,
)
from ._scaling import Scaling
from ._vector_fields import (
    NetworkInputs,
)

KnownPhysics = Callable[[torch.Tensor, torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]
Observation = Callable[[torch.Tensor, Mapping[str, torch.Tensor]], torch.Tensor]


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
    input_scaler : InputStandardiser or None, default=None
        Standardises the external inputs the network sees (None: no inputs).
    observe : callable or None, default=None
        ``observe(y, p)`` on physical torch tensors, ``y`` of shape (..., n_states);
        returns what the data measured, (..., n_observed). None: the states themselves.
    observation_scaling : Scaling or None, default=None
        Scaling of the observed quantities (given with ``observe``).
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
        observe: Observation | None = None,
        observation_scaling: Scaling | None = None,
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
        self.observe = observe
        self.observation_scaling = observation_scaling

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

    def observation(self, z: Tensor) -> Tensor:
        """Scaled observations (..., n_observed) of scaled states ``z`` (..., n_total):
        ``observe`` at the physical states with the current physical parameters."""
        if self.observe is None or self.observation_scaling is None:
            return z[..., : self.n_states]
        states = self.scaling.unscale_states(z[..., : self.n_states])
        observed = self.observe(states, self.physical_parameters())
        return self.observation_scaling.scale_states(observed)

    def penalty(self, t: Tensor, z: Tensor, u: Tensor | None = None) -> Tensor:
        """Minimal-norm penalty (weighted mean square of the network's term at ``z``) plus
        weight decay (weighted sum of the network's squared weights)."""
        residuals, decayed = self.penalty_terms(t, z, u)
        penalty = (residuals**2).sum()
        for weight in decayed:
            penalty = penalty + self.weight_decay * (weight**2).sum()
        return penalty

    def penalty_terms(
        self, t: Tensor, z: Tensor, u: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """The penalty in least-squares form, for Gauss-Newton stages.

        Returns
        -------
        residuals : Tensor of shape (n_residuals,)
            The minimal-norm penalty is ``(residuals ** 2).sum()`` (empty when off).
        decayed : list of Tensor
            The network's weights; the weight decay is ``weight_decay`` times the sum of
            their squares (empty when off).
        """
        residuals = z.new_zeros(0)
        if self.network is None or not self.network_enabled:
            return residuals, []
        if self.penalty_weight != 0.0:
            rates = self.network_rates(t, z, u)
            n_outputs = float(self.output_mask.sum().clamp_min(1.0))
            scale = (self.penalty_weight / (n_outputs * rates[..., 0].numel())) ** 0.5
            residuals = scale * rates.reshape(-1)
        decayed = self.decayed_weights() if self.weight_decay != 0.0 else []
        return residuals, decayed

    def decayed_weights(self) -> list[Tensor]:
        """The tensors a weight decay acts on: the network's weights (not its biases)."""
        return [] if self.network is None else network_weights(self.network)


def network_weights(network: nn.Module) -> list[torch.Tensor]:
    """The weights (not biases) of the linear layers of ``network``."""
    return [layer.weight for layer in network.modules() if isinstance(layer, nn.Linear)]


def squared_weights(network: nn.Module) -> torch.Tensor:
    """Sum of the squared weights (not biases) of the linear layers of ``network``."""
    return sum((weight**2).sum() for weight in network_weights(network))


def output_mask(
    network_outputs: Sequence[int], n_states: int, augment_dim: int, dtype: torch.dtype
) -> torch.Tensor:
    """1.0 on the states that get a network term and on every augmented dimension."""
    mask = np.zeros(n_states + augment_dim)
    mask[list(network_outputs)] = 1.0
    mask[n_states:] = 1.0
    return torch.as_tensor(mask, dtype=dtype)


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
    check_returned_tensor("known(t, y, p)", rates, "torch.stack([...], dim=-1)")
    if tuple(rates.shape) != tuple(states.shape):
        raise ValueError(
            f"known(t, y, p) must return the shape of y, (..., n_states) = "
            f"{tuple(states.shape)} at the initial states, got {tuple(rates.shape)}."
        )
    check_finite_output("known(t, y, p)", rates, states)


def check_returned_tensor(signature: str, value: Any, example: str) -> None:
    """A user callable (``signature``) returned a torch tensor, or a ``TypeError`` that
    says how to build one (``example``)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{signature} must return a torch.Tensor, got {type(value).__name__}; build it "
            f"from the torch inputs (e.g. {example})."
        )


def check_finite_output(signature: str, value: torch.Tensor, states: torch.Tensor) -> None:
    """A user callable (``signature``) returned finite values at the initial ``states``."""
    if not bool(torch.isfinite(value).all()):
        raise ValueError(
            f"{signature} returned non-finite values (NaN or inf) at the initial states "
            f"{states.detach().cpu().numpy().tolist()}."
        )
