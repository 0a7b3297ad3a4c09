"""Simple shapes and textures for the procedural corpus, as (size, size) float32 masks in [0, 1]."""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

_SS = 4  # supersampling factor for anti-aliased edges


def _polygon(cx: float, cy: float, r: float, n: int, rot: float, inner: float | None = None):
    pts = []
    for k in range(n * (2 if inner else 1)):
        rad = r if inner is None or k % 2 == 0 else r * inner
        a = rot + k * math.pi / (n if inner else n / 2)
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def shape_mask(rng: np.random.Generator, name: str, size: int, scale: float) -> np.ndarray:
    """A filled shape of relative size ``scale`` at a random position: (size, size) float32."""
    big = size * _SS
    r = scale * big / 2
    cx = rng.uniform(r, big - r) if big > 2 * r else big / 2
    cy = rng.uniform(r, big - r) if big > 2 * r else big / 2
    rot = float(rng.uniform(0, 2 * math.pi))
    img = Image.new("L", (big, big), 0)
    d = ImageDraw.Draw(img)
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(2, int(r * 0.35))
    if name == "circle":
        d.ellipse(box, fill=255)
    elif name == "ring":
        d.ellipse(box, outline=255, width=w)
    elif name == "square":
        d.polygon(_polygon(cx, cy, r * 1.3, 4, rot), fill=255)
    elif name == "diamond":
        d.polygon(_polygon(cx, cy, r, 4, 0.0), fill=255)
    elif name == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, -math.pi / 2 + rng.uniform(-0.3, 0.3)), fill=255)
    elif name == "star":
        d.polygon(_polygon(cx, cy, r, 5, -math.pi / 2, inner=0.45), fill=255)
    elif name == "cross":
        d.line((cx - r, cy, cx + r, cy), fill=255, width=w)
        d.line((cx, cy - r, cx, cy + r), fill=255, width=w)
    elif name == "bar":
        dx, dy = r * math.cos(rot), r * math.sin(rot)
        d.line((cx - dx, cy - dy, cx + dx, cy + dy), fill=255, width=w)
    else:
        raise ValueError(f"unknown shape {name!r}")
    return np.asarray(img.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def texture_image(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    """A full-frame texture mask: (size, size) float32 in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    period = float(rng.uniform(3, 9))
    phase = float(rng.uniform(0, 2 * math.pi))
    if name == "striped":
        u = y if rng.random() < 0.5 else x
        return (np.sin(2 * math.pi * u / period + phase) > 0).astype(np.float32)
    if name == "diagonal striped":
        s = 1 if rng.random() < 0.5 else -1
        return (np.sin(2 * math.pi * (x + s * y) / period + phase) > 0).astype(np.float32)
    if name == "checkered":
        p = int(period)
        return (((x // p) + (y // p)) % 2).astype(np.float32)
    if name == "dotted":
        p = max(4.0, period)
        return ((np.hypot((x % p) - p / 2, (y % p) - p / 2) < p * 0.28)).astype(np.float32)
    if name == "grid":
        p = max(4, int(period))
        return (((x % p) < 1) | ((y % p) < 1)).astype(np.float32)
    if name == "noisy":
        return rng.random((size, size)).astype(np.float32)
    if name == "wavy":
        return (np.sin(2 * math.pi * (y + 2.5 * np.sin(x / 3 + phase)) / period) > 0).astype(np.float32)
    if name == "gradient":
        a = float(rng.uniform(0, 2 * math.pi))
        g = x * math.cos(a) + y * math.sin(a)
        return ((g - g.min()) / max(1e-6, float(g.max() - g.min()))).astype(np.float32)
    raise ValueError(f"unknown texture {name!r}")
