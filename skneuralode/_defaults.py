"""Default values of the constructor arguments and of the settings objects, in one place.

:class:`~skneuralode.UniversalODERegressor` differs only where its docstring says why
(``shooting``, ``polish`` and the polish's own defaults): those have their own names here.
The stage settings (``COLLOCATION_*``, ``SHOOTING_*``, ``TOL``, ...) are the defaults of
:class:`~skneuralode.Collocation` and :class:`~skneuralode.MultipleShooting`, the solver
settings those of :class:`~skneuralode.Solver`.
"""

from __future__ import annotations

HIDDEN_LAYER_SIZES: tuple[int, ...] = (64, 64)
ACTIVATION = "tanh"
AUGMENT_DIM = 0
SOLVER = "dopri5"
RTOL = 1e-6
ATOL = 1e-8
ADJOINT = False
STEP_SIZE: float | None = None
MAX_NUM_STEPS = 10_000
COMPILE_FIELD = False
MAX_ITER = 1000
COLLOCATION = True
SHOOTING: bool | str = "auto"
POLISH = False
POLISH_MAX_ITER = 50
POLISH_METHOD = "lbfgs"
UDE_SHOOTING: bool | str = "auto"
UDE_POLISH = True
UDE_POLISH_MAX_ITER = 100
UDE_POLISH_METHOD = "gauss-newton"
UDE_NETWORK_PENALTY: str | float = "auto"
UDE_NETWORK_WEIGHT_DECAY: str | float = "auto"
UDE_NETWORK_SMOOTHNESS: str | float = "auto"
UDE_PHYSICS_FIRST = True
SMOOTHING: str | float = "auto"
COLLOCATION_LEARNING_RATE = 1e-2
SHOOTING_LEARNING_RATE = 3e-3
SHOOTING_SEGMENT_LENGTH: int | None = None
SHOOTING_SEGMENT_GROWTH: bool | str = "auto"
SHOOTING_BATCH_SIZE = 256
SHOOTING_CONTINUITY_WEIGHT = 10.0
SHOOTING_ONLY_IF_NEEDED = True
TOL = 1e-4
N_ITER_NO_CHANGE = 50
DEVICE = "auto"
DTYPE = "auto"
VERBOSE = 0
WARM_START = False
ON_INTERRUPT = "raise"
INPUT_INTERPOLATION = "linear"
