"""Helpers shared by the methods that change the image encoder: copy, encode, train, score.

Every method works on a deep copy of ``model.visual`` with the fine-tuned (or pretrained) weights
loaded, so the cached fine-tuned model and the caller's model are never modified.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import torch

from ..errors import NumericalError
from .base import SPLITS, MethodOutput, UnlearnContext, output


def visual_copy(ctx: UnlearnContext, state: str = "ft") -> torch.nn.Module:
    """A fresh eval-mode copy of the image tower with the 'ft' or 'pre' weights, on the context device."""
    enc = ctx.encoder
    visual = copy.deepcopy(enc.model.visual)
    visual.load_state_dict(enc.ft_state if state == "ft" else enc.pre_state)
    return visual.to(enc.device).eval()


def head_logits(ctx: UnlearnContext, feats: torch.Tensor) -> torch.Tensor:
    """(N, D) encoder outputs -> (N, C) zero-shot logits, differentiable."""
    w = ctx.head.weights.to(feats.device, feats.dtype)
    return ctx.head.logit_scale * torch.nn.functional.normalize(feats, dim=-1) @ w.T


@torch.no_grad()
def encode(visual: torch.nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 256,
           perturb: torch.Tensor | None = None) -> torch.Tensor:
    """images (N, 3, H, W) -> latents (N, D) float32 on CPU; ``perturb`` (3, H, W) is added to each image."""
    visual.eval()
    out = []
    for i in range(0, images.shape[0], batch_size):
        x = images[i:i + batch_size].to(device)
        if perturb is not None:
            x = x + perturb.to(device)
        out.append(visual(x).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def encoded_output(ctx: UnlearnContext, visual: torch.nn.Module, *, trainable_params: int, seconds: float,
                   info: Mapping | None = None, perturb: torch.Tensor | None = None,
                   hook: torch.nn.Module | None = None, pool: Callable | None = None) -> MethodOutput:
    """Encode every split with ``visual``; with ``hook`` also record the pooled input of that module."""
    enc = ctx.encoder
    captured: list[torch.Tensor] = []
    handle = None
    if hook is not None:
        handle = hook.register_forward_hook(lambda m, inp, out: captured.append(pool(inp[0]).float().cpu()))
    latents, pre_block = {}, {}
    try:
        for s in SPLITS:
            captured.clear()
            latents[s] = encode(visual, enc.images[s], enc.device, perturb=perturb)
            if hook is not None:
                pre_block[s] = torch.cat(captured)
    finally:
        if handle is not None:
            handle.remove()
    return output(ctx, latents, trainable_params=trainable_params, encoder_changed=True, seconds=seconds,
                  info=info, pre_block=pre_block or None, visual=visual)


def batch_stream(n: int, batch_size: int, generator: torch.Generator):
    """Endless shuffled index batches over range(n)."""
    while True:
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            yield order[i:i + batch_size]


def train(params: Iterable[torch.nn.Parameter], loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
          weight_decay: float = 0.0, grad_clip: float = 1.0, what: str = "training") -> int:
    """AdamW on ``params`` for ``steps`` steps of ``loss_fn(step)``; returns the number of trained values."""
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    for step in range(steps):
        loss = loss_fn(step)
        if not torch.isfinite(loss):
            raise NumericalError(f"{what} diverged at step {step} (loss {loss.item()}); lower the learning rate "
                                 f"(now {lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
    return sum(p.numel() for p in params)


def class_mask(labels: torch.Tensor, classes) -> torch.Tensor:
    return torch.isin(labels, torch.as_tensor(list(classes), dtype=labels.dtype))


def option(options: Mapping, name: str, default, kind=float, low=None):
    """Read a numeric option with a clear error for a wrong type or range."""
    from ..errors import InvalidInputError

    value = options.get(name, default)
    try:
        v = kind(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"option {name!r} must be a {kind.__name__}, got {value!r}") from None
    if v != v or (low is not None and v < low):
        raise InvalidInputError(f"option {name!r} must be a number >= {low}, got {value!r}")
    return v
