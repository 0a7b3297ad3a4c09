"""Task-vector negation (Ilharco et al.): ``theta = theta_pre - lam (theta_ft - theta_pre)``.

The task vector is taken over the image tower's float **parameters** that fine-tuning changed; the rest
of the state is not a weight that was trained and is not negated:

* BatchNorm running statistics are averages of activations, not weights. Extrapolating them makes a
  variance negative (``running_var_pre - lam (running_var_ft - running_var_pre) < 0`` at ``lam`` = 1
  on the built-in model, hence NaN latents). By default they stay at the pretrained values
  (``bn_stats="pre"``), so ``lam = 0`` is exactly the pretrained encoder. ``"recompute"`` re-estimates
  them on the train images with the negated weights (the usual fix after weight arithmetic), but it
  also changes the encoder at ``lam = 0`` (measured on the built-in model: 0.49 / 0.37 ACC_f / ACC_r
  instead of the pretrained 0.44 / 0.44), so it is an option, not the default.
* Integer buffers (``num_batches_tracked``) come from the pretrained state.

``lam="auto"`` picks the value of :data:`LAMBDA_GRID` maximising ``ACC_r - ACC_f`` on the validation
split, as for the steering methods. Negation removes the whole fine-tuning task, not one class.
"""
from __future__ import annotations

import time

import torch

from ..errors import InvalidInputError
from ..math.metrics import forget_retain, score
from .base import MethodOutput, UnlearnContext, register_method
from .encoder_ops import encode, encoded_output, head_logits, option, visual_copy

LAMBDA_GRID = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
BN_STATS = ("pre", "recompute")


def negated_state(ctx: UnlearnContext, visual: torch.nn.Module, lam: float) -> dict[str, torch.Tensor]:
    """``model.visual`` state with each changed float parameter at ``pre - lam (ft - pre)``; every other
    entry (buffers, unchanged parameters) from the pretrained state."""
    pre, ft = ctx.encoder.pre_state, ctx.encoder.ft_state
    params = {name for name, _ in visual.named_parameters()}
    state = {}
    for k, p in pre.items():
        f = ft[k].to(p.dtype)
        negate = k in params and p.is_floating_point() and not torch.equal(p, f)
        state[k] = p - lam * (f - p) if negate else p.clone()
    return state


@torch.no_grad()
def recompute_bn_stats(visual: torch.nn.Module, images: torch.Tensor, device: torch.device,
                       batch_size: int = 256) -> int:
    """Re-estimate every BatchNorm's running mean/var as the plain average over ``images`` (N, 3, H, W);
    returns the number of BatchNorm layers (0: nothing to do, e.g. a ViT)."""
    norms = [m for m in visual.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches, not an exponential one
    visual.train()
    try:
        for i in range(0, images.shape[0], batch_size):
            visual(images[i:i + batch_size].to(device))
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        visual.eval()
    return len(norms)


def negated_visual(ctx: UnlearnContext, lam: float, bn_stats: str = "pre") -> torch.nn.Module:
    """A fresh eval-mode image tower with the negated task vector applied."""
    visual = visual_copy(ctx, "pre")
    visual.load_state_dict(negated_state(ctx, visual, lam))
    if bn_stats == "recompute":
        recompute_bn_stats(visual, ctx.encoder.images["train"], ctx.encoder.device)
    return visual


def _val_gain(ctx: UnlearnContext, visual: torch.nn.Module, forget) -> float:
    """ACC_r - ACC_f on the validation split; -inf when the latents are not finite."""
    z = encode(visual, ctx.encoder.images["val"], ctx.encoder.device)
    if not torch.isfinite(z).all():
        return -float("inf")
    s = score(head_logits(ctx, z).argmax(-1), ctx.encoder.labels["val"], ctx.num_classes)
    acc_f, acc_r = forget_retain(s, forget)
    return acc_r - acc_f


def _bn_option(options) -> str:
    value = str(options.get("bn_stats", "pre"))
    if value not in BN_STATS:
        raise InvalidInputError(f"option 'bn_stats' must be one of {', '.join(BN_STATS)}, got {value!r}")
    return value


@register_method("task_vector", "task-vector negation theta_pre - lam (theta_ft - theta_pre) over the changed "
                                "parameters (BatchNorm statistics kept): forgets the whole task, not one class",
                 needs_encoder=True, encoder_changed=True)
def task_vector(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    bn_stats = _bn_option(options)
    lam = options.get("lam", "auto")
    if lam == "auto":
        best_gain = -float("inf")
        for candidate in LAMBDA_GRID:  # ascending: ties keep the smallest lambda
            v = negated_visual(ctx, candidate, bn_stats)
            gain = _val_gain(ctx, v, forget)
            if gain > best_gain + 1e-9 or candidate == LAMBDA_GRID[0]:
                lam, visual, best_gain = candidate, v, gain
    else:
        lam = option(options, "lam", lam)
        visual = negated_visual(ctx, lam, bn_stats)
    seconds = time.perf_counter() - start
    # non-finite latents (an explicit lambda far too large) are reported as diverged by the audits
    return encoded_output(ctx, visual, trainable_params=0, seconds=seconds,
                          info={"lambda": lam, "bn_stats": bn_stats})
