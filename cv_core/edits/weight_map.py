"""Weight mapping (the paper's Algorithm 2): a persistent Class-Vector edit in a small block.

Only one editable block of the fine-tuned image encoder trains (in eval mode: BatchNorm statistics
stay fixed); the loss pulls the latents of the forgotten class's reference images to
``mean(f_ft(refs of c)) + z_edit`` with ``z_edit = -lam kappa_c`` and, weighted by ``preserve``
(default 2; 0 is the paper's loss), keeps a seeded batch of retain-class train images at their
fine-tuned latents. The block is shared by every class, so the preserve term is what stops the edit
from moving the other classes too. The result is an ordinary open_clip checkpoint (see
:func:`save_checkpoint`) that needs no steering at inference.

Blocks (:data:`EDITABLE_BLOCKS`): ``final_norm`` (ViT ``visual.ln_post``; ModifiedResNet: the last
bottleneck's ``bn3``), ``ln_post`` (ViT only) and ``last_block`` (the last transformer block, or the
last ResNet bottleneck).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..registry import Registry
from .base import MethodOutput, UnlearnContext, register_method
from .encoder_ops import batch_stream, encoded_output, option, train, visual_copy
from .latent import _lambda_info, _steering_setup

DEFAULT_REFERENCES = 16  # digits stand-in: 8 refs at lr 0.01 left ACC_f ~0.3; 16 refs at lr 0.05 reached <= 0.06
DEFAULT_STEPS, DEFAULT_LR = 100, 0.05
DEFAULT_PRESERVE, DEFAULT_PRESERVE_BATCH = 2.0, 32  # chosen on val, built-in model (docs/methods.md)
BlockResolver = Callable[[torch.nn.Module], torch.nn.Module]
EDITABLE_BLOCKS: Registry[BlockResolver] = Registry("editable block")


def _arch(visual) -> str:
    return type(visual).__name__


def _final_norm(visual):
    if hasattr(visual, "ln_post"):
        return visual.ln_post
    if hasattr(visual, "layer4"):
        return visual.layer4[-1].bn3
    raise InvalidInputError(f"the image encoder ({_arch(visual)}) has no final normalisation layer; "
                            f"choose another block: {', '.join(EDITABLE_BLOCKS.list())}")


def _ln_post(visual):
    if not hasattr(visual, "ln_post"):
        raise InvalidInputError(f"block 'ln_post' needs a ViT image encoder with visual.ln_post; this backbone's "
                                f"encoder is a {_arch(visual)}. Use block 'final_norm' or 'last_block'")
    return visual.ln_post


def _last_block(visual):
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is not None and len(blocks):
        return blocks[-1]
    if hasattr(visual, "layer4"):
        return visual.layer4[-1]
    raise InvalidInputError(f"the image encoder ({_arch(visual)}) has neither transformer blocks nor ResNet "
                            "stages; weight mapping cannot find its last block")


EDITABLE_BLOCKS.register("final_norm", _final_norm)
EDITABLE_BLOCKS.register("ln_post", _ln_post)
EDITABLE_BLOCKS.register("last_block", _last_block)


def pool_input(visual) -> Callable[[torch.Tensor], torch.Tensor]:
    """How to turn a block's input into one vector per image: (N, W) as is, tokens (N, L, W) -> the class
    token (or the token mean for avg-pooled ViTs), feature maps (N, C, H, W) -> spatial mean."""
    avg = getattr(visual, "pool_type", "tok") == "avg"

    def pool(x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:
            return x
        if x.ndim == 3:
            return x[:, 1:].mean(1) if avg else x[:, 0]
        return x.flatten(2).mean(-1)
    return pool


def reference_indices(labels: torch.Tensor, cls: int, k: int, seed: int, name: str = "") -> torch.Tensor:
    """k seeded reference indices of class ``cls``; a clear error when the class has fewer images."""
    idx = torch.nonzero(labels == cls).flatten()
    if k < 1:
        raise InvalidInputError("weight mapping needs at least 1 reference sample per class")
    if idx.numel() < k:
        raise InvalidInputError(f"class {name or cls!r} has only {idx.numel()} training images but weight mapping "
                                f"was asked for {k} references: it needs at least {k}; lower 'references' "
                                "or add images of that class")
    g = torch.Generator().manual_seed(seed + 7919 * cls)
    return idx[torch.randperm(idx.numel(), generator=g)[:k]]


def _preserve_pool(y_all: torch.Tensor, forget, seed: int) -> torch.Tensor:
    """Indices of every retain-class train image, in a seeded order."""
    idx = torch.nonzero(~torch.isin(y_all, torch.as_tensor(list(forget), dtype=y_all.dtype))).flatten()
    return idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(seed + 104729))]


def fit_weight_map(ctx: UnlearnContext, forget, seed: int, options) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """Train the editable block -> (edited visual, the block, info). Inputs are not modified.

    Loss: ``|f(x_c) - target|^2`` over the forgotten classes' references, plus ``preserve`` times
    ``|f(x_r) - f_ft(x_r)|^2`` over a batch of ``preserve_batch`` retain-class train images per step
    (both divided by the mean squared target norm). The block is shared by every class, so without the
    second term nothing holds the other classes in place (docs/methods.md: ACC_r 0.69 on the built-in model).
    """
    block_name = str(options.get("block", "final_norm"))
    x_all, y_all = ctx.encoder.images["train"], ctx.encoder.labels["train"]
    # default: up to DEFAULT_REFERENCES per class; an explicit number is enforced (clear error if too few)
    refs = option(options, "references", min(DEFAULT_REFERENCES, int(torch.bincount(y_all).min())), int)
    steps, lr = option(options, "steps", DEFAULT_STEPS, int, 1), option(options, "lr", DEFAULT_LR, float, 0.0)
    preserve = option(options, "preserve", DEFAULT_PRESERVE, float, 0.0)  # 0: the paper's loss, forget term only
    batch = option(options, "preserve_batch", DEFAULT_PRESERVE_BATCH, int, 1)
    lam, _, _ = _steering_setup(ctx, forget, options)  # (K,): each class's forget strength
    torch.manual_seed(seed)
    visual = visual_copy(ctx).requires_grad_(False)  # eval mode: BatchNorm running statistics stay fixed
    block = EDITABLE_BLOCKS.get(block_name)(visual)
    block.requires_grad_(True)
    ft_train = ctx.ft["train"].features
    edit_idx, targets = [], []
    for k, c in enumerate(forget):
        idx = reference_indices(y_all, c, refs, seed, ctx.class_names[c])
        edit_idx.append(idx)
        targets.append((ft_train[idx].mean(0) - lam[k] * ctx.class_vectors.kappa[c]).expand(refs, -1))
    dev = ctx.encoder.device
    xe, te = x_all[torch.cat(edit_idx)].to(dev), torch.cat(targets).to(dev)
    scale = te.pow(2).sum(1).mean().detach()
    pool = _preserve_pool(y_all, forget, seed) if preserve > 0 else torch.zeros(0, dtype=torch.long)
    stream = batch_stream(pool.numel(), min(batch, pool.numel()), torch.Generator().manual_seed(seed)) \
        if pool.numel() else None

    def loss(_):
        out = (visual(xe) - te).pow(2).sum(1).mean() / scale
        if stream is not None:
            keep = pool[next(stream)]
            kept = visual(x_all[keep].to(dev)) - ft_train[keep].to(dev)
            out = out + preserve * kept.pow(2).sum(1).mean() / scale
        return out

    train(block.parameters(), loss, steps, lr, what="weight mapping")
    visual.requires_grad_(False).eval()
    return visual, block, {"lambda": _lambda_info(lam), "block": block_name, "references": refs, "preserve": preserve,
                           "preserve_batch": batch if preserve > 0 else 0, "steps": steps, "lr": lr}


@register_method("cv_weight_map", "Class-Vector weight mapping (Algorithm 2): train one small block so the "
                                  "class's latents move to mean(f_ft(refs)) - lam*kappa_c", needs_encoder=True,
                 encoder_changed=True)
def cv_weight_map(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    start = time.perf_counter()
    visual, block, info = fit_weight_map(ctx, forget, seed, options)
    seconds = time.perf_counter() - start
    n_params = sum(p.numel() for p in block.parameters())
    info["probe_note"] = "the probe on the layer before the edited block sees unchanged weights"
    return encoded_output(ctx, visual, trainable_params=n_params, seconds=seconds, info=info, hook=block,
                          pool=pool_input(visual))


def save_checkpoint(ctx: UnlearnContext, visual: torch.nn.Module, path: str | Path) -> Path:
    """Write the whole CLIP with the edited image tower as safetensors; it loads as ``MODEL:/path``."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise InvalidInputError(f"save the edited model as .safetensors, got {path.name!r}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in ctx.encoder.model.state_dict().items()}
    for k, v in visual.state_dict().items():
        state[f"visual.{k}"] = v.detach().cpu().contiguous().clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def export_weight_map(ctx: UnlearnContext, forget, path: str | Path, seed: int = 0, options=None) -> dict:
    """Fit weight mapping for ``forget`` and save the edited CLIP to ``path`` (.safetensors) -> info."""
    from .base import check_forget

    idx = check_forget(ctx.class_names, forget)
    if ctx.encoder is None:
        raise InvalidInputError("weight mapping needs the model and images (context_from_run(..., encoder=True))")
    visual, block, info = fit_weight_map(ctx, idx, seed, dict(options or {}))
    info["path"] = str(save_checkpoint(ctx, visual, path))
    info["trainable_params"] = sum(p.numel() for p in block.parameters())
    return info
