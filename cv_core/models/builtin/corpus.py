"""Deterministic procedural pretraining corpus of the built-in CLIP: captioned images.

Sample ``i`` of a corpus with seed ``s`` depends only on ``(s, i)`` (its own
``numpy`` generator), so a corpus is reproducible, can be generated in any order and a
prefix of a large corpus equals the small one. Kinds of samples (weights in ``MIX``):
printed numerals (many fonts, sizes, weights, slants, positions, contrasts, colours and
both polarities; half are rendered like the UCI digits: glyph filling the frame, area-
downsampled to 8x8 and bicubic-upsampled), number words, coloured shapes, textures and
written text. No handwritten data is used.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...errors import InvalidInputError
from ...registry import Registry
from . import captions as C
from . import render as R
from .shapes import shape_mask, texture_image

Sample = tuple[np.ndarray, str]  # (size, size, 3) uint8 image, caption
RENDERERS: Registry[Callable[[np.random.Generator, int], Sample]] = Registry("corpus renderer")
#: Share of each kind of sample in the corpus of v1 (kept as it is: v1's weights were trained on it).
MIX = {"numeral": 0.65, "number_word": 0.08, "shape": 0.11, "texture": 0.07, "text": 0.09}
#: v2 adds what CLIP learns from web captions and v1 never saw: pictures that carry written text captioned by
#: that text ("labelled": a scene, often another numeral, with a numeral or number word written on it) and
#: numerals seen through weather and poor sensors with captions that say so ("environment").
MIX_V2 = {"numeral": 0.48, "number_word": 0.07, "shape": 0.07, "texture": 0.05, "text": 0.07, "labelled": 0.16,
          "environment": 0.10}
#: v3 is v2 with more labelled samples (22%, taken from the plain numerals) and more of them written as number
#: words (``labelled_words``: 55% instead of 40%): v2 read the written numeral on 70% of digits-typo but the
#: written number word on only 36.5% of digits-typo-word (issue 12: >= 50% for both).
MIX_V3 = {"numeral": 0.42, "number_word": 0.07, "shape": 0.07, "texture": 0.05, "text": 0.07, "labelled_words": 0.22,
          "environment": 0.10}
MIXES = {"v1": MIX, "v2": MIX_V2, "v3": MIX_V3}
#: Share of labelled samples whose writing is a number word (the rest: a numeral): ``labelled`` (v2) and
#: ``labelled_words`` (v3).
LABEL_WORD_SHARE = 0.4
LABEL_WORD_SHARE_V3 = 0.55
_WORD_SHARES = {"labelled": LABEL_WORD_SHARE, "labelled_words": LABEL_WORD_SHARE_V3}


def label_word_share(version: str) -> float | None:
    """The share of number words among a version's labelled samples (None: its corpus has none)."""
    return next((share for kind, share in _WORD_SHARES.items() if kind in MIXES[version]), None)
_COLOUR_NAMES = tuple(C.COLOURS)
_LUM = {n: 0.299 * r + 0.587 * g + 0.114 * b for n, (r, g, b) in C.COLOURS.items()}


def _colours(rng: np.random.Generator, light_on_dark: bool | None = None):
    """Foreground and background (name, rgb (3,) float) with enough contrast and a random level of it."""
    grey = rng.random() < 0.5
    names = ("white", "gray", "black") if grey else _COLOUR_NAMES
    while True:
        fg, bg = rng.choice(names, size=2)
        gap = _LUM[fg] - _LUM[bg]
        if abs(gap) > 60 and (light_on_dark is None or (gap > 0) == light_on_dark):
            break
    f, b = np.array(C.COLOURS[fg], np.float32), np.array(C.COLOURS[bg], np.float32)
    f, b = f + rng.normal(0, 12, 3), b + rng.normal(0, 12, 3)
    contrast = rng.uniform(0.35, 1.0)
    mid = (f + b) / 2
    return str(fg), mid + (f - mid) * contrast, str(bg), mid + (b - mid) * contrast


