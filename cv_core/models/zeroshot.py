"""The CLIP zero-shot head: one unit row per class from its prompt templates."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidInputError
from ..results import ZeroShotHead, check_finite
from .backbones import Backbone


@torch.no_grad()
def build_head(backbone: Backbone, class_names: Sequence[str], templates: Sequence[str],
               device: torch.device | str = "cpu") -> ZeroShotHead:
    """Row c = normalize(mean_t normalize(text(t.format(c)))). Returns weights (C, D) on the CPU."""
    if not class_names:
        raise InvalidInputError("a zero-shot head needs at least one class name")
    if not templates or any("{}" not in t for t in templates):
        raise InvalidInputError(f"every prompt template needs one '{{}}' for the class name, got {templates!r}")
    model = backbone.model
    rows = []
    for name in class_names:
        tokens = backbone.tokenizer([t.format(name) for t in templates]).to(device)
        emb = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)  # (T, D)
        rows.append(torch.nn.functional.normalize(emb.mean(0), dim=-1))
    weights = check_finite(torch.stack(rows).cpu(), "zero-shot head")
    scale = float(model.logit_scale.exp().item()) if hasattr(model, "logit_scale") else 100.0
    return ZeroShotHead(weights, scale, tuple(class_names), tuple(templates))
