"""Stiff (linearly implicit) solvers: Rodas4 with an autograd Jacobian, batched."""

from __future__ import annotations

from .integrate import Outcome, integrate

STIFF_SOLVER_NAMES = frozenset({"rodas4"})

__all__ = ["STIFF_SOLVER_NAMES", "Outcome", "integrate"]
