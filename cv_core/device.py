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
    base, colon, index = str(name).strip().partition(":")
    if base not in DEVICE_CHOICES:
        raise InvalidInputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if colon and (base == "auto" or not index.isdigit()):
        raise InvalidInputError(f"device {name!r} is not valid: write auto, cpu, mps, cuda or cuda:N with N the "
                                "index of a visible GPU (0, 1, ...)")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if base == "cuda" and colon and int(index) >= torch.cuda.device_count():
        raise InvalidInputError(f"device {name!r}: there is no GPU {index}; {torch.cuda.device_count()} visible, "
                                f"numbered 0..{torch.cuda.device_count() - 1}")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InvalidInputError("device 'mps' was asked for but Apple MPS is not available; use cpu or auto")
    return torch.device(f"{base}:{index}" if colon else base)


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
