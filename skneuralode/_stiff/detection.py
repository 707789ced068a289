"""Stiffness detection for ``solver="auto"``: are the explicit solver's steps held back
by stability rather than by accuracy?

An explicit Runge-Kutta method is stable only while ``h |lambda|`` stays inside its
stability region (for Dormand-Prince 5(4) about 3.3 along the negative real axis and
the imaginary one), where ``lambda`` runs over the eigenvalues of the field's Jacobian.
On a stiff problem its step controller settles at that boundary, whatever the
tolerance, and the step count grows with ``|lambda|`` times the span (Robertson's
kinetics: tens of thousands of steps); on a problem that is not stiff accuracy limits
the steps well inside it. So, as in Hairer and Wanner's DOPRI5 code and in LSODA, the
probe compares ``|h| rho(J)`` at the solver's current state with a threshold, and does
so only after :data:`FIRST_CHECK` steps and then at every doubling of the step count:
a solve that is not stiff and takes few steps is never probed, and one that takes many
pays one Jacobian per doubling.

Once a field is found stiff it is integrated by the stiff method from then on: the
field remembers it (an attribute of the ``nn.Module``, kept by pickling), so a fit pays
for the explicit attempt once, not on every solve.
"""

from __future__ import annotations

import torch
from torch import nn

from .jacobian import value_and_jacobian

AUTO_EXPLICIT_METHOD = "dopri5"
AUTO_STIFF_METHOD = "rodas4"
#: Steps an explicit solve takes before it is first probed; then at 2x, 4x, ... that.
FIRST_CHECK = 64
#: ``|h| rho(J)`` above which the steps count as limited by stability (Dormand-Prince's
#: boundary is about 3.3; accuracy-limited steps sit well below 1 at the tolerances
#: used here, and loose ones rarely pass 2).
STABILITY_LIMITED = 2.5
#: Largest state dimension whose Jacobian's eigenvalues are computed directly; larger
#: fields are probed by power iteration.
DIRECT_EIGENVALUES = 32
POWER_ITERATIONS = 12
_MARK = "_skneuralode_stiff"


def _spectral_radius(func: nn.Module, time: torch.Tensor, states: torch.Tensor) -> float:
    """Largest ``|lambda|`` of ``df/dz`` over the members of the batch."""
    n_states = states.shape[1]
    if n_states <= DIRECT_EIGENVALUES:
        _, jacobian, _ = value_and_jacobian(func, time, states, method="auto")
        eigenvalues = torch.linalg.eigvals(jacobian)  # (n_batch, n_states)
        return float(eigenvalues.abs().max())
    # power iteration on J^T (same spectrum) with vector-Jacobian products
    with torch.enable_grad():
        point = states.detach().requires_grad_(True)
        rates = func(time, point)
        vector = torch.ones_like(point) / n_states**0.5
        growth = 0.0
        for _ in range(POWER_ITERATIONS):
            (image,) = torch.autograd.grad(rates, point, vector, retain_graph=True)
            norm = image.norm(dim=1, keepdim=True)  # (n_batch, 1)
            growth = float(norm.max())
            vector = image / norm.clamp_min(torch.finfo(image.dtype).tiny)
    return growth


class StiffnessProbe:
    """Watches an explicit solve through its step callback.

    Parameters
    ----------
    func : nn.Module
        The field as the solver calls it, ``func(t, z)``.
    """

    def __init__(self, func: nn.Module) -> None:
        self.func = func
        self.next_check = FIRST_CHECK
        self.detected = False

    def is_stiff(
        self, n_steps: int, time: torch.Tensor, states: torch.Tensor, step: torch.Tensor
    ) -> bool:
        """Whether the solve, at its ``n_steps``-th attempt from ``(time, states)`` with
        step ``step``, is held back by stability (probed at doublings of the count)."""
        if n_steps < self.next_check:
            return False
        self.next_check *= 2
        with torch.no_grad():
            radius = _spectral_radius(self.func, time.detach(), states.detach())
        self.detected = abs(float(step)) * radius > STABILITY_LIMITED
        return self.detected

    @staticmethod
    def remembers(field: nn.Module) -> bool:
        """Whether ``field`` (or the field it wraps) was found stiff before."""
        return bool(getattr(_innermost(field), _MARK, False))

    @staticmethod
    def remember(field: nn.Module) -> None:
        """Mark ``field`` as stiff: later solves of ``solver="auto"`` use the stiff method.

        The mark goes on the innermost field of wrappers that hold theirs as ``.field``
        (the inputs of a forced field, a sensitivity system), the model's own field.
        """
        setattr(_innermost(field), _MARK, True)


def _innermost(field: nn.Module) -> nn.Module:
    while isinstance(getattr(field, "field", None), nn.Module):
        field = field.field
    return field
