"""Maps of a whole split at dataset scale: UMAP fitted on a stratified sample, the rest placed.

UMAP's fit costs grow with N (50k x 512: ~40 s on 2 cores; 1M: out of reach on a CPU), while placing
a point on a fitted map costs a k-NN search among the fitted points and a few layout epochs
(``LatentMap.reproject``: exact neighbours, umap's own layout routine). :func:`fit_sampled` fits on a
stratified sample (every class in proportion, at least one point each) and places every other point
in batches, so a million points take one sample fit plus a linear pass.

Nothing is capped silently: the result names its sample (``sample``, ``describe()``) and carries a
fidelity figure computed from the run itself (:class:`Fidelity`): for a random subset of placed
points, the share of each one's k nearest latent neighbours (among the fitted sample) that are also
among its k nearest map neighbours; the same figure for fitted points (UMAP's own level on this
data) is reported beside it. docs/benchmarks.md part 2 compares the same exact-neighbour placement with
umap-learn's ``transform`` at 10k points; part 8 measures fit, placement and fidelity at 100k and 1M
(placement against ``transform`` is not measured there).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from ..progress import CancelFn, Progress, ProgressFn, check_cancel
from .geometry import knn
from .ann import APPROX_MIN_ROWS, ApproxSearch, check_search
from .ann import available as ann_available
from .latent_map import LatentMap

STAGE = "projection:scale"
#: Points UMAP is fitted on when a split is larger (about 15-40 s on 2 cores).
DEFAULT_SAMPLE = 20_000
#: Rows placed per re-projection call (bounds the memory of one k-NN block).
PLACE_BATCH = 32_768


def stratified_sample(labels, size: int, seed: int = 0) -> np.ndarray:
    """Sorted (S,) int64 row indices: ``size`` rows drawn without replacement, each class in proportion
    to its count (largest remainders), every non-empty class at least once when ``size`` allows.
    All rows when ``size >= N``."""
    y = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
        raise InvalidInputError(f"labels must be a non-empty (N,) integer array, got shape {y.shape} of {y.dtype}")
    n = y.size
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise InvalidInputError(f"sample size must be a positive integer, got {size!r}")
    if size >= n:
        return np.arange(n, dtype=np.int64)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    share = counts * (size / n)
    take = np.floor(share).astype(np.int64)
    if size >= classes.size:
        take = np.maximum(take, 1)
    left = size - int(take.sum())
    if left > 0:  # largest remainders first, among classes with rows to spare
        order = np.argsort(-(share - np.floor(share)), kind="stable")
        for c in order:
            if left == 0:
                break
            if take[c] < counts[c]:
                take[c] += 1
                left -= 1
    elif left < 0:  # the at-least-one rule overshot: trim the largest allocations
        for c in np.argsort(-take, kind="stable"):
            while left < 0 and take[c] > 1:
                take[c] -= 1
                left += 1
    rng = np.random.default_rng(seed)
    order = np.argsort(inverse, kind="stable")                     # rows grouped by class
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picked = [rng.choice(order[s:s + c], size=t, replace=False) for s, c, t in zip(starts, counts, take) if t]
    return np.sort(np.concatenate(picked)).astype(np.int64)


@dataclass(frozen=True)
class Fidelity:
    """How well the map keeps latent neighbourhoods, measured on this run.

    placed: mean share of a placed point's k nearest latent neighbours among the fitted sample that are
    also among its k nearest map neighbours in the sample (None when every point was fitted);
    fitted: the same for fitted points (their own entry excluded): UMAP's level on this data;
    k: neighbourhood size; checked: how many points of each kind were measured.
    """

    placed: float | None
    fitted: float
    k: int
    checked: int

    @property
    def ratio(self) -> float | None:
        """placed / fitted: 1.0 = placed points keep their neighbourhoods as well as fitted ones."""
        return None if self.placed is None or self.fitted <= 0 else self.placed / self.fitted


@dataclass(frozen=True)
class ScaleMap:
    """A map of N points. embedding: (N, 2) float32; sample: (S,) int64 rows UMAP was fitted on
    (ascending); projector: the LatentMap fitted on the sample (re-projects edited latents);
    fidelity: see :class:`Fidelity`; fit_s / place_s: seconds of the sample fit and of placing the rest."""

    embedding: np.ndarray
    sample: np.ndarray
    projector: LatentMap
    fidelity: Fidelity
    fit_s: float
    place_s: float
    search: ApproxSearch | None = None  # the placement's approximate search (recall measured), None: exact
    cached: bool = False  # restored from the disk cache (``map_cache.fit_sampled_cached``): fit_s/place_s are the original's

    @property
    def n_points(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def sample_size(self) -> int:
        return int(self.sample.size)

    @property
    def sampled(self) -> bool:
        return self.sample_size < self.n_points

    def describe(self) -> str:
        """One sentence for the page: what was fitted, what was placed, and how faithfully."""
        f = self.fidelity
        fitted = f"{f.fitted:.2f} for fitted points"
        if not self.sampled:
            return (f"UMAP fitted on all {self.n_points:,} points. Neighbourhood fidelity@{f.k}: {fitted} "
                    f"({f.checked:,} checked).")
        how = "exact-neighbour re-projection" if self.search is None else \
            f"re-projection with {self.search.describe()}"
        return (f"UMAP fitted on a stratified sample of {self.sample_size:,} of {self.n_points:,} points "
                f"({self.fit_s:.1f} s); the other {self.n_points - self.sample_size:,} placed by {how} "
                f"({self.place_s:.1f} s). Neighbourhood fidelity@{f.k}: {f.placed:.2f} for placed "
                f"points, {fitted} ({f.checked:,} of each checked)."
                + (" Loaded from the cache (the times are those of the original fit)." if self.cached else ""))


class RowStack:
    """Several (N_i, D) arrays read as one (sum N_i, D) array without copying them (row indices and
    slices, as :func:`fit_sampled` reads): e.g. the pretrained and fine-tuned latents of one map."""

    def __init__(self, *parts):
        self.parts = [p.numpy() if isinstance(p, torch.Tensor) else p for p in parts]
        dims = {p.shape[1] for p in self.parts}
        if len(dims) != 1:
            raise InvalidInputError(f"stacked latents must share one dimension, got {sorted(dims)}")
        self.starts = np.cumsum([0] + [p.shape[0] for p in self.parts])
        self.shape = (int(self.starts[-1]), dims.pop())

    def __getitem__(self, key):
        if isinstance(key, slice):
            key = np.arange(*key.indices(self.shape[0]))
        idx = np.asarray(key, dtype=np.int64)
        out = np.empty((idx.size, self.shape[1]), dtype=np.float32)
        part = np.searchsorted(self.starts, idx, side="right") - 1
        for k, p in enumerate(self.parts):
            sel = np.flatnonzero(part == k)
            if sel.size:
                out[sel] = p[idx[sel] - self.starts[k]]
        return out


def _rows(latents, idx: np.ndarray) -> np.ndarray:
    block = latents[torch.from_numpy(idx)] if isinstance(latents, torch.Tensor) else latents[idx]
    return np.asarray(block.numpy() if isinstance(block, torch.Tensor) else block, dtype=np.float32)


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float((a[:, :, None] == b[:, None, :]).any(2).sum(1).mean() / a.shape[1])


def _neighbours(queries, points, k, metric, own=None) -> np.ndarray:
    """(M, k) neighbour indices; own: (M,) index of each query among the points, dropped."""
    if own is None:
        return knn(queries, points, k, metric)[0]
    idx = knn(queries, points, k + 1, metric)[0]
    keep = idx != own[:, None]
    keep[keep.sum(1) > k, -1] = False  # own index absent (a duplicate took its place): drop the farthest
    return idx[keep].reshape(len(idx), k)


def placement_fidelity(projector: LatentMap, latents: np.ndarray, positions: np.ndarray, k: int = 15,
                       fitted_rows: np.ndarray | None = None) -> float:
    """Mean share of each point's k nearest latent neighbours among the fitted points that are among its
    k nearest map neighbours among the fitted points. latents (M, D), positions (M, 2); fitted_rows:
    (M,) the points' own indices when they are fitted points (excluded from their own neighbours)."""
    red = projector.reduction_(np.ascontiguousarray(latents, dtype=np.float32))
    a = _neighbours(red, projector.reduced_, k, projector.metric, fitted_rows)
    b = _neighbours(np.ascontiguousarray(positions, dtype=np.float32), projector.embedding_, k, "euclidean",
                    fitted_rows)
    return _overlap(a, b)


