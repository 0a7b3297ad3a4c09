"""Pixel-space trigger whose latent shift matches a class-vector shift (the paper's GTSRB application).

For source class s and target t, the wanted shift is z = kappa_t - kappa_s. A trigger is optimised on
the frozen fine-tuned encoder so that f(x + trigger) ~ f(x) + z for source-class train images:

* ``patch``: a size x size square in the bottom-right corner, pixels free in [0, 1];
* ``perturbation``: a full-image additive perturbation with |delta| <= eps per pixel (imperceptible).

That objective (the paper's) looks at source images only, so a trigger strong enough to move them moves other
classes too (built-in v3, pair 0 -> 1, 9x9 patch: 91% success, 46% of other images sent to the target). Option
``retain`` (default 0: the paper's objective) adds ``retain`` times the cross-entropy, through the frozen head, of
triggered images of the other classes (neither source nor target) against their own labels: a *selective*
trigger, this project's addition (v3, 1,000 steps: retain 0.3 -> 62% success, 7.6% flips; 0.5 -> 43%, 5.3%).

The attack success rate is the share of source-class TEST images predicted as t once triggered.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..results import class_index
from .base import UnlearnContext
from .encoder_ops import batch_stream, encode, head_logits, option, train, visual_copy

OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TriggerResult:
    """trigger: (3, H, W) in pixel units; mask: (1, H, W) where it applies; rates in [0, 1]."""

    kind: str
    source: str
    target: str
    trigger: torch.Tensor
    mask: torch.Tensor
    success_rate: float          # source test images -> target
    clean_source_accuracy: float  # source test images without trigger, predicted source
    other_flip_rate: float       # non-source test images that the trigger sends to the target
    shift_residual: float        # mean |f(x + trigger) - f(x) - z| / |z| on source test images (0 = exact)
    seconds: float
    trainable_params: int


def _norm_stats(visual) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = getattr(visual, "preprocess_cfg", {}) or {}
    mean = torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_STD)).view(3, 1, 1)
    return mean, std


def _apply(x: torch.Tensor, param: torch.Tensor, mask: torch.Tensor, kind: str, eps: float, mean, std):
    """x: normalised images (B, 3, H, W) -> triggered normalised images."""
    pixels = x * std + mean
    if kind == "patch":
        pixels = pixels * (1 - mask) + torch.sigmoid(param) * mask
    else:
        pixels = (pixels + eps * torch.tanh(param)).clamp(0, 1)
    return (pixels - mean) / std


def optimize_trigger(ctx: UnlearnContext, source: str | int, target: str | int, kind: str = "patch",
                     seed: int = 0, **options) -> TriggerResult:
    """Optimise a trigger that moves ``source`` images by kappa_target - kappa_source in latent space."""
    if ctx.encoder is None:
        raise InvalidInputError("a pixel-space trigger needs the model and images (context_from_run(..., encoder=True))")
    if kind not in ("patch", "perturbation"):
        raise InvalidInputError(f"trigger kind must be 'patch' or 'perturbation', got {kind!r}")
    s, t = class_index(ctx.class_names, source), class_index(ctx.class_names, target)
    if s == t:
        raise InvalidInputError("source and target class must differ")
    start = time.perf_counter()
    torch.manual_seed(seed)
    enc, dev = ctx.encoder, ctx.encoder.device
    visual = visual_copy(ctx).requires_grad_(False)
    mean, std = (v.to(dev) for v in _norm_stats(visual))
    _, _, h, w = enc.images["train"].shape
    size, eps = option(options, "size", max(2, h // 6), int, 1), option(options, "eps", 8 / 255, float, 0.0)
    mask = torch.zeros(1, h, w, device=dev)
    if kind == "patch":
        mask[:, h - size:, w - size:] = 1.0
    param = torch.nn.Parameter(torch.zeros(3, h, w, device=dev))
    src_idx = torch.nonzero(enc.labels["train"] == s).flatten()
    z = (ctx.class_vectors.kappa[t] - ctx.class_vectors.kappa[s]).to(dev)
    base = ctx.ft["train"].features.to(dev)
    stream = batch_stream(src_idx.numel(), option(options, "batch_size", 32, int, 1),
                          torch.Generator().manual_seed(seed))
    scale = z.pow(2).sum()
    retain = option(options, "retain", 0.0, float, 0.0)
    labels = enc.labels["train"]
    other_idx = torch.nonzero((labels != s) & (labels != t)).flatten()
    others = batch_stream(other_idx.numel(), option(options, "batch_size", 32, int, 1),
                          torch.Generator().manual_seed(seed + 1)) if retain > 0 and other_idx.numel() else None

    def loss(_):
        idx = src_idx[next(stream)]
        x = _apply(enc.images["train"][idx].to(dev), param, mask, kind, eps, mean, std)
        value = (visual(x) - (base[idx] + z)).pow(2).sum(1).mean() / scale
        if others is not None:  # the selective term: other classes keep their own label
            idx = other_idx[next(others)]
            x = _apply(enc.images["train"][idx].to(dev), param, mask, kind, eps, mean, std)
            value = value + retain * torch.nn.functional.cross_entropy(head_logits(ctx, visual(x)),
                                                                       labels[idx].to(dev))
        return value

    n = train([param], loss, option(options, "steps", 100, int, 1), option(options, "lr", 0.1, float, 0.0),
              what="trigger optimisation")
    seconds = time.perf_counter() - start
    return _evaluate(ctx, visual, param.detach(), mask, kind, eps, (mean, std), s, t, seconds,
                     int(mask.sum()) * 3 if kind == "patch" else n)


@torch.no_grad()
def _evaluate(ctx, visual, param, mask, kind, eps, stats, s, t, seconds, n_params) -> TriggerResult:
    enc, dev = ctx.encoder, ctx.encoder.device
    x, y = enc.images["test"], enc.labels["test"]
    triggered = torch.cat([_apply(x[i:i + 256].to(dev), param, mask, kind, eps, *stats).cpu()
                           for i in range(0, x.shape[0], 256)])
    lat = encode(visual, triggered, dev)
    pred = head_logits(ctx, lat).argmax(1)
    clean = ctx.ft["test"].features
    clean_pred = ctx.head.predict(clean)
    src = y == s
    z = ctx.class_vectors.kappa[t] - ctx.class_vectors.kappa[s]
    residual = float(((lat[src] - clean[src] - z).norm(dim=1) / z.norm()).mean())
    pixels = torch.sigmoid(param) * mask if kind == "patch" else eps * torch.tanh(param)
    return TriggerResult(kind, ctx.class_names[s], ctx.class_names[t], pixels.cpu(), mask.cpu(),
                         float((pred[src] == t).float().mean()), float((clean_pred[src] == s).float().mean()),
                         float((pred[~src & (y != t)] == t).float().mean()), residual, seconds, n_params)
