"""The training settings a user gives an estimator: the solver and the three stages.

:class:`Solver`, :class:`Collocation`, :class:`MultipleShooting` and :class:`Polish` are
scikit-learn-style parameter objects (PySINDy's ``optimizer=`` and
``differentiation_method=`` objects, diffrax's ``PIDController(rtol, atol)``): their
``__init__`` only stores, ``get_params``/``set_params`` work, and an estimator holding
one exposes its settings as nested parameters (``shooting__segment_length``), so
``GridSearchCV``, ``clone`` and both file formats keep them.

An estimator's argument may also be a plain value that reads naturally
(``collocation=False``, ``shooting="auto"``, ``polish=True``, ``solver="rk4"``);
:func:`as_settings` is the one place that turns either form into the settings object
(or None for a stage that is off). The objects then build the internal training stages
(:mod:`~skneuralode._training`) from their settings; nothing else reads them.

Each object validates its settings in one place, :meth:`TrainingSettings._check`, called
by ``fit``, with errors that name the setting as ``shooting.segment_length``.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, ClassVar

from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints

from . import _defaults as defaults
from ._solve import SOLVER_NAMES, SolverSettings
from ._spec import MAX_ITERATIONS
from ._training.collocation import CollocationStage
from ._training.shooting import ShootingStage

# sklearn's Interval refuses NaN always, and inf wherever the interval is open towards
# it: every real-valued setting leaves its upper end open at None (tests/test_params.py).
POSITIVE = Interval(Real, 0, None, closed="neither")
NON_NEGATIVE = Interval(Real, 0, None, closed="left")


def count(low: int, high: int = MAX_ITERATIONS) -> Interval:
    """Integers in ``[low, high]`` (by default up to the library's iteration cap)."""
    return Interval(Integral, low, high, closed="both")


class TrainingSettings(BaseEstimator):
    """Base of the settings objects: sklearn parameters, validated in one place."""

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    def _check(self, argument: str, owner: str) -> None:
        """Validate every setting, naming it ``argument.setting`` (e.g.
        ``shooting.segment_length``) as a setting of ``owner`` (the estimator's class).

        Raises
        ------
        sklearn.utils._param_validation.InvalidParameterError
            A ``ValueError`` (and ``TypeError``) naming the setting and what it accepts.
        """
        params = self.get_params(deep=False)
        validate_parameter_constraints(
            {f"{argument}.{name}": rule for name, rule in self._parameter_constraints.items()},
            {f"{argument}.{name}": value for name, value in params.items()},
            caller_name=owner,
        )

    @classmethod
    def _from_plain(cls, value: Any) -> TrainingSettings | None:
        """The settings a plain argument value stands for (None: the stage is off)."""
        raise NotImplementedError


class Solver(TrainingSettings):
    """How the ODE is integrated: method, tolerances, step budget, gradients.

    Give it as an estimator's ``solver``; a plain method name (``solver="rk4"``) means
    ``Solver(method="rk4")`` with the other settings at their defaults. The fitted model
    keeps the solver settings of its fit: ``predict`` integrates with them.

    Parameters
    ----------
    method : str, default="dopri5"
        A torchdiffeq method name: "dopri5", "dopri8", "bosh3", "fehlberg2",
        "adaptive_heun", "euler", "midpoint", "heun2", "heun3", "rk4",
        "explicit_adams", "implicit_adams"; or "rodas4", an L-stable Rosenbrock method
        for stiff fields (one Jacobian by autograd and one matrix factorisation per step,
        a step landing on every output time, exact gradients through its steps;
        ``adjoint`` and ``step_size`` do not apply to it, and the field must be
        differentiable in the state); or "auto": "dopri5" until a solve's steps are
        held back by stability rather than accuracy (after 64 steps and at every
        doubling, ``|h| rho(df/dy) > 2.5`` at the solver's state), then "rodas4" for
        that field from then on (the fitted model remembers it). On a field that is not
        stiff "auto" integrates exactly as "dopri5" (same steps, same results to the
        bit); the probe costs under 1 % of a fit (see "Stiff systems" in the user
        guide's performance page).
    rtol, atol : float, default=1e-6, 1e-8
        Tolerances of adaptive methods, in the internal scaled units. Multiple shooting
        and the checks of the full-trajectory fit during training may loosen them to
        match the estimated noise (0.002 times its standard deviation, never tighter than
        these); the comparison of the stages' models and predictions use them as given.
    adjoint : bool, default=False
        Back-propagate with the adjoint method (memory independent of the number of
        solver steps; slower).
    step_size : float or None, default=None
        Step of fixed-step methods in internal time units; None steps at the output
        times.
    max_num_steps : int, default=10000
        Step budget of one adaptive solve; exceeding it counts as a failed solve.
    compile_field : bool, default=False
        Train with ``torch.compile`` of the vector field (dynamic shapes; the fitted
        model holds the plain field). Needs a working ``torch.compile`` toolchain and
        costs ~10 s of compilation. Off by default because it does not pay on a CPU:
        see "Performance" in the README.

    See Also
    --------
    NeuralODERegressor, UniversalODERegressor : The estimators that take it.

    Examples
    --------
    >>> from skneuralode import NeuralODERegressor, Solver
    >>> est = NeuralODERegressor(solver=Solver(rtol=1e-5, atol=1e-7))
    >>> est.get_params()["solver__rtol"]
    1e-05
    >>> est.set_params(solver__method="bosh3").solver
    Solver(atol=1e-07, method='bosh3', rtol=1e-05)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "method": [StrOptions(set(SOLVER_NAMES))],
        "rtol": [POSITIVE],
        "atol": [POSITIVE],
        "adjoint": ["boolean"],
        "step_size": [POSITIVE, None],
        "max_num_steps": [count(1)],
        "compile_field": ["boolean"],
    }

    def __init__(
        self,
        method: str = defaults.SOLVER,
        *,
        rtol: float = defaults.RTOL,
        atol: float = defaults.ATOL,
        adjoint: bool = defaults.ADJOINT,
        step_size: float | None = defaults.STEP_SIZE,
        max_num_steps: int = defaults.MAX_NUM_STEPS,
        compile_field: bool = defaults.COMPILE_FIELD,
    ) -> None:
        self.method = method
        self.rtol = rtol
        self.atol = atol
        self.adjoint = adjoint
        self.step_size = step_size
        self.max_num_steps = max_num_steps
        self.compile_field = compile_field

    @classmethod
    def _from_plain(cls, value: Any) -> Solver:
        return cls(method=value)

    def _solver_settings(self) -> SolverSettings:
        """The integration settings a fitted model keeps (all but ``compile_field``)."""
        return SolverSettings(
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            max_num_steps=self.max_num_steps,
            step_size=self.step_size,
        )


class Collocation(TrainingSettings):
    """The collocation warm start: regression of the field on estimated derivatives.

    The data are smoothed, ``dy/dt`` is estimated from the smoothing spline and the field
    is fitted by regression on the ``(y, dy/dt)`` pairs with Adam, without solving the
    ODE. Give it as an estimator's ``collocation``; ``collocation=True`` means
    ``Collocation()`` and ``collocation=False`` skips the stage.

    Parameters
    ----------
    learning_rate : float, default=1e-2
        Adam's initial step.
    smoothing : "auto" or float, default="auto"
        Residual the smoother may leave, as a fraction of each state's standard
        deviation; "auto" estimates the noise level from the data. The smoothed data
        also give the start states of the shooting segments and the first guess of the
        initial states (with ``collocation=False`` the data are smoothed with "auto").
    tol : float, default=1e-4
        Relative loss improvement that counts as progress for early stopping.
    n_iter_no_change : int, default=50
        Steps without progress before the step size is lowered or the stage ends. On
        noisy data the stage also integrates the whole trajectories every 100 steps and
        ends when that fit stops improving by a meaningful amount (1 % of it, or 10 % of
        the estimated noise variance), keeping the best checked model.
    max_iter : int or None, default=None
        Most optimiser steps; None takes the estimator's ``max_iter``.

    See Also
    --------
    MultipleShooting, Polish : The stages after it.

    Examples
    --------
    >>> from skneuralode import Collocation, NeuralODERegressor
    >>> est = NeuralODERegressor(collocation=Collocation(learning_rate=3e-3))
    >>> est.get_params()["collocation__learning_rate"]
    0.003
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "learning_rate": [POSITIVE],
        "smoothing": [StrOptions({"auto"}), NON_NEGATIVE],
        "tol": [NON_NEGATIVE],
        "n_iter_no_change": [count(1)],
        "max_iter": [count(1), None],
    }

    def __init__(
        self,
        *,
        learning_rate: float = defaults.COLLOCATION_LEARNING_RATE,
        smoothing: str | float = defaults.SMOOTHING,
        tol: float = defaults.TOL,
        n_iter_no_change: int = defaults.N_ITER_NO_CHANGE,
        max_iter: int | None = None,
    ) -> None:
        self.learning_rate = learning_rate
        self.smoothing = smoothing
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.max_iter = max_iter

    @classmethod
    def _from_plain(cls, value: Any) -> Collocation | None:
        return cls() if value else None

    def _stage(self, max_iter: int, name: str = "collocation") -> CollocationStage:
        """The training stage (``max_iter``: the estimator's, unless set here)."""
        return CollocationStage(
            max_iter=max_iter if self.max_iter is None else self.max_iter,
            learning_rate=self.learning_rate,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            name=name,
        )


