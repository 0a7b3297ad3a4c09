"""The class-arithmetic sliders and their charts as one browser component (Streamlit components v2).

The sliders, the per-class accuracy bars, the forget/retain summary and the confusion matrix are
re-scored in the browser on every slider movement (``live_editor.js``), from tables the server
sends once per run (:func:`tables_packet`, in one binary packet: ``packet.py``). A release sends the
coefficients back as the ``coefs`` state, so the rest of the page (the map, the exports) follows on
the server. The map is a WebGL layer (``gl_points.js``). Nothing here computes: the tables come from
:class:`cv_core.math.factored.FactoredScores`.
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

from cv_core.projection.scale import stratified_sample

from .packet import pack
from .sources import register

_COMPONENT = register("live_editor", "cvs-live-root")


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
             moved_xy: np.ndarray, server_ms: float, key: str | None = None) -> dict:
    """The map part of the data: xy (N, 2) positions of the unedited points, extent (x0, x1, y0, y1),
    and the edit ``coefs`` whose moved points ``index`` (M,) the server re-projected to ``moved_xy``
    (M, 2). The browser shows those positions only while its sliders are at exactly ``coefs``.
    key: names xy (computed from its bytes when None); the browser keeps xy by key."""
    xy = np.ascontiguousarray(xy, dtype="<f4")
    if key is None:
        key = hashlib.blake2b(xy.tobytes(), digest_size=8).hexdigest()
    return {"key": key, "xy": xy, "extent": [float(v) for v in extent], "coefs": [float(a) for a in coefs],
            "index": np.ascontiguousarray(index, dtype="<i4"), "moved_xy": np.ascontiguousarray(moved_xy, dtype="<f4"),
            "ms": float(server_ms)}


#: Entries (N x C) of each table a browser is sent: base and cosines are float32, so 2 x 80 MB at most.
#: Above it the browser scores a stratified sample of rows while a slider moves (named on the page);
#: the server's scores on release are always exact.
BROWSER_TABLE_ENTRIES = 10_000_000


def tables_packet(factored: FactoredScores, labels: torch.Tensor, names: Sequence[str], atlas: dict | None = None,
                  limit_entries: int = BROWSER_TABLE_ENTRIES, seed: int = 0, images: bool = False) -> dict:
    """The run's tables for the browser as packet parts {"header", "arrays"}: base (N, C), cosines (N, C),
    kappa_head (C, C) float32, labels (N,) uint16; with more than ``limit_entries`` N x C entries, the
    rows of a stratified sample (``rows``, int32) and a ``note`` that says so. atlas: the thumbnail
    sheet of a small run (or None); images: whether the hover can ask the server for one image."""
    n, c = factored.base.shape
    y = labels.numpy()
    rows = None
    note = ""
    if n * c > limit_entries:
        rows = stratified_sample(y, max(limit_entries // c, c), seed)
        note = (f"While a slider moves, the browser scores a stratified sample of {rows.size:,} of the {n:,} test "
                f"images (its tables would be {n * c * 8 / 1e6:,.0f} MB); the server's figures on release are exact.")
    sel = (lambda t: t.numpy()) if rows is None else (lambda t: t.numpy()[rows])
    arrays = {"base": sel(factored.base).astype("<f4"), "cosines": sel(factored.cosines).astype("<f4"),
              "kappa_head": factored.kappa_head.numpy().astype("<f4"),
              "labels": (y if rows is None else y[rows]).astype("<u2")}
    if rows is not None:
        arrays["rows"] = rows.astype("<i4")
    h = hashlib.blake2b(digest_size=8)
    for a in arrays.values():
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((list(names), None if atlas is None else atlas["src"][-64:])).encode())
    header = {"names": [str(v) for v in names], "digest": h.hexdigest(), "n": int(arrays["labels"].size),
              "total": int(n), "note": note, "atlas": atlas, "images": bool(images)}
    return {"header": header, "arrays": arrays}


def editor_packet(tables: dict, coefs: Sequence[float], gamma, moves: Sequence[tuple[int, int, float]],
                  revision: int, colors: Sequence[str], map_part: dict | None = None, have: dict | None = None,
                  thumb: dict | None = None) -> bytes:
    """The bytes the component receives: :func:`tables_packet`'s parts and :func:`map_data`, less what the
    browser reports it holds (``have``: {"tables": digest, "map": key}); the map restricted to the
    tables' sampled rows when there are some. thumb: {"row", "src"} the image the hover asked for."""
    header = dict(tables["header"])
    have = have or {}
    arrays = {} if have.get("tables") == header["digest"] else dict(tables["arrays"])
    if not arrays:
        header["atlas"] = None  # kept by the browser with the tables
    gammas = gamma_vector(gamma, len(header["names"]))
    header.update(coefs=[float(a) for a in coefs], rev=int(revision),
                  gammas=None if gammas is None else gammas.tolist(),
                  moves=[[int(s), int(t), float(a)] for s, t, a in moves], colors=list(colors), map=None)
    if thumb is not None:
        header["thumb"] = dict(thumb, digest=header["digest"])
    if map_part is not None:
        rows = tables["arrays"].get("rows")
        xy, index, moved = map_part["xy"], map_part["index"], map_part["moved_xy"]
        key = map_part["key"]
        if rows is not None:  # the browser holds the sampled rows only
            xy = xy[rows]
            pos = np.clip(np.searchsorted(rows, index), 0, rows.size - 1)
            keep = rows[pos] == index
            index, moved, key = pos[keep], moved[keep], f"{key}-s{header['digest']}"
        header["map"] = {"key": key, "extent": map_part["extent"], "coefs": map_part["coefs"], "ms": map_part["ms"]}
        if have.get("map") != key:
            arrays["map_xy"] = np.asarray(xy, dtype="<f2")
        arrays["map_index"] = np.asarray(index, dtype="<i4")
        arrays["map_moved"] = np.asarray(moved, dtype="<f4")
    return pack(header, arrays)


