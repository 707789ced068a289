"""The training problem: validated data, scaled, smoothed and placed on the device.

It exists only while ``fit`` runs: the fitted model is built from a data-free
:class:`~skneuralode._spec.ModelSpec`, never from a problem. The units are those of
:class:`~skneuralode._scaling.Scaling`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ._data import TrajectoryBatch
from ._inputs import ValidatedInputs, make_input_signal
from ._scaling import Scaling
from ._smoothing import smooth_trajectories


@dataclass(frozen=True)
class TrainingProblem:
    """Everything the training stages read, as tensors on one device, in scaled units.

    Attributes
    ----------
    times : Tensor of shape (n_traj, n_max)
        Scaled, sorted times; padding repeats the last time.
    observations : Tensor of shape (n_traj, n_max, n_observed)
        Scaled observations with zeros where not observed (``n_observed`` is
        ``n_states`` unless the model observes a function of its states).
    observed : Tensor of shape (n_traj, n_max, n_observed)
        1.0 where a value was observed, 0.0 elsewhere (missing values and padding).
    smoothed_states, smoothed_derivatives : Tensor of shape (n_traj, n_max, n_states)
        Smoothing-spline estimates of the states and of ``dz/ds``.
    smoothing_weight : Tensor of shape (n_traj, n_max, n_states)
        1.0 where the smoothed estimate interpolates observations, 0.0 elsewhere.
    lengths : ndarray of shape (n_traj,)
        Real number of time points per trajectory (host side, for building segments).
    shared_grid : bool
        All trajectories have the same time points.
    noise_variance : float
        Estimated variance of the observation noise in scaled units, averaged over states.
    scaling : Scaling
    inputs : nn.Module or None
        The training inputs as a signal ``inputs(times, trajectory) -> (..., n_inputs)``
        in scaled time, on the device; None without inputs.
    observation_scaling : Scaling or None
        Scaling of the observed quantities when they are a function of the states
        (``observe``, see ``_observation``); None when they are the states.
    """

    times: torch.Tensor
    observations: torch.Tensor
    observed: torch.Tensor
    smoothed_states: torch.Tensor
    smoothed_derivatives: torch.Tensor
    smoothing_weight: torch.Tensor
    lengths: np.ndarray
    shared_grid: bool
    noise_variance: float
    scaling: Scaling
    inputs: nn.Module | None = None
    observation_scaling: Scaling | None = None

    @property
    def n_traj(self) -> int:
        return self.times.shape[0]

    @property
    def n_states(self) -> int:
        """States of the model (the observed ones unless it observes a function of them)."""
        return self.smoothed_states.shape[2]

    @property
    def n_observed(self) -> int:
        return self.observations.shape[2]

    def inputs_at(self, times: torch.Tensor, trajectories: torch.Tensor) -> torch.Tensor | None:
        """The training inputs at scaled ``times`` of ``trajectories`` (broadcast
        together), shape (..., n_inputs); None without inputs."""
        return None if self.inputs is None else self.inputs(times, trajectories)

    def trajectory_index(self) -> torch.Tensor:
        """``arange(n_traj)`` on the problem's device."""
        return torch.arange(self.n_traj, device=self.times.device)


def input_signal(
    inputs: ValidatedInputs,
    scaling: Scaling,
    interpolation: str,
    dtype: torch.dtype,
    device: torch.device,
) -> nn.Module:
    """The signal of validated inputs in the scaled time of ``scaling``, on ``device``."""
    signal = make_input_signal(
        inputs,
        interpolation=interpolation,  # type: ignore[arg-type]
        time_origin=scaling.time_origin,
        time_scale=scaling.time_scale,
        dtype=dtype,
    )
    return signal.to(device)