def relative_noise(collocation: Collocation | None) -> float | None:
    """The smoother's residual target (None: estimate it), with or without collocation."""
    smoothing = defaults.SMOOTHING if collocation is None else collocation.smoothing
    return None if smoothing == "auto" else float(smoothing)


class MultipleShooting(TrainingSettings):
    """Multiple-shooting refinement: short segments from free start states.

    Every trajectory is cut into short segments, each integrated from its own learned
    start state, all segments of a mini-batch in one batched solve; a continuity penalty
    ties each segment's end to the next one's start. This avoids the local minima that
    a full-trajectory fit of oscillating data falls into. Give it as an estimator's
    ``shooting``: ``shooting="auto"`` means ``MultipleShooting()`` (run only where
    needed), ``shooting=True`` means ``MultipleShooting(only_if_needed=False)`` and
    ``shooting=False`` skips the stage.

    Parameters
    ----------
    segment_length : int or None, default=None
        Time points per segment; None picks about half a characteristic time.
    segment_growth : bool or "auto", default="auto"
        When the loss plateaus, double the segments (up to whole trajectories) and go on
        with the remaining budget. "auto" does so only while the whole trajectories still
        miss the data by more than the noise and the short segments fit theirs: short
        segments can each fit their points while their small errors add up to a phase
        drift over a long trajectory.
    batch_size : int, default=256
        Segments integrated per step.
    continuity_weight : float, default=10.0
        Weight of the continuity penalty between consecutive segments.
    learning_rate : float, default=3e-3
        Adam's initial step.
    tol : float, default=1e-4
        Relative loss improvement that counts as progress for early stopping.
    n_iter_no_change : int, default=50
        Steps without progress before the step size is lowered or the stage ends. On
        noisy data the stage also integrates the whole trajectories every 50 steps and
        ends when that fit stops improving by a meaningful amount, keeping the best
        checked model.
    max_iter : int or None, default=None
        Most optimiser steps; None takes the estimator's ``max_iter``.
    only_if_needed : bool, default=True
        Run only where needed. For :class:`NeuralODERegressor`: skip the stage when the
        model already fits the whole trajectories to within the estimated noise (plus
        0.5 % of the variance), which saves its cost on clean, well-sampled data. For
        :class:`UniversalODERegressor` with a polish: run as a rescue of the polish,
        only where the polished fit is still far from the data (see its ``shooting``).
        False runs the stage every time.

    See Also
    --------
    Collocation, Polish : The stages before and after it.

    Examples
    --------
    >>> from skneuralode import MultipleShooting, NeuralODERegressor
    >>> est = NeuralODERegressor(shooting=MultipleShooting(segment_length=10))
    >>> est.get_params()["shooting__segment_length"]
    10
    >>> est.set_params(shooting__batch_size=64).shooting
    MultipleShooting(batch_size=64, segment_length=10)
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "segment_length": [count(2), None],
        "segment_growth": ["boolean", StrOptions({"auto"})],
        "batch_size": [count(1)],
        "continuity_weight": [NON_NEGATIVE],
        "learning_rate": [POSITIVE],
        "tol": [NON_NEGATIVE],
        "n_iter_no_change": [count(1)],
        "max_iter": [count(1), None],
        "only_if_needed": ["boolean"],
    }

    def __init__(
        self,
        *,
        segment_length: int | None = defaults.SHOOTING_SEGMENT_LENGTH,
        segment_growth: bool | str = defaults.SHOOTING_SEGMENT_GROWTH,
        batch_size: int = defaults.SHOOTING_BATCH_SIZE,
        continuity_weight: float = defaults.SHOOTING_CONTINUITY_WEIGHT,
        learning_rate: float = defaults.SHOOTING_LEARNING_RATE,
        tol: float = defaults.TOL,
        n_iter_no_change: int = defaults.N_ITER_NO_CHANGE,
        max_iter: int | None = None,
        only_if_needed: bool = defaults.SHOOTING_ONLY_IF_NEEDED,
    ) -> None:
        self.segment_length = segment_length
        self.segment_growth = segment_growth
        self.batch_size = batch_size
        self.continuity_weight = continuity_weight
        self.learning_rate = learning_rate
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.max_iter = max_iter
        self.only_if_needed = only_if_needed

    @classmethod
    def _from_plain(cls, value: Any) -> MultipleShooting | None:
        if isinstance(value, str) and value == "auto":
            return cls(only_if_needed=True)
        return cls(only_if_needed=False) if value else None

    def _stage(self, max_iter: int, checks_decide_below: float = math.inf) -> ShootingStage:
        """The training stage (``max_iter``: the estimator's, unless set here;
        ``checks_decide_below``: see :class:`~skneuralode._training.shooting.ShootingStage`)."""
        return ShootingStage(
            max_iter=max_iter if self.max_iter is None else self.max_iter,
            learning_rate=self.learning_rate,
            segment_length=self.segment_length,
            batch_size=self.batch_size,
            continuity_weight=self.continuity_weight,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            grow_segments=self.segment_growth,
            only_if_needed=self.only_if_needed,
            checks_decide_below=checks_decide_below,
        )


class Polish(TrainingSettings):
    """The full-trajectory polish: single shooting over the whole trajectories.

    Fits every parameter and the initial states to the whole trajectories at once,
    after the other stages. Give it as an estimator's ``polish``: ``polish=True`` means
    ``Polish()`` and ``polish=False`` skips the stage. Its defaults are the estimator's:
    :class:`NeuralODERegressor` polishes with L-BFGS for at most 50 iterations,
    :class:`UniversalODERegressor` with Gauss-Newton (Levenberg-Marquardt) for at most
    100.

    Parameters
    ----------
    max_iter : int or None, default=None
        Most iterations (the stage stops earlier once converged); None: the estimator's
        default (50 for :class:`NeuralODERegressor`, 100 for
        :class:`UniversalODERegressor`).
    method : {"lbfgs", "gauss-newton"} or None, default=None
        How the misfit is minimised: "lbfgs", L-BFGS on the summed misfit; or
        "gauss-newton" (:class:`UniversalODERegressor` only), Levenberg-Marquardt steps
        with the Jacobian of every residual, see its ``polish``. None: the estimator's
        default ("lbfgs" for :class:`NeuralODERegressor`, "gauss-newton" for
        :class:`UniversalODERegressor`).

    See Also
    --------
    Collocation, MultipleShooting : The stages before it.

    Examples
    --------
    >>> from skneuralode import NeuralODERegressor, Polish
    >>> est = NeuralODERegressor(polish=Polish(max_iter=200))
    >>> est.get_params()["polish__max_iter"]
    200
    """

    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "max_iter": [count(1), None],
        "method": [StrOptions({"lbfgs", "gauss-newton"}), None],
    }

    def __init__(self, *, max_iter: int | None = None, method: str | None = None) -> None:
        self.max_iter = max_iter
        self.method = method

    @classmethod
    def _from_plain(cls, value: Any) -> Polish | None:
        return cls() if value else None

    def _resolved(self, max_iter: int, method: str) -> tuple[int, str]:
        """``(max_iter, method)``, each given here or else the estimator's default."""
        return (
            max_iter if self.max_iter is None else self.max_iter,
            method if self.method is None else self.method,
        )


