"""Forward sensitivities of fitted trajectories, for the uncertainty of a fit.

The states ``z(s)`` of a fitted model depend on a few of its parameters ``theta`` (the
raw physical parameters of a universal ODE, optionally the network's output layer) and
on each trajectory's initial state ``z0``. Their sensitivities ``S = dz/d(theta, z0)``
obey the forward sensitivity equations

    dS/ds = (df/dz) S + df/dtheta,    S(0) = [0 | I]

which are integrated together with ``z`` as ONE augmented ODE by the one solver caller
(``_prediction.integrate`` -> ``_solve.solve``), so their cost grows with the number of
parameters, not with the number of output times (a reverse-mode Jacobian through the
solve would need one backward pass per output).

The right-hand side's directional derivatives are difference quotients of the field
(central differences, as CVODES does when it is not given them): ``(df/dz) S`` for every
direction in one batched call with perturbed states, ``df/dtheta`` with one pair of
calls per physical parameter (the user's ``known`` is called exactly as in training,
with perturbed parameters) and analytically for the output layer, which enters the
field linearly. The field is a smooth function, so a relative step of ``eps**(1/3)``
leaves errors near ``eps**(2/3)`` (1e-10 in float64), far below the solver's tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ._forcing import ForcedField
from ._prediction import integrate
from ._scaling import Scaling
from ._solve import depends_on_time
from ._vector_fields import ODEModel

PHYSICAL = "physical_parameters.raw"

#: Tolerances of a sensitivity solve (scaled units), unless the fit's are looser: the
#: sensitivities are in the solver's error norm and need only a few digits (a standard
#: deviation good to 1e-4), and these make the augmented solve 3-4 times cheaper.
SENSITIVITY_RTOL = 1e-4
SENSITIVITY_ATOL = 1e-6


@dataclass(frozen=True)
class ParameterLayout:
    """Which of a field's parameters the sensitivities follow, in the order of ``theta``.

    Attributes
    ----------
    n_physical : int
        Raw physical parameters (first in ``theta``).
    output_layer : tuple of str
        Names of the network's output weight and bias in the field (then ``theta``
        holds the weight row by row, then the bias); empty when the network is held fixed.
    n_outputs, n_hidden : int
        Shape of the output weight.
    """

    n_physical: int
    output_layer: tuple[str, ...] = ()
    n_outputs: int = 0
    n_hidden: int = 0

    @property
    def n_output_layer(self) -> int:
        return self.n_outputs * (self.n_hidden + 1) if self.output_layer else 0

    @property
    def size(self) -> int:
        """Length of ``theta``."""
        return self.n_physical + self.n_output_layer


def _output_linear(field: nn.Module) -> tuple[str, nn.Linear] | None:
    """The network's last linear layer and its name in the field, if it has a network."""
    network = getattr(field, "network", None)
    if not isinstance(network, nn.Sequential) or not getattr(field, "network_enabled", True):
        return None
    index = len(network) - 1
    layer = network[index]
    return (f"network.{index}", layer) if isinstance(layer, nn.Linear) else None


def parameter_layout(model: ODEModel, *, include_output_layer: bool) -> ParameterLayout:
    """The parameters whose uncertainty is followed: physical ones, and the output
    layer of the network when asked (a linearised Laplace approximation)."""
    physical = getattr(model.field, "physical_parameters", None)
    n_physical = 0 if physical is None else len(physical.names)
    output = _output_linear(model.field) if include_output_layer else None
    if output is None:
        return ParameterLayout(n_physical)
    name, layer = output
    return ParameterLayout(
        n_physical, (f"{name}.weight", f"{name}.bias"), layer.out_features, layer.in_features
    )