def embed_hidden_states(
    states: np.ndarray,
    derivatives: np.ndarray,
    inside: np.ndarray,
    times: np.ndarray,
    hidden: np.ndarray,
    sources: np.ndarray,
) -> None:
    """Guess hidden states as derivatives of observed ones, in place (scaled units).

    The k-th hidden state becomes the ``1 + k // n_sources``-th derivative of the
    ``k % n_sources``-th observed state, and its own derivative is estimated from that
    by finite differences on each trajectory's times, where the source is interpolated.

    Parameters
    ----------
    states, derivatives, inside : ndarray of shape (n_traj, n_max, n_states)
    times : ndarray of shape (n_traj, n_max)
    hidden, sources : ndarray of int
    """
    if not len(hidden) or not len(sources):
        return
    for order_index, state in enumerate(hidden):
        source = sources[order_index % len(sources)]
        guess = derivatives[..., source]
        for _ in range(order_index // len(sources)):
            guess = _time_gradient(guess, times)
        states[..., state] = guess
        derivatives[..., state] = _time_gradient(guess, times)
        inside[..., state] = inside[..., source]


def _time_gradient(values: np.ndarray, times: np.ndarray) -> np.ndarray:
    """d values / d times along each trajectory (padding repeats times: left flat)."""
    gradient = np.zeros_like(values)
    for row in range(values.shape[0]):
        distinct = np.concatenate([[True], np.diff(times[row]) > 0])
        n_real = int(distinct.sum())
        if n_real >= 2:
            gradient[row, :n_real] = np.gradient(values[row, :n_real], times[row, :n_real])
            gradient[row, n_real:] = gradient[row, n_real - 1]
    return gradient


def build_problem(
    batch: TrajectoryBatch,
    *,
    device: torch.device,
    dtype: torch.dtype,
    relative_noise: float | None,
    scaling: Scaling | None = None,
    known_initial_states: np.ndarray | None = None,
    inputs: ValidatedInputs | None = None,
    input_interpolation: str = "linear",
    hidden_guess: str = "constant",
) -> TrainingProblem:
    """Scale and smooth validated data and move it to ``device``.

    Parameters
    ----------
    batch : TrajectoryBatch
        Validated data.
    device, dtype
        Where and in which precision the tensors live.
    relative_noise : float or None
        Passed to :func:`~skneuralode._smoothing.smooth_trajectories`.
    scaling : Scaling, optional
        Reuse an earlier fit's scaling (``warm_start``); computed from the data if None.
    known_initial_states : ndarray of shape (n_traj, n_states), optional
        Known initial values (NaN where unknown).
    inputs : ValidatedInputs, optional
        External inputs, read with ``input_interpolation`` between samples.
    hidden_guess : {"constant", "derivative"}
        First guess of a hidden state without known initial values: "constant" holds it
        at the scaling's centre (with no derivative estimate, so collocation ignores
        it); "derivative" takes the time derivatives of the observed states (a
        derivative embedding, as Takens' theorem allows for a latent state with no
        physical meaning), whose own derivatives collocation then fits.

    A state never observed in a trajectory (a hidden state) has no smoothed estimate: it
    is held at its known initial value there (at the scaling's centre if unknown), and
    the stages that integrate learn what it does.
    """
    with warnings.catch_warnings():  # series without observations: handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        smoothed = smooth_trajectories(batch.times, batch.states, batch.lengths, relative_noise)
    if scaling is None:
        scaling = Scaling.from_data(
            batch.states, batch.times, smoothed.derivatives, smoothed.inside, known_initial_states
        )
    observed = batch.observed
    unseen = ~observed.any(axis=1)  # (n_traj, n_states): never observed in that trajectory
    filler = np.zeros((batch.n_traj, batch.n_states))
    if known_initial_states is not None:
        known = scaling.scale_states(known_initial_states)
        filler = np.where(np.isnan(known), 0.0, known)
    scaled_observations = np.where(observed, scaling.scale_states(batch.states), 0.0)
    scaled_smoothed = np.where(
        unseen[:, None, :], filler[:, None, :], scaling.scale_states(smoothed.states)
    )
    scaled_derivatives = np.where(
        unseen[:, None, :], 0.0, scaling.scale_rates(smoothed.derivatives)
    )
    inside = smoothed.inside & ~unseen[:, None, :]
    seen_states = ~unseen.all(axis=0)
    scaled_times = scaling.scale_times(batch.times)
    if hidden_guess == "derivative":
        unknown = np.ones(batch.n_states, dtype=bool)
        if known_initial_states is not None:
            unknown = np.isnan(known_initial_states).all(axis=0)
        embed_hidden_states(
            scaled_smoothed,
            scaled_derivatives,
            inside,
            scaled_times,
            hidden=np.flatnonzero(~seen_states & unknown),
            sources=np.flatnonzero(seen_states),
        )
    noise = (smoothed.noise_level / scaling.state_scale)[seen_states]
    shared_grid = bool(np.all(batch.times == batch.times[:1]))

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype, device=device)

    return TrainingProblem(
        times=tensor(scaled_times),
        observations=tensor(scaled_observations),
        observed=tensor(observed.astype(np.float64)),
        smoothed_states=tensor(scaled_smoothed),
        smoothed_derivatives=tensor(scaled_derivatives),
        smoothing_weight=tensor(inside.astype(np.float64)),
        lengths=batch.lengths.copy(),
        shared_grid=shared_grid,
        noise_variance=float(np.mean(noise**2)),
        scaling=scaling,
        inputs=None
        if inputs is None
        else input_signal(inputs, scaling, input_interpolation, dtype, device),
    )
