"""Environment-shifted ``digits``: snow, fog, noise, low contrast.

Each 8x8 scan is upsampled to 32x32 RGB with PIL's bicubic filter (what the built-in
model's preprocess does anyway), then the environment is drawn on it. Images and
randomness depend only on (seed, kind, split), and labels and order are those of
:func:`cv_core.data.digits.digits_arrays`, so a shifted split lines up image by image
with the clean one.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFilter

from ...errors import InvalidInputError
from ...registry import Registry
from ..digits import digits_arrays

SIZE = 32
Shift = Callable[[np.ndarray, np.random.Generator], np.ndarray]  # (S, S, 3) float32 0..255 -> same
SHIFTS: Registry[Shift] = Registry("environment shift")


def upsample(images: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(N, h, w) uint8 grey scans -> (N, size, size, 3) uint8 RGB, bicubic."""
    return np.stack([np.asarray(Image.fromarray(im).convert("RGB").resize((size, size), Image.BICUBIC))
                     for im in images])


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: (size, size) float32."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grid).resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


@SHIFTS.decorator("snow")
def snow(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bright flakes of 1-3 px over a slightly whitened, bluish scene."""
    size = img.shape[0]
    flakes = Image.new("L", (size * 2, size * 2), 0)
    pix = flakes.load()
    for _ in range(int(rng.integers(25, 45))):
        x, y, r = int(rng.integers(0, size * 2)), int(rng.integers(0, size * 2)), int(rng.integers(1, 3))
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                if dx * dx + dy * dy <= r * r and 0 <= x + dx < size * 2 and 0 <= y + dy < size * 2:
                    pix[x + dx, y + dy] = 255
    mask = np.asarray(flakes.filter(ImageFilter.GaussianBlur(0.6)).resize((size, size), Image.BOX),
                      dtype=np.float32)[..., None] / 255.0
    base = img * 0.75 + np.array([55.0, 60.0, 75.0])
    return base * (1 - mask) + 250.0 * mask


@SHIFTS.decorator("fog")
def fog(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A patchy light-grey haze covering 45-70% of the contrast."""
    haze = 0.45 + 0.25 * _smooth_noise(rng, img.shape[0], 4)[..., None]
    return img * (1 - haze) + 200.0 * haze


@SHIFTS.decorator("noise")
def noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Strong Gaussian sensor noise (sigma 45 per channel)."""
    return img + rng.normal(0.0, 45.0, img.shape)


@SHIFTS.decorator("contrast")
def low_contrast(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Contrast squeezed to 20-30% around a mid grey."""
    return 110.0 + (img - 110.0) * rng.uniform(0.2, 0.3)


def shifted_digits_arrays(kind: str, split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One split of ``digits`` under environment ``kind`` (see ``SHIFTS.list()``).

    Returns images (N, 32, 32, 3) uint8 and labels (N,) int64, aligned with ``digits_arrays(split)``.
    """
    if kind not in SHIFTS:
        raise InvalidInputError(f"unknown environment shift {kind!r}; choose one of {', '.join(SHIFTS.list())}")
    images, labels = digits_arrays(split)
    shift = SHIFTS.get(kind)
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), zlib.crc32(split.encode())])
    out = np.stack([shift(im.astype(np.float32), rng) for im in upsample(images)])
    return np.clip(np.round(out), 0, 255).astype(np.uint8), labels
