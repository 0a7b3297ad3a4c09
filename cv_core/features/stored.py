"""A run's latents read from a feature store block by block: class vectors, accuracies, lazy splits.

The pipeline keeps a store-backed run's features on disk. Class vectors come from float64 per-class
sums (one division at the end); accuracies from predictions made one memory-mapped block at a time;
``StoreSplits`` hands out a whole split as a FeatureSet only to callers that ask for it (the app's map,
the report), and loads each split at most once.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import torch

from ..errors import DatasetError
from ..math.class_vectors import class_means, reference_index
from ..math.metrics import Scores, score
from ..results import ClassVectors, FeatureSet, ZeroShotHead
from .store import FeatureStore

#: FeatureSet.encoder names of the store's encoders.
ENCODER_NAMES = {"pre": "pretrained", "ft": "finetuned"}


class StoreSplits(Mapping):
    """split -> FeatureSet of one encoder, loaded from the store on first access (then kept)."""

    def __init__(self, store: FeatureStore, encoder: str):
        self.store, self.encoder, self._loaded = store, encoder, {}

    def __getitem__(self, split: str) -> FeatureSet:
        if split not in self.store.splits:
            raise KeyError(split)
        if split not in self._loaded:
            feats = torch.from_numpy(self.store.features(split, self.encoder))
            labels = torch.from_numpy(self.store.labels(split))
            self._loaded[split] = FeatureSet(feats, labels, self.store.class_names, split,
                                             ENCODER_NAMES[self.encoder])
        return self._loaded[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.splits)

    def __len__(self) -> int:
        return len(self.store.splits)

    def __repr__(self) -> str:
        return f"StoreSplits({self.store.root}, {self.encoder!r}, splits={list(self.store.splits)})"


def blocks(source: FeatureSet | FeatureStore, split: str, encoder: str = "ft",
           block_rows: int = 65536) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(features (n, D) float32, labels (n,) int64) blocks of a split, from a store or one FeatureSet."""
    if isinstance(source, FeatureSet):
        yield source.features, source.labels
        return
    labels = torch.from_numpy(source.labels(split))
    for start, block in source.iter_blocks(split, encoder, block_rows):
        yield torch.from_numpy(block), labels[start:start + len(block)]


def class_vectors_from_store(store: FeatureStore, per_class: int | None = None, seed: int = 0,
                             split: str = "train") -> ClassVectors:
    """Class vectors of the store's ``split``; all references: float64 sums and counts reduced block by
    block, divided once; ``per_class`` references: only those rows are read (as compute_class_vectors)."""
    c = len(store.class_names)
    labels = torch.from_numpy(store.labels(split))
    if per_class is not None:
        idx = reference_index(labels, c, per_class, seed)
        pre = torch.from_numpy(store.features(split, "pre", idx.numpy()))
        ft = torch.from_numpy(store.features(split, "ft", idx.numpy()))
        mu_pre, mu_ft = class_means(pre, labels[idx], c), class_means(ft, labels[idx], c)
        return ClassVectors(mu_ft - mu_pre, mu_pre, mu_ft, store.class_names, torch.bincount(labels[idx], minlength=c))
    sums_pre, counts = store.class_sums(split, "pre")
    sums_ft, _ = store.class_sums(split, "ft")
    if (counts == 0).any():
        raise DatasetError(f"classes {np.flatnonzero(counts == 0).tolist()} have no samples, so their mean latent "
                           "is undefined; use more images per class")
    n = counts[:, None].astype(np.float64)
    mu_pre, mu_ft = sums_pre / n, sums_ft / n
    return ClassVectors(torch.from_numpy(mu_ft - mu_pre).float(), torch.from_numpy(mu_pre).float(),
                        torch.from_numpy(mu_ft).float(), store.class_names, torch.from_numpy(counts))


def predictions(head: ZeroShotHead, source: FeatureSet | FeatureStore, split: str, encoder: str = "ft") -> torch.Tensor:
    """(N,) int64 predictions of the head, computed block by block."""
    return torch.cat([head.predict(f) for f, _ in blocks(source, split, encoder)])


def shard_arrays(store: FeatureStore, split: str, encoder: str) -> list[np.ndarray]:
    """The memory-mapped (n_i, D) shards of one split and encoder, in row order (nothing is read yet);
    e.g. ``cv_core.projection.scale.RowStack(*shard_arrays(...))`` reads them as one (N, D) array."""
    shards = store.manifest["splits"][split]["encoders"] if split in store.splits else {}
    if encoder not in shards:
        raise DatasetError(f"the feature store holds no {encoder!r} latents of split {split!r}")
    return [np.load(store.root / s["file"], mmap_mode="r") for s in shards[encoder]]


def scores_from_store(head: ZeroShotHead, store: FeatureStore, split: str, encoder: str) -> Scores:
    labels = torch.from_numpy(store.labels(split))
    return score(predictions(head, store, split, encoder), labels, len(store.class_names))
