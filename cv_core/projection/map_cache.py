"""The first map, served from the cache: the fitted embedding as safetensors + JSON sidecar.

Key: a BLAKE2b digest of the latents' bytes and shape, the map settings and a code version. Entries
are written atomically by ``ArtifactCache``; a corrupt entry, or one whose embedding does not fit the
latents, is ignored with a warning and the map is recomputed.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import torch

from ..features.cache import ArtifactCache
from ..progress import CancelFn, Progress, ProgressFn
from .geometry import as_latents
from .latent_map import STAGE, LatentMap

KIND = "projection"
#: Bump when fit() changes in a way that changes the embedding of the same latents and settings.
MAP_VERSION = 1


def latents_digest(x: np.ndarray) -> str:
    """Digest of a float32 (N, D) array: its shape and its bytes."""
    h = hashlib.blake2b(digest_size=20)
    h.update(str(x.shape).encode())
    h.update(memoryview(np.ascontiguousarray(x, dtype=np.float32)).cast("B"))
    return h.hexdigest()


def map_key(x: np.ndarray, settings: dict) -> dict:
    return {"latents": latents_digest(x), "shape": list(x.shape), "settings": settings, "map_version": MAP_VERSION}


def fit_cached(latent_map: LatentMap, latents, cache: ArtifactCache | str | Path | None,
               progress: ProgressFn = None, cancel: CancelFn = None) -> tuple[LatentMap, bool]:
    """Fit ``latent_map`` on latents (N, D), or restore its embedding from the cache.

    cache: an ArtifactCache, a directory, or None (no caching).
    Returns (the fitted map, whether it came from the cache).
    """
    x = as_latents(latents)
    if cache is None:
        return latent_map.fit(x, progress, cancel), False
    cache = cache if isinstance(cache, ArtifactCache) else ArtifactCache(cache)
    key = map_key(x, latent_map.settings())
    entry = cache.load(KIND, key)
    if entry is not None:
        embedding = entry[0].get("embedding")
        if embedding is not None and tuple(embedding.shape) == (x.shape[0], 2) and torch.isfinite(embedding).all():
            if progress is not None:
                progress(Progress(STAGE, 3, 3, "map loaded from the cache"))
            return latent_map.fit_embedding(x, embedding.numpy()), True
        warnings.warn("ignoring a cached map whose embedding does not match its latents; recomputing", stacklevel=2)
    latent_map.fit(x, progress, cancel)
    cache.save(KIND, key, {"embedding": torch.from_numpy(latent_map.embedding_)},
               {"n_points": int(x.shape[0]), "dim": int(x.shape[1])})
    return latent_map, False
