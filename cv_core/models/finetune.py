"""Fine-tuning of the image encoder with the zero-shot head frozen (task-arithmetic recipe)."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields

import torch
from torch.utils.data.distributed import DistributedSampler

from ..device import autocast
from ..errors import InvalidInputError, NumericalError
from ..features.extract import index_batches
from ..progress import CancelFn, ProgressFn, StageTimer, check_cancel
from ..results import ZeroShotHead
from .distributed import World, collective, mean_across


@dataclass(frozen=True)
class FinetuneConfig:
    """AdamW + cosine schedule with linear warm-up, gradient clipping; only the image encoder trains."""

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"fine-tune {name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInputError(f"fine-tune learning rate must be a positive number, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise InvalidInputError("warm-up and weight decay must be >= 0 and the gradient clip > 0")

    @classmethod
    def default_for(cls, device: torch.device, small_model: bool = False) -> FinetuneConfig:
        """GPU: the paper's recipe (2000 steps, batch 128, lr 1e-5, warm-up 200).
        CPU / the built-in model: a short run that fits in well under a minute on 2 cores."""
        if device.type == "cuda" and not small_model:
            return cls()
        if small_model:
            return cls(steps=150, batch_size=64, lr=5e-4, weight_decay=0.1, warmup=15)
        return cls(steps=100, batch_size=32, lr=1e-5, weight_decay=0.1, warmup=10)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise InvalidInputError(f"unknown fine-tune settings {unknown}; valid: {sorted(valid)}")
        return cls(**d)

    def as_dict(self) -> dict:
        return asdict(self)


class ImageEncoder(torch.nn.Module):
    """Just the image tower, with CLIP's ``encode_image`` interface (no text tower copied)."""

    def __init__(self, visual: torch.nn.Module):
        super().__init__()
        self.visual = visual

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    forward = encode_image


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def finetune(model: torch.nn.Module, preprocess, head: ZeroShotHead, dataset, config: FinetuneConfig,
             device: torch.device, progress: ProgressFn = None, cancel: CancelFn = None,
             world: World | None = None) -> dict[str, torch.Tensor]:
    """Train a copy of ``model.visual`` with cross-entropy through the frozen head.

    world: the data-parallel group (``models.distributed.init_world``) or None. Under DDP each rank
    takes ``batch_size / world_size`` images of the same global batch (DistributedSampler, reshuffled
    per epoch by ``set_epoch``), so N processes follow the single-process run step by step; the reported
    loss is the mean over ranks. Returns the fine-tuned image-encoder state dict (CPU tensors) on every
    rank; ``model`` itself is not changed.
    """
    size = world.world_size if world is not None else 1
    if config.batch_size % size:
        raise InvalidInputError(f"the global batch {config.batch_size} must divide by the {size} processes; "
                                f"choose --nproc_per_node among its divisors")
    torch.manual_seed(config.seed)
    encoder = ImageEncoder(copy.deepcopy(model.visual)).to(device).train()
    trained = encoder if world is None else torch.nn.parallel.DistributedDataParallel(
        encoder, device_ids=[device.index] if device.type == "cuda" else None)
    weights = head.weights.to(device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, config.warmup, config.steps))
    stream = _forever(dataset, preprocess, config.batch_size // size, device, config.seed,
                      world.rank if world else 0, size)
    timer = StageTimer(progress if world is None or world.is_main else None, "finetune", config.steps)
    for step in range(config.steps):
        check_cancel(cancel, "fine-tuning")
        images, labels = next(stream)
        with autocast(device):
            feats = trained(images.to(device, non_blocking=True))
            logits = head.logit_scale * torch.nn.functional.normalize(feats.float(), dim=-1) @ weights.T
            loss = torch.nn.functional.cross_entropy(logits, labels.to(device))
        shown = mean_across(world, loss)
        if not torch.isfinite(shown):
            raise NumericalError(f"fine-tuning diverged at step {step} (loss {shown.item()}); lower the learning "
                                 f"rate (now {config.lr})")
        optimizer.zero_grad(set_to_none=True)
        if world is None:
            loss.backward()
        else:
            with collective(world, f"averaging gradients at step {step}"):
                loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        timer.update(step + 1, f"step {step + 1}/{config.steps}", shown.item())
    return {k: v.detach().cpu().clone() for k, v in encoder.visual.state_dict().items()}


def _forever(dataset, preprocess, batch_size: int, device: torch.device, seed: int, rank: int = 0,
             world_size: int = 1):
    """Endless shuffled batches of this rank's share; a last batch smaller than half a batch is skipped.

    The order is DistributedSampler's (a permutation seeded by seed + epoch; rank r takes every
    world_size-th index), so the ranks' batches at a step together form the single-process batch.
    """
    sampler = DistributedSampler(_Length(len(dataset)), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=world_size > 1)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        order = list(sampler)
        chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
        chunks = [c for c in chunks if len(c) * 2 >= min(batch_size, len(order))]
        yield from index_batches(dataset, preprocess, chunks, device)
        epoch += 1


class _Length:
    """The only thing DistributedSampler reads from a dataset is its length."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def finetuned_encoder(model: torch.nn.Module, state: dict[str, torch.Tensor], device: torch.device) -> ImageEncoder:
    """An eval-mode ImageEncoder with the fine-tuned weights (the pretrained model is untouched)."""
    visual = copy.deepcopy(model.visual)
    visual.load_state_dict(state)
    return ImageEncoder(visual).to(device).eval()
