"""The data-free description of :class:`UniversalODERegressor`'s field (see ``_spec``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._hybrid_field import (
    HybridField,
    KnownPhysics,
    NetworkFeatures,
    Observation,
    check_state_indices,
    output_mask,
)
from ._physical_parameters import (
    Constraint,
    PhysicalParameters,
    check_constraints,
    check_parameter_mapping,
)
from ._spec import FieldSpec, ModelSpec, check_finite, check_layer_sizes, mlp_parameter_count
from ._vector_fields import (
    ACTIVATIONS,
    FeatureMap,
    NetworkInputs,
    check_feature_statistics,
    input_scaler,
    multilayer_perceptron,
)


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
    observe : callable or None
        ``observe(y, p)``: what ``y`` measured, as a function of the physical states and
        parameters; None when ``y`` holds the states (the spec's
        ``observation_scaling`` then is None too).
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
    observe: Observation | None = None

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
            observe=self.observe,
            observation_scaling=spec.observation_scaling,
        )

    def check(self, spec: ModelSpec) -> None:
        if self.known is not None and not callable(self.known):
            raise ValueError("known must be callable.")
        if self.observe is not None and not callable(self.observe):
            raise ValueError("observe must be callable.")
        if (self.observe is None) != (spec.observation_scaling is None):
            raise ValueError("observe and the observation scaling go together.")
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
            self.observe,
        )
