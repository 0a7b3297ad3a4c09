"""The shared 2-D map of a run: fitting it (worker thread), keeping it, its extent; UMAP warm-up."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import synthetic
from app.state import AppRunConfig

from cv_core.projection.latent_map import release_epochs

from .runs import _RUNS_LOCK, EVAL_SPLIT, cached_run, eval_labels


_WARM: dict = {}


@st.cache_resource(show_spinner=False)
def start_umap_warm_up() -> threading.Thread:
    """Compile UMAP's numba code once per server process, in the background, at start-up (or load it
    from the on-disk numba cache that the first warm-up writes: ``cv_core.projection.numba_cache``)."""
    from cv_core.projection import warm_up

    def run():
        _WARM["started"] = time.time()
        try:
            _WARM["seconds"] = warm_up()
        except Exception as err:  # noqa: BLE001 - the first map then compiles, and says so
            _WARM["error"] = f"{type(err).__name__}: {err}"

    thread = threading.Thread(target=run, name="cvs-umap-warm-up", daemon=True)
    thread.start()
    return thread


def warm_up_status() -> str:
    """One line on UMAP's background compilation, for the map pages."""
    if "seconds" in _WARM:
        return f"UMAP is compiled (background warm-up took {_WARM['seconds']:.1f} s)."
    if "error" in _WARM:
        return f"UMAP's background warm-up failed ({_WARM['error']}); the first map compiles it."
    if "started" in _WARM:
        return (f"UMAP is compiling in the background (for {time.time() - _WARM['started']:.0f} s so far; "
                "5-10 s the first time on a 2-core CPU, 2-3 s once its on-disk cache exists).")
    return "UMAP's background warm-up has not started."


@dataclass(frozen=True)
class MapPoints:
    """The shared 2-D map of one run's test latents.

    pre_xy, ft_xy: (N, 2) positions of the pretrained / fine-tuned latents;
    pre_centroids, ft_centroids: (C, 2) class centroids; projector: the fitted LatentMap
    (its ``reproject`` places edited latents without UMAP's slow ``transform``).
    """

    pre_xy: np.ndarray
    ft_xy: np.ndarray
    pre_centroids: np.ndarray
    ft_centroids: np.ndarray
    projector: object
    note: str = ""
    sampled: bool = False
    edit_coords: object = None

    def reproject(self, latents: np.ndarray, rows: np.ndarray, info: dict | None = None) -> np.ndarray:
        """Map positions (M, 2) of edited fine-tuned latents (M, D) of test rows ``rows`` (M,). info: a dict
        that receives what the search did (``LatentMap.reproject``: exact, or approximate with its recall,
        and the layout epochs: ``release_epochs``, fewer for a release that moves many points)."""
        epochs = self._epochs(rows)
        if self.sampled:  # the projector was fitted on a sample: rows are not its fitted rows
            return self.projector.reproject(latents, info=info, epochs=epochs)
        return self.projector.reproject(latents, index=rows + len(self.ft_xy), info=info, epochs=epochs)

    def place_edit(self, rows: np.ndarray, weights, info: dict | None = None) -> np.ndarray:
        """Map positions (M, 2) of test rows ``rows`` (M,) edited by ``weights`` (M, C) @ kappa, from the
        map's per-row coordinate table (``cv_core.projection.edited``) instead of the latents; as
        :meth:`reproject` otherwise."""
        return self.projector.place_reduced(self.edit_coords.reduce(rows, weights), info=info,
                                            epochs=self._epochs(rows))

    def _epochs(self, rows: np.ndarray) -> int:
        """Layout epochs for placing these moved rows after a release (fewer for many: ``release_epochs``)."""
        return release_epochs(len(rows), self.projector.refine_epochs())


@st.cache_resource(show_spinner=False)
def _maps() -> dict:
    """Fitted maps of this server process, keyed by AppRunConfig."""
    return {}


def cached_map(config: AppRunConfig) -> MapPoints | None:
    return _maps().get(config)


