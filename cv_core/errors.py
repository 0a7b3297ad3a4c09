"""Exception types of Class Vector Studio.

Every error a user can cause derives from :class:`CVError`; its message says what
was wrong and what to do. The CLI prints ``str(err)`` on one line and exits non-zero;
the app shows it with ``st.error``.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class CVError(Exception):
    """Base class of every user-facing error."""


class InvalidInputError(CVError, ValueError):
    """An argument or setting has an invalid value."""


class UnknownNameError(CVError, KeyError):
    """A name that is not in a registry; the message lists close matches."""

    def __init__(self, kind: str, name: str, choices: Iterable[str]):
        choices = sorted(choices)
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        shown = ", ".join(choices[:40]) + (" ..." if len(choices) > 40 else "")
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {shown}")
        self.kind, self.name, self.close_matches = kind, name, close

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsUnavailableError(CVError):
    """Backbone weights are neither cached nor downloadable (or the file is bad)."""


class DatasetError(CVError):
    """A dataset is missing, empty, corrupt or inconsistent."""


class CacheError(CVError):
    """The cache directory cannot be used (e.g. not writable, or full)."""


class OutputError(CVError):
    """An output file cannot be written (e.g. the output folder's disk is full); nothing half-written is left."""


class NumericalError(CVError):
    """NaN or infinite values where finite numbers are required."""


class Cancelled(CVError):
    """A long computation was cancelled by the user; nothing half-done was kept."""
