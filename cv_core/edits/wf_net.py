"""WF-Net (weight filtering, arXiv 2304.02049): one trained set of per-class channel filters forgets any class.

A filter is a learned mask in [0, 1] over the output channels of the image tower's inner blocks (every
ResNet bottleneck or ViT block by default), one row per class: ``filters (C, K)`` with ``K`` the
channels of all filtered blocks. The encoder's weights stay frozen (eval mode, BatchNorm statistics
fixed); the filters are trained once, every class's filter in every step (each sample of a batch passes
through the filter of the class it was drawn for): with class c's filter applied, cross-entropy plus a
distillation term to the unfiltered model's logits on retain-class images keeps the other classes, and a
hinge pushes class-c images off their class, plus a small penalty that keeps filters open. Forgetting class c at inference is then
switching class c's filter on, with no training; several classes: the product of their filters.

Differences from the paper: the paper's "memory matrices" modulate the weights of chosen layers and are
trained with the network; here the filters gate channels of a frozen fine-tuned encoder (the smallest
set that keeps the contract "one trained set, any class at inference"). The trained set is cached per
context, seed and options, so forgetting each class in turn trains once; ``train_seconds`` and the
filter parameter count are reported with every output.
"""
from __future__ import annotations

import time
import weakref
from dataclasses import dataclass

import torch

from .base import MethodOutput, UnlearnContext, register_method
from .channels import attach_masks, channel_counts, inner_blocks
from .encoder_ops import batch_stream, encode, encoded_output, head_logits, option, train, visual_copy
from .latent import forget_hinge

DEFAULT_STEPS, DEFAULT_LR, DEFAULT_SPARSITY = 150, 0.1, 0.5
DEFAULT_FORGET_SHOTS, DEFAULT_RETAIN_SHOTS, DEFAULT_DISTILL = 4, 8, 3.0
MAX_CLASSES_PER_STEP = 16
INIT_LOGIT = 3.0  # sigmoid(3) = 0.95: filters start open


@dataclass(frozen=True)
class FilterSet:
    """logits (C, K): per-class filter logits over the K channels of ``blocks``; counts: channels per block."""

    logits: torch.Tensor
    blocks: tuple[str, ...]
    counts: tuple[int, ...]
    train_seconds: float
    steps: int

    def masks(self, forget) -> list[torch.Tensor]:
        """The filter of a forget set, split per block: prod over c in forget of sigmoid(logits[c])."""
        m = torch.sigmoid(self.logits[list(forget)]).prod(0)
        return list(torch.split(m, list(self.counts)))


_CACHE: list[tuple[weakref.ref, tuple, FilterSet]] = []


def _blocks(visual, names: tuple[str, ...] | None):
    found = inner_blocks(visual)
    return [(n, b) for n, b in found if names is None or n in names]


