"""Build an :class:`UnlearnContext` from what ``cv_core.pipeline.run`` returns.

The pipeline may compute only train and test; methods choose their settings on a validation split,
so when ``val`` is missing it is carved deterministically out of train (``VAL_SHARE`` per class) and
the report says so. Encoder methods need preprocessed images in memory; ``max_per_class`` caps each
split (seeded) so that they fit, and the latents are subset the same way so that every method of one
report is scored on the same samples.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import InvalidInputError
from ..results import FeatureSet
from .base import SPLITS, EncoderInputs, UnlearnContext

VAL_SHARE = 0.15


def _per_class_pick(labels: torch.Tensor, share: float | None, cap: int | None, seed: int) -> torch.Tensor:
    """Sorted indices: ``share`` of each class (at least 1) or at most ``cap`` per class, seeded."""
    g = torch.Generator().manual_seed(seed)
    picks = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = max(1, int(round(share * idx.numel()))) if share is not None else min(cap, idx.numel())
        picks.append(idx[:k])
    return torch.sort(torch.cat(picks)).values


def split_indices(result, seed: int = 0, max_per_class: int | None = None) -> dict[str, tuple[str, torch.Tensor]]:
    """split -> (source split in the run result, indices into it)."""
    src: dict[str, tuple[str, torch.Tensor]] = {}
    for s in ("train", "test"):
        src[s] = (s, torch.arange(len(result.ft[s])))
    if "val" in result.ft:
        src["val"] = ("val", torch.arange(len(result.ft["val"])))
    else:
        labels = result.ft["train"].labels
        val = _per_class_pick(labels, VAL_SHARE, None, seed)
        keep = torch.ones(labels.numel(), dtype=torch.bool)
        keep[val] = False
        if torch.bincount(labels[keep], minlength=len(result.class_names)).min() == 0:
            raise InvalidInputError("every class needs at least 2 training images to carve a validation split; "
                                    "add images or run the pipeline with splits=('train', 'val', 'test')")
        src["val"], src["train"] = ("train", val), ("train", torch.nonzero(keep).flatten())
    if max_per_class is not None:
        for s, (origin, idx) in list(src.items()):
            sub = _per_class_pick(result.ft[origin].labels[idx], None, max_per_class, seed)
            src[s] = (origin, idx[sub])
    return src


def context_from_run(result, *, encoder: bool = False, max_per_class: int | None = None,
                     seed: int = 0) -> UnlearnContext:
    """UnlearnContext over the run's latents; with ``encoder=True`` also the model and images."""
    src = split_indices(result, seed, max_per_class)
    pre = {s: _subset(result.pre[o], idx, s) for s, (o, idx) in src.items()}
    ft = {s: _subset(result.ft[o], idx, s) for s, (o, idx) in src.items()}
    enc = _encoder_inputs(result, src) if encoder else None
    return UnlearnContext(result.head, pre, ft, result.class_vectors, enc)


def _subset(fs: FeatureSet, idx: torch.Tensor, split: str) -> FeatureSet:
    return replace(fs.subset(idx), split=split)


class _View:
    """The images ``indices`` of an ImageDataset, in that order (what ``preprocess_once`` needs)."""

    def __init__(self, base, indices: torch.Tensor):
        self.base, self.indices = base, indices.tolist()
        self.targets = [base.targets[i] for i in self.indices]
        self.class_names = base.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]


def _encoder_inputs(result, src) -> EncoderInputs:
    from safetensors.torch import load_file

    from ..features.extract import preprocess_once

    backbone = result.backbone()
    images: dict[str, torch.Tensor] = {}
    for s in SPLITS:
        origin, idx = src[s]
        prepared = preprocess_once(_View(result.images(origin), idx), backbone.preprocess)
        if prepared is None:
            raise InvalidInputError(f"the {len(idx)} images of split {s!r} are too large to hold in memory for "
                                    "encoder methods; pass a smaller max_per_class")
        images[s] = prepared.images
    labels = {s: result.ft[o].labels[idx] for s, (o, idx) in src.items()}
    for s in SPLITS:
        if images[s].shape[0] != labels[s].shape[0]:
            raise InvalidInputError(f"split {s!r}: {images[s].shape[0]} images but {labels[s].shape[0]} latents; "
                                    "the cached latents do not match the dataset (rerun the pipeline)")
    model = backbone.model
    pre_state = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
    return EncoderInputs(model, pre_state, load_file(str(result.encoder_path)), images, labels, result.device)
