"""Offline datasets derived from ``digits`` for the paper's other applications.

Registered in the dataset registry (``cv_core.data.datasets``) as:

- ``digits-snow``, ``digits-fog``, ``digits-noise``, ``digits-contrast``: environment shifts
  (environmental adaptation: remove the environment with ``kappa_{env+c} - kappa_c``);
- ``digits-typo``, ``digits-typo-word``: typographic attack, a conflicting numeral / number
  word written on every scan (labels are the true digits).

All are deterministic, share the split of ``digits`` image by image, and are (N, 32, 32, 3)
uint8 RGB. ``variant_arrays(name, split)`` gives the arrays directly.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import UnknownNameError
from .shifts import SHIFTS, shifted_digits_arrays
from .typography import typographic_digits_arrays

_TYPO = {"typo": "numeral", "typo-word": "word"}
#: Variant names (dataset names are "digits-" + variant).
VARIANTS = tuple(SHIFTS.list()) + tuple(_TYPO)
DATASET_NAMES = tuple(f"digits-{v}" for v in VARIANTS)

__all__ = ["VARIANTS", "DATASET_NAMES", "variant_arrays", "written_labels", "shifted_digits_arrays", "typographic_digits_arrays"]


@lru_cache(maxsize=16)
def _cached(variant: str, split: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    written = None
    if variant in _TYPO:
        images, labels, written = typographic_digits_arrays(split, _TYPO[variant], seed)
        written.flags.writeable = False
    else:
        images, labels = shifted_digits_arrays(variant, split, seed)
    images.flags.writeable = False
    return images, labels, written


def variant_arrays(variant: str, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 (read-only, cached) and labels (N,) of one variant's split."""
    return _variant(variant, split, seed)[:2]


def written_labels(variant: str, split: str, seed: int = 0) -> np.ndarray | None:
    """The class written on each image of a typographic variant's split (never the true one), aligned with
    ``variant_arrays``; None for the environment variants."""
    return _variant(variant, split, seed)[2]


def _variant(variant: str, split: str, seed: int):
    if variant not in VARIANTS:
        raise UnknownNameError("digits variant", variant, VARIANTS)
    return _cached(variant, split, seed)


_DESCRIPTIONS = {
    "snow": "falling snow", "fog": "patchy fog", "noise": "strong sensor noise", "contrast": "low contrast",
    "typo": "a conflicting printed numeral in a corner (typographic attack)",
    "typo-word": "a conflicting number word written across it (typographic attack)",
}


def _register() -> None:
    from .. import templates as T
    from ..datasets import ArrayImageDataset, DatasetInfo, register_dataset

    def make_loader(variant: str):
        def load(root: Path, split: str, download: bool) -> ArrayImageDataset:
            images, labels = variant_arrays(variant, split)
            ds = ArrayImageDataset(images, labels, T.DIGIT_NAMES)
            written = written_labels(variant, split)
            if written is not None:
                ds.written_targets = [int(w) for w in written]  # datasets.written_targets reads it
            return ds
        return load

    for v in VARIANTS:
        register_dataset(DatasetInfo(
            name=f"digits-{v}", templates=T.NUMBER, load=make_loader(v), class_names=T.DIGIT_NAMES,
            offline=True, description=f"The handwritten digits (same split) with {_DESCRIPTIONS[v]}; "
                                      "generated offline, 32x32 RGB."))


_register()
