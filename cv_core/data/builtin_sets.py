"""The offline dataset every install has: scikit-learn's bundled handwritten digits."""
from __future__ import annotations

from pathlib import Path

from . import templates as T
from .datasets import ArrayImageDataset, DatasetInfo, register_dataset
from .digits import digits_arrays


def _load_digits(root: Path, split: str, download: bool) -> ArrayImageDataset:
    images, labels = digits_arrays(split)
    return ArrayImageDataset(images, labels, T.DIGIT_NAMES)


register_dataset(DatasetInfo(
    name="digits", templates=T.NUMBER, load=_load_digits, class_names=T.DIGIT_NAMES, offline=True,
    description="Handwritten digits 0-9, 8x8 scans (UCI, bundled with scikit-learn): 1,797 images, "
                "split 60/10/30 per class. Works offline.",
))
