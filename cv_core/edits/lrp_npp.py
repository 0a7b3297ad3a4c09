"""Zero-shot class unlearning by layer-wise relevance and neuronal path perturbation (arXiv 2410.23693).

No training data and no training: relevance is computed on **proxy data** (the validation split, never
train) for each image's own class, summed over space (or tokens) per output channel of the chosen inner
blocks; a channel's score for class c is its mean relevance on class-c proxy images minus its mean
positive relevance on the other classes' proxy images. The top ``fraction`` channels of each block for the
forgotten classes are zeroed ("the paths are cut"); the fraction is chosen on the proxy split from
:data:`FRACTION_GRID` (val ACC_r − ACC_f, smallest on ties).

Relevance backend: Captum's ``LayerLRP`` (epsilon rule) is tried first on a copy of the model. On CLIP
image towers it fails, and the output says why in ``info["relevance"]`` — Captum 0.9's LRP has no
support for residual additions (captum PR #342: "skip-connections are not supported yet"; issue #546
still open) — its backward hook finds no stored relevance and raises ``KeyError: device(type='cpu')``
on ModifiedResNet bottlenecks, and ViT towers fail earlier on modules without a rule (LayerNorm) and
functional attention (``F.multi_head_attention_forward`` reads the projection weights, so those Linear
leaves never run). The fallback is Captum's ``LayerGradientXActivation``: activation times gradient,
which equals LRP-0 (epsilon -> 0) for piecewise-linear networks (Ancona et al., ICLR 2018) up to the
relevance absorbed by biases.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import torch

from ..errors import InvalidInputError
from ..math.metrics import forget_retain, score
from .base import MethodOutput, UnlearnContext, register_method
from .channels import attach_masks, inner_blocks
from .encoder_ops import encode, encoded_output, visual_copy

FRACTION_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
DEFAULT_BLOCKS = 2  # the last two inner blocks


class Classifier(torch.nn.Module):
    """image tower + zero-shot head as one module (what Captum attributes): images -> (N, C) logits."""

    def __init__(self, visual: torch.nn.Module, head_weights: torch.Tensor, logit_scale: float):
        super().__init__()
        self.visual, self.scale = visual, float(logit_scale)
        self.register_buffer("weights", head_weights.detach().clone())  # (C, D) unit rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.nn.functional.normalize(self.visual(x), dim=-1)
        return self.scale * feats @ self.weights.to(feats.dtype).T


def _per_channel(r: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C); tokens (N, L, W) -> (N, W)."""
    return r.sum(dim=(2, 3)) if r.ndim == 4 else r.sum(dim=1) if r.ndim == 3 else r


def _prepare_for_lrp(model: torch.nn.Module) -> None:
    from captum.attr._utils.lrp_rules import IdentityRule

    for m in model.modules():
        if isinstance(m, torch.nn.Identity):
            m.rule = IdentityRule()  # Captum has no default rule for Identity; it passes relevance through
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False


def _output_leaves(model: torch.nn.Module, blocks, images: torch.Tensor) -> list[torch.nn.Module]:
    """For each block, the rule-carrying leaf whose output holds the block's output relevance: the leaf whose
    output IS the block's output, or — when that leaf is a ReLU, which LRP passes relevance through and
    Captum gives no rule — the leaf that feeds it. ValueError when the block ends in an operation that is no
    module (a residual sum, a functional op): Captum's LRP cannot attribute it."""
    from captum.attr._core.lrp import SUPPORTED_NON_LINEAR_LAYERS

    leaves = []
    for block in blocks:
        outs: dict = {}
        ins: dict = {}
        candidates = [m for m in block.modules() if not list(m.children())]

        def record(mod, inp, out):
            outs[id(mod)], ins[id(mod)] = out, inp[0] if inp else None

        hooks = [m.register_forward_hook(record) for m in candidates + [block]]
        try:
            with torch.no_grad():
                model(images)
        finally:
            for h in hooks:
                h.remove()
        match = [m for m in candidates if outs.get(id(m)) is outs.get(id(block))]
        if match and type(match[-1]) in SUPPORTED_NON_LINEAR_LAYERS:
            match = [m for m in candidates if outs.get(id(m)) is ins.get(id(match[-1]))]
        if not match:
            raise ValueError(f"the output of {type(block).__name__} is not the output of any leaf module Captum "
                             "has a rule for (it ends in a residual sum or a functional op)")
        leaves.append(match[-1])
    return leaves


