"""Batched extraction of image latents f(x) = model.encode_image(x) (before L2 normalisation)."""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..device import autocast
from ..progress import CancelFn, ProgressFn, StageTimer, check_cancel
from ..results import FeatureSet


class Transformed(Dataset):
    """Applies ``transform`` to the images of an ImageDataset: -> (tensor (3, H, W), label)."""

    def __init__(self, base, transform: Callable):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, label = self.base[i]
        return self.transform(image), label


class TensorImages(Dataset):
    """Images already preprocessed: images (N, 3, H, W) float32, targets, class_names."""

    def __init__(self, images: torch.Tensor, targets: list[int], class_names):
        self.images, self.targets, self.class_names = images, list(targets), tuple(class_names)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


def identity(x):
    return x


def preprocess_once(dataset, preprocess: Callable, max_bytes: int = 1 << 30):
    """Preprocess every image once into memory when it fits in ``max_bytes``, so that fine-tuning and
    both encoders reuse the tensors; otherwise return None (callers then stream from disk)."""
    first = preprocess(dataset[0][0])
    if first.numel() * first.element_size() * len(dataset) > max_bytes:
        return None
    images = torch.empty((len(dataset), *first.shape), dtype=first.dtype)
    for i in range(len(dataset)):
        images[i] = preprocess(dataset[i][0])
    return TensorImages(images, dataset.targets, dataset.class_names)


def batches(dataset, preprocess: Callable, batch_size: int, device: torch.device):
    """Yield (images (B, 3, H, W), labels (B,)) batches in order."""
    n = len(dataset)
    yield from index_batches(dataset, preprocess, [list(range(i, min(i + batch_size, n)))
                                                   for i in range(0, n, batch_size)], device)


def index_batches(dataset, preprocess: Callable, chunks: list[list[int]], device: torch.device):
    """Yield (images (b, 3, H, W), labels (b,)) for each list of indices in ``chunks``. In-memory tensors
    are sliced directly (a DataLoader's per-item collation costs more than a small model's forward pass
    on a CPU)."""
    if isinstance(dataset, TensorImages) and preprocess is identity:
        targets = torch.as_tensor(dataset.targets)
        for chunk in chunks:
            idx = torch.as_tensor(chunk, dtype=torch.long)
            yield dataset.images[idx], targets[idx]
        return
    yield from DataLoader(Transformed(dataset, preprocess), batch_sampler=chunks, **loader_kwargs(device))


def loader_kwargs(device: torch.device) -> dict:
    """Worker processes and pinned memory only pay off when a GPU is waiting for the data."""
    if device.type == "cuda":
        return {"num_workers": min(8, os.cpu_count() or 1), "pin_memory": True, "persistent_workers": False}
    return {"num_workers": 0}


@torch.no_grad()
def encode_images(model: torch.nn.Module, dataset, preprocess: Callable, device: torch.device,
                  batch_size: int = 256, progress: ProgressFn = None, cancel: CancelFn = None,
                  stage: str = "extract", encoder: str = "pretrained", split: str = "test") -> FeatureSet:
    """Encode every image of ``dataset`` -> FeatureSet(features (N, D) float32 on CPU, labels (N,)).

    On a CUDA out-of-memory error the batch is halved and the pass restarts (reported via ``progress``).
    """
    model.eval()
    while True:
        try:
            return _encode(model, dataset, preprocess, device, batch_size, progress, cancel, stage, encoder, split)
        except torch.OutOfMemoryError:
            if batch_size <= 1:
                raise
            batch_size //= 2
            torch.cuda.empty_cache()
            if progress is not None:
                StageTimer(progress, stage, None).update(0, f"GPU out of memory: retrying with batch {batch_size}")


def _encode(model, dataset, preprocess, device, batch_size, progress, cancel, stage, encoder, split):
    loader = batches(dataset, preprocess, batch_size, device)
    timer = StageTimer(progress, stage, len(dataset))
    feats, labels, done = [], [], 0
    for images, y in loader:
        check_cancel(cancel, stage)
        with autocast(device):
            f = model.encode_image(images.to(device, non_blocking=True))
        feats.append(f.float().cpu())
        labels.append(y)
        done += len(y)
        timer.update(done, f"{done}/{len(dataset)} images")
    return FeatureSet(torch.cat(feats), torch.cat(labels).long(), tuple(dataset.class_names), split, encoder)


@torch.no_grad()
def encode_pair_to_store(pre_model: torch.nn.Module, ft_model: torch.nn.Module, dataset, preprocess: Callable,
                         device: torch.device, writer, split: str, batch_size: int = 256,
                         source: Callable[[int], str] | None = None, progress: ProgressFn = None,
                         cancel: CancelFn = None) -> int:
    """Encode every image of ``dataset`` with both encoders (each batch decoded once) into a
    FeatureStoreWriter, batch by batch: the latents are never all in memory. source(row) -> str: the
    metadata's source column. Returns the rows written."""
    pre_model.eval()
    ft_model.eval()
    stage = f"extract:{split}"
    timer, done = StageTimer(progress, stage, len(dataset)), 0
    for images, y in batches(dataset, preprocess, batch_size, device):
        check_cancel(cancel, stage)
        images = images.to(device, non_blocking=True)
        with autocast(device):
            pre, ft = pre_model.encode_image(images), ft_model.encode_image(images)
        rows = torch.arange(done, done + len(y))
        sources = [source(int(r)) for r in rows] if source is not None else None
        writer.add(split, "pre", pre.float().cpu(), y, rows, sources)
        writer.add(split, "ft", ft.float().cpu(), y, rows, sources)
        done += len(y)
        timer.update(done, f"{done}/{len(dataset)} images")
    return done


def image_source(dataset, i: int) -> str | None:
    """The file of image ``i`` when the dataset reads files (through SubsetDataset views), else None."""
    while hasattr(dataset, "base") and hasattr(dataset, "indices"):
        dataset, i = dataset.base, dataset.indices[i]
    samples = getattr(dataset, "samples", None)
    return str(samples[i][0]) if samples is not None else None
