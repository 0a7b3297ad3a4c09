"""scikit-learn's bundled handwritten digits (UCI 8x8): the offline dataset.

The split is deterministic and stratified, so every variant derived from it (the
environment-shifted and typographic datasets of the built-in model) shares it.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import InvalidInputError

SPLITS = ("train", "val", "test")
#: Share of each class in each split (train, val, test); test is what the CLI reports on.
SPLIT_FRACTIONS = (0.6, 0.1, 0.3)
DIGIT_NAMES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9")


@lru_cache(maxsize=4)
def _split_indices(seed: int) -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    y = load_digits().target
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_train = int(round(SPLIT_FRACTIONS[0] * len(idx)))
        n_val = int(round(SPLIT_FRACTIONS[1] * len(idx)))
        parts["train"].append(idx[:n_train])
        parts["val"].append(idx[n_train:n_train + n_val])
        parts["test"].append(idx[n_train + n_val:])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def digits_arrays(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of one split.

    Returns images (N, 8, 8) uint8 in [0, 255] (bright ink on a dark background, as in
    the UCI scans and MNIST) and labels (N,) int64.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    from sklearn.datasets import load_digits

    data = load_digits()
    idx = _split_indices(seed)[split]
    images = np.round(data.images[idx] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, data.target[idx].astype(np.int64)