def compute_map(config: AppRunConfig, progress: Callable | None = None, cancel: Callable | None = None) -> MapPoints:
    """Fit one UMAP on the pretrained and fine-tuned test latents together. Worker thread: no Streamlit.

    Up to ``DEFAULT_SAMPLE`` latents (both encoders together) are fitted whole (and the map cached on
    disk); above, UMAP is fitted on a stratified sample (by encoder and class) and the others are
    placed (``cv_core.projection.fit_sampled``): the page names the sample and its fidelity."""
    maps = _maps()
    if config in maps:
        return maps[config]
    from cv_core.features.cache import ArtifactCache
    from cv_core.math.factored import BLOCK_ROWS
    from cv_core.progress import Progress
    from cv_core.projection import DEFAULT_SAMPLE, LatentMap, fit_cached, fit_sampled_cached, latents_digest
    from cv_core.projection.edited import EditCoordinates
    from cv_core.projection.scale import RowStack

    run = cached_run(config)
    cv = run.class_vectors
    c = cv.num_classes
    if run.store is not None:  # a large run: the latents stay in the store's memory-mapped shards
        from cv_core.features.stored import shard_arrays

        pre = RowStack(*shard_arrays(run.store, EVAL_SPLIT, "pre"))
        ft = RowStack(*shard_arrays(run.store, EVAL_SPLIT, "ft"))
    else:
        pre, ft = run.pre[EVAL_SPLIT].features, run.ft[EVAL_SPLIT].features
    n = pre.shape[0]
    if run.store is None and 2 * n <= DEFAULT_SAMPLE:
        latents = torch.cat([pre, ft]).numpy()                                     # (2N, D)
        disk = None if config.dataset == synthetic.NAME else ArtifactCache(None)  # the library's cache folder
        lm, _ = fit_cached(LatentMap(random_state=config.seed), latents, disk, progress, cancel)
        lm.prepare_reprojection()  # the search index of the fitted points, so the first release does not wait
        emb, note, sampled = np.asarray(lm.embedding_, dtype=np.float32), "", False
    else:
        labels = eval_labels(run)
        strata = np.concatenate([labels, labels + c])  # pretrained and fine-tuned, every class in proportion
        both = RowStack(*pre.parts, *ft.parts) if isinstance(pre, RowStack) else RowStack(pre, ft)
        # kept on disk (minutes at 1M): keyed by the store's key, or by the latents' bytes; the synthetic run
        # in memory is not kept, as below
        if run.store is not None:
            source, disk = {"store": run.store.key, "split": EVAL_SPLIT}, ArtifactCache(None)
        elif config.dataset != synthetic.NAME:
            source = {"latents": [latents_digest(pre.numpy()), latents_digest(ft.numpy())]}
            disk = ArtifactCache(None)
        else:
            source, disk = {}, None
        scaled, _ = fit_sampled_cached(both, strata, source, disk, DEFAULT_SAMPLE,
                                       LatentMap(random_state=config.seed), seed=config.seed, progress=progress,
                                       cancel=cancel)
        lm, emb, sampled = scaled.projector, scaled.embedding, scaled.sampled
        note = scaled.describe()
    centroids = np.asarray(lm.reproject(torch.cat([cv.mu_pre, cv.mu_ft]).numpy()), dtype=np.float32)
    if progress is not None:
        progress(Progress("projection", 3, 3, f"tabulating the map coordinates of {n:,} points for live edits"))
    blocks = run.store.iter_blocks(EVAL_SPLIT, "ft") if run.store is not None else \
        ((s, ft[s:s + BLOCK_ROWS]) for s in range(0, n, BLOCK_ROWS))
    coords = EditCoordinates.build(lm.reduction_, cv.kappa, blocks, n)  # None with very many classes
    points = MapPoints(emb[:n], emb[n:], centroids[:c], centroids[c:], lm, note, sampled, coords)
    with _RUNS_LOCK:
        maps[config] = points
    return points


@st.cache_data(show_spinner=False)
def map_extent(config: AppRunConfig) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the fitted map (pretrained and fine-tuned points), padded."""
    from app import charts

    points = cached_map(config)
    return charts.map_extent(np.concatenate([points.pre_xy, points.ft_xy]))
