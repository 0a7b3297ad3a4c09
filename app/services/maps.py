"""The shared 2-D map of a run: fitting it (worker thread), keeping it, its extent; UMAP warm-up."""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import synthetic
from app.state import AppRunConfig

from .runs import _RUNS_LOCK, EVAL_SPLIT, cached_run


@st.cache_resource(show_spinner=False)
def start_umap_warm_up() -> threading.Thread:
    """Compile UMAP's numba code once per server process, in the background, at start-up."""
    from cv_core.projection import warm_up

    thread = threading.Thread(target=warm_up, name="cvs-umap-warm-up", daemon=True)
    thread.start()
    return thread


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


@st.cache_resource(show_spinner=False)
def _maps() -> dict:
    """Fitted maps of this server process, keyed by AppRunConfig."""
    return {}


def cached_map(config: AppRunConfig) -> MapPoints | None:
    return _maps().get(config)


def compute_map(config: AppRunConfig, progress: Callable | None = None, cancel: Callable | None = None) -> MapPoints:
    """Fit one UMAP on the pretrained and fine-tuned test latents together. Worker thread: no Streamlit."""
    maps = _maps()
    if config in maps:
        return maps[config]
    from cv_core.features.cache import ArtifactCache
    from cv_core.projection import LatentMap, fit_cached

    run = cached_run(config)
    pre, ft = run.pre[EVAL_SPLIT].features, run.ft[EVAL_SPLIT].features
    latents = torch.cat([pre, ft]).numpy()                                         # (2N, D)
    disk = None if config.dataset == synthetic.NAME else ArtifactCache(None)      # the library's cache folder
    lm, _ = fit_cached(LatentMap(random_state=config.seed), latents, disk, progress, cancel)
    lm.prepare_reprojection()  # the search index of the fitted points, so the first release does not wait
    emb = np.asarray(lm.embedding_, dtype=np.float32)
    cv = run.class_vectors
    centroids = np.asarray(lm.reproject(torch.cat([cv.mu_pre, cv.mu_ft]).numpy()), dtype=np.float32)
    n, c = pre.shape[0], cv.num_classes
    points = MapPoints(emb[:n], emb[n:], centroids[:c], centroids[c:], lm)
    with _RUNS_LOCK:
        maps[config] = points
    return points


@st.cache_data(show_spinner=False)
def map_extent(config: AppRunConfig) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the fitted map (pretrained and fine-tuned points), padded."""
    from app import charts

    points = cached_map(config)
    return charts.map_extent(np.concatenate([points.pre_xy, points.ft_xy]))
