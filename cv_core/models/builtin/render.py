"""Low-level drawing for the procedural corpus and the typographic dataset.

Everything here is deterministic given a ``numpy.random.Generator`` and depends only on
the fonts shipped in ``assets/builtin/fonts`` and Pillow's built-in scalable font, never
on system fonts. Masks are float32 arrays in [0, 1]; images are uint8 RGB.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ...errors import WeightsUnavailableError
from . import ASSET_DIR

FONT_DIR = ASSET_DIR / "fonts"
#: Shipped DejaVu faces (licence in assets/builtin/fonts/LICENSE-DejaVu.txt) plus Pillow's own.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-ExtraLight.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf", "DejaVuSansCondensed-BoldOblique.ttf",
)
PILLOW_DEFAULT = "pillow-default"
FONT_NAMES = FONT_FILES + (PILLOW_DEFAULT,)
CANVAS = 64  # glyphs are drawn at this size, then transformed and resampled down


@lru_cache(maxsize=256)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    """A scalable font by file name (or ``PILLOW_DEFAULT``) at ``size`` pixels."""
    if name == PILLOW_DEFAULT:
        return ImageFont.load_default(size=size)
    path = FONT_DIR / name
    if not path.is_file():
        raise WeightsUnavailableError(f"font {path} is missing; restore assets/builtin/fonts from the repository")
    return ImageFont.truetype(str(path), size=size)


def text_mask(text: str, font_name: str, size: int, stroke: int = 0) -> np.ndarray:
    """Ink mask of ``text`` tightly cropped to its bounding box: (h, w) float32 in [0, 1]."""
    f = font(font_name, size)
    left, top, right, bottom = f.getbbox(text, stroke_width=stroke)
    w, h = max(1, right - left), max(1, bottom - top)
    img = Image.new("L", (w + 2, h + 2), 0)
    ImageDraw.Draw(img).text((1 - left, 1 - top), text, font=f, fill=255, stroke_width=stroke, stroke_fill=255)
    return crop_to_ink(np.asarray(img, dtype=np.float32) / 255.0)


def crop_to_ink(mask: np.ndarray, threshold: float = 0.05) -> np.ndarray:
    """Crop a (h, w) mask to the bounding box of pixels above ``threshold``."""
    ys, xs = np.nonzero(mask > threshold)
    if len(ys) == 0:
        return mask
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def affine_mask(mask: np.ndarray, rotate_deg: float, shear: float, aspect: float) -> np.ndarray:
    """Rotate, slant (x += shear * y) and stretch a mask; returns it cropped to its ink."""
    h, w = mask.shape
    a = np.deg2rad(rotate_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    fwd = rot @ np.array([[1.0, -shear], [0.0, 1.0]]) @ np.diag([aspect, 1.0])  # input -> output (x, y)
    corners = fwd @ (np.array([[0, w, 0, w], [0, 0, h, h]], dtype=np.float64) - [[w / 2], [h / 2]])
    out_w = int(np.ceil(np.ptp(corners[0]))) + 2
    out_h = int(np.ceil(np.ptp(corners[1]))) + 2
    inv = np.linalg.inv(fwd)
    # PIL's affine maps output (x, y) to input (a x + b y + c, d x + e y + f); keep the centres aligned
    offset = np.array([w / 2, h / 2]) - inv @ np.array([out_w / 2, out_h / 2])
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    img = Image.fromarray((mask * 255).astype(np.uint8))
    out = img.transform((out_w, out_h), Image.AFFINE, coeffs, Image.BILINEAR)
    return crop_to_ink(np.asarray(out, dtype=np.float32) / 255.0)


def elastic_mask(mask: np.ndarray, rng: np.random.Generator, strength: float, smooth: float) -> np.ndarray:
    """Warp a (h, w) mask by a smooth random displacement field (Simard-style elastic distortion).

    strength: displacement scale as a share of the mask height; smooth: field smoothness, same unit.
    """
    from scipy.ndimage import gaussian_filter, map_coordinates

    h, w = mask.shape
    pad = int(0.15 * h) + 2
    m = np.pad(mask, pad)
    sigma = max(1.0, smooth * h)
    field = [gaussian_filter(rng.uniform(-1, 1, m.shape), sigma, mode="constant") for _ in range(2)]
    scale = strength * h / max(1e-6, max(np.abs(f).max() for f in field))
    yy, xx = np.mgrid[0:m.shape[0], 0:m.shape[1]].astype(np.float32)
    coords = [yy + scale * field[0], xx + scale * field[1]]
    return crop_to_ink(map_coordinates(m, coords, order=1, mode="constant").astype(np.float32))


def fit_mask(mask: np.ndarray, box_h: int, box_w: int) -> np.ndarray:
    """Resize a mask (keeping its aspect ratio) so it fits inside (box_h, box_w)."""
    h, w = mask.shape
    scale = min(box_h / h, box_w / w)
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    img = Image.fromarray((mask * 255).astype(np.uint8)).resize((nw, nh), Image.LANCZOS)
    return np.asarray(img, dtype=np.float32) / 255.0


def place(mask: np.ndarray, size: int, top: int, left: int) -> np.ndarray:
    """Paste a mask onto an empty (size, size) canvas at (top, left), clipping at the borders."""
    out = np.zeros((size, size), dtype=np.float32)
    h, w = mask.shape
    t0, l0 = max(0, top), max(0, left)
    t1, l1 = min(size, top + h), min(size, left + w)
    if t1 > t0 and l1 > l0:
        out[t0:t1, l0:l1] = mask[t0 - top:t1 - top, l0 - left:l1 - left]
    return out


def composite(mask: np.ndarray, fg: np.ndarray, bg: np.ndarray | float) -> np.ndarray:
    """Blend ``fg`` (3,) colour into ``bg`` ((3,) colour or (H, W, 3) image) by ``mask`` (H, W).

    Returns (H, W, 3) float32 in [0, 255].
    """
    bg_img = np.broadcast_to(np.asarray(bg, dtype=np.float32), mask.shape + (3,))
    m = mask[..., None]
    return bg_img * (1.0 - m) + np.asarray(fg, dtype=np.float32) * m


def degrade(img: np.ndarray, low: int, size: int) -> np.ndarray:
    """Area-downsample an (H, W, 3) image to ``low`` px, then bicubic-upsample to ``size``.

    This is exactly what happens to an 8x8 ``digits`` image: UCI made it by counting ink in
    4x4 blocks, and open_clip's preprocess upsamples it with PIL's bicubic filter.
    """
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    if low < pil.width:
        pil = pil.resize((low, low), Image.BOX)
    return np.asarray(pil.resize((size, size), Image.BICUBIC))


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 255).astype(np.uint8)