def fit_sampled(latents, labels, sample_size: int = DEFAULT_SAMPLE, latent_map: LatentMap | None = None,
                seed: int = 0, batch: int = PLACE_BATCH, fidelity_points: int = 2000, fidelity_k: int = 15,
                progress: ProgressFn = None, cancel: CancelFn = None, search: str = "auto") -> ScaleMap:
    """Fit ``latent_map`` (default ``LatentMap(random_state=seed)``) on a stratified sample of the rows of
    latents (N, D) and place the others.

    latents: a numpy array, memory map or tensor (read by row indices and slices, so a memory-mapped
    split is never loaded whole); labels: (N,) classes, for the stratification.
    search: the placement's neighbour search (``LatentMap.reproject``): "auto" searches approximately
    (faiss IVF, recall measured, ``ScaleMap.search``) when at least ``ann.APPROX_MIN_ROWS`` points are placed.
    """
    n = int(latents.shape[0])
    y = np.asarray(labels.numpy() if isinstance(labels, torch.Tensor) else labels)
    if y.shape != (n,):
        raise InvalidInputError(f"labels must be ({n},) for {n} latents, got {y.shape}")
    if not isinstance(batch, int) or batch < 1:
        raise InvalidInputError(f"batch must be a positive integer, got {batch!r}")
    lm = latent_map if latent_map is not None else LatentMap(random_state=seed)
    sample = stratified_sample(y, sample_size, seed)
    steps = 3
    _emit(progress, 0, steps, f"fitting UMAP on a stratified sample of {sample.size:,} of {n:,} points")
    t0 = time.perf_counter()
    lm.fit(_rows(latents, sample), cancel=cancel)
    lm.prepare_reprojection()
    fit_s = time.perf_counter() - t0
    check_cancel(cancel, "the map")
    embedding = np.empty((n, 2), dtype=np.float32)
    embedding[sample] = lm.embedding_
    in_sample = np.zeros(n, dtype=bool)
    in_sample[sample] = True
    rest = np.flatnonzero(~in_sample)
    _emit(progress, 1, steps, f"placing the other {rest.size:,} points")
    t1 = time.perf_counter()
    check_search(search)
    mode = search if search != "auto" else \
        "approximate" if rest.size >= APPROX_MIN_ROWS and ann_available() else "exact"
    searched = []  # the approximate searches (one per block placed approximately)
    for s in range(0, rest.size, batch):
        rows = rest[s:s + batch]
        # contiguous slices read a memory map sequentially; fancy indexing inside the slice is in memory
        block = _rows(latents[int(rows[0]):int(rows[-1]) + 1], rows - rows[0])
        info: dict = {}
        embedding[rows] = lm.reproject(block, search=mode, info=info)
        if "approx" in info:
            searched.append(info["approx"])
        check_cancel(cancel, "the map")
        _emit(progress, 1, steps, f"placed {min(s + batch, rest.size):,} of {rest.size:,} points")
    place_s = time.perf_counter() - t1
    _emit(progress, 2, steps, "measuring the map's fidelity")
    rng = np.random.default_rng(seed + 1)
    m = min(fidelity_points, sample.size)
    fit_check = np.sort(rng.choice(sample.size, size=m, replace=False))
    fitted = placement_fidelity(lm, lm.latents_[fit_check], lm.embedding_[fit_check], fidelity_k, fit_check)
    placed = None
    if rest.size:
        chk = np.sort(rng.choice(rest, size=min(fidelity_points, rest.size), replace=False))
        placed = placement_fidelity(lm, _rows(latents, chk), embedding[chk], fidelity_k)
    if not np.isfinite(embedding).all():
        raise InvalidInputError("the map placed some points at non-finite positions; check the latents for "
                                "duplicated or degenerate rows")
    _emit(progress, 3, steps, "map ready")
    return ScaleMap(embedding, sample, lm, Fidelity(placed, fitted, fidelity_k, m), fit_s, place_s,
                    combine_searches(searched))


def combine_searches(searches: list[ApproxSearch]) -> ApproxSearch | None:
    """One summary of several approximate searches: rows summed, recall weighted by the points checked."""
    if not searches:
        return None
    checked = sum(s.checked for s in searches)
    recall = sum(s.recall * s.checked for s in searches) / max(checked, 1)
    return ApproxSearch(sum(s.rows for s in searches), searches[0].lists, searches[0].probes, recall, checked)


def _emit(progress: ProgressFn, step: int, total: int, message: str) -> None:
    if progress is not None:
        progress(Progress(STAGE, step, total, message))


def sample_for_browser(n: int, limit: int, labels=None, seed: int = 0) -> np.ndarray | None:
    """Rows to send to a browser that holds at most ``limit`` points: None when all ``n`` fit, else a
    stratified (with labels) or uniform sample of ``limit`` rows, ascending."""
    if n <= limit:
        return None
    if labels is not None:
        return stratified_sample(labels, limit, seed)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=limit, replace=False)).astype(np.int64)


__all__ = ["DEFAULT_SAMPLE", "Fidelity", "RowStack", "ScaleMap", "fit_sampled", "placement_fidelity", "sample_for_browser",
           "stratified_sample"]
