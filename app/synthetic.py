"""A synthetic run with 10,000 test latents, to measure the live screen at scale without a model.

It is shown in the app only when the environment variable ``CVS_SYNTHETIC=1`` is set (see
docs/app.md), and it is what the app tests use instead of a real backbone. The latents mimic a
CLIP fine-tune: the zero-shot head rows w_c are random unit vectors, fine-tuned class means sit on
them (``mu_ft^c = b + 3 w_c``), pretrained means are mixed with the next class
(``mu_pre^c = b + 0.5 w_c + 1.5 w_{c+1}``), so zero-shot accuracy is low, fine-tuned accuracy high,
and forgetting class c (coefficient -1) sends it back towards class c+1.

Sizes: ``CVS_SYNTHETIC_N`` test latents (default 10,000) and ``CVS_SYNTHETIC_C`` classes (default 10).
From :data:`STORE_MIN` test latents up (100,000; a million for issue 14's benchmarks), the run is not
held in memory: :func:`open_run` generates its latents block by block into a sharded feature store
in the cache folder (once per set of parameters; later opens find it) and reads them from there
(``cv_core.features.stored``: splits are loaded when a page asks for them, class vectors and scores
come from the store block by block). Both forms draw the same numbers in the same blocks, so a store
run equals the in-memory run of the same parameters.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cv_core.math.class_vectors import compute_class_vectors
from cv_core.math.metrics import Scores, score
from cv_core.results import ClassVectors, FeatureSet, ZeroShotHead

if TYPE_CHECKING:
    from cv_core.features.store import FeatureStore

NAME = "synthetic-10k"
SPLIT_SIZES = {"train": 2000, "val": 500, "test": 10000}
#: Test latents from which the app's synthetic run lives in a feature store rather than in memory.
STORE_MIN = 100_000
#: Rows drawn per block (the generator's unit: a store run and an in-memory run draw the same blocks).
BLOCK_ROWS = 65_536
#: Version of the generator: part of the store's key, so a change of the recipe is never read stale.
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class SyntheticRun:
    """A ``cv_core.results.Run`` (the protocol ``cv_core.pipeline.RunResult`` also satisfies): latents only,
    no fine-tuned encoder, derived artifacts kept in memory (``cache_dir`` False). ``store``: the feature
    store its latents are read from (:func:`open_run`), or None when they are held in memory (:func:`make_run`)."""

    head: ZeroShotHead
    pre: Mapping[str, FeatureSet]
    ft: Mapping[str, FeatureSet]
    class_vectors: ClassVectors
    zero_shot: Scores
    finetuned: Scores
    timings: dict[str, float] = field(default_factory=dict)
    backbone_name: str = "synthetic"
    dataset: str = NAME
    store: FeatureStore | None = None
    finetune_config: None = None
    finetune_run: dict = field(default_factory=dict)  # nothing was fine-tuned
    cache_dir: bool = False

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.head.class_names

    @property
    def zero_shot_accuracy(self) -> float:
        return self.zero_shot.accuracy

    @property
    def finetuned_accuracy(self) -> float:
        return self.finetuned.accuracy


class _Model:
    """The run's constants: class names, head rows w (C, D), class means (C, D), and the generator
    after drawing them (the latents' noise is drawn next, split by split, block by block)."""

    def __init__(self, num_classes: int, dim: int, seed: int):
        self.g = torch.Generator().manual_seed(seed)
        self.names = tuple(f"class {c}" for c in range(num_classes))
        self.w = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=self.g), dim=-1)  # (C, D)
        base = 2.0 * torch.nn.functional.normalize(torch.randn(dim, generator=self.g), dim=0)           # (D,)
        self.mu_ft = base + 3.0 * self.w
        self.mu_pre = base + 0.5 * self.w + 1.5 * self.w.roll(-1, dims=0)

    def blocks(self, n: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(labels (b,), pretrained (b, D), fine-tuned (b, D)) blocks of one split of n rows, in order."""
        c, dim = self.w.shape
        for start in range(0, n, BLOCK_ROWS):
            labels = torch.arange(start, min(n, start + BLOCK_ROWS)) % c
            noise = 0.045 * torch.randn(len(labels), dim, generator=self.g)                  # ~1.0 norm
            yield labels, self.mu_pre[labels] + noise, self.mu_ft[labels] + 0.8 * noise

    @property
    def head(self) -> ZeroShotHead:
        return ZeroShotHead(self.w, 100.0, self.names, ("a synthetic {}.",))


def _sizes(test_size: int) -> dict[str, int]:
    from cv_core.errors import InvalidInputError

    if not isinstance(test_size, int) or test_size < 1:
        raise InvalidInputError(f"the synthetic run needs at least 1 test latent, got {test_size!r} "
                                "(set CVS_SYNTHETIC_N to a positive integer)")
    return dict(SPLIT_SIZES, test=test_size)


def make_run(num_classes: int = 10, dim: int = 512, test_size: int = SPLIT_SIZES["test"],
             seed: int = 0) -> SyntheticRun:
    """Build the synthetic run in memory (about 0.5 s for 10,000 x 512)."""
    m = _Model(num_classes, dim, seed)
    pre, ft = {}, {}
    for split, n in _sizes(test_size).items():
        labels, p, f = (torch.cat(x) for x in zip(*m.blocks(n)))
        pre[split] = FeatureSet(p, labels, m.names, split, "pretrained")
        ft[split] = FeatureSet(f, labels, m.names, split, "finetuned")
    head = m.head
    cv = compute_class_vectors(pre["train"], ft["train"])
    zs = score(head.predict(pre["test"].features), pre["test"].labels, num_classes)
    fs = score(head.predict(ft["test"].features), ft["test"].labels, num_classes)
    return SyntheticRun(head, pre, ft, cv, zs, fs)


def store_key(num_classes: int, dim: int, test_size: int, seed: int) -> dict:
    """The feature store key of one synthetic run (every parameter that changes a number)."""
    return {"kind": "synthetic", "name": NAME, "generator": GENERATOR_VERSION, "num_classes": num_classes,
            "dim": dim, "sizes": _sizes(test_size), "seed": seed, "block_rows": BLOCK_ROWS}


def write_store(root: str | Path, num_classes: int = 10, dim: int = 512, test_size: int = SPLIT_SIZES["test"],
                seed: int = 0) -> Path:
    """Generate the run's latents block by block into a feature store at ``root`` (at most one block of
    each encoder in memory); published atomically (cv_core.features.store)."""
    from cv_core.features.store import FeatureStoreWriter

    m = _Model(num_classes, dim, seed)
    with FeatureStoreWriter(root, store_key(num_classes, dim, test_size, seed), m.names, dim,
                            shard_rows=BLOCK_ROWS) as writer:
        for split, n in _sizes(test_size).items():
            for labels, p, f in m.blocks(n):
                writer.add(split, "pre", p.numpy(), labels.numpy())
                writer.add(split, "ft", f.numpy(), labels.numpy())
    return Path(root)


def open_run(cache_root: str | Path | None = None, num_classes: int = 10, dim: int = 512,
             test_size: int = SPLIT_SIZES["test"], seed: int = 0) -> SyntheticRun:
    """The synthetic run backed by a feature store under ``cache_root`` (default: the library's cache
    folder, ``CVS_CACHE_DIR``): generated on the first call for these parameters, opened afterwards.

    Splits are read from the store when first asked for (``StoreSplits``); the test split's scores are
    computed from memory-mapped blocks, the class vectors from the (small) train split."""
    from cv_core.errors import CacheError
    from cv_core.features.cache import default_cache_dir
    from cv_core.features.store import FeatureStore, store_root
    from cv_core.features.stored import StoreSplits, scores_from_store

    key = store_key(num_classes, dim, test_size, seed)
    root = store_root(default_cache_dir() if cache_root is None else cache_root, key)
    try:
        store = FeatureStore.open(root, key)
    except CacheError:
        write_store(root, num_classes, dim, test_size, seed)
        store = FeatureStore.open(root, key)
    pre, ft = StoreSplits(store, "pre"), StoreSplits(store, "ft")
    head = _Model(num_classes, dim, seed).head
    cv = compute_class_vectors(pre["train"], ft["train"])
    zs = scores_from_store(head, store, "test", "pre")
    fs = scores_from_store(head, store, "test", "ft")
    return SyntheticRun(head, pre, ft, cv, zs, fs, store=store)
