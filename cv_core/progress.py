"""Progress reporting and cancellation for long stages.

The library never prints: long work calls an optional ``progress`` callback with a
:class:`Progress` event and polls an optional ``cancel`` callable. The CLI turns the
events into tqdm bars, the app into ``st.progress``.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled


@dataclass(frozen=True)
class Progress:
    stage: str            # e.g. "finetune", "extract:pretrained:test"
    step: int             # steps done
    total: int | None     # steps in all, None when unknown
    message: str = ""
    loss: float | None = None
    eta_s: float | None = None

    @property
    def fraction(self) -> float | None:
        return None if not self.total else min(1.0, self.step / self.total)


ProgressFn = Callable[[Progress], None] | None
CancelFn = Callable[[], bool] | None


def check_cancel(cancel: CancelFn, stage: str) -> None:
    """Raise :class:`Cancelled` when the user asked to stop."""
    if cancel is not None and cancel():
        raise Cancelled(f"{stage} was cancelled; nothing was written for it")


class StageTimer:
    """Emits Progress events for one stage with a running ETA."""

    def __init__(self, progress: ProgressFn, stage: str, total: int | None):
        self.progress, self.stage, self.total = progress, stage, total
        self.start = time.perf_counter()

    def update(self, step: int, message: str = "", loss: float | None = None) -> None:
        if self.progress is None:
            return
        elapsed = time.perf_counter() - self.start
        eta = None
        if self.total and step > 0:
            eta = elapsed / step * max(0, self.total - step)
        self.progress(Progress(self.stage, step, self.total, message, loss, eta))
