"""Layer-wise linear CKA (Kornblith et al. 2019) between an edited image tower and the original and
retrained ones, as the Machine Unlearning Comparator shows it.

``linear_cka(x, y)`` on (N, D1), (N, D2) features of the same N images: with centred Gram matrices
K = XXᵀ, L = YYᵀ, CKA = <K, L>_F / (‖K‖_F ‖L‖_F) — 1 for identical representations up to rotation and
isotropic scaling. ``block_features`` records every block of :func:`channels.tower_blocks` (flattened
outputs) and the tower's output; ``cka_audit`` compares them on the forgotten classes' test images and,
separately, on a seeded sample of the retained classes' test images.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..errors import InvalidInputError
from .base import MethodOutput, UnlearnContext
from .channels import tower_blocks

RETAIN_SAMPLE = 200  # retained-class test images compared (seeded); the forgotten classes use all theirs


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of x (N, D1) and y (N, D2), computed in float64 through the N x N Gram matrices."""
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise InvalidInputError(f"CKA needs the same N >= 2 samples in both, got {x.shape[0]} and {y.shape[0]}")
    x = x.double().flatten(1)
    y = y.double().flatten(1)
    x, y = x - x.mean(0), y - y.mean(0)
    k, l_ = x @ x.T, y @ y.T
    denom = k.norm() * l_.norm()
    return float((k * l_).sum() / denom) if denom > 0 else float("nan")


@torch.no_grad()
def block_features(visual: torch.nn.Module, images: torch.Tensor, device: torch.device,
                   batch_size: int = 256) -> dict[str, torch.Tensor]:
    """block name -> (N, flattened block output) float32 on CPU, plus 'output' (the tower's latent)."""
    blocks = tower_blocks(visual)
    feats: dict[str, list[torch.Tensor]] = {n: [] for n, _ in blocks}
    feats["output"] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: feats[n].append(
        (o[0] if isinstance(o, tuple) else o).flatten(1).float().cpu())) for n, m in blocks]
    try:
        visual.eval()
        for i in range(0, images.shape[0], batch_size):
            feats["output"].append(visual(images[i:i + batch_size].to(device)).float().cpu())
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v) for n, v in feats.items()}


def _image_sets(ctx: UnlearnContext, forget: Sequence[int], seed: int) -> dict[str, torch.Tensor]:
    y = ctx.encoder.labels["test"]
    is_f = torch.isin(y, torch.as_tensor(list(forget)))
    retain = torch.nonzero(~is_f).flatten()
    g = torch.Generator().manual_seed(seed)
    retain = retain[torch.randperm(retain.numel(), generator=g)[:RETAIN_SAMPLE]].sort().values
    return {"forget": torch.nonzero(is_f).flatten(), "retain": retain}


def cka_audit(ctx: UnlearnContext, out: MethodOutput, references: Mapping[str, torch.nn.Module],
              seed: int = 0) -> dict:
    """CKA per block of ``out.visual`` against each reference tower (e.g. {'original': ft, 'retrained': r}).

    Returns {blocks: [names], forget: {ref: [cka per block]}, retain: {ref: [...]}, images: {forget, retain}}.
    """
    if out.visual is None:
        raise InvalidInputError(f"method {out.method!r} did not change the encoder: there is no edited tower to compare")
    sets = _image_sets(ctx, out.forget, seed)
    images, dev = ctx.encoder.images["test"], ctx.encoder.device
    result: dict = {"images": {k: int(v.numel()) for k, v in sets.items()}}
    for part, idx in sets.items():
        mine = block_features(out.visual, images[idx], dev)
        result["blocks"] = list(mine)
        result[part] = {}
        for ref_name, ref in references.items():
            theirs = block_features(ref, images[idx], dev)
            result[part][ref_name] = [linear_cka(mine[b], theirs[b]) for b in mine]
    return result
