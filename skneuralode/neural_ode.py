"""``NeuralODERegressor``: dy/dt = a neural network of the state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np

from . import _defaults as defaults
from ._base import BaseODERegressor
from ._problem import TrainingProblem
from ._settings import Collocation, MultipleShooting, Polish, Solver
from ._vector_fields import NeuralFieldSpec, feature_statistics


def observed_reference_states(problem: TrainingProblem) -> np.ndarray:
    """Smoothed scaled states at the observed time points, shape (n_points, n_states);
    every first guess when no state is observed (the data observe a function of them)."""
    weight = problem.smoothing_weight.detach().cpu().numpy().reshape(-1, problem.n_states)
    states = problem.smoothed_states.detach().cpu().numpy().reshape(-1, problem.n_states)
    return states[weight.any(axis=1)] if weight.any() else states


class NeuralODERegressor(BaseODERegressor):
    """Neural ordinary differential equation ``dy/dt = f(y)`` with ``f`` a neural network.

    Training runs up to three stages: a collocation warm start (smooth the data, estimate
    ``dy/dt`` and fit ``f`` by regression, without solving the ODE), multiple-shooting
    refinement (short segments from free start states, integrated in one batched solve,
    with a continuity penalty) and an optional full-trajectory L-BFGS polish. States and
    time are scaled internally so the defaults work at any scale.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(64, 64)
        Widths of the hidden layers. ``()`` makes ``f`` an affine map of the (featurised)
        state, e.g. linear regression on ``feature_map``'s outputs.
    activation : str, default="tanh"
        Activation of the hidden layers: "tanh", "relu", "softplus", "gelu", "silu",
        "elu", "sigmoid" or "identity".
    feature_map : callable or None, default=None
        Torch function applied to the physical state before the network, acting on the
        last axis (e.g. ``torch.pow(y, 3)`` as a structural prior). Define it at module
        level so the estimator pickles.
    augment_dim : int, default=0
        Extra, unobserved states starting at zero (augmented neural ODE).
    solver : str or Solver, default="dopri5"
        How the ODE is integrated: a torchdiffeq method name ("dopri5", "dopri8",
        "bosh3", "fehlberg2", "adaptive_heun", "euler", "midpoint", "heun2", "heun3",
        "rk4", "explicit_adams", "implicit_adams"; "rodas4" for stiff fields; "auto"
        for "dopri5" that switches to "rodas4" when the field turns out stiff and
        otherwise integrates exactly as "dopri5"), or a
        :class:`~skneuralode.Solver`
        with the method, tolerances (``rtol=1e-6``, ``atol=1e-8``, in internal scaled
        units), ``adjoint``, ``step_size`` of fixed-step methods, the step budget
        ``max_num_steps`` and ``compile_field``. A name means ``Solver(method=name)``.
    max_iter : int, default=1000
        Most optimiser steps of the collocation stage and of the shooting stage, each
        (unless the stage's own ``max_iter`` says otherwise).
    collocation : bool or Collocation, default=True
        The collocation warm start: smooth the data, estimate ``dy/dt`` and fit ``f`` by
        regression, without solving the ODE. True runs it with the defaults of
        :class:`~skneuralode.Collocation` (learning rate, smoothing, early stopping),
        False skips it.
    shooting : bool, "auto" or MultipleShooting, default="auto"
        Multiple-shooting refinement. "auto" runs it unless the model already fits the
        whole trajectories to within the estimated noise (plus 0.5 % of the variance),
        which saves its cost on clean, well-sampled data; True runs it every time; False
        skips it. A :class:`~skneuralode.MultipleShooting` sets the segments (length,
        growth, batch size, continuity weight), the learning rate and early stopping
        (its ``only_if_needed=True``, the default, is "auto").
    polish : bool or Polish, default=False
        The full-trajectory L-BFGS polish (also learns the initial states exactly); True
        runs it for at most 50 iterations, a :class:`~skneuralode.Polish` sets them.
        Turn it on for a hidden state (a ``y`` column that is NaN everywhere): short
        shooting segments alone can leave the hidden coordinate drifting over the whole
        series, and the forecast with it (README, "Real scientific data").
    callbacks : list of callables or None, default=None
        Called with each history record; returning True stops the current stage.
    random_state : int, RandomState instance or None, default=None
        Seeds weights and mini-batches; an int makes CPU fits bit-reproducible.
    device : str, default="auto"
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N". For small systems (a
        few states, networks up to ~64 wide, up to ~10^4 short trajectories) one CPU
        core fits in seconds and a GPU's per-step solver overhead dominates: pass "cpu".
        A GPU pays for wide networks, many states or very many trajectories (README,
        "Performance").
    dtype : {"auto", "float32", "float64"}, default="auto"
        "auto" is float64 on the CPU and float32 on a GPU. The model, shooting, the
        polish and predictions compute in it; on clean data the collocation warm start
        of a float64 model computes in float32 (its targets are estimates far coarser
        than float32's rounding; a step costs ~0.6x), unless a ``feature_map`` runs
        inside the field.
    verbose : int, default=0
        1 shows a progress bar per stage with its loss.
    warm_start : bool, default=False
        Continue from the previous fit instead of starting anew.
    on_interrupt : {"raise", "keep_best"}, default="raise"
        What a ``KeyboardInterrupt`` (Ctrl-C, a notebook's stop button) during ``fit``
        does. "raise" lets it through and leaves the estimator exactly as it was before
        ``fit`` (unfitted, or the previous fit). "keep_best" ends training instead: the
        best model found so far is kept and ``fit`` returns normally with a
        ``ConvergenceWarning``; ``fit`` again with ``warm_start=True`` continues from it.
    input_interpolation : {"linear", "previous"}, default="linear"
        How external inputs ``u`` sampled at the observation times are read between
        samples: linearly, or held from each sample to the next ("previous", a
        zero-order hold for doses and switched controls).

    Attributes
    ----------
    n_features_in_ : int
        Number of states.
    n_trajectories_ : int
        Number of training trajectories.
    t0_ : float or ndarray of shape (n_traj,)
        Initial time of the training trajectory (trajectories).
    y0_ : ndarray of shape (n_states,) or (n_traj, n_states)
        Learned initial state(s) at ``t0_``.
    n_iter_ : int
        Optimiser steps taken in all stages.
    loss_ : float
        Full-trajectory mean squared error of the kept model, in scaled units (a value
        of 0.01 means about 1 % unexplained variance).
    history_ : list of dict
        One record per optimiser step: ``stage``, ``iteration``, ``loss``, ``seconds``.
    stage_results_ : list of StageResult
        How each stage ended.
    module_ : torch.nn.Module
        The fitted model (field, scaling, initial states).
    noise_std_ : ndarray of shape (n_states,)
        Each state's observation noise, estimated from the residuals of the fit
        (corrected for the degrees of freedom the fit used).
    y0_std_ : ndarray of shape (n_states,) or (n_traj, n_states)
        Standard deviation of the fitted initial state(s) ``y0_``. With ``noise_std_``,
        set by every fit small enough to afford it (see :meth:`predict`'s ``return_std``).

    See Also
    --------
    UniversalODERegressor : known physics plus a neural network.

    Examples
    --------
    >>> import numpy as np
    >>> from skneuralode import NeuralODERegressor
    >>> t = np.linspace(0, 3, 40)
    >>> y = np.exp(-t)[:, None] * np.array([1.0, 2.0])
    >>> est = NeuralODERegressor(hidden_layer_sizes=(16,), max_iter=200, random_state=0)
    >>> est.fit(t, y).score(t, y) > 0.99
    True
    >>> est.predict(np.array([0.0, 1.0])).shape
    (2, 2)
    """

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = defaults.HIDDEN_LAYER_SIZES,
        activation: str = defaults.ACTIVATION,
        *,
        feature_map: Callable | None = None,
        augment_dim: int = defaults.AUGMENT_DIM,
        solver: str | Solver = defaults.SOLVER,
        max_iter: int = defaults.MAX_ITER,
        collocation: bool | Collocation = defaults.COLLOCATION,
        shooting: bool | str | MultipleShooting = defaults.SHOOTING,
        polish: bool | Polish = defaults.POLISH,
        callbacks: Sequence[Callable] | None = None,
        random_state: int | np.random.RandomState | None = None,
        device: str = defaults.DEVICE,
        dtype: str = defaults.DTYPE,
        verbose: int = defaults.VERBOSE,
        warm_start: bool = defaults.WARM_START,
        on_interrupt: str = defaults.ON_INTERRUPT,
        input_interpolation: str = defaults.INPUT_INTERPOLATION,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.feature_map = feature_map
        self.augment_dim = augment_dim
        self.solver = solver
        self.max_iter = max_iter
        self.collocation = collocation
        self.shooting = shooting
        self.polish = polish
        self.callbacks = callbacks
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
        self.warm_start = warm_start
        self.on_interrupt = on_interrupt
        self.input_interpolation = input_interpolation

    _parameter_constraints: ClassVar[dict] = {
        **BaseODERegressor._parameter_constraints,
        "feature_map": [callable, None],
    }

    _field_spec_type = NeuralFieldSpec
    # A hidden state of a neural ODE is latent: a derivative embedding is a first guess
    # that collocation can fit (Takens), where a constant would leave it to shooting.
    _hidden_guess = "derivative"

    def _field_spec(self, problem: TrainingProblem, has_inputs: bool = False) -> NeuralFieldSpec:
        mean = std = None
        if self.feature_map is not None:
            reference = problem.scaling.unscale_states(observed_reference_states(problem))
            mean, std = feature_statistics(self.feature_map, reference)
        return NeuralFieldSpec(
            hidden_layer_sizes=tuple(int(width) for width in self.hidden_layer_sizes),
            activation=self.activation,
            feature_map=self.feature_map,
            feature_mean=mean,
            feature_std=std,
        )
