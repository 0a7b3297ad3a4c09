"""Channels of the image tower's inner blocks, and multiplicative masks over them.

Used by the methods that act on channels (``wf_net`` learns a mask per class, ``lrp_npp`` zeroes the
channels LRP finds most relevant) and by the layer-wise CKA audit (``tower_blocks``).
A block's channels are dim 1 of a feature map (N, C, H, W) and the last dim of tokens (N, L, W).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..errors import InvalidInputError

MaskFn = Callable[[], torch.Tensor]


def inner_blocks(visual: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The residual blocks of the tower, input to output: ResNet bottlenecks or ViT transformer blocks."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is not None and len(blocks):
        return [(f"transformer.resblocks.{i}", b) for i, b in enumerate(blocks)]
    if all(hasattr(visual, f"layer{i}") for i in range(1, 5)):
        return [(f"layer{i}.{j}", b) for i in range(1, 5) for j, b in enumerate(getattr(visual, f"layer{i}"))]
    raise InvalidInputError(f"the image encoder ({type(visual).__name__}) has neither transformer blocks nor "
                            "ResNet stages; channel methods cannot find its blocks")


def tower_blocks(visual: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every block of the image tower whose output the CKA audit compares: the stem / patch embedding,
    each residual block, and the pooling head (ResNet attention pool, ViT ``ln_post``)."""
    first = [("stem", visual.avgpool)] if hasattr(visual, "layer1") else \
        [("patch_embed", visual.conv1)] if hasattr(visual, "conv1") else []
    last = [("attnpool", visual.attnpool)] if hasattr(visual, "attnpool") else \
        [("ln_post", visual.ln_post)] if hasattr(visual, "ln_post") else []
    return first + inner_blocks(visual) + last


def scale_channels(out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """out (N, C, H, W), (N, L, C) or (N, C) times mask (C,) along the channel dimension; a mask (N, C) gives every
    sample its own (tokens: batch first, open_clip's default, unless only dim 1 matches N)."""
    mask = mask.to(out.dtype)
    if mask.ndim == 2:
        if out.ndim == 2:
            return out * mask
        if out.ndim == 4:
            return out * mask[:, :, None, None]
        return out * (mask[:, None, :] if out.shape[0] == mask.shape[0] else mask[None, :, :])
    if out.ndim == 4:
        return out * mask[None, :, None, None]
    return out * mask


@torch.no_grad()
def channel_counts(visual: torch.nn.Module, blocks: Sequence[torch.nn.Module], image: torch.Tensor) -> list[int]:
    """Channels of each block's output, from one forward pass of ``image`` (1, 3, H, W)."""
    counts: list[int] = []
    handles = [b.register_forward_hook(lambda m, i, o: counts.append(o.shape[1] if o.ndim == 4 else o.shape[-1]))
               for b in blocks]
    try:
        visual.eval()(image)
    finally:
        for h in handles:
            h.remove()
    return counts


def attach_masks(blocks: Sequence[torch.nn.Module], masks: Sequence[torch.Tensor | MaskFn]) -> list:
    """Multiply each block's output by its mask (C,), or by ``mask()`` when a function (a mask being
    trained); returns the hook handles (``handle.remove()`` undoes it)."""
    if len(blocks) != len(masks):
        raise InvalidInputError(f"{len(blocks)} blocks but {len(masks)} masks")
    handles = []
    for block, mask in zip(blocks, masks):
        get = mask if callable(mask) else (lambda m=mask: m)
        handles.append(block.register_forward_hook(lambda mod, inp, out, get=get: scale_channels(out, get())))
    return handles
