"""The first map, served from the cache: the fitted embedding as safetensors + JSON sidecar.

Key: a BLAKE2b digest of the latents' bytes and shape, the map settings and a code version. Entries
are written atomically by ``ArtifactCache``; a corrupt entry, or one whose embedding does not fit the
latents, is ignored with a warning and the map is recomputed.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import CacheError
from ..features.cache import ArtifactCache
from ..progress import CancelFn, Progress, ProgressFn
from .ann import ApproxSearch
from .geometry import as_latents
from .latent_map import STAGE, LatentMap
from .scale import DEFAULT_SAMPLE, Fidelity, ScaleMap, _rows, fit_sampled

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


SAMPLED_KIND = "projection-sampled"


def fit_sampled_cached(latents, labels, source: dict, cache: ArtifactCache | str | Path | None,
                       sample_size: int = DEFAULT_SAMPLE, latent_map: LatentMap | None = None, seed: int = 0,
                       progress: ProgressFn = None, cancel: CancelFn = None) -> tuple[ScaleMap, bool]:
    """:func:`scale.fit_sampled`, or the same map restored from the cache: the whole embedding (N, 2) and the
    sample's rows are kept (safetensors, written atomically); restoring reads the sample's latents and adopts
    their positions (``LatentMap.fit_embedding``), so edited points are placed as on the original map.

    source: what the latents are, as a JSON-able dict that changes whenever they do (e.g. a feature store's
    key, or {"latents": latents_digest(x)}); it is the cache key with N, the sample size, the seed and the map's
    settings. Returns (the map, whether it came from the cache)."""
    lm = latent_map if latent_map is not None else LatentMap(random_state=seed)
    n = int(latents.shape[0])
    if cache is None:
        return fit_sampled(latents, labels, sample_size, lm, seed, progress=progress, cancel=cancel), False
    cache = cache if isinstance(cache, ArtifactCache) else ArtifactCache(cache)
    key = {"source": source, "n": n, "sample_size": int(sample_size), "seed": int(seed), "settings": lm.settings(),
           "map_version": MAP_VERSION}
    entry = cache.load(SAMPLED_KIND, key)
    if entry is not None:
        tensors, meta = entry
        emb, sample = tensors.get("embedding"), tensors.get("sample")
        if emb is not None and sample is not None and tuple(emb.shape) == (n, 2) and sample.ndim == 1 \
                and sample.numel() and int(sample.min()) >= 0 and int(sample.max()) < n and torch.isfinite(emb).all():
            if progress is not None:
                progress(Progress(STAGE, 2, 3, f"map of {n:,} points loaded from the cache"))
            rows, embedding = sample.numpy().astype(np.int64), emb.numpy()
            lm.fit_embedding(_rows(latents, rows), embedding[rows])
            lm.prepare_reprojection()
            search = None if meta.get("search") is None else ApproxSearch(**meta["search"])
            if progress is not None:
                progress(Progress(STAGE, 3, 3, "map ready"))
            return ScaleMap(embedding, rows, lm, Fidelity(**meta["fidelity"]), float(meta["fit_s"]),
                            float(meta["place_s"]), search, cached=True), True
        warnings.warn("ignoring a cached map that does not fit its latents; recomputing", stacklevel=2)
    scaled = fit_sampled(latents, labels, sample_size, lm, seed, progress=progress, cancel=cancel)
    try:  # minutes of work at 1M: a cache that cannot be written (disk full) costs the next start, not this map
        cache.save(SAMPLED_KIND, key, {"embedding": torch.from_numpy(scaled.embedding),
                                       "sample": torch.from_numpy(scaled.sample)},
                   {"fidelity": asdict(scaled.fidelity), "fit_s": scaled.fit_s, "place_s": scaled.place_s,
                    "n_points": n, "search": None if scaled.search is None else asdict(scaled.search)})
    except CacheError as err:
        warnings.warn(f"the map was computed but could not be cached: {err}", stacklevel=2)
    return scaled, False
