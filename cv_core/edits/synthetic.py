"""A synthetic latent problem with a known answer (tests, docs and demos).

Latents live in D dims. Head row c is the unit vector e_c. Pretrained latents of class c are
2 e_8 + 2 e_{4+c} + noise (the head cannot read them well); fine-tuned latents are exactly the
pretrained ones plus kappa_c = 3 e_c, so steering by -kappa_c returns a sample to its pretrained
latent, and dims 4..7 keep the class linearly decodable whatever the head does.
"""
from __future__ import annotations

import torch

from .base import UnlearnContext
from ..math.class_vectors import compute_class_vectors
from ..results import FeatureSet, ZeroShotHead

C = 4
NAMES = tuple(str(i) for i in range(C))
SIZES = {"train": 40, "val": 20, "test": 40}


def make_context(dim: int = 64, seed: int = 0, noise: float = 0.1) -> UnlearnContext:
    g = torch.Generator().manual_seed(seed)
    kappa = torch.zeros(C, dim)
    kappa[torch.arange(C), torch.arange(C)] = 3.0
    pre, ft = {}, {}
    for split, n in SIZES.items():
        y = torch.arange(C).repeat_interleave(n)
        x = noise * torch.randn(len(y), dim, generator=g)
        x[:, 8] += 2.0
        x[torch.arange(len(y)), 4 + y] += 2.0
        pre[split] = FeatureSet(x, y, NAMES, split, "pretrained")
        ft[split] = FeatureSet(x + kappa[y], y, NAMES, split, "finetuned")
    head = ZeroShotHead(torch.eye(C, dim), 100.0, NAMES)
    cv = compute_class_vectors(pre["train"], ft["train"])
    return UnlearnContext(head, pre, ft, cv)
