"""The Geometry page's map as a browser element (Streamlit components v2): pretrained and fine-tuned
latents in one UMAP, class centroids joined by the class vectors, hover with the image.

Drawn on a canvas by ``latent_map.js``; the fine-tuned / pretrained / both switch runs in the
browser. The Plotly version (:func:`app.charts.latent_map`) remains for the Export page.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from .sources import float32_b64, register

_COMPONENT = register("latent_map", "cvs-latent-root")


def map_payload(pre_xy: np.ndarray, ft_xy: np.ndarray, labels: np.ndarray, pre_pred: np.ndarray,
                ft_pred: np.ndarray, pre_centroids: np.ndarray, ft_centroids: np.ndarray,
                extent: Sequence[float], names: Sequence[str], colors: Sequence[str],
                atlas: dict | None = None) -> dict:
    """pre_xy, ft_xy: (N, 2) map positions; labels, pre_pred, ft_pred: (N,); centroids: (C, 2);
    extent: (x0, x1, y0, y1); atlas: the thumbnail sheet (``live_editor.thumbnail_atlas``) or None."""
    n = len(labels)
    if pre_xy.shape != (n, 2) or ft_xy.shape != (n, 2) or len(pre_pred) != n or len(ft_pred) != n:
        raise ValueError(f"map positions and predictions must have one row per image ({n})")
    data = {"names": [str(v) for v in names], "colors": list(colors), "labels": [int(v) for v in labels],
            "pre_xy": float32_b64(pre_xy), "ft_xy": float32_b64(ft_xy),
            "pre_pred": [int(v) for v in pre_pred], "ft_pred": [int(v) for v in ft_pred],
            "pre_centroids": np.asarray(pre_centroids, dtype=float).tolist(),
            "ft_centroids": np.asarray(ft_centroids, dtype=float).tolist(),
            "extent": [float(v) for v in extent], "atlas": atlas}
    data["digest"] = hashlib.sha256((data["pre_xy"] + data["ft_xy"] + repr(data["names"])).encode()).hexdigest()[:16]
    return data


def latent_map(data: dict, key: str) -> None:
    """Mount the map with :func:`map_payload`'s data."""
    _COMPONENT(key=key, data=data)
