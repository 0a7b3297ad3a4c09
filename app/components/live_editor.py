"""The class-arithmetic sliders and their charts as one browser component (Streamlit components v2).

The sliders, the per-class accuracy bars, the forget/retain summary and the confusion matrix are
re-scored in the browser on every slider movement (``live_editor.js``), from tables the server
sends once per run (:func:`payload`). A release sends the coefficients back as the ``coefs``
state, so the rest of the page (the map, the exports) follows on the server. Nothing here
computes: the tables come from :class:`cv_core.math.factored.FactoredScores`.
"""
from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import streamlit as st
import torch

from cv_core.math.factored import FactoredScores
from cv_core.math.steering import gamma_vector

from .sources import float32_b64, register

_COMPONENT = register("live_editor", "cvs-live-root")


def payload(factored: FactoredScores, labels: torch.Tensor, names: Sequence[str], atlas: dict | None = None) -> dict:
    """The run's tables for the browser: base (N, C), cosines (N, C), kappa_head (C, C) as
    little-endian float32 in base64, labels (N,), class names and the thumbnail ``atlas`` (or None).
    ``digest`` names the content, so the browser decodes a run's tables once."""
    data = {"names": [str(n) for n in names], "labels": [int(v) for v in labels.tolist()],
            "base": float32_b64(factored.base), "cosines": float32_b64(factored.cosines),
            "kappa_head": float32_b64(factored.kappa_head), "atlas": atlas}
    h = hashlib.sha256()
    for k in ("base", "cosines", "kappa_head"):
        h.update(data[k].encode())
    h.update(repr((data["names"], data["labels"], None if atlas is None else atlas["src"][-64:])).encode())
    data["digest"] = h.hexdigest()[:16]
    return data


#: Thumbnails for the map's hover come as one picture; above this many images there are none (the
#: picture would cost megabytes for a hover).
ATLAS_MAX_IMAGES = 12_000


def thumbnail_atlas(images: Sequence, cell: int = 24) -> dict | None:
    """All images (PIL, in the order of the latents) as one grid picture for the map's hover:
    {"src": data URI, "cell": px, "cols": images per row}; None when there are too many.
    PNG for up to 2,000 images (exact pixels: digits stay crisp), JPEG (quality 85) above."""
    from io import BytesIO

    from PIL import Image

    n = len(images)
    if n == 0 or n > ATLAS_MAX_IMAGES:
        return None
    cols = int(np.ceil(np.sqrt(n)))
    sheet = Image.new("RGB", (cols * cell, int(np.ceil(n / cols)) * cell), "white")
    for i, image in enumerate(images):
        small = image.convert("RGB").resize((cell, cell), Image.NEAREST if max(image.size) <= cell else Image.BILINEAR)
        sheet.paste(small, ((i % cols) * cell, (i // cols) * cell))
    buf = BytesIO()
    kind = "png" if n <= 2000 else "jpeg"
    sheet.save(buf, format=kind, **({"optimize": True} if kind == "png" else {"quality": 85}))
    return {"src": f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii"),
            "cell": cell, "cols": cols}


def map_data(xy: np.ndarray, extent: Sequence[float], coefs: Sequence[float], index: np.ndarray,
             moved_xy: np.ndarray, server_ms: float) -> dict:
    """The map part of the data: xy (N, 2) positions of the unedited points, extent (x0, x1, y0, y1),
    and the edit ``coefs`` whose moved points ``index`` (M,) the server re-projected to ``moved_xy``
    (M, 2). The browser shows those positions only while its sliders are at exactly ``coefs``."""
    xy = np.ascontiguousarray(xy, dtype="<f4")
    return {"key": hashlib.sha256(xy.tobytes()).hexdigest()[:16], "xy": base64.b64encode(xy.tobytes()).decode(),
            "extent": [float(v) for v in extent], "coefs": [float(a) for a in coefs],
            "index": base64.b64encode(np.ascontiguousarray(index, dtype="<i4").tobytes()).decode(),
            "moved_xy": base64.b64encode(np.ascontiguousarray(moved_xy, dtype="<f4").tobytes()).decode(),
            "ms": float(server_ms)}


def live_editor(tables: dict, coefs: Sequence[float], gamma,
                moves: Sequence[tuple[int, int, float]], revision: int, key: str,
                on_release: Callable[[], None], colors: Sequence[str], map_part: dict | None = None) -> None:
    """Mount the component. coefs: (C,) slider values to show when ``revision`` changes (a preset,
    a reset); gamma: the gate as the library takes it (None, one cosine or (C,) thresholds), sent as
    the float32 thresholds the server compares with, so both sides gate the same points; on_release: called after a slider is
    released, with the new values in ``release_values(key)``; colors: (C,) CSS colours of the classes;
    map_part: :func:`map_data`, or None without a fitted map."""
    gammas = gamma_vector(gamma, len(tables["names"]))
    have = _state(key).get("have") or {}
    if have.get("tables") == tables["digest"]:  # the browser holds them: send only their key
        tables = {k: v for k, v in tables.items() if k not in HEAVY}
    if map_part is not None and have.get("map") == map_part["key"]:
        map_part = {k: v for k, v in map_part.items() if k != "xy"}
    data = dict(tables, coefs=[float(a) for a in coefs], rev=int(revision),
                gammas=None if gammas is None else gammas.tolist(),
                moves=[[int(s), int(t), float(a)] for s, t, a in moves], colors=list(colors), map=map_part)
    _COMPONENT(key=key, data=data, on_coefs_change=on_release, on_have_change=_nothing)


#: The parts of :func:`payload` a browser keeps once it has them (it reports so in its "have" state).
HEAVY = ("labels", "base", "cosines", "kappa_head", "atlas")


def _nothing() -> None:
    """The "have" state needs a callback to be accepted; its rerun is all it needs."""


def _state(key: str) -> dict:
    state = st.session_state.get(key)
    return state if hasattr(state, "get") else {}


def release_values(key: str) -> list[float] | None:
    """The coefficients the browser sent with its last release, or None."""
    value = _state(key).get("coefs")
    return None if not value else [float(v) for v in value["values"]]
