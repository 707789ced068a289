"""Training feedback: the per-iteration history, progress bars and user callbacks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

Callback = Callable[[dict[str, Any]], Any]


class TrainingMonitor:
    """Records every optimiser step and reports progress.

    Parameters
    ----------
    verbose : int
        0 prints nothing; 1 shows one progress bar per stage with its loss.
    callbacks : sequence of callables
        Each is called after every recorded iteration with the history record
        ``{"stage", "iteration", "loss", "seconds"}``; returning True stops the stage.
    """

    def __init__(self, verbose: int = 0, callbacks: Sequence[Callback] = ()) -> None:
        self.verbose = verbose
        self.callbacks = list(callbacks)
        self.history: list[dict[str, Any]] = []
        self._started = time.perf_counter()
        self._bar: Any = None

    def start_stage(self, stage: str, total: int) -> None:
        self._bar = tqdm(
            total=total,
            desc=f"{stage:>11s}",
            disable=self.verbose <= 0,
            leave=True,
            dynamic_ncols=True,
        )

    def end_stage(self, status: str) -> None:
        if self._bar is not None:
            # A stage that ends before its first record has no postfix yet.
            postfix = getattr(self._bar, "postfix", None) or ""
            self._bar.set_postfix_str(f"{postfix} [{status}]", refresh=False)
            self._bar.close()  # draws the final line once
            self._bar = None

    def record(self, stage: str, first_iteration: int, losses: Sequence[float]) -> bool:
        """Append losses of consecutive iterations; return True if a callback asks to stop."""
        seconds = time.perf_counter() - self._started
        stop = False
        for offset, loss in enumerate(losses):
            entry = {
                "stage": stage,
                "iteration": first_iteration + offset,
                "loss": float(loss),
                "seconds": seconds,
            }
            self.history.append(entry)
            for callback in self.callbacks:
                stop = bool(callback(dict(entry))) or stop
        if self._bar is not None and losses:
            self._bar.set_postfix_str(f"loss={losses[-1]:.3e}", refresh=False)
            self._bar.update(len(losses))  # draws the line with the new loss
        return stop