def train_filters(ctx: UnlearnContext, seed: int, options) -> FilterSet:
    """Train one filter per class on the train split (frozen encoder) -> FilterSet.

    Every step trains the filters of every class at once (up to ``MAX_CLASSES_PER_STEP`` drawn at random
    when there are more): each sample of the batch passes through the filter of the class it is drawn for
    (per-sample channel masks), ``forget_shots`` images of class c and ``retain_shots`` images of other
    classes per class c. Loss: on retain images, cross-entropy plus ``distill`` x KL from the unfiltered
    encoder's logits (the filter must not change what the model says about other classes); on forget
    images, a hinge pushing them off their class; plus ``sparsity`` x the share of the filters closed.
    """
    start = time.perf_counter()
    steps, lr = option(options, "steps", DEFAULT_STEPS, int, 1), option(options, "lr", DEFAULT_LR, float, 0.0)
    sparsity = option(options, "sparsity", DEFAULT_SPARSITY, float, 0.0)
    n_f = option(options, "forget_shots", DEFAULT_FORGET_SHOTS, int, 1)
    n_r = option(options, "retain_shots", DEFAULT_RETAIN_SHOTS, int, 1)
    distill = option(options, "distill", DEFAULT_DISTILL, float, 0.0)
    torch.manual_seed(seed)
    enc, dev = ctx.encoder, ctx.encoder.device
    visual = visual_copy(ctx).requires_grad_(False)
    chosen = _blocks(visual, None)
    x, y = enc.images["train"], enc.labels["train"]
    counts = channel_counts(visual, [b for _, b in chosen], x[:1].to(dev))
    n_classes = ctx.num_classes
    teacher = head_logits(ctx, encode(visual, x, dev).to(dev))  # (N, C): the unfiltered model's logits
    logits = torch.nn.Parameter(torch.full((n_classes, sum(counts)), INIT_LOGIT, device=dev))
    rows = {"r": torch.zeros(0, dtype=torch.long)}  # the filter row of every sample of the current batch
    splits = [lambda k=k: torch.split(torch.sigmoid(logits)[rows["r"]], counts, dim=1)[k]
              for k in range(len(counts))]
    handles = attach_masks([b for _, b in chosen], splits)
    g = torch.Generator().manual_seed(seed)
    streams = {}
    for c in range(n_classes):
        f_idx, r_idx = torch.nonzero(y == c).flatten(), torch.nonzero(y != c).flatten()
        if f_idx.numel():
            streams[c] = (f_idx, batch_stream(f_idx.numel(), n_f, g), r_idx, batch_stream(r_idx.numel(), n_r, g))
    trainable = sorted(streams)

    def loss(step: int) -> torch.Tensor:
        cs = trainable
        if len(cs) > MAX_CLASSES_PER_STEP:
            pick = torch.randperm(len(cs), generator=g)[:MAX_CLASSES_PER_STEP]
            cs = [trainable[int(i)] for i in pick]
        fis, ris, f_rows, r_rows = [], [], [], []
        for c in cs:
            f_idx, f_stream, r_idx, r_stream = streams[c]
            fi, ri = f_idx[next(f_stream)], r_idx[next(r_stream)]
            fis.append(fi)
            ris.append(ri)
            f_rows.append(torch.full((fi.numel(),), c))
            r_rows.append(torch.full((ri.numel(),), c))
        fi, ri = torch.cat(fis), torch.cat(ris)
        rows["r"] = torch.cat(f_rows + r_rows).to(dev)
        out = head_logits(ctx, visual(torch.cat([x[fi], x[ri]]).to(dev)))
        out_f, out_r = out[:fi.numel()], out[fi.numel():]
        keep = torch.nn.functional.cross_entropy(out_r, y[ri].to(dev))
        if distill > 0:
            keep = keep + distill * torch.nn.functional.kl_div(
                torch.log_softmax(out_r, 1), torch.log_softmax(teacher[ri.to(dev)], 1), log_target=True,
                reduction="batchmean")
        closed = 1.0 - torch.sigmoid(logits[cs]).mean()
        return keep + forget_hinge(out_f, y[fi].to(dev)) + sparsity * closed

    try:
        train([logits], loss, steps, lr, what="WF-Net filter training")
    finally:
        for h in handles:
            h.remove()
    return FilterSet(logits.detach().cpu(), tuple(n for n, _ in chosen), tuple(counts),
                     time.perf_counter() - start, steps)


def trained_filters(ctx: UnlearnContext, seed: int, options) -> tuple[FilterSet, bool]:
    """The context's trained FilterSet for (seed, options), training it on first use -> (filters, cached)."""
    key = (seed, tuple(sorted((k, str(v)) for k, v in options.items())))
    for ref, k, filters in _CACHE:
        if ref() is ctx and k == key:
            return filters, True
    filters = train_filters(ctx, seed, options)
    _CACHE.append((weakref.ref(ctx), key, filters))
    del _CACHE[:-4]
    return filters, False


@register_method("wf_net", "WF-Net weight filtering: per-class channel filters over every inner block, trained "
                           "once on the frozen encoder; forgetting a class switches its filter on",
                 needs_encoder=True, encoder_changed=True)
def wf_net(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    filters, cached = trained_filters(ctx, seed, options)
    switch_start = time.perf_counter()
    visual = visual_copy(ctx).requires_grad_(False)
    chosen = _blocks(visual, filters.blocks)
    attach_masks([b for _, b in chosen], filters.masks(forget))
    masks = torch.cat(filters.masks(forget))
    info = {"train_seconds": filters.train_seconds, "trained_now": "no (cached set)" if cached else "yes",
            "filter_params": filters.logits.numel(), "steps": filters.steps,
            "blocks": ", ".join(filters.blocks), "channels_closed": int((masks < 0.5).sum()),
            "channels": int(masks.numel()), "switch_seconds": time.perf_counter() - switch_start,
            "probe_note": "filters gate encoder channels: the probe sees the filtered representation"}
    return encoded_output(ctx, visual, trainable_params=filters.logits.numel(),
                          seconds=time.perf_counter() - start, info=info)
