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


class ToyTower(torch.nn.Module):
    """Two ReLU blocks (Linear + ReLU) on (N, 8) "images", laid out like an open_clip ViT
    (``transformer.resblocks``) so the channel methods find its blocks. Identity weights times ``gain``."""

    def __init__(self, dim: int = 8, gain: float = 1.0):
        super().__init__()
        self.transformer = torch.nn.Module()
        self.transformer.resblocks = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU()) for _ in range(2)])
        with torch.no_grad():
            for block in self.transformer.resblocks:
                block[0].weight.copy_(gain * torch.eye(dim))
                block[0].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer.resblocks:
            x = block(x)
        return x


def make_encoder_context(per_class: int = 20, seed: int = 0, noise: float = 0.1) -> UnlearnContext:
    """A toy encoder problem with known answers: C = 4 classes, 8 input dims; class c's images carry 3 on
    dim c (class 0 also 1.2 on dim 1, so its nearest retain class is 1) plus |noise|. The fine-tuned tower
    is the identity, the pretrained one the identity times 0.5 per block; head row c is e_c (logit scale 10).
    Channel c of every block therefore carries class c alone: cutting it forgets c and keeps the others.
    """
    from .base import EncoderInputs

    g = torch.Generator().manual_seed(seed)
    dim = 8
    model = torch.nn.Module()
    model.visual = ToyTower(dim)
    ft_state = {k: v.clone() for k, v in model.visual.state_dict().items()}
    pre_state = {k: v.clone() for k, v in ToyTower(dim, 0.5).state_dict().items()}
    images, labels, pre, ft = {}, {}, {}, {}
    for split in ("train", "val", "test"):
        y = torch.arange(C).repeat_interleave(per_class)
        x = noise * torch.randn(len(y), dim, generator=g).abs()
        x[torch.arange(len(y)), y] += 3.0
        x[y == 0, 1] += 1.2
        images[split], labels[split] = x, y
        with torch.no_grad():
            ft[split] = FeatureSet(model.visual(x), y, NAMES, split, "finetuned")
            pre[split] = FeatureSet(0.25 * x, y, NAMES, split, "pretrained")
    head = ZeroShotHead(torch.eye(C, dim), 10.0, NAMES)
    cv = compute_class_vectors(pre["train"], ft["train"])
    return UnlearnContext(head, pre, ft, cv, EncoderInputs(model, pre_state, ft_state, images, labels))
