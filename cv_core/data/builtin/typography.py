"""Typographic attack on ``digits``: each scan carries a conflicting rendered numeral or word.

The written class is never the true one: image i of class ``y`` shows the text of class
``(y + k) % 10`` with ``k`` in 1..9 drawn from the seed. The text is drawn in a bright
colour in a random corner, with the shipped DejaVu fonts, on top of the 32x32 upsampled
scan. Since the built-in model learned to read rendered numerals, this fools it; the
model card states by how much.
"""
from __future__ import annotations

import zlib

import numpy as np

from ...errors import InvalidInputError
from ...models.builtin import render as R
from ...models.builtin.captions import NUMBER_WORDS
from ..digits import digits_arrays
from .shifts import upsample

STYLES = ("numeral", "word")
_INKS = np.array([[255, 40, 40], [255, 230, 0], [0, 230, 255], [255, 255, 255]], dtype=np.float32)
_FONTS = ("DejaVuSans-Bold.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif-Bold.ttf")


def _stamp(img: np.ndarray, text: str, rng: np.random.Generator) -> np.ndarray:
    """Draw a numeral into a random corner of an (S, S, 3) float image, 13-16 px high."""
    box = int(rng.integers(13, 17))
    mask = R.fit_mask(R.text_mask(text, _FONTS[rng.integers(len(_FONTS))], 40, stroke=1), box, box)
    size = img.shape[0]
    top = 0 if rng.random() < 0.5 else size - mask.shape[0]
    left = 0 if rng.random() < 0.5 else size - mask.shape[1]
    placed = R.place(mask, size, top, left)
    return R.composite(placed, _INKS[rng.integers(len(_INKS))], img)


def typographic_digits_arrays(split: str, style: str = "numeral", seed: int = 0
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One split of ``digits`` with conflicting text.

    Returns images (N, 32, 32, 3) uint8, true labels (N,) int64 aligned with ``digits_arrays(split)``,
    and the written (attack) labels (N,) int64, never equal to the true ones.
    """
    if style not in STYLES:
        raise InvalidInputError(f"unknown typography style {style!r}; choose one of {', '.join(STYLES)}")
    images, labels = digits_arrays(split)
    rng = np.random.default_rng([seed, zlib.crc32(style.encode()), zlib.crc32(split.encode())])
    written = (labels + rng.integers(1, 10, size=len(labels))) % 10
    out = []
    for im, w in zip(upsample(images), written):
        if style == "numeral":
            out.append(_stamp(im.astype(np.float32), str(w), rng))
        else:
            out.append(_stamp_word(im.astype(np.float32), NUMBER_WORDS[w], rng))
    return R.to_uint8(np.stack(out)), labels, written.astype(np.int64)


def _stamp_word(img: np.ndarray, text: str, rng: np.random.Generator) -> np.ndarray:
    """A number word across the top or bottom band of the image, at most 11 px high."""
    mask = R.fit_mask(R.text_mask(text, _FONTS[rng.integers(len(_FONTS))], 40, stroke=1), 11, img.shape[0])
    size = img.shape[0]
    top = 0 if rng.random() < 0.5 else size - mask.shape[0]
    placed = R.place(mask, size, top, (size - mask.shape[1]) // 2)
    return R.composite(placed, _INKS[rng.integers(len(_INKS))], img)