def _hidden_features(field: nn.Module, z: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """What the output layer sees at ``z`` (and inputs ``u``), shape (..., n_hidden)."""
    featurize = field.features if hasattr(field, "features") else field.inputs
    features = featurize(z)
    if getattr(field, "input_scaler", None) is not None:
        features = torch.cat([features, field.input_scaler(*inputs)], dim=-1)
    return field.network[:-1](features)


class SensitivityField(nn.Module):
    """The augmented field ``(z, S) -> (f(z), (df/dz) S + df/dtheta)``, scaled units.

    The state of a member is ``z`` (n_total) followed by ``S`` (n_total x n_directions,
    row by row). Directions: ``theta`` (``layout``), then the member's own initial
    state (``n_local`` of its first dimensions).

    Parameters
    ----------
    field : nn.Module
        The fitted field ``field(t, z)``.
    layout : ParameterLayout
    n_total : int
        Dimensions of ``z``.
    n_local : int
        Initial-state directions (0 when the initial state is given, not fitted).
    """

    def __init__(self, field: nn.Module, layout: ParameterLayout, n_total: int, n_local: int):
        super().__init__()
        self.field = field
        self.layout = layout
        self.n_total = n_total
        self.n_directions = layout.size + n_local
        self.depends_on_time = depends_on_time(field)
        parameter = next(field.parameters())
        self.step = float(torch.finfo(parameter.dtype).eps) ** (1.0 / 3.0)
        output = getattr(field, "output_mask", None)
        self.output_mask = None if output is None or bool(output.all()) else output

    def _state_rates(
        self, t: torch.Tensor, z: torch.Tensor, tangents: torch.Tensor, inputs: tuple
    ) -> torch.Tensor:
        """``(df/dz) S`` for all directions at once: (..., n_total, n_directions)."""
        directions = tangents.movedim(-1, 0)  # (n_directions, ..., n_total)
        size = directions.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
        step = self.step / size
        times = t if t.ndim == 0 else t.expand(directions.shape[:-1])
        inputs = tuple(u.expand(*directions.shape[:-1], u.shape[-1]) for u in inputs)
        ahead = self.field(times, z + step * directions, *inputs)
        behind = self.field(times, z - step * directions, *inputs)
        return ((ahead - behind) / (2.0 * step)).movedim(0, -1)

    def _physical_rates(
        self, t: torch.Tensor, z: torch.Tensor, inputs: tuple
    ) -> list[torch.Tensor]:
        """``df/draw`` of each physical parameter: list of (..., n_total)."""
        raw = self.field.physical_parameters.raw.detach()
        columns = []
        for index in range(self.layout.n_physical):
            step = self.step * max(1.0, abs(float(raw[index])))
            shift = torch.zeros_like(raw)
            shift[index] = step
            ahead = functional_call(self.field, {PHYSICAL: raw + shift}, (t, z, *inputs))
            behind = functional_call(self.field, {PHYSICAL: raw - shift}, (t, z, *inputs))
            columns.append((ahead - behind) / (2.0 * step))
        return columns

    def _output_layer_rates(self, z: torch.Tensor, inputs: tuple) -> torch.Tensor:
        """``df/d(W, b)`` of the output layer: (..., n_total, n_outputs * (n_hidden + 1))."""
        hidden = _hidden_features(self.field, z, *inputs)  # (..., n_hidden)
        n_outputs = self.layout.n_outputs
        eye = torch.eye(n_outputs, dtype=z.dtype, device=z.device)
        if self.output_mask is not None:
            eye = eye * self.output_mask[:, None]
        weight = eye[:, :, None] * hidden[..., None, None, :]  # (..., out, out, hidden)
        bias = eye.expand(*hidden.shape[:-1], n_outputs, n_outputs)
        flat_weight = weight.reshape(*hidden.shape[:-1], n_outputs, -1)
        return torch.cat([flat_weight, bias], dim=-1)

    def forward(
        self, t: torch.Tensor, w: torch.Tensor, u: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The augmented rates; ``u`` are the external inputs of a forced model."""
        batch = w.shape[:-1]
        z = w[..., : self.n_total]
        tangents = w[..., self.n_total :].reshape(*batch, self.n_total, self.n_directions)
        inputs = () if u is None else (u,)
        rates = self.field(t, z, *inputs)
        derivative = self._state_rates(t, z, tangents, inputs)
        columns = self._physical_rates(t, z, inputs) if self.layout.n_physical else []
        parts = [torch.stack(columns, dim=-1)] if columns else []
        if self.layout.output_layer:
            parts.append(self._output_layer_rates(z, inputs))
        if parts:
            explicit = torch.cat(parts, dim=-1)
            width = explicit.shape[-1]
            derivative = torch.cat(
                [derivative[..., :width] + explicit, derivative[..., width:]], dim=-1
            )
        return torch.cat([rates, derivative.reshape(*batch, -1)], dim=-1)


class _SensitivityModel(nn.Module):
    """What ``integrate`` needs of a model, for the augmented state (identity scaling of
    the states, the fitted model's time scaling)."""

    def __init__(self, model: ODEModel, field: SensitivityField) -> None:
        super().__init__()
        self.field = field
        self.has_inputs = bool(model.spec.n_inputs)
        size = model.n_total_states * (1 + field.n_directions)
        self.size = size
        scaling = model.scaling
        self.scaling = Scaling(
            np.zeros(size), np.ones(size), scaling.time_origin, scaling.time_scale
        )

    @property
    def n_total_states(self) -> int:
        return self.size

    @property
    def n_states(self) -> int:
        return self.size

    def forced(self, signal: nn.Module | None, members: torch.Tensor) -> nn.Module:
        """The field as the solver calls it, driven by ``signal`` for a forced model."""
        if not self.has_inputs:
            return self.field
        return ForcedField(self.field, signal, members)


@dataclass(frozen=True)
class Sensitivities:
    """Scaled states and their sensitivities along each trajectory.

    Attributes
    ----------
    states : list of ndarray of shape (n_times_i, n_states)
        Scaled observed states at the requested times (scaled observed quantities,
        ``n_observed`` of them, for a model that observes a function of its states).
    jacobians : list of ndarray of shape (n_times_i, n_states, n_directions)
        ``dz/d(theta, z0)``: ``theta`` first, then the trajectory's own initial state
        (of the observed quantities, for a model with ``observe``).
    """

    states: list[np.ndarray]
    jacobians: list[np.ndarray]


def trajectory_sensitivities(
    model: ODEModel,
    layout: ParameterLayout,
    initial_states: np.ndarray,
    initial_times: np.ndarray,
    sorted_times: list[np.ndarray],
    *,
    local: bool,
    signal: nn.Module | None = None,
) -> Sensitivities | None:
    """Integrate states and sensitivities to the requested times in one batched solve.

    Parameters
    ----------
    model : ODEModel
    layout : ParameterLayout
    initial_states : ndarray of shape (n_traj, n_total_states)
        Scaled initial states.
    initial_times : ndarray of shape (n_traj,)
        Physical times at which they hold.
    sorted_times : list of ndarray
        Ascending physical output times of each trajectory.
    local : bool
        Follow the initial states' observed dimensions too (fitted initial states).
    signal : nn.Module, optional
        The trajectories' external inputs (required when the model has inputs).

    Returns
    -------
    Sensitivities or None
        None when the solve failed.
    """
    n_total, n_states = model.n_total_states, model.n_states
    field = SensitivityField(model.field, layout, n_total, n_states if local else 0)
    augmented = _SensitivityModel(model, field)
    n_traj = initial_states.shape[0]
    start = np.zeros((n_traj, n_total, field.n_directions))
    if local:
        start[:, np.arange(n_states), layout.size + np.arange(n_states)] = 1.0
    packed = np.concatenate([initial_states, start.reshape(n_traj, -1)], axis=1)
    fitted = model.spec.solver
    solver = replace(
        fitted,
        adjoint=False,
        rtol=max(fitted.rtol, SENSITIVITY_RTOL),
        atol=max(fitted.atol, SENSITIVITY_ATOL),
    )
    outputs = integrate(augmented, packed, initial_times, sorted_times, solver, signal)
    if not all(np.all(np.isfinite(output)) for output in outputs):
        return None
    states = [output[:, :n_states] for output in outputs]
    jacobians = [
        output[:, n_total:].reshape(len(output), n_total, field.n_directions)[:, :n_states]
        for output in outputs
    ]
    sensitivities = Sensitivities(states, jacobians)
    if model.spec.observation_scaling is not None:
        return observed_sensitivities(model, layout, sensitivities)
    return sensitivities


class _ObservationMap(nn.Module):
    """The field's observation map as a module (so ``functional_call`` can perturb the
    physical parameters it reads)."""

    def __init__(self, field: nn.Module) -> None:
        super().__init__()
        self.field = field

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.field.observation(z)


def observed_sensitivities(
    model: ODEModel, layout: ParameterLayout, sensitivities: Sensitivities
) -> Sensitivities:
    """The sensitivities of what the data measure, ``y = observe(x, p)`` (scaled), from
    those of the states: the chain rule through the observation map, plus its own
    dependence on the physical parameters (central differences, as for the field).

    Returns
    -------
    Sensitivities
        ``states`` of shape (n_times_i, n_observed), ``jacobians`` of shape
        (n_times_i, n_observed, n_directions).
    """
    observation = _ObservationMap(model.field)
    like = next(model.field.parameters())
    raw = model.field.physical_parameters.raw.detach() if layout.n_physical else None
    step = float(torch.finfo(like.dtype).eps) ** (1.0 / 3.0)
    n_states = model.n_states
    states, jacobians = [], []
    with torch.no_grad():
        for scaled, jacobian in zip(sensitivities.states, sensitivities.jacobians, strict=True):
            z = torch.as_tensor(scaled, dtype=like.dtype, device=like.device)  # (n, n_states)
            size = float(z.abs().max().clamp_min(1.0)) if z.numel() else 1.0
            eye = torch.eye(n_states, dtype=z.dtype, device=z.device) * (step * size)
            ahead = observation(z[:, None, :] + eye)  # (n, n_states, n_observed)
            behind = observation(z[:, None, :] - eye)
            by_state = ((ahead - behind) / (2.0 * step * size)).transpose(1, 2)
            combined = by_state.cpu().numpy() @ jacobian  # (n, n_observed, n_directions)
            for index in range(layout.n_physical):
                assert raw is not None  # for the type checker: n_physical > 0
                shift = torch.zeros_like(raw)
                shift[index] = step * max(1.0, abs(float(raw[index])))
                name = f"field.{PHYSICAL}"
                forward = functional_call(observation, {name: raw + shift}, (z,))
                backward = functional_call(observation, {name: raw - shift}, (z,))
                rate = (forward - backward) / (2.0 * float(shift[index]))
                combined[:, :, index] += rate.cpu().numpy()
            states.append(observation(z).cpu().numpy().astype(np.float64))
            jacobians.append(combined)
    return Sensitivities(states, jacobians)
