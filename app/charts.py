"""Plotly figures as plain functions of arrays: testable without a browser.

Scatter plots switch to WebGL (``Scattergl``) above :data:`WEBGL_FROM` points.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

WEBGL_FROM = 2000
PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Alphabet


def class_color(c: int) -> str:
    return PALETTE[c % len(PALETTE)]


def _scatter(n: int):
    return go.Scattergl if n > WEBGL_FROM else go.Scatter


def latent_map(xy: np.ndarray, labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str], *,
               name: str = "fine-tuned", background_xy: np.ndarray | None = None, background_name: str = "",
               centroids: tuple[np.ndarray, np.ndarray] | None = None, moved: np.ndarray | None = None,
               height: int = 560) -> go.Figure:
    """Map of latents coloured by true class.

    xy: (N, 2); labels, preds: (N,) int; background_xy: (N, 2) drawn faint (previous positions or
    the other encoder); centroids: ((C, 2) pretrained, (C, 2) fine-tuned), drawn with arrows from
    pretrained to fine-tuned (the class vectors); moved: (N,) bool, points the edit changed (named in
    the title; not outlined, because per-point line widths make WebGL redraws much slower).
    """
    fig = go.Figure()
    scatter = _scatter(len(xy))
    index = np.arange(len(xy))
    if background_xy is not None:
        fig.add_trace(scatter(x=background_xy[:, 0], y=background_xy[:, 1], mode="markers", name=background_name,
                              marker=dict(size=4, color="rgba(120,120,120,0.18)"), hoverinfo="skip"))
    pred_names = np.asarray([str(n) for n in class_names])[np.asarray(preds)]
    for c, cname in enumerate(class_names):
        sel = labels == c
        if not sel.any():
            continue
        fig.add_trace(scatter(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=f"{cname}", legendgroup=str(c),
            marker=dict(size=5, color=class_color(c), opacity=0.75), customdata=index[sel], text=pred_names[sel],
            hovertemplate=f"true: {cname}<br>predicted: %{{text}}<br>image #%{{customdata}}<extra></extra>"))
    if centroids is not None:
        _add_class_vectors(fig, *centroids, class_names)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), legend=dict(itemsizing="constant"),
                      xaxis=dict(showticklabels=False, title=None), yaxis=dict(showticklabels=False, title=None),
                      title=dict(text=f"{name} latents (UMAP)" + ("" if moved is None else
                                 f" · {int(np.sum(moved)):,} points moved by the edit"), font=dict(size=14)))
    return fig


def _add_class_vectors(fig: go.Figure, pre: np.ndarray, ft: np.ndarray, class_names: Sequence[str]) -> None:
    """Centroids as markers, class vectors as arrows pretrained -> fine-tuned centroid."""
    fig.add_trace(go.Scatter(x=pre[:, 0], y=pre[:, 1], mode="markers", name="pretrained centroid",
                             marker=dict(symbol="circle-open", size=12, color="black", line=dict(width=2)),
                             text=list(class_names), hovertemplate="pretrained centroid %{text}<extra></extra>"))
    fig.add_trace(go.Scatter(x=ft[:, 0], y=ft[:, 1], mode="markers+text", name="fine-tuned centroid",
                             marker=dict(symbol="x", size=11, color="black"), text=list(class_names),
                             textposition="top center", hovertemplate="fine-tuned centroid %{text}<extra></extra>"))
    for c in range(len(class_names)):
        fig.add_annotation(x=ft[c, 0], y=ft[c, 1], ax=pre[c, 0], ay=pre[c, 1], xref="x", yref="y", axref="x",
                           ayref="y", showarrow=True, arrowhead=3, arrowsize=1.2, arrowwidth=1.6,
                           arrowcolor=class_color(c), text="")


def accuracy_bars(before: np.ndarray, after: np.ndarray, class_names: Sequence[str],
                  edited: Sequence[int] = (), height: int = 320) -> go.Figure:
    """Per-class accuracy (C,) before and after the edit, in percent; edited classes marked with *."""
    names = [f"{n} *" if i in set(edited) else str(n) for i, n in enumerate(class_names)]
    fig = go.Figure([
        go.Bar(x=names, y=100 * np.asarray(before), name="before", marker_color="rgba(120,120,120,0.55)",
               hovertemplate="%{x}: %{y:.1f}%<extra>before</extra>"),
        go.Bar(x=names, y=100 * np.asarray(after), name="after", marker_color="#d62728",
               hovertemplate="%{x}: %{y:.1f}%<extra>after</extra>"),
    ])
    # category axis: digit class names ("0".."9") would otherwise make a numeric axis that drops "3 *"
    fig.update_layout(barmode="group", height=height, yaxis=dict(range=[0, 101], title="accuracy (%)"),
                      xaxis=dict(type="category"),
                      margin=dict(l=10, r=10, t=30, b=10), title=dict(text="Per-class accuracy", font=dict(size=14)),
                      legend=dict(orientation="h", y=1.12, x=1, xanchor="right"))
    return fig


def confusion_heatmap(confusion: np.ndarray, class_names: Sequence[str], title: str = "Confusion matrix",
                      height: int = 380) -> go.Figure:
    """confusion: (C, C) counts, rows true, columns predicted; shown as row-normalised percent."""
    conf = np.asarray(confusion, dtype=np.float64)
    pct = 100 * conf / np.maximum(conf.sum(1, keepdims=True), 1)
    names = [str(n) for n in class_names]
    fig = go.Figure(go.Heatmap(z=pct, x=names, y=names, colorscale="Blues", zmin=0, zmax=100,
                               customdata=conf.astype(int),
                               hovertemplate="true %{y}, predicted %{x}: %{z:.1f}% (%{customdata})<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title=dict(text=title, font=dict(size=14)),
                      xaxis=dict(title="predicted", type="category"),
                      yaxis=dict(title="true", autorange="reversed", type="category"))
    return fig


def cosine_heatmap(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str,
                   height: int = 380) -> go.Figure:
    """A (M, K) cosine matrix on a diverging scale fixed to [-1, 1]."""
    fig = go.Figure(go.Heatmap(z=np.asarray(matrix), x=[str(c) for c in cols], y=[str(r) for r in rows],
                               colorscale="RdBu", zmid=0, zmin=-1, zmax=1, texttemplate="%{z:.2f}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title=dict(text=title, font=dict(size=14)),
                      xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))
    return fig


def method_comparison(rows: Sequence[dict], height: int = 360) -> go.Figure:
    """Grouped bars of forget accuracy, retain accuracy and probe recovery (percent) per method."""
    methods = [r["method"] for r in rows]
    fig = go.Figure()
    for key, label, color in (("acc_f", "forget accuracy ↓", "#d62728"), ("acc_r", "retain accuracy ↑", "#2ca02c"),
                              ("probe_f", "probe recovery of forgotten ↓", "#9467bd")):
        fig.add_trace(go.Bar(x=methods, y=[100 * float(r.get(key, np.nan)) for r in rows], name=label,
                             marker_color=color, hovertemplate="%{x}: %{y:.1f}%<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", height=height, yaxis=dict(range=[0, 101], title="%"),
                      margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=1.12),
                      title=dict(text="Unlearning methods compared", font=dict(size=14)))
    return fig


def presenter_bars(before: np.ndarray, after: np.ndarray, class_names: Sequence[str], forget: int) -> go.Figure:
    """Large-font accuracy bars for the presenter screen."""
    fig = accuracy_bars(before, after, class_names, edited=(forget,), height=480)
    fig.update_layout(font=dict(size=22), title=dict(font=dict(size=26)))
    return fig


def _rgb(color: str) -> tuple[int, int, int]:
    """'#1f77b4' or 'rgb(31, 119, 180)' -> (31, 119, 180)."""
    if color.startswith("#"):
        return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))
    return tuple(int(float(v)) for v in color[color.index("(") + 1:-1].split(",")[:3])


def raster_points(xy: np.ndarray, labels: np.ndarray, extent: tuple[float, float, float, float],
                  size: tuple[int, int] = (1000, 560), radius: int = 2, alpha: int = 170) -> str:
    """Draw points (N, 2) coloured by class into a PNG covering ``extent`` (x0, x1, y0, y1) -> data URI."""
    import base64
    import io

    from PIL import Image

    w, h = size
    x0, x1, y0, y1 = extent
    img = np.zeros((h, w, 4), dtype=np.uint8)
    px = np.clip(((xy[:, 0] - x0) / (x1 - x0) * (w - 1)).round().astype(int), 0, w - 1)
    py = np.clip(((y1 - xy[:, 1]) / (y1 - y0) * (h - 1)).round().astype(int), 0, h - 1)
    colors = np.array([(*_rgb(class_color(int(c))), alpha) for c in labels], dtype=np.uint8).reshape(-1, 4)
    for dy in range(-radius + 1, radius):
        for dx in range(-radius + 1, radius):
            img[np.clip(py + dy, 0, h - 1), np.clip(px + dx, 0, w - 1)] = colors
    buf = io.BytesIO()
    Image.fromarray(img, "RGBA").save(buf, format="PNG", compress_level=1)  # fast, ~100 kB for 10k points
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def map_extent(xy: np.ndarray, pad: float = 0.05) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) around points (N, 2) with a margin."""
    lo, hi = xy.min(0), xy.max(0)
    span = np.maximum(hi - lo, 1e-6)
    return float(lo[0] - pad * span[0]), float(hi[0] + pad * span[0]), float(lo[1] - pad * span[1]), \
        float(hi[1] + pad * span[1])


