"""The Geometry page's map as a browser element (Streamlit components v2): pretrained and fine-tuned
latents in one UMAP, class centroids joined by the class vectors, hover with the image.

Drawn with WebGL by ``latent_map.js`` (``gl_points.js``: up to :data:`BROWSER_MAX_POINTS` points per
encoder, pan and zoom, colour by class or prediction, density shading; a 2-D canvas when WebGL is
missing or its context is lost). The data goes as one binary packet (``packet.py``): positions
float16, classes uint16. Above the limit the browser gets a stratified sample, named on the map.
The image of a hovered point is fetched from the server for that point alone (the "hover" state).
The Plotly version (:func:`app.charts.latent_map`) remains for the Export page.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from cv_core.projection.scale import sample_for_browser

from .packet import pack
from .sources import register

_COMPONENT = register("latent_map", "cvs-latent-root")

#: Points per encoder a browser is sent (float16 positions: 4 MB per million). Above it: a sample.
BROWSER_MAX_POINTS = 1_000_000


def _classes(values) -> np.ndarray:
    v = np.asarray(values)
    if v.size and (v.min() < 0 or v.max() > 65535):
        raise ValueError("class indices must lie in [0, 65535]")
    return v.astype("<u2")


def map_packet(pre_xy: np.ndarray, ft_xy: np.ndarray, labels: np.ndarray, pre_pred: np.ndarray,
               ft_pred: np.ndarray, pre_centroids: np.ndarray, ft_centroids: np.ndarray,
               extent: Sequence[float], names: Sequence[str], colors: Sequence[str], images: bool = False,
               note: str = "", limit: int = BROWSER_MAX_POINTS, seed: int = 0) -> dict:
    """The map's data: {"header": JSON-able dict, "arrays": name -> numpy}.

    pre_xy, ft_xy: (N, 2) map positions; labels, pre_pred, ft_pred: (N,); centroids: (C, 2);
    extent: (x0, x1, y0, y1); images: whether hovering can fetch the image of a point;
    note: what the page says about the map (its sample, its fidelity); limit: points per encoder sent.
    """
    n = len(labels)
    if pre_xy.shape != (n, 2) or ft_xy.shape != (n, 2) or len(pre_pred) != n or len(ft_pred) != n:
        raise ValueError(f"map positions and predictions must have one row per image ({n})")
    rows = sample_for_browser(n, limit, labels, seed)
    if rows is not None:
        shown = (f"The browser holds at most {limit:,} points per view: this map shows a stratified sample of "
                 f"{rows.size:,} of the {n:,} test images (every class in proportion).")
        note = f"{shown} {note}".strip()
        pre_xy, ft_xy, labels, pre_pred, ft_pred = (a[rows] for a in (pre_xy, ft_xy, labels, pre_pred, ft_pred))
    arrays = {"pre_xy": np.asarray(pre_xy, dtype="<f2"), "ft_xy": np.asarray(ft_xy, dtype="<f2"),
              "labels": _classes(labels), "pre_pred": _classes(pre_pred), "ft_pred": _classes(ft_pred)}
    if rows is not None:
        arrays["rows"] = rows.astype("<i4")
    h = hashlib.sha256()
    for a in arrays.values():
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(repr((list(names), list(colors))).encode())
    header = {"n": int(len(labels)), "total": int(n), "names": [str(v) for v in names], "colors": list(colors),
              "pre_centroids": np.asarray(pre_centroids, dtype=float).tolist(),
              "ft_centroids": np.asarray(ft_centroids, dtype=float).tolist(),
              "extent": [float(v) for v in extent], "images": bool(images), "note": note,
              "digest": h.hexdigest()[:16]}
    return {"header": header, "arrays": arrays}


def hovered_row(key: str, digest: str) -> int | None:
    """The image row the browser asked to see (its "hover" state) for this map, or None."""
    import streamlit as st

    state = st.session_state.get(key)
    hover = state.get("hover") if hasattr(state, "get") else None
    if not hover or hover.get("digest") != digest:
        return None
    return int(hover["row"])


def latent_map(data: dict, key: str, thumbnail: Callable[[int], str | None] | None = None) -> None:
    """Mount the map with :func:`map_packet`'s data. thumbnail(row) -> data URI of that image (or None):
    called for the one point the mouse rests on."""
    import streamlit as st

    header = dict(data["header"])
    state = st.session_state.get(key)
    have = state.get("have") if hasattr(state, "get") else None
    arrays = {} if have == header["digest"] else data["arrays"]  # the browser holds them: only the header
    row = hovered_row(key, header["digest"])
    if row is not None and thumbnail is not None and 0 <= row < header["total"]:
        header["thumb"] = {"row": row, "src": thumbnail(row), "digest": header["digest"]}
    _COMPONENT(key=key, data=pack(header, arrays), on_have_change=_nothing, on_hover_change=_nothing)


def _nothing() -> None:
    """State callbacks ("have", "hover") only need their rerun."""
