"""umap-learn's compiled code kept on disk, so a fresh process does not compile it again.

umap-learn decorates about 130 functions with ``numba.njit`` without ``cache=True`` (one has it), and
its layout optimiser creates a new ``numba.njit`` dispatcher on every call; pynndescent (imported by
umap) compiles typed signatures at import. Without an on-disk cache every new process pays for all of
it: measured on this project's 2 cores, ``import umap`` 19 s and the first 10k x 512 fit 14 s.

:func:`import_umap` imports umap with numba's ``njit``/``jit`` defaulting to ``cache=True`` for
functions defined in the ``umap`` and ``pynndescent`` packages (only those: every other numba user
keeps its own choice), and points numba's cache at ``<cache dir>/numba`` unless ``NUMBA_CACHE_DIR``
is set. Once the cache is written (the app's start-up warm-up writes it), a fresh process imports
umap in ~3 s and fits the first map without compiling (see docs/benchmarks.md, "first map").
numba checks each cached entry against its source file's timestamp and the CPU, so an upgrade or
another machine recompiles instead of loading stale code.
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

_PACKAGES = ("umap", "pynndescent")
_LOCK = threading.Lock()
_STATE: dict = {}


def cache_dir() -> Path:
    """Where the compiled code goes: $NUMBA_CACHE_DIR, else ``<CVS cache dir>/numba``."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from ..features.cache import default_cache_dir

    return default_cache_dir() / "numba"


def _ours(fn) -> bool:
    module = getattr(fn, "__module__", None) or ""
    return module.split(".")[0] in _PACKAGES


def _with_cache(decorator):
    """Wrap numba.njit / numba.jit: cache=True by default for umap's and pynndescent's functions."""

    @functools.wraps(decorator)
    def wrapped(*args, **kwargs):
        if args and callable(args[0]) and not isinstance(args[0], (str, list, tuple)):  # @njit / njit(fn, ...)
            if _ours(args[0]):
                kwargs.setdefault("cache", True)
            return decorator(*args, **kwargs)
        if "cache" in kwargs:  # @njit(cache=...) : the package decided
            return decorator(*args, **kwargs)
        inner = decorator(*args, **kwargs)
        cached = decorator(*args, cache=True, **kwargs)

        def apply(fn):
            return (cached if _ours(fn) else inner)(fn)

        return apply

    wrapped.__wrapped_by_cvs__ = True
    return wrapped


def install() -> Path:
    """Route umap's and pynndescent's numba functions to the on-disk cache (idempotent; call before
    ``import umap``). Returns the cache directory."""
    with _LOCK:
        if "dir" in _STATE:
            return _STATE["dir"]
        import numba
        from numba.core import config

        path = cache_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
            if not os.environ.get("NUMBA_CACHE_DIR"):
                config.CACHE_DIR = str(path)
        except OSError:  # not writable: numba falls back to its own locations (or to no cache)
            pass
        if not getattr(numba.njit, "__wrapped_by_cvs__", False):
            numba.njit = _with_cache(numba.njit)
            numba.jit = _with_cache(numba.jit)
        _STATE["dir"] = path
        return path


def import_umap():
    """``import umap`` with the compiled code cached on disk (see the module docstring)."""
    install()
    import umap

    return umap


def cached_entries() -> int:
    """How many compiled functions are in the cache directory (``.nbi`` index files)."""
    path = _STATE.get("dir") or cache_dir()
    return sum(1 for _ in Path(path).rglob("*.nbi")) if Path(path).exists() else 0
