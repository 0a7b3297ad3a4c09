"""umap-learn's compiled code kept on disk, and only the code a map needs compiled at all.

umap-learn decorates about 130 functions with ``numba.njit`` without ``cache=True`` (one has it), and
its layout optimiser creates a new ``numba.njit`` dispatcher on every call; pynndescent (imported by
umap) compiles about 50 functions for explicit type signatures at import. Measured on this project's 2
cores with an empty numba cache: ``import umap`` 12-20 s (almost all of it pynndescent's eager
compilation, ``rp_trees`` alone ~9 s) and the first 10k x 512 fit 15 s, of which 10.6 s compilation
(``smooth_knn_dist`` 6 s and ``compute_membership_strengths`` 2.6 s: both ``parallel=True``).

:func:`import_umap` imports umap with numba's ``njit``/``jit`` wrapped, for functions defined in the
``umap`` and ``pynndescent`` packages only (every other numba user keeps its own choice):

- ``cache=True`` by default, with numba's cache at ``<cache dir>/numba/<CACHE_LAYOUT>`` unless
  ``NUMBA_CACHE_DIR`` is set, so a fresh process loads compiled code instead of compiling it;
- pynndescent's explicit signatures are dropped, so its functions compile when first called instead of
  at import. ``LatentMap`` hands umap exact neighbours (``precomputed_knn``), so a map never calls
  them; code that does (umap's own ``transform``, ``NNDescent``) compiles them then, for the argument
  types it passes (a superset of what the signatures allowed);
- the two graph functions of the fit (:data:`SERIAL`) compile without ``parallel=True``: serial they
  compile in ~1.4 s instead of ~5.4 s (load 2.4) and run faster on 10k points (12 + 1 ms against 37 + 23 ms:
  one loop per point, too little work for threads), and the map's default path then starts no numba
  OpenMP pool, whose idle threads measurably slowed torch's ``eigh`` right after a parallel call.

numba checks each cached entry against its source file's timestamp and the CPU, so an upgrade or
another machine recompiles instead of loading stale code; its index does not record compile options,
hence the ``CACHE_LAYOUT`` folder: caches written with other options (a parallel ``smooth_knn_dist``)
are not read back. See docs/benchmarks.md, "first map".
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

_PACKAGES = ("umap", "pynndescent")
#: Packages whose eager (signature) compilation is deferred to the first call.
LAZY = ("pynndescent",)
#: Functions compiled without ``parallel=True`` (module.qualname).
SERIAL = frozenset({"umap.umap_.smooth_knn_dist", "umap.umap_.compute_membership_strengths"})
#: Sub-folder of the default cache directory; bump it when the options above change.
CACHE_LAYOUT = "2"
_LOCK = threading.Lock()
_STATE: dict = {}


def cache_dir() -> Path:
    """Where the compiled code goes: $NUMBA_CACHE_DIR, else ``<CVS cache dir>/numba/<CACHE_LAYOUT>``."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from ..features.cache import default_cache_dir

    return default_cache_dir() / "numba" / CACHE_LAYOUT


def _package(fn) -> str:
    return (getattr(fn, "__module__", None) or "").split(".")[0]


def _ours(fn) -> bool:
    return _package(fn) in _PACKAGES


def _is_function(arg) -> bool:
    """A function to decorate, as opposed to a signature (str, Signature, list of them, numba type)."""
    from numba.core import types

    return callable(arg) and not isinstance(arg, (str, list, tuple, types.Type))


def _options(fn, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The decorator arguments for one of umap's / pynndescent's functions (see the module docstring)."""
    kwargs = dict(kwargs)
    kwargs.setdefault("cache", True)  # an explicit cache=... is the package's own choice
    if _package(fn) in LAZY:
        args = ()
        kwargs.pop("signature_or_function", None)
    if f"{fn.__module__}.{getattr(fn, '__qualname__', '')}" in SERIAL:
        kwargs["parallel"] = False
    return args, kwargs


def _with_cache(decorator):
    """Wrap numba.njit / numba.jit: umap's and pynndescent's functions get :func:`_options`."""

    @functools.wraps(decorator)
    def wrapped(*args, **kwargs):
        if args and _is_function(args[0]):  # @njit / njit(fn, ...)
            fn = args[0]
            if not _ours(fn):
                return decorator(*args, **kwargs)
            rest, kw = _options(fn, args[1:], kwargs)
            return decorator(fn, *rest, **kw)

        def apply(fn):  # @njit(...) / njit(signature, ...)(fn)
            if not _ours(fn):
                return decorator(*args, **kwargs)(fn)
            rest, kw = _options(fn, args, kwargs)
            return decorator(*rest, **kw)(fn)

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