def live_map(xy: np.ndarray, labels: np.ndarray, preds: np.ndarray, class_names: Sequence[str],
             moved: np.ndarray, extent: tuple[float, float, float, float], previous_xy: np.ndarray | None = None,
             still_image: str | None = None, height: int = 560) -> go.Figure:
    """The map of the live screen: unchanged points as one picture, edited points as live markers.

    Redrawing 10,000 markers on every slider release costs the browser seconds without a GPU (and a
    WebGL context is rebuilt on every redraw); the unchanged points do not move, so they are sent as
    an image, and the moved points are one marker trace (SVG unless there are thousands of them) whose
    hover gives the true and predicted class. xy: (N, 2); moved: (N,) bool; previous_xy: (M, 2)
    positions of the moved points before this release, drawn faint; still_image: the picture of
    the unchanged points from :func:`raster_points` (computed here when not given).
    """
    still = ~moved
    scatter = _scatter(int(moved.sum()) + (0 if previous_xy is None else len(previous_xy)))
    fig = go.Figure()
    x0, x1, y0, y1 = extent
    image = still_image if still_image is not None else raster_points(xy[still], labels[still], extent)
    fig.add_layout_image(source=image, xref="x", yref="y", x=x0, y=y1,
                         sizex=x1 - x0, sizey=y1 - y0, sizing="stretch", layer="below")
    if previous_xy is not None and len(previous_xy):
        fig.add_trace(scatter(x=previous_xy[:, 0], y=previous_xy[:, 1], mode="markers",
                                   name="previous positions", hoverinfo="skip",
                                   marker=dict(size=5, color="rgba(90,90,90,0.25)")))
    sel = np.flatnonzero(moved)
    if sel.size:  # one trace (colour per point) instead of one per class: fewer traces, faster redraws
        names = np.asarray([str(n) for n in class_names])
        palette = np.asarray([class_color(c) for c in range(len(class_names))])
        hover = np.char.add(np.char.add("true: ", names[labels[sel]]),
                            np.char.add("<br>predicted: ", names[np.asarray(preds)[sel]]))
        fig.add_trace(scatter(
            x=xy[sel, 0], y=xy[sel, 1], mode="markers", name="edited points (colour: true class)",
            customdata=sel, text=hover, hovertemplate="%{text}<br>image #%{customdata}<extra></extra>",
            marker=dict(size=7, color=palette[labels[sel]], line=dict(width=1, color="black"))))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), legend=dict(itemsizing="constant"),
                      xaxis=dict(range=[x0, x1], showticklabels=False, showgrid=False, zeroline=False),
                      yaxis=dict(range=[y0, y1], showticklabels=False, showgrid=False, zeroline=False),
                      title=dict(text=f"Edited fine-tuned latents (UMAP) · {int(moved.sum()):,} of {len(xy):,} "
                                      "points moved by the edit", font=dict(size=14)))
    return fig
