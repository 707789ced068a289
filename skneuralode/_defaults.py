"""Default values of the constructor arguments both estimators share, in one place.

:class:`~skneuralode.UniversalODERegressor` differs only where its docstring says why
(``shooting``, ``polish``, ``polish_max_iter``): those have their own names here.
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
UDE_SHOOTING: bool | str = "auto"
UDE_POLISH = True
UDE_POLISH_MAX_ITER = 100
UDE_POLISH_METHOD = "gauss-newton"
UDE_NETWORK_WEIGHT_DECAY: str | float = "auto"
UDE_NETWORK_SMOOTHNESS: str | float = "auto"
SMOOTHING: str | float = "auto"
COLLOCATION_LEARNING_RATE = 1e-2
SHOOTING_LEARNING_RATE = 3e-3
SHOOTING_SEGMENT_LENGTH: int | None = None
SHOOTING_SEGMENT_GROWTH: bool | str = "auto"
SHOOTING_BATCH_SIZE = 256
SHOOTING_CONTINUITY_WEIGHT = 10.0
TOL = 1e-4
N_ITER_NO_CHANGE = 50
DEVICE = "auto"
DTYPE = "auto"
VERBOSE = 0
WARM_START = False
ON_INTERRUPT = "raise"
INPUT_INTERPOLATION = "linear"
# Names that changed (old -> new): the old ones still work, with a FutureWarning.
RENAMED = {
    "segment_length": "shooting_segment_length",
    "segment_growth": "shooting_segment_growth",
    "segment_batch_size": "shooting_batch_size",
    "continuity_weight": "shooting_continuity_weight",
}
DEPRECATED = "deprecated"
