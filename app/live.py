"""The live loop of the Class-arithmetic screen, without Streamlit (testable, benchmarkable).

One :class:`LiveEditor` is built per computed run; each slider release calls
:meth:`LiveEditor.evaluate`, which scores the gated class-vector edit of the fine-tuned test
latents with the library's factored arithmetic (``cv_core.math.factored``, the same the browser
runs while a slider moves) and ``cv_core.math.metrics``. Only the latents the gate actually
changed are rebuilt and re-projected onto the 2-D map.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from cv_core.math.factored import FactoredScores, Move
from cv_core.editspec import forget_set
from cv_core.math.metrics import Scores, forget_retain, rescore, score
from cv_core.results import ClassVectors, FeatureSet, ZeroShotHead

#: Re-projects edited latents (M, D) float32 of rows (M,) onto the map -> (M, 2) float32.
Reproject = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: Places rows (M,) edited by weights (M, C) @ kappa onto the map from a coordinate table -> (M, 2).
PlaceEdit = Callable[[np.ndarray, torch.Tensor], np.ndarray]


@dataclass(frozen=True)
class LiveResult:
    """What the charts show after one slider release.

    before, after: per-class accuracy (C,) as numpy float arrays;
    edited_classes: classes with a non-zero term; forget/retain: sample-weighted accuracy on the images of the
    forgotten classes (``cv_core.editspec.forget_set``) and on all other images (the one rule,
    ``cv_core.math.metrics.forget_retain``);
    preds: (N,) predicted class after the edit; moved: (N,) bool, the points the edit changed;
    moved_weights: (M, C) float64 their class-vector weights (M = moved.sum()): the edited latent
    is r + moved_weights @ kappa (see :meth:`LiveEditor.moved_latents`).
    """

    before: Scores
    after: Scores
    edited_classes: tuple[int, ...]
    forget: float | None  # None: nothing forgotten (cv_core.math.metrics.forget_retain; retain is then overall)
    retain: float
    retain_before: float
    preds: np.ndarray
    moved: np.ndarray
    moved_weights: torch.Tensor
    forget_before: float | None = None


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed tensor operations on one thread.

    The live loop is many small products (10,000 x 512 by 512 x C). On a busy 2-core machine torch's
    thread pool waits for a descheduled worker on every one of them: measured here, one
    1,000 x 512 product took 22 ms on two threads and 1.5 ms on one, and a whole edit 80 ms against
    10 ms. The setting is process-wide, so a computation running in another session's thread is
    single-threaded for these few milliseconds too; switching costs microseconds.
    """
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LiveEditor:
    """Holds the precomputed parts of a run so that one edit costs a few (N, C) operations.

    Predictions come from :class:`cv_core.math.factored.FactoredScores` (the same arithmetic the
    browser runs on every slider movement): an edit only adds class vectors, so its logits are
    r . w_j + b . (kappa . w_j), and the (N, D) latents are touched only for the points the map
    re-projects.

    test: fine-tuned latents of the evaluation split (N, D); head: the frozen zero-shot head;
    cv: the class vectors; xy: (N, 2) map positions of ``test`` (or None without a map);
    reproject(latents (M, D), index (M,)) -> (M, 2): the map's fast path for moved points.
    """

    def __init__(self, test: FeatureSet, head: ZeroShotHead, cv: ClassVectors,
                 xy: np.ndarray | None = None, reproject: Reproject | None = None):
        self.test, self.head, self.cv = test, head, cv
        self.latents = test.features.float()                                   # (N, D)
        self.factored = FactoredScores.from_latents(self.latents, head.weights, cv)
        self.labels = test.labels
        self.xy = None if xy is None else np.asarray(xy, dtype=np.float32)
        self.reproject, self.place_edit = reproject, None
        self.base_preds = self.factored.predict()
        self.base = score(self.base_preds, self.labels, cv.num_classes)

    @classmethod
    def from_store(cls, store, split: str, head: ZeroShotHead, cv: ClassVectors) -> LiveEditor:
        """The live loop of a feature store's split (``cv_core.features.store.FeatureStore``, fine-tuned
        latents) without loading it: the tables are built one memory-mapped block at a time, and the
        latents of moved points are read from the memory-mapped shards when the map needs them."""
        self = cls.__new__(cls)
        self.test, self.head, self.cv = None, head, cv
        self.latents = _StoreRows(store, split)                                    # (N, D), rows read on demand
        self.factored = FactoredScores.from_store(store, split, "ft", head.weights, cv)
        self.labels = torch.from_numpy(store.labels(split))
        self.xy, self.reproject, self.place_edit = None, None, None
        self.base_preds = self.factored.predict()
        self.base = score(self.base_preds, self.labels, cv.num_classes)
        return self

    def with_map(self, xy: np.ndarray, reproject: Reproject, place_edit: PlaceEdit | None = None) -> LiveEditor:
        """This editor, sharing its tables, that also moves edited points on a map (see ``__init__``).
        place_edit(rows (M,), weights (M, C), info) -> (M, 2): places edited rows without their latents
        (``cv_core.projection.edited``); used instead of ``reproject`` when given."""
        other = copy.copy(self)
        other.xy, other.reproject = np.asarray(xy, dtype=np.float32), reproject
        other.place_edit = place_edit
        return other

    def evaluate(self, coefs: Sequence[float], gamma: float | torch.Tensor | None,
                 moves: Sequence[Move] = ()) -> LiveResult:
        """coefs: (C,) slider values; gamma: one cosine, per-class (C,) thresholds, or None (no gate);
        moves: (source, target, alpha) terms, each gated on its source class."""
        with one_thread():
            return self._evaluate(coefs, gamma, moves)

    def _evaluate(self, coefs, gamma, moves) -> LiveResult:
        a = np.asarray(coefs, dtype=np.float64)
        edited = tuple(sorted({int(c) for c in np.flatnonzero(a)} | {int(s) for s, _, al in moves if al}))
        forgotten = forget_set(a, moves)  # the one rule (cv_core.editspec), as in `python -m cv_core edit`
        rows, weights = self.factored.edit_rows(coefs, gamma, moves)                     # (M,), (M, C)
        preds = self.base_preds.clone()
        after = self.base
        if rows.numel():
            new = self.factored.predict_rows(rows, weights)
            preds.index_copy_(0, rows, new)
            # only the M moved rows change the confusion matrix: O(M + C^2), not a pass over all N
            after = rescore(self.base, self.labels.index_select(0, rows), self.base_preds.index_select(0, rows), new)
        moved = torch.zeros(self.labels.shape[0], dtype=torch.bool)
        moved.index_fill_(0, rows, True)
        forget, retain = forget_retain(after, forgotten)  # sample-weighted; nothing forgotten: None, overall
        forget_before, retain_before = forget_retain(self.base, forgotten)
        return LiveResult(self.base, after, edited, forget, retain, retain_before, preds.numpy(),
                          moved.numpy(), weights, forget_before)

    def moved_latents(self, res: LiveResult) -> torch.Tensor:
        """(M, D) edited latents of the moved points: r + b @ kappa."""
        rows = np.flatnonzero(res.moved)
        lat = self.latents[torch.from_numpy(rows)] if isinstance(self.latents, torch.Tensor) else self.latents[rows]
        # float32, like the latents: the float64 version took 1.7-4.8 s for 100,000 rows
        return torch.addmm(torch.as_tensor(lat, dtype=torch.float32), res.moved_weights.float(), self.cv.kappa.float())

    def positions(self, res: LiveResult, info: dict | None = None) -> np.ndarray | None:
        """Map positions (N, 2) after the edit: moved points re-projected, the others unchanged.
        info: a dict passed to the map's ``reproject`` (what its neighbour search did), if given."""
        if self.xy is None:
            return None
        xy = self.xy.copy()
        if res.moved.any() and self.reproject is not None:
            index = np.flatnonzero(res.moved)
            extra = {} if info is None else {"info": info}
            with one_thread():  # the k-NN search of the re-projection is the same kind of work
                if self.place_edit is not None:
                    xy[index] = self.place_edit(index, res.moved_weights, **extra)
                else:
                    xy[index] = self.reproject(self.moved_latents(res).numpy(), index, **extra)
        return xy

class _StoreRows:
    """The fine-tuned latents of a store's split, read by row indices from the memory-mapped shards."""

    def __init__(self, store, split: str):
        self.store, self.split = store, split
        self.shape = (store.num_rows(split), store.dim)

    def __getitem__(self, rows) -> np.ndarray:
        return self.store.features(self.split, "ft", np.asarray(rows))


def preset_forget(num_classes: int, target: int, strength: float = 1.0) -> list[float]:
    """Forget class ``target``: coefficient -strength on it, 0 elsewhere."""
    coefs = [0.0] * num_classes
    coefs[target] = -float(strength)
    return coefs


def preset_move(source: int, target: int, alpha: float) -> list[Move]:
    """Move class ``source`` towards ``target`` (the paper: the prediction flips near alpha 0.5; where it
    flips on a run is measured per pair, ``cv_core.edits.properties.interpolation``)."""
    return [(int(source), int(target), float(alpha))]


def preset_shift(num_classes: int, alpha: float = 1.0) -> list[Move]:
    """Sequential shift 0->1->...->C-1->0: every class moves to the next one."""
    return [(c, (c + 1) % num_classes, float(alpha)) for c in range(num_classes)]
