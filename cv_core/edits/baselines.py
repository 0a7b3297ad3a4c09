"""Encoder-touching unlearning baselines from the literature (CONTEXT.md section 4).

All train a copy of the image encoder through the frozen zero-shot head, starting from the
fine-tuned weights (``retrain`` starts from the pretrained ones), with AdamW and gradient clipping.
Task-vector negation lives in :mod:`.task_vector`.
Settings are options with CPU-sized defaults for the built-in model; every run is seeded.
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch

from .base import MethodOutput, UnlearnContext, register_method
from .encoder_ops import batch_stream, class_mask, encoded_output, head_logits, option, train, visual_copy
from .latent import forget_hinge


def _loop_setup(ctx: UnlearnContext, forget, seed: int, options, steps: int, lr: float):
    torch.manual_seed(seed)
    enc = ctx.encoder
    y = enc.labels["train"]
    is_f = class_mask(y, forget)
    return (enc.images["train"], y, torch.nonzero(is_f).flatten(), torch.nonzero(~is_f).flatten(),
            option(options, "steps", steps, int, 1), option(options, "lr", lr, float, 0.0),
            option(options, "batch_size", 64, int, 1), torch.Generator().manual_seed(seed))


def _ce(ctx, visual, images, labels, idx) -> torch.Tensor:
    dev = ctx.encoder.device
    return torch.nn.functional.cross_entropy(head_logits(ctx, visual(images[idx].to(dev))), labels[idx].to(dev))


def _finish(ctx, visual, n_params: int, start: float, **info) -> MethodOutput:
    seconds = time.perf_counter() - start
    return encoded_output(ctx, visual.eval(), trainable_params=n_params, seconds=seconds, info=info)


@register_method("neggrad", "gradient ascent on the forget set (NegGrad)", needs_encoder=True, encoder_changed=True)
def neggrad(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    x, y, f_idx, _, steps, lr, bs, g = _loop_setup(ctx, forget, seed, options, 30, 5e-4)
    visual = visual_copy(ctx).train()
    stream = batch_stream(f_idx.numel(), bs, g)
    n = train(visual.parameters(), lambda _: -_ce(ctx, visual, x, y, f_idx[next(stream)]), steps, lr,
              what="NegGrad")
    return _finish(ctx, visual, n, start, steps=steps, lr=lr)


@register_method("retain_ft", "fine-tune the fine-tuned encoder on the retain set only",
                 needs_encoder=True, encoder_changed=True)
def retain_ft(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    x, y, _, r_idx, steps, lr, bs, g = _loop_setup(ctx, forget, seed, options, 60, 5e-4)
    visual = visual_copy(ctx).train()
    stream = batch_stream(r_idx.numel(), bs, g)
    n = train(visual.parameters(), lambda _: _ce(ctx, visual, x, y, r_idx[next(stream)]), steps, lr,
              weight_decay=0.1, what="retain fine-tuning")
    return _finish(ctx, visual, n, start, steps=steps, lr=lr)


@register_method("random_labels", "fine-tune with random wrong labels on the forget set plus the retain set",
                 needs_encoder=True, encoder_changed=True)
def random_labels(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    x, y, f_idx, r_idx, steps, lr, bs, g = _loop_setup(ctx, forget, seed, options, 40, 5e-4)
    c = ctx.num_classes
    wrong = y.clone()
    shift = torch.randint(1, c, (y.numel(),), generator=g)
    wrong[f_idx] = (y[f_idx] + shift[f_idx]) % c  # never the true class
    visual = visual_copy(ctx).train()
    f_stream, r_stream = batch_stream(f_idx.numel(), bs // 2, g), batch_stream(r_idx.numel(), bs // 2, g)

    def loss(_):
        return _ce(ctx, visual, x, wrong, f_idx[next(f_stream)]) + _ce(ctx, visual, x, y, r_idx[next(r_stream)])

    n = train(visual.parameters(), loss, steps, lr, weight_decay=0.1, what="random-label fine-tuning")
    return _finish(ctx, visual, n, start, steps=steps, lr=lr)


@register_method("retrain", "fine-tune the PRETRAINED encoder on the retain set only (the gold standard)",
                 needs_encoder=True, encoder_changed=True)
def retrain(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    x, y, _, r_idx, steps, lr, bs, g = _loop_setup(ctx, forget, seed, options, 150, 5e-4)
    visual = visual_copy(ctx, "pre").train()
    stream = batch_stream(r_idx.numel(), bs, g)
    n = train(visual.parameters(), lambda _: _ce(ctx, visual, x, y, r_idx[next(stream)]), steps, lr,
              weight_decay=0.1, what="retraining")
    return _finish(ctx, visual, n, start, steps=steps, lr=lr)


@register_method("forget_vector", "one input perturbation delta added to every image, optimised on the frozen "
                                  "fine-tuned model: CE on retain + margin on forget + norm penalty",
                 needs_encoder=True, encoder_changed=False)
def forget_vector(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    x, y, f_idx, r_idx, steps, lr, bs, g = _loop_setup(ctx, forget, seed, options, 60, 0.05)
    norm_weight = option(options, "norm_weight", 0.1, float, 0.0)
    visual = visual_copy(ctx).requires_grad_(False)
    delta = torch.nn.Parameter(torch.zeros(x.shape[1:], device=ctx.encoder.device))
    f_stream, r_stream = batch_stream(f_idx.numel(), bs // 2, g), batch_stream(r_idx.numel(), bs // 2, g)
    dev = ctx.encoder.device

    def loss(_):
        fi, ri = f_idx[next(f_stream)], r_idx[next(r_stream)]
        retain = torch.nn.functional.cross_entropy(head_logits(ctx, visual(x[ri].to(dev) + delta)), y[ri].to(dev))
        logits_f = head_logits(ctx, visual(x[fi].to(dev) + delta))
        return retain + forget_hinge(logits_f, y[fi].to(dev)) + norm_weight * delta.pow(2).mean()

    n = train([delta], loss, steps, lr, what="forget-vector optimisation")
    seconds = time.perf_counter() - start
    out = encoded_output(ctx, visual, trainable_params=n, seconds=seconds, perturb=delta.detach(),
                         info={"delta_rms": float(delta.detach().pow(2).mean().sqrt()),
                               "probe_note": "encoder weights untouched: the probe sees perturbed inputs"})
    return replace(out, encoder_changed=False, visual=None)  # the weights are the fine-tuned ones
