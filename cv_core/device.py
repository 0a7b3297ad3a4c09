"""Device choice and mixed precision. The only place that picks a device for 'auto'."""
from __future__ import annotations

import contextlib

import torch

from .errors import InvalidInputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA, then Apple MPS, then CPU. An explicit but absent device is an error."""
    if isinstance(name, torch.device):
        return name
    base = name.split(":")[0]
    if base not in DEVICE_CHOICES:
        raise InvalidInputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError("device 'mps' was asked for but Apple MPS is not available; use cpu or auto")
    return torch.device(name)


def autocast(device: torch.device):
    """Mixed precision on GPUs (bf16 where supported, else fp16); full precision on CPU."""
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def describe(device: torch.device) -> str:
    """Human name of a device, e.g. 'cuda (NVIDIA H100 80GB HBM3)'."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
