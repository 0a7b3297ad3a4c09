"""The shared 2-D map of latents (UMAP) and the fast re-projection of edited latents onto it.

``LatentMap`` follows the umap-learn estimator protocol: settings in ``__init__``, ``fit`` returns
self, fitted state in trailing-underscore attributes, ``NotFittedError``-style message before fit.

Fit: exact k nearest neighbours on the reduced latents (see ``geometry``), handed to umap-learn as a
precomputed graph, so no approximate-neighbour index has to be built or compiled.
Re-projection: a new latent is placed where umap-learn's ``transform`` starts it: the membership-
weighted mean of the map positions of its k nearest fitted latents, then a few of transform's layout
epochs on that exact neighbour graph (umap-learn's own numba routine). It skips the approximate
neighbour search and graph building that make ``transform`` slow; latents equal to a fitted latent
keep its position.
"""
from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from ..errors import InvalidInputError
from ..progress import CancelFn, Progress, ProgressFn, check_cancel
from .geometry import METRICS, Reduction, as_latents, fit_reduction, knn, membership_weight_pair
from .ann import APPROX_MIN_ROWS, IVFIndex, check_search
from .ann import available as ann_available
from .index import MIN_POINTS, ClusterIndex, indexed_knn
from .refine import refine_layout

STAGE = "projection"
_INDEX_LOCK = threading.Lock()


