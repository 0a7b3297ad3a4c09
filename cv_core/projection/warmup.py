"""Trigger umap-learn's numba compilation on a tiny input, so the first real map does not pay for it.

The app calls ``warm_up`` in a background thread at start-up; the CLI may call it before a long run.
"""
from __future__ import annotations

import time

import numpy as np

from ..progress import Progress, ProgressFn
from .latent_map import LatentMap


def warm_up(progress: ProgressFn = None, seed: int = 0) -> float:
    """Fit a map on 64 random latents (64, 8) with the default settings. Returns the seconds it took.

    Compiles the same numba functions (graph, spectral init, layout) that a full-size fit uses;
    the compiled code lives for the rest of the process.
    """
    start = time.perf_counter()
    if progress is not None:
        progress(Progress("projection:warm-up", 0, 1, "compiling UMAP (one time per process)"))
    x = np.random.default_rng(seed).normal(size=(64, 8)).astype(np.float32)
    LatentMap(n_neighbors=5, n_epochs=5, random_state=seed).fit(x)
    if progress is not None:
        progress(Progress("projection:warm-up", 1, 1, "UMAP compiled"))
    return time.perf_counter() - start
