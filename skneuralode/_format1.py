"""Reading files of format version 1 (skneuralode 0.1.0) into today's model description.

Version 1 stored the constructor arguments, every fitted attribute (among them the
scaling as ``_scaling_``), the torch module's plain attributes and a ``state_dict`` in
which the scaling appeared again as buffers. The model was rebuilt from the constructor
arguments. Here the same information becomes a :class:`~skneuralode._spec.ModelSpec`:
the architecture from the (validated) arguments, the scaling and initial times from the
fitted attributes, the feature statistics and penalty weights from the module, and the
buffers that today's model no longer has are dropped from the weights.
"""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
import torch

from ._codec import Decoder, ImportPolicy
from ._hybrid_field import check_state_indices
from ._hybrid_spec import HybridFieldSpec
from ._physical_parameters import check_constraints, check_parameter_mapping
from ._scaling import Scaling
from ._spec import FieldSpec, ModelSpec, check_finite

_MAX_WEIGHTS_BYTES = 256 * 2**20  # version 1 declared no sizes: a fixed bound instead
_RECORDED = ("n_iter_", "loss_", "history_", "stage_results_", "_time_spans_")
_DROPPED_BUFFERS = ("scaling.state_offset", "scaling.state_scale", "rate_factor")


def _stats(state: dict[str, torch.Tensor], prefix: str) -> tuple[Any, Any]:
    mean, std = state.get(f"{prefix}.feature_mean"), state.get(f"{prefix}.feature_std")
    if mean is None or std is None:
        return None, None
    return mean.double().numpy().copy(), std.double().numpy().copy()


def _field_spec(
    estimator: Any, n_states: int, state: dict[str, torch.Tensor], attributes: dict[str, Any]
) -> FieldSpec:
    from ._vector_fields import NeuralFieldSpec

    hidden = tuple(int(width) for width in estimator.hidden_layer_sizes)
    if not hasattr(estimator, "known"):
        mean, std = _stats(state, "field.inputs") if estimator.feature_map else (None, None)
        return NeuralFieldSpec(hidden, estimator.activation, estimator.feature_map, mean, std)
    field = attributes.get("field", {})
    penalty, decay = field.get("penalty_weight", 0.0), field.get("weight_decay", 0.0)
    check_finite(penalty, "network_penalty")
    check_finite(decay, "network_weight_decay")
    params = check_parameter_mapping(estimator.params, "params")
    mean, std = _stats(state, "field.features.featurizer")
    return HybridFieldSpec(
        known=estimator.known,
        params=params,
        constraints=check_constraints(estimator.param_constraints, params),
        fixed=check_parameter_mapping(estimator.fixed_params, "fixed_params"),
        network_outputs=check_state_indices(estimator.network_outputs, n_states, "network_outputs"),
        network_inputs=check_state_indices(estimator.network_inputs, n_states, "network_inputs"),
        hidden_layer_sizes=hidden,
        activation=estimator.activation,
        feature_map=estimator.feature_map,
        feature_mean=mean,
        feature_std=std,
        penalty_weight=float(penalty),
        weight_decay=float(decay),
    )


def read_format_1(
    estimator: Any, fitted: dict[str, Any], module: Any, archive: zipfile.ZipFile
) -> tuple[ModelSpec, dict[str, torch.Tensor], dict[str, Any]]:
    """The model description, weights and recorded attributes of a version-1 file.

    Returns
    -------
    spec : ModelSpec
        Checked.
    state : dict of str to Tensor
        The weights with the buffers of version 1 that today's model lacks removed.
    attributes : dict
        The recorded fitted attributes, still encoded.
    """
    from ._persistence import RECORDS, read_weights

    decoder = Decoder(ImportPolicy(()), RECORDS)
    if not isinstance(module, dict) or module.get("dtype") not in ("float32", "float64"):
        raise ValueError("Malformed model file: bad module description.")
    attributes = module.get("attributes")
    scaling = decoder.decode(fitted.get("_scaling_"), "_scaling_")
    t0 = decoder.decode(fitted.get("t0_"), "t0_")
    squeeze = fitted.get("_squeeze_states_", False)
    if not isinstance(scaling, Scaling) or not isinstance(attributes, dict):
        raise ValueError("Malformed model file: fitted attributes are missing.")
    state = read_weights(archive, _MAX_WEIGHTS_BYTES)
    state = {
        name: tensor
        for name, tensor in state.items()
        if name != "initial_times" and not name.endswith(_DROPPED_BUFFERS)
    }
    one_trajectory = isinstance(t0, float)
    initial_times = np.atleast_1d(np.asarray(t0, dtype=np.float64))
    spec = ModelSpec(
        field=_field_spec(estimator, scaling.n_states, state, attributes),
        n_states=scaling.n_states,
        n_augmented=int(estimator.augment_dim),
        initial_times=initial_times,
        scaling=scaling,
        solver=estimator._solver_settings(),
        dtype=module["dtype"],
        squeeze_states=squeeze is True,
        one_trajectory=one_trajectory,
    )
    try:
        spec.check()
    except ValueError as error:
        raise ValueError(f"Malformed model file: {error}") from None
    recorded = {name: fitted[name] for name in _RECORDED if name in fitted}
    if not hasattr(estimator, "known"):
        recorded.pop("_time_spans_", None)
    return spec, state, recorded