def live_editor(tables: dict, coefs: Sequence[float], gamma,
                moves: Sequence[tuple[int, int, float]], revision: int, key: str,
                on_release: Callable[[], None], colors: Sequence[str], map_part: dict | None = None,
                thumbnail: Callable[[int], str | None] | None = None) -> None:
    """Mount the component. tables: :func:`tables_packet`; coefs: (C,) slider values to show when
    ``revision`` changes (a preset, a reset); gamma: the gate as the library takes it (None, one cosine
    or (C,) thresholds), sent as the float32 thresholds the server compares with, so both sides gate
    the same points; on_release: called after a slider is released, with the new values in
    ``release_values(key)``; colors: (C,) CSS colours of the classes; map_part: :func:`map_data`, or
    None without a fitted map; thumbnail(row) -> data URI of one image, for the hover."""
    state = _state(key)
    thumb = None
    hover = state.get("hover")
    if thumbnail is not None and hover and hover.get("digest") == tables["header"]["digest"]:
        thumb = {"row": int(hover["row"]), "src": thumbnail(int(hover["row"]))}
    data = editor_packet(tables, coefs, gamma, moves, revision, colors, map_part, state.get("have"), thumb)
    _COMPONENT(key=key, data=data, on_coefs_change=on_release, on_have_change=_nothing, on_hover_change=_nothing)


def _nothing() -> None:
    """The "have" and "hover" states need a callback to be accepted; their rerun is all they need."""


def _state(key: str) -> dict:
    state = st.session_state.get(key)
    return state if hasattr(state, "get") else {}


def release_values(key: str) -> list[float] | None:
    """The coefficients the browser sent with its last release, or None."""
    value = _state(key).get("coefs")
    return None if not value else [float(v) for v in value["values"]]