def _glyph(rng: np.random.Generator, text: str, size: int = 44, warp: float = 0.0) -> tuple[np.ndarray, dict]:
    """A randomly styled ink mask of ``text`` and the style facts used for captions.

    warp: probability of a smooth elastic distortion of the printed glyph (wobbly strokes).
    """
    font = R.FONT_NAMES[rng.integers(len(R.FONT_NAMES))]
    stroke = int(rng.choice([0, 0, 1, 2, 3, 4]))
    shear = float(rng.uniform(-0.4, 0.4)) if rng.random() < 0.6 else 0.0
    mask = R.affine_mask(R.text_mask(text, font, size, stroke), float(np.clip(rng.normal(0, 7), -18, 18)),
                         shear, float(rng.uniform(0.6, 1.3)))
    if rng.random() < warp:
        mask = R.elastic_mask(mask, rng, strength=float(rng.uniform(0.04, 0.12)), smooth=0.12)
    bold = stroke >= 3 or "Bold" in font
    thin = stroke == 0 and ("ExtraLight" in font or "Mono." in font)
    style = "bold" if bold else "thin" if thin else "slanted" if abs(shear) > 0.25 else "plain"
    return mask, {"style": style}


def _uci_like(rng: np.random.Generator, mask: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """Glyph filling the frame like a UCI digit (before its 8x8 downsampling): (size, size) mask."""
    box = int(rng.integers(int(size * 0.8), size + 1))
    fitted = R.fit_mask(mask, box, int(box * rng.uniform(0.75, 1.0)))
    top = (size - fitted.shape[0]) // 2 + int(rng.integers(-1, 2))
    left = (size - fitted.shape[1]) // 2 + int(rng.integers(-1, 2))
    low = int(rng.choice([8, 8, 8, 8, 12, 16]))
    return R.place(fitted, size, top, left), low


def _free_place(rng: np.random.Generator, mask: np.ndarray, size: int, lo: float = 0.3) -> np.ndarray:
    box = int(rng.integers(int(size * lo), size + 1))
    fitted = R.fit_mask(mask, box, box)
    top = int(rng.integers(0, size - fitted.shape[0] + 1))
    left = int(rng.integers(0, size - fitted.shape[1] + 1))
    return R.place(fitted, size, top, left)


def _finish(rng: np.random.Generator, canvas: np.ndarray, size: int, low: int | None) -> np.ndarray:
    """Optional noise and resolution loss; returns uint8 (size, size, 3)."""
    if rng.random() < 0.3:
        canvas = canvas + rng.normal(0, rng.uniform(2, 18), canvas.shape)
    if low is None and rng.random() < 0.5:
        low = int(rng.integers(8, size))
    return R.to_uint8(R.degrade(canvas, low, size) if low else canvas)


@RENDERERS.decorator("numeral")
def numeral(rng: np.random.Generator, size: int) -> Sample:
    d = int(rng.integers(10))
    mask, facts = _glyph(rng, str(d), warp=0.7)
    uci = rng.random() < 0.65
    fg, fgc, bg, bgc = _colours(rng, light_on_dark=True if uci and rng.random() < 0.8 else None)
    if uci:
        placed, low = _uci_like(rng, mask, size)
    else:
        placed, low = _free_place(rng, mask, size), None
        area = float(placed.sum()) / size ** 2
        facts["style"] = "small" if area < 0.05 else "large" if area > 0.25 else facts["style"]
    img = _finish(rng, R.composite(placed, fgc, bgc), size, low)
    if low is not None and low <= 12 and rng.random() < 0.5:
        facts["style"] = "blurry"
    if rng.random() < 0.6:
        template = C.NUMERAL_GENERIC[rng.integers(len(C.NUMERAL_GENERIC))]
    else:
        template = C.NUMERAL_DETAILED[rng.integers(len(C.NUMERAL_DETAILED))]
    caption = template.format(d=d, w=C.NUMBER_WORDS[d], fg=fg, bg=bg, style=C.STYLE_WORDS[facts["style"]])
    return img, caption


@RENDERERS.decorator("number_word")
def number_word(rng: np.random.Generator, size: int) -> Sample:
    word = C.NUMBER_WORDS[rng.integers(10)]
    shown = (word, word.upper(), word.capitalize())[rng.integers(3)]
    mask, _ = _glyph(rng, shown, size=28)
    fg, fgc, bg, bgc = _colours(rng)
    img = _finish(rng, R.composite(_free_place(rng, mask, size, lo=0.7), fgc, bgc), size, None)
    return img, C.WORD_TEMPLATES[rng.integers(len(C.WORD_TEMPLATES))].format(w=word, fg=fg, bg=bg)


@RENDERERS.decorator("shape")
def shape(rng: np.random.Generator, size: int) -> Sample:
    name = C.SHAPES[rng.integers(len(C.SHAPES))]
    fg, fgc, bg, bgc = _colours(rng)
    scale = float(rng.uniform(0.3, 0.95))
    mask = shape_mask(rng, name, size, scale)
    img = _finish(rng, R.composite(mask, fgc, bgc), size, None)
    template = C.SHAPE_TEMPLATES[rng.integers(len(C.SHAPE_TEMPLATES))]
    return img, template.format(shape=name, fg=fg, bg=bg, size="small" if scale < 0.55 else "large")


@RENDERERS.decorator("texture")
def texture(rng: np.random.Generator, size: int) -> Sample:
    name = C.TEXTURES[rng.integers(len(C.TEXTURES))]
    fg, fgc, bg, bgc = _colours(rng)
    img = _finish(rng, R.composite(texture_image(rng, name, size), fgc, bgc), size, None)
    template = C.TEXTURE_TEMPLATES[rng.integers(len(C.TEXTURE_TEMPLATES))]
    return img, template.format(texture=name, fg=fg, bg=bg)


@RENDERERS.decorator("text")
def text(rng: np.random.Generator, size: int) -> Sample:
    word = C.TEXT_WORDS[rng.integers(len(C.TEXT_WORDS))]
    mask, _ = _glyph(rng, word, size=28)
    fg, fgc, bg, bgc = _colours(rng)
    img = _finish(rng, R.composite(_free_place(rng, mask, size, lo=0.6), fgc, bgc), size, None)
    return img, C.TEXT_TEMPLATES[rng.integers(len(C.TEXT_TEMPLATES))].format(t=word, fg=fg, bg=bg)


_INKS = ("red", "yellow", "cyan", "white", "orange", "pink", "green", "blue")


def _uci_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, int]:
    """A light-on-dark numeral rendered like a UCI scan (glyph filling the frame, 8x8 blocks): image, digit."""
    d = int(rng.integers(10))
    mask, _ = _glyph(rng, str(d), warp=0.7)
    placed, low = _uci_like(rng, mask, size)
    ink, paper = rng.uniform(170, 255), rng.uniform(0, 40)
    return R.degrade(R.composite(placed, np.full(3, ink), np.full(3, paper)), low, size).astype(np.float32), d


