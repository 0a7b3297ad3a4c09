"""A synthetic run with 10,000 test latents, to measure the live screen at scale without a model.

It is shown in the app only when the environment variable ``CVS_SYNTHETIC=1`` is set (see
docs/app.md), and it is what the app tests use instead of a real backbone. The latents mimic a
CLIP fine-tune: the zero-shot head rows w_c are random unit vectors, fine-tuned class means sit on
them (``mu_ft^c = b + 3 w_c``), pretrained means are mixed with the next class
(``mu_pre^c = b + 0.5 w_c + 1.5 w_{c+1}``), so zero-shot accuracy is low, fine-tuned accuracy high,
and forgetting class c (coefficient -1) sends it back towards class c+1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cv_core.math.class_vectors import compute_class_vectors
from cv_core.math.metrics import Scores, score
from cv_core.results import ClassVectors, FeatureSet, ZeroShotHead

NAME = "synthetic-10k"
SPLIT_SIZES = {"train": 2000, "val": 500, "test": 10000}


@dataclass(frozen=True)
class SyntheticRun:
    """A ``cv_core.results.Run`` (the protocol ``cv_core.pipeline.RunResult`` also satisfies): latents only,
    no feature store, no fine-tuned encoder, derived artifacts kept in memory (``cache_dir`` False)."""

    head: ZeroShotHead
    pre: dict[str, FeatureSet]
    ft: dict[str, FeatureSet]
    class_vectors: ClassVectors
    zero_shot: Scores
    finetuned: Scores
    timings: dict[str, float] = field(default_factory=dict)
    backbone_name: str = "synthetic"
    dataset: str = NAME
    store: None = None
    finetune_config: None = None
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


def make_run(num_classes: int = 10, dim: int = 512, test_size: int = SPLIT_SIZES["test"],
             seed: int = 0) -> SyntheticRun:
    """Build the synthetic run (about 0.5 s for 10,000 x 512)."""
    g = torch.Generator().manual_seed(seed)
    names = tuple(f"class {c}" for c in range(num_classes))
    w = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=g), dim=-1)  # (C, D)
    base = 2.0 * torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)        # (D,)
    mu_ft = base + 3.0 * w
    mu_pre = base + 0.5 * w + 1.5 * w.roll(-1, dims=0)
    sizes = dict(SPLIT_SIZES, test=test_size)
    pre, ft = {}, {}
    for split, n in sizes.items():
        labels = torch.arange(n) % num_classes
        noise = 0.045 * torch.randn(n, dim, generator=g)                                  # ~1.0 norm
        pre[split] = FeatureSet(mu_pre[labels] + noise, labels, names, split, "pretrained")
        ft[split] = FeatureSet(mu_ft[labels] + 0.8 * noise, labels, names, split, "finetuned")
    head = ZeroShotHead(w, 100.0, names, ("a synthetic {}.",))
    cv = compute_class_vectors(pre["train"], ft["train"])
    zs = score(head.predict(pre["test"].features), pre["test"].labels, num_classes)
    fs = score(head.predict(ft["test"].features), ft["test"].labels, num_classes)
    return SyntheticRun(head, pre, ft, cv, zs, fs)
