"""Coefficients of Hairer and Wanner's Rodas4 (Solving ODEs II, section VI.4; the
``RODAS`` Fortran code), in the transformed form that needs no matrix products.

A step from ``(t, y)`` with size ``h`` solves, for ``i = 1..6``,
``(I / (h gamma) - J) k_i = f(t + c_i h, y + sum_j a_ij k_j) + sum_j (c_ij / h) k_j
+ h d_i df/dt``; the new state is ``y + a_51 k_1 + ... + a_54 k_4 + k_5 + k_6`` (stages 5
and 6 sit at ``t + h``: the method is stiffly accurate, hence L-stable) and ``k_6`` is the
difference to the embedded third-order solution, the error estimate. The method's dense
output, ``y(t + theta h) = (1 - theta) y + theta (y_new + (1 - theta) (q_1 + theta q_2))``
with ``q_r = sum_i h_ri k_i``, is kept here for reference but not used: it loses its
accuracy on stiff problems (see :func:`.integrate._hermite`).
"""

from __future__ import annotations

GAMMA = 0.25
ORDER = 4
ERROR_ORDER = 3  # of the embedded solution: the controller's exponent is 1 / (3 + 1)

# a_ij: where stage i evaluates the field, ``y + sum_j a_ij k_j`` (rows i = 2..5).
A = (
    (1.544000000000000,),
    (0.9466785280815826, 0.2557011698983284),
    (3.314825187068521, 2.896124015972201, 0.9986419139977817),
    (1.221224509226641, 6.019134481288629, 12.53708332932087, -0.6878860361058950),
)
# c_ij: the stages' coupling through the right-hand side (rows i = 2..6).
C = (
    (-5.668800000000000,),
    (-2.430093356833875, -0.2063599157091915),
    (-0.1073529058151375, -9.594562251023355, -20.47028614809616),
    (7.496443313967647, -10.24680431464352, -33.99990352819905, 11.70890893206160),
    (
        8.083246795921522,
        -7.981132988064893,
        -31.52159432874371,
        16.31930543123136,
        -6.058818238834054,
    ),
)
# c_i: the stages' times as fractions of the step (stages 1..6).
NODES = (0.0, 0.386, 0.21, 0.63, 1.0, 1.0)
# d_i: weights of the time derivative of the field (stages 1..4; 0 for 5 and 6).
TIME_WEIGHTS = (0.25, -0.1043, 0.1035, -0.0362)
# h_ri: dense output (r = 1, 2; stages 1..5).
DENSE = (
    (
        10.12623508344586,
        -7.487995877610167,
        -34.80091861555747,
        -7.992771707568823,
        1.025137723295662,
    ),
    (
        -0.6762803392801253,
        6.087714651680015,
        16.43084320892478,
        24.76722511418386,
        -6.594389125716872,
    ),
)