def _offset(rng: np.random.Generator, span: int, corner: bool) -> int:
    """Where a mark starts along one axis: at either edge (corner) or anywhere in ``0..span``."""
    return (0 if rng.random() < 0.5 else span) if corner else int(rng.integers(0, span + 1))


@RENDERERS.decorator("labelled")
def labelled(rng: np.random.Generator, size: int, word_share: float = LABEL_WORD_SHARE) -> Sample:
    """A scene with a numeral or number word written on it, captioned by what is written (as web captions of
    signs and labels are). The scene is another numeral half of the time, else a shape or a texture.
    word_share: the chance that the writing is a number word."""
    pick, scene_digit = rng.random(), None
    if pick < 0.5:
        scene, scene_digit = _uci_scene(rng, size)
    else:
        fg, fgc, bg, bgc = _colours(rng)
        art = (shape_mask(rng, C.SHAPES[rng.integers(len(C.SHAPES))], size, float(rng.uniform(0.5, 0.95)))
               if pick < 0.75 else texture_image(rng, C.TEXTURES[rng.integers(len(C.TEXTURES))], size))
        scene = R.composite(art, fgc, bgc)
    w = int(rng.integers(10)) if scene_digit is None else (scene_digit + int(rng.integers(1, 10))) % 10
    as_word = rng.random() < word_share
    font = R.FONT_NAMES[rng.integers(len(R.FONT_NAMES))]
    mask = R.text_mask(C.NUMBER_WORDS[w] if as_word else str(w), font, 40, stroke=int(rng.integers(0, 3)))
    if as_word:
        mask = R.fit_mask(mask, int(rng.integers(8, 14)), size)
    else:
        box = int(rng.integers(10, 19))
        mask = R.fit_mask(mask, box, box)
    corner = rng.random() < 0.6
    top, left = _offset(rng, size - mask.shape[0], corner), _offset(rng, size - mask.shape[1], corner)
    ink = np.array(C.COLOURS[_INKS[rng.integers(len(_INKS))]], np.float32) + rng.normal(0, 12, 3)
    img = _finish(rng, R.composite(R.place(mask, size, top, left), ink, scene), size, size)
    if as_word and rng.random() < 0.5:
        caption = C.LABEL_WORD_TEMPLATES[rng.integers(len(C.LABEL_WORD_TEMPLATES))].format(w=C.NUMBER_WORDS[w])
    else:
        templates = C.LABEL_TEMPLATES if rng.random() < 0.5 else C.NUMERAL_GENERIC
        caption = templates[rng.integers(len(templates))].format(d=w, w=C.NUMBER_WORDS[w])
    return img, caption