#: The estimator arguments that hold settings objects, and the class of each.
SETTINGS_CLASSES: dict[str, type[TrainingSettings]] = {
    "solver": Solver,
    "collocation": Collocation,
    "shooting": MultipleShooting,
    "polish": Polish,
}

#: The constraints of those arguments (an object of its class, or a plain value).
SETTINGS_CONSTRAINTS: dict[str, list[Any]] = {
    "solver": [StrOptions(set(SOLVER_NAMES)), Solver],
    "collocation": ["boolean", Collocation],
    "shooting": ["boolean", StrOptions({"auto"}), MultipleShooting],
    "polish": ["boolean", Polish],
}


def as_settings(argument: str, value: Any) -> Any:
    """The settings object of an estimator argument (``"solver"``, ``"collocation"``,
    ``"shooting"`` or ``"polish"``): ``value`` itself when it is one, else the object its
    plain value stands for; None when the stage is off."""
    cls = SETTINGS_CLASSES[argument]
    return value if isinstance(value, cls) else cls._from_plain(value)


def check_settings(estimator: Any) -> None:
    """Validate the settings objects an estimator holds (its plain values are checked by
    its own constraints)."""
    for argument, cls in SETTINGS_CLASSES.items():
        value = getattr(estimator, argument)
        if isinstance(value, cls):
            value._check(argument, type(estimator).__name__)
