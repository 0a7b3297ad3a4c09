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
    fig.update_layout(barmode="group", height=height, yaxis=dict(range=[0, 101], title="accuracy (%)"),
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
