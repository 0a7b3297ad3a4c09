"""Run a long library call in a worker thread and show its progress events in an ``st.status``.

The library reports :class:`cv_core.progress.Progress` events through a callback and polls a
``cancel`` callable. The worker never touches Streamlit; this (main) thread drains the events
into one progress bar per stage. When the user presses Cancel (or leaves the page), Streamlit
interrupts this thread at its next element update; the ``finally`` block then sets the cancel flag,
the library raises ``Cancelled`` at its next check, and nothing half-done is kept.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from cv_core.errors import Cancelled, CVError


#: How long a cancelled computation may hold the page; a long step then finishes in the background.
JOIN_S = 5.0


@dataclass
class Outcome:
    """What the computation gave: ``value`` on success, else a plain ``error`` message."""

    value: object = None
    error: str | None = None
    cancelled: bool = False


def describe_event(ev) -> str:
    """One line for a progress event: 'finetune: step 40/200 · loss 0.512 · ETA 12 s'."""
    parts = [ev.stage]
    if ev.stage == "download" and ev.message:  # steps are megabytes: '12 of 338 MB' says it
        return f"download · {ev.message}"
    if ev.total:
        parts.append(f"step {ev.step}/{ev.total}")
    elif ev.step:
        parts.append(f"step {ev.step}")
    if ev.loss is not None:
        parts.append(f"loss {ev.loss:.3f}")
    if ev.eta_s is not None:
        parts.append(f"ETA {ev.eta_s:.0f} s")
    if ev.message and ev.message not in " · ".join(parts):
        parts.append(ev.message)
    return " · ".join(parts)


def plain_error(err: BaseException) -> str:
    """A user-facing message for any exception; never a traceback."""
    if isinstance(err, CVError):
        return str(err)
    if isinstance(err, MemoryError) or "out of memory" in str(err).lower():
        return ("the device ran out of memory. Choose a smaller dataset subset (images per class), "
                "or the CPU device, and compute again.")
    return f"the computation failed ({type(err).__name__}: {err}). Nothing was cached for it."


def run_with_progress(fn: Callable, label: str) -> Outcome:
    """Call ``fn(progress=..., cancel=...)`` in a worker thread, drawing its progress here."""
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    box: dict = {}

    def worker():
        try:
            box["value"] = fn(progress=events.put, cancel=stop.is_set)
        except BaseException as err:  # reported below in plain words
            box["error"] = err

    thread = threading.Thread(target=worker, name="cvs-compute", daemon=True)
    start = time.perf_counter()
    with st.status(label, expanded=True) as status:
        elapsed = st.empty()
        bars: dict[str, object] = {}
        thread.start()
        try:
            while thread.is_alive() or not events.empty():
                _drain(events, bars)
                elapsed.caption(f"running for {time.perf_counter() - start:.0f} s")
                time.sleep(0.15)
        finally:
            if thread.is_alive():  # interrupted (Cancel pressed, page left): stop the library cleanly
                stop.set()  # the library raises Cancelled at its next check and keeps nothing
                thread.join(timeout=JOIN_S)
        err = box.get("error")
        if err is None:
            status.update(label=f"{label}: done in {time.perf_counter() - start:.1f} s", state="complete",
                          expanded=False)
            return Outcome(value=box.get("value"))
        cancelled = isinstance(err, Cancelled)
        status.update(label=f"{label}: {'cancelled' if cancelled else 'failed'}", state="error")
    return Outcome(error=plain_error(err), cancelled=cancelled)


def _drain(events: queue.Queue, bars: dict) -> None:
    latest = {}
    while True:
        try:
            ev = events.get_nowait()
        except queue.Empty:
            break
        latest[ev.stage] = ev
    for stage, ev in latest.items():
        if stage not in bars:
            bars[stage] = st.progress(0.0, text=stage)
        frac = ev.fraction if ev.fraction is not None else 0.0
        bars[stage].progress(float(frac), text=describe_event(ev))