def channel_relevance(model: torch.nn.Module, layers: Sequence[torch.nn.Module], images: torch.Tensor,
                      targets: torch.Tensor, batch_size: int = 128) -> tuple[list[torch.Tensor], str]:
    """Relevance of each output channel of ``layers`` for each image's target logit.

    model: images (N, ...) -> logits (N, C); layers: modules inside ``model``; returns ([(N, C_l)], backend),
    backend naming what computed it (Captum LayerLRP, or the fallback with Captum's error).
    """
    from captum.attr import LayerGradientXActivation, LayerLRP

    def run(attr_cls, net, lays) -> list[torch.Tensor]:
        outs: list[list[torch.Tensor]] = [[] for _ in lays]
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].clone().requires_grad_(True)
            r = attr_cls(net, list(lays)).attribute(x, target=targets[i:i + batch_size])
            for k, rk in enumerate(r if isinstance(r, (list, tuple)) else [r]):
                outs[k].append(_per_channel(rk.detach()).float().cpu())
        return [torch.cat(o) for o in outs]

    twin = copy.deepcopy(model).eval()
    index = {id(m): n for n, m in model.named_modules()}
    twin_mods = dict(twin.named_modules())
    try:
        _prepare_for_lrp(twin)
        leaves = _output_leaves(twin, [twin_mods[index[id(l)]] for l in layers], images[:2])
        return run(LayerLRP, twin, leaves), "captum LayerLRP (epsilon rule)"
    except (TypeError, KeyError, RuntimeError, AttributeError, ValueError) as err:
        reason = f"{type(err).__name__}: {str(err)[:160]}"
    model.eval()
    out = run(LayerGradientXActivation, model, layers)
    return out, ("captum LayerGradientXActivation (= LRP-0 for piecewise-linear nets); Captum LayerLRP failed on "
                 f"this encoder ({reason}) — it does not support residual additions (captum PR #342)")


def class_scores(relevance: torch.Tensor, labels: torch.Tensor, cls: int) -> torch.Tensor:
    """(N, K) relevance, (N,) labels -> (K,) mean relevance on class ``cls`` minus the mean positive relevance
    on the other classes (how much cutting the channel would cost them). Only the others' positive part
    counts: a channel that speaks against another class is not thereby relevant to this one."""
    mine = labels == cls
    if not mine.any() or mine.all():
        raise InvalidInputError(f"the proxy data needs images of class {cls} and of other classes")
    return relevance[mine].mean(0) - relevance[~mine].clamp(min=0).mean(0)


def path_masks(relevance: Sequence[torch.Tensor], labels: torch.Tensor, forget: Sequence[int],
               fraction: float) -> list[torch.Tensor]:
    """Per block: a (C_l,) mask with 0 on the top ``fraction`` channels (at least one) by class score, for
    each forgotten class, and 1 elsewhere."""
    masks = []
    for rel in relevance:
        m = torch.ones(rel.shape[1])
        k = max(1, int(round(fraction * rel.shape[1])))
        for c in forget:
            m[torch.topk(class_scores(rel, labels, c), k).indices] = 0.0
        masks.append(m)
    return masks


def _val_gain(ctx, visual, blocks, masks, forget) -> float:
    handles = attach_masks(blocks, masks)
    try:
        z = encode(visual, ctx.encoder.images["val"], ctx.encoder.device)
    finally:
        for h in handles:
            h.remove()
    s = score(ctx.head.logits(z).argmax(-1), ctx.encoder.labels["val"], ctx.num_classes)
    acc_f, acc_r = forget_retain(s, forget)
    return acc_r - acc_f


@register_method("lrp_npp", "zero-shot: relevance (LRP / gradient x activation via Captum) on the val split as "
                            "proxy data ranks channels for the class; the most relevant are zeroed",
                 needs_encoder=True, encoder_changed=True)
def lrp_npp(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    n_blocks = int(options.get("blocks", DEFAULT_BLOCKS))
    visual = visual_copy(ctx).requires_grad_(False)
    found = inner_blocks(visual)
    if not 1 <= n_blocks <= len(found):
        raise InvalidInputError(f"option 'blocks' must be 1..{len(found)} (the last inner blocks), got {n_blocks}")
    names, blocks = zip(*found[-n_blocks:])
    enc = ctx.encoder
    proxy_x, proxy_y = enc.images["val"].to(enc.device), enc.labels["val"].to(enc.device)
    net = Classifier(visual, ctx.head.weights.to(enc.device), ctx.head.logit_scale)
    relevance, backend = channel_relevance(net, blocks, proxy_x, proxy_y)
    fraction = options.get("fraction", "auto")
    if fraction == "auto":
        gains = {f: _val_gain(ctx, visual, blocks, path_masks(relevance, proxy_y.cpu(), forget, f), forget)
                 for f in FRACTION_GRID}
        fraction = max(FRACTION_GRID, key=lambda f: (round(gains[f], 9), -f))
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise InvalidInputError(f"option 'fraction' must be in (0, 1] or 'auto', got {fraction}")
    masks = path_masks(relevance, proxy_y.cpu(), forget, fraction)
    attach_masks(blocks, masks)
    cut = int(sum((m == 0).sum() for m in masks))
    info = {"relevance": backend, "proxy": "val split", "fraction": fraction, "blocks": ", ".join(names),
            "channels_zeroed": cut, "probe_note": "channels zeroed inside the encoder: the probe sees the cut paths"}
    return encoded_output(ctx, visual, trainable_params=0, seconds=time.perf_counter() - start, info=info)