class LatentMap:
    """A 2-D UMAP map of latents (N, D) with fast re-projection of edited latents.

    n_neighbors: neighbourhood size of the map and of re-projection (>= 2)
    min_dist: UMAP's minimum distance in the map, in [0, 3)
    metric: "cosine" (default, as for CLIP latents) or "euclidean"
    random_state: seed of the layout (None: faster, parallel, not reproducible)
    n_epochs: layout optimisation epochs
    reduce_dim: number of principal directions kept before neighbour search (None: keep all)
    refine: layout epochs run on re-projected points against the fixed map ("auto": n_epochs // 3, as
        umap's transform; default 20: most of transform's agreement at a fraction of its epochs; 0: only
        the neighbour-weighted mean, which lands between clusters, see docs/benchmarks.md)

    Fitted attributes: ``embedding_`` (N, 2) float32, ``latents_`` (N, D) float32,
    ``reduction_`` (Reduction), ``reduced_`` (N, d) float32.
    """

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                 random_state: int | None = 0, n_epochs: int = 200, reduce_dim: int | None = 64,
                 refine: int | str = 20):
        self.n_neighbors, self.min_dist, self.metric = n_neighbors, min_dist, metric
        self.random_state, self.n_epochs, self.reduce_dim = random_state, n_epochs, reduce_dim
        self.refine = refine
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise InvalidInputError(f"n_neighbors must be an integer >= 2, got {self.n_neighbors!r}")
        if not 0.0 <= float(self.min_dist) < 3.0:
            raise InvalidInputError(f"min_dist must be in [0, 3), got {self.min_dist!r}")
        if self.metric not in METRICS:
            raise InvalidInputError(f"metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not isinstance(self.n_epochs, int) or self.n_epochs < 1:
            raise InvalidInputError(f"n_epochs must be a positive integer, got {self.n_epochs!r}")
        if self.reduce_dim is not None and (not isinstance(self.reduce_dim, int) or self.reduce_dim < 2):
            raise InvalidInputError(f"reduce_dim must be None or an integer >= 2, got {self.reduce_dim!r}")
        if self.refine != "auto" and (not isinstance(self.refine, int) or self.refine < 0):
            raise InvalidInputError(f"refine must be 'auto' or an integer >= 0, got {self.refine!r}")
        if self.random_state is not None and not isinstance(self.random_state, int):
            raise InvalidInputError(f"random_state must be None or an integer, got {self.random_state!r}")

    def settings(self) -> dict:
        """The settings that determine the map (part of its cache key)."""
        return {"n_neighbors": self.n_neighbors, "min_dist": float(self.min_dist), "metric": self.metric,
                "random_state": self.random_state, "n_epochs": self.n_epochs, "reduce_dim": self.reduce_dim}

    def __repr__(self) -> str:
        return "LatentMap(" + ", ".join(f"{k}={v!r}" for k, v in self.settings().items()) + ")"

    # ----------------------------------------------------------------------------------------- fit
    def fit(self, latents, progress: ProgressFn = None, cancel: CancelFn = None) -> LatentMap:
        """Fit the map on latents (N, D) (torch or numpy). Sets ``embedding_`` (N, 2). Returns self."""
        x = as_latents(latents)
        if x.shape[0] <= self.n_neighbors:
            raise InvalidInputError(f"a map needs more than n_neighbors={self.n_neighbors} latents, "
                                    f"got {x.shape[0]}: lower n_neighbors or add samples")
        _emit(progress, 0, "reducing the latents")
        reduction = fit_reduction(x, self.metric, self.reduce_dim)
        reduced = reduction(x)
        check_cancel(cancel, "the map")
        _emit(progress, 1, f"finding {self.n_neighbors} nearest neighbours of {x.shape[0]} latents")
        idx, dist = self._self_knn(reduced)
        check_cancel(cancel, "the map")
        _emit(progress, 2, "laying out the map (the first map after an install also compiles UMAP's code, ~5-10 s)")
        embedding = self._layout(reduced, idx, dist)
        _emit(progress, 3, "map ready")
        return self._set_fitted(x, embedding, reduction, reduced)

    def _self_knn(self, reduced: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # umap-learn expects each point's own index first (distance 0) in a precomputed graph.
        idx, dist = knn(reduced, reduced, self.n_neighbors - 1, self.metric, exclude_self=True)
        own = np.arange(reduced.shape[0], dtype=np.int32)[:, None]
        return np.hstack([own, idx]), np.hstack([np.zeros_like(own, dtype=np.float32), dist])

    def _layout(self, reduced: np.ndarray, idx: np.ndarray, dist: np.ndarray) -> np.ndarray:
        from .numba_cache import import_umap

        umap = import_umap()  # deferred: importing umap costs seconds (compiled code cached on disk)

        model = umap.UMAP(n_neighbors=self.n_neighbors, min_dist=self.min_dist, metric=self.metric,
                          random_state=self.random_state, n_epochs=self.n_epochs,
                          precomputed_knn=(idx, dist), n_jobs=1 if self.random_state is not None else -1)
        with warnings.catch_warnings():  # "n_jobs overridden by random_state", "no search index"
            warnings.simplefilter("ignore", UserWarning)
            return np.ascontiguousarray(model.fit_transform(reduced), dtype=np.float32)

    def fit_embedding(self, latents, embedding) -> LatentMap:
        """Adopt an embedding (N, 2) computed elsewhere (the cache, or a reference umap-learn fit) for
        latents (N, D): prepares the re-projection state without running UMAP. Returns self."""
        x = as_latents(latents)
        e = as_latents(embedding, "embedding")
        if e.shape != (x.shape[0], 2):
            raise InvalidInputError(f"embedding must be ({x.shape[0]}, 2) for {x.shape[0]} latents, got {e.shape}")
        reduction = fit_reduction(x, self.metric, self.reduce_dim)
        return self._set_fitted(x, e, reduction, reduction(x))

    def _set_fitted(self, x, embedding, reduction: Reduction, reduced) -> LatentMap:
        self.latents_, self.embedding_ = x, embedding
        self.reduction_, self.reduced_ = reduction, np.ascontiguousarray(reduced)
        return self

    # ------------------------------------------------------------------------------ re-projection
    def _check_fitted(self) -> None:
        if not hasattr(self, "embedding_"):
            raise InvalidInputError("this LatentMap is not fitted yet: call fit(latents) (or fit_embedding) "
                                    "before transform or reproject")

    def transform(self, latents) -> np.ndarray:
        """Place new latents (M, D) on the fitted map -> (M, 2) float32 (the fast re-projection)."""
        return self.reproject(latents)

    def reproject(self, latents, index=None, search: str = "auto", info: dict | None = None,
                  epochs: int | None = None) -> np.ndarray:
        """Positions (M, 2) float32 of latents (M, D) on the fitted map.

        index: optional (M,) indices of the fitted latents these rows were edited from. Rows equal to
        their fitted latent keep its position without any search: only edited rows are computed.
        Without index, a row equal to some fitted latent still gets that latent's position.
        search: "exact", "approximate" (faiss IVF, ``ann``) or "auto" (approximate from
        ``ann.APPROX_MIN_ROWS`` rows to place on a map of at least ``index.MIN_POINTS`` fitted points).
        info: a dict to receive what the search did: {"search": "exact" | "approximate", "rows": M,
        "approx": ann.ApproxSearch (approximate only, with its measured recall), "epochs": layout epochs run}.
        epochs: layout epochs for these rows (None: the map's ``refine``; see :func:`release_epochs`).
        """
        check_search(search)
        epochs = self._check_epochs(epochs)
        self._check_fitted()
        x = as_latents(latents, dim=self.latents_.shape[1])
        out = np.empty((x.shape[0], 2), dtype=np.float32)
        todo = np.arange(x.shape[0])
        if index is not None:
            index = self._check_index(index, x.shape[0])
            same = (x == self.latents_[index]).all(1)
            out[same] = self.embedding_[index[same]]
            todo = np.flatnonzero(~same)
        if info is not None:
            info.update(search="exact", rows=int(todo.size), epochs=epochs if todo.size else 0)
        if todo.size:
            out[todo] = self._place(self.reduction_(x[todo]), search, info, epochs)
        return out

    def place_reduced(self, reduced, search: str = "auto", info: dict | None = None,
                      epochs: int | None = None) -> np.ndarray:
        """Positions (M, 2) float32 of points given by their reduced coordinates (M, d) (``reduction_``
        applied already, e.g. by ``edited.EditCoordinates`` without reading the latents). search, info and
        epochs as for :meth:`reproject`."""
        check_search(search)
        self._check_fitted()
        epochs = self._check_epochs(epochs)
        r = as_latents(reduced, "reduced coordinates", dim=self.reduced_.shape[1])
        if info is not None:
            info.update(search="exact", rows=int(r.shape[0]), epochs=epochs)
        return self._place(r, search, info, epochs)

    def refine_epochs(self) -> int:
        """Layout epochs a placement runs by default (``refine``; "auto" = n_epochs // 3, as transform)."""
        return self.n_epochs // 3 if self.refine == "auto" else int(self.refine)

    def _check_epochs(self, epochs) -> int:
        if epochs is None:
            return self.refine_epochs()
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
            raise InvalidInputError(f"epochs must be None or an integer >= 0, got {epochs!r}")
        return int(epochs)

    def _check_index(self, index, m: int) -> np.ndarray:
        index = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        if index.shape != (m,) or not np.issubdtype(index.dtype, np.integer):
            raise InvalidInputError(f"index must be ({m},) integers, got shape {index.shape} of {index.dtype}")
        if index.size and (index.min() < 0 or index.max() >= self.latents_.shape[0]):
            raise InvalidInputError(f"index values must lie in [0, {self.latents_.shape[0]}), "
                                    f"got [{index.min()}, {index.max()}]")
        return index.astype(np.int64)

    def prepare_reprojection(self) -> LatentMap:
        """Build the neighbour-search index of the fitted points now (k-means, well under a second for
        20,000 points) instead of at the first re-projection. Returns self."""
        self._check_fitted()
        self._search_index()
        return self

    def _search_index(self) -> ClusterIndex | None:
        """The cluster index of the fitted points (None below ``index.MIN_POINTS``), built once."""
        if self.reduced_.shape[0] < MIN_POINTS:
            return None
        with _INDEX_LOCK:  # maps are shared by the app's sessions: build it once
            if getattr(self, "_index", None) is None:
                self._index = ClusterIndex.build(self.reduced_, seed=self.random_state or 0)
            return self._index

    def _approx_index(self) -> IVFIndex:
        """The faiss IVF index of the fitted points (``ann``), built once."""
        with _INDEX_LOCK:
            if getattr(self, "_ivf", None) is None:
                self._ivf = IVFIndex(self.reduced_, seed=self.random_state or 0)
            return self._ivf

    def _place(self, reduced: np.ndarray, search: str, info: dict | None, epochs: int) -> np.ndarray:
        """reduced (M, d) -> (M, 2): membership-weighted mean of the k nearest fitted positions, then
        ``epochs`` of transform's layout epochs against the fixed map. The exact neighbour search skips
        the clusters that cannot hold a neighbour (see ``index``); the approximate one (``ann``, for many
        points at once) measures its recall."""
        approx = search == "approximate" or (search == "auto" and reduced.shape[0] >= APPROX_MIN_ROWS
                                             and self.reduced_.shape[0] >= MIN_POINTS and ann_available())
        if approx:
            idx, dist, done = self._approx_index().search(reduced, self.n_neighbors, self.metric,
                                                          seed=self.random_state or 0)
            if info is not None:
                info.update(search="approximate", approx=done)
        else:
            idx, dist = indexed_knn(reduced, self.reduced_, self.n_neighbors, self.metric, self._search_index())
        raw, weights = membership_weight_pair(dist)
        pos = np.einsum("mk,mkj->mj", weights, self.embedding_[idx])
        pos = refine_layout(pos, self.embedding_, idx, raw, self.min_dist, epochs, self.random_state)
        exact = dist[:, 0] <= 1e-6  # numerically identical to a fitted latent: take its position
        pos[exact] = self.embedding_[idx[exact, 0]]
        return pos.astype(np.float32)


def _emit(progress: ProgressFn, step: int, message: str) -> None:
    if progress is not None:
        progress(Progress(STAGE, step, 3, message))


#: Row-epochs (rows placed x layout epochs) a release may spend. Measured on this project's 2-core VM, one
#: thread, 100,000 rows of a class-3 forget on the 1M synthetic run (2026-12-07): an epoch costs 0.07 s
#: (strength 1) to 0.30 s (strength 2) - umap's negative sampling, so it depends on the placed weights -
#: and 20 epochs 2.6-5.6 s. The earlier budget of 400,000 (4 epochs at 100,000 rows) was set from the
#: cheaper case (0.15 s) and cost 0.78 s at strength 2. This one bounds the epochs of a release at ~0.3 s.
RELEASE_ROW_EPOCHS = 100_000


def release_epochs(rows: int, refine: int, budget: int = RELEASE_ROW_EPOCHS) -> int:
    """Layout epochs for placing ``rows`` edited points at once after a slider release: the map's
    ``refine`` epochs while rows x refine fits ``budget`` (5,000 rows at 20 epochs), fewer above it
    (10,000 rows: 10), none from 50,001 rows. One epoch is none: in umap's schedule an edge is first
    sampled after its epochs_per_sample (max weight / weight >= 1) epochs, so the first epoch moves nothing
    (measured: 100,000 points, 3 ms, no point moved). Without epochs a point sits at the
    membership-weighted mean of its nearest fitted positions: in the same latent cluster as with them
    (docs/benchmarks.md, "Which one is right?" and part 8), spread less like umap's ``transform``."""
    if rows < 0 or refine < 0 or budget < 0:
        raise InvalidInputError(f"rows, refine and budget must be >= 0, got {rows}, {refine}, {budget}")
    epochs = refine if rows == 0 else min(refine, budget // rows)
    return 0 if epochs == 1 else epochs


def placement_text(info: dict, refine: int) -> str:
    """One sentence on how a placement's points were placed, from the ``info`` dict that
    :meth:`LatentMap.reproject` / :meth:`LatentMap.place_reduced` filled; refine: the map's full epochs.
    Empty when nothing was placed or the placement was the ordinary one (exact search, all epochs)."""
    parts = []
    if info.get("approx") is not None:
        parts.append(info["approx"].describe())
    epochs = info.get("epochs")
    if info.get("rows") and epochs is not None and epochs < refine:
        parts.append(f"{epochs} of {refine} layout epochs (a release moving {info['rows']:,} points gets "
                     f"{RELEASE_ROW_EPOCHS:,} row-epochs; fewer epochs leave points nearer the weighted mean "
                     "of their neighbours' positions)")
    return "; ".join(parts)

