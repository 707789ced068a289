"""Training: a family of stages on one interface, a shared optimisation loop and a runner.

``base`` defines the interface (:class:`TrainingStage`, :class:`StageContext`), ``loop``
the optimisation loop every gradient stage shares, ``runner`` the sequencing that keeps
the best model. The stages themselves (``collocation``, ``physics_first``, ``shooting``,
``polish``) are plug-ins: the runner never imports one.
"""

from .base import StageContext, TrainingStage
from .loop import StageResult
from .runner import TrainingReport, train

__all__ = ["StageContext", "StageResult", "TrainingReport", "TrainingStage", "train"]