@RENDERERS.decorator("labelled_words")
def labelled_words(rng: np.random.Generator, size: int) -> Sample:
    """``labelled`` with number words more often (``LABEL_WORD_SHARE_V3``): v3's labelled samples."""
    return labelled(rng, size, LABEL_WORD_SHARE_V3)


@RENDERERS.decorator("environment")
def environment(rng: np.random.Generator, size: int) -> Sample:
    """A numeral (like a UCI scan) in snow, fog, sensor noise or low contrast, with a caption that names both."""
    from ...data.builtin.shifts import SHIFTS

    scene, d = _uci_scene(rng, size)
    env = C.ENVIRONMENTS[rng.integers(len(C.ENVIRONMENTS))]
    img = R.to_uint8(SHIFTS.get(env)(scene, rng))
    template = C.ENVIRONMENT_TEMPLATES[rng.integers(len(C.ENVIRONMENT_TEMPLATES))]
    return img, template.format(d=d, w=C.NUMBER_WORDS[d], env=C.ENVIRONMENT_WORDS[env][rng.integers(2)])


def sample(seed: int, index: int, size: int = 32, version: str = "v1") -> Sample:
    """Sample ``index`` of the ``version`` corpus with ``seed``: ((size, size, 3) uint8, caption)."""
    mix = MIXES[version]
    rng = np.random.default_rng([seed, index])
    kinds = list(mix)
    kind = kinds[rng.choice(len(kinds), p=np.array([mix[k] for k in kinds]))]
    return RENDERERS.get(kind)(rng, size)


def _chunk(args: tuple[int, int, int, int, str]) -> tuple[np.ndarray, list[str]]:
    return generate(*args)


def generate(n: int, seed: int = 0, size: int = 32, start: int = 0, version: str = "v1", workers: int = 1
             ) -> tuple[np.ndarray, list[str]]:
    """Samples ``start .. start+n-1`` of the ``version`` corpus: images (n, size, size, 3) uint8 and n captions.

    workers > 1 renders chunks in processes; the result is identical (samples depend on (seed, i) only).
    """
    if n < 0 or start < 0 or size < 8 or workers < 1:
        raise InvalidInputError(f"need n >= 0, start >= 0, size >= 8, workers >= 1; got n={n}, "
                                f"start={start}, size={size}, workers={workers}")
    if version not in MIXES:
        raise InvalidInputError(f"unknown corpus version {version!r}; choose one of {', '.join(MIXES)}")
    if workers > 1 and n >= 1000:
        from multiprocessing import get_context

        bounds = np.linspace(0, n, 8 * workers + 1).astype(int)
        jobs = [(int(b - a), seed, size, start + int(a), version) for a, b in zip(bounds[:-1], bounds[1:])]
        with get_context("spawn").Pool(workers) as pool:
            parts = pool.map(_chunk, jobs)
        return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]
    images = np.zeros((n, size, size, 3), dtype=np.uint8)
    texts: list[str] = []
    for i in range(n):
        images[i], caption = sample(seed, start + i, size, version)
        texts.append(caption)
    return images, texts
