"""Plotly figures as plain functions of arrays: testable without a browser.

Scatter plots switch to WebGL (``Scattergl``) above :data:`WEBGL_FROM` points.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from app.markup import text, texts

WEBGL_FROM = 2000
PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Alphabet
# One colour convention for accuracy changes on every page (the browser's live editor uses the same values):
# grey before; after in blue, red where a class dropped by half a point or more, green where it rose.
BEFORE = "rgba(120,120,120,0.55)"
SAME = "#1f77b4"
DROP = "#d62728"
RISE = "#2ca02c"


def change_colors(before: np.ndarray, after: np.ndarray) -> list[str]:
    """Colour of each 'after' bar (accuracies in [0, 1]) by the convention above."""
    d = 100 * (np.asarray(after, dtype=float) - np.asarray(before, dtype=float))
    return [DROP if x <= -0.5 else RISE if x >= 0.5 else SAME for x in np.nan_to_num(d)]


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
    class_names = texts(class_names)  # shown as typed, never as Plotly markup (app.markup)
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
    class_names = texts(class_names)
    names = [f"{n} *" if i in set(edited) else str(n) for i, n in enumerate(class_names)]
    fig = go.Figure([
        go.Bar(x=names, y=100 * np.asarray(before), name="before", marker_color=BEFORE,
               hovertemplate="%{x}: %{y:.1f}%<extra>before</extra>"),
        go.Bar(x=names, y=100 * np.asarray(after), name="after (red: dropped, green: rose)",
               marker_color=change_colors(before, after), hovertemplate="%{x}: %{y:.1f}%<extra>after</extra>"),
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
    class_names = texts(class_names)
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
    rows, cols = texts(rows), texts(cols)
    fig = go.Figure(go.Heatmap(z=np.asarray(matrix), x=[str(c) for c in cols], y=[str(r) for r in rows],
                               colorscale="RdBu", zmid=0, zmin=-1, zmax=1, texttemplate="%{z:.2f}",
                               hovertemplate="%{y} vs %{x}: %{z:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), title=dict(text=title, font=dict(size=14)),
                      xaxis=dict(type="category"), yaxis=dict(type="category", autorange="reversed"))
    return fig


def interference_heatmap(table, class_names: Sequence[str], height: int = 380) -> go.Figure:
    """(C, C) accuracy changes in [-1, 1] (row: edited class) as points, red for drops, green for rises."""
    class_names = texts(class_names)
    z = 100 * np.asarray(table, dtype=float)
    names = [str(n) for n in class_names]
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmid=0, zmin=-10, zmax=10, texttemplate="%{z:+.1f}",
                               colorscale=[[0, DROP], [0.5, "#ffffff"], [1, RISE]],
                               hovertemplate="forget %{y}: class %{x} changes %{z:+.1f} pts<extra></extra>"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10),
                      title=dict(text="Δ accuracy (points) when the row's class is forgotten", font=dict(size=14)),
                      xaxis=dict(type="category", title="class"), yaxis=dict(type="category", autorange="reversed",
                                                                             title="forgotten"))
    return fig


def method_comparison(rows: Sequence[dict], height: int = 420, keys: Sequence[str] = ("acc_f", "acc_r", "probe_f"),
                      ) -> go.Figure:
    """Grouped bars (percent) per method of the metrics ``keys``, named by ``cv_core.edits.columns``.

    Neutral colours (red and green mean drop and rise elsewhere); the legend sits below the plot so it never
    overlaps the title; method names are slanted when there are many."""
    from cv_core.edits.columns import COLUMNS

    methods = [r["method"] for r in rows]
    fig = go.Figure()
    for key, color in zip(keys, ("#4c78a8", "#f58518", "#9467bd", "#8c564b")):
        label = COLUMNS[key].heading
        fig.add_trace(go.Bar(x=methods, y=[100 * float(r.get(key, np.nan)) for r in rows], name=label,
                             marker_color=color, hovertemplate="%{x}: %{y:.1f}%<extra>" + label + "</extra>"))
    fig.update_layout(barmode="group", height=height, yaxis=dict(range=[0, 101], title="%"),
                      xaxis=dict(type="category", tickangle=-30 if len(methods) > 6 else 0),
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.25 if len(methods) > 6 else -0.12, x=0),
                      title=dict(text="Unlearning methods compared", font=dict(size=14), y=0.97))
    return fig


def presenter_bars(before: np.ndarray, after: np.ndarray, class_names: Sequence[str], forget: int,
                   show_after: bool = True) -> go.Figure:
    """Large-font accuracy bars for the presenter screen (only 'before' when ``show_after`` is False)."""
    fig = accuracy_bars(before, after, class_names, edited=(forget,), height=480)
    if not show_after:
        fig.data = fig.data[:1]
    fig.update_layout(font=dict(size=22), title=dict(font=dict(size=26)), legend=dict(y=1.18))
    return fig


def presenter_map(background_xy: np.ndarray, frames_xy: Sequence[np.ndarray], lams: Sequence[float], class_name: str,
                  color: str, height: int = 560) -> go.Figure:
    """One class's points moving on the map as the strength grows (an animation with a play button).

    background_xy: (N, 2) every test point, faint; frames_xy: per strength, (M, 2) the class's points."""
    class_name = text(class_name)
    first = np.asarray(frames_xy[0])
    fig = go.Figure(
        [go.Scatter(x=background_xy[:, 0], y=background_xy[:, 1], mode="markers", hoverinfo="skip",
                    marker=dict(size=4, color="rgba(120,120,120,0.2)"), name="all test images"),
         go.Scatter(x=first[:, 0], y=first[:, 1], mode="markers", name=f"images of {class_name}",
                    marker=dict(size=11, color=color, line=dict(width=1, color="black")))],
        frames=[go.Frame(data=[go.Scatter(), go.Scatter(x=np.asarray(xy)[:, 0], y=np.asarray(xy)[:, 1])],
                         name=f"{lam:.2f}") for xy, lam in zip(frames_xy, lams)])
    fig.update_layout(
        height=height, font=dict(size=20), margin=dict(l=60, r=10, t=90, b=120),
        xaxis=dict(showticklabels=False, showgrid=False, zeroline=False),
        yaxis=dict(showticklabels=False, showgrid=False, zeroline=False),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0), title=dict(text="The class's images on the map",
                                                                                 y=0.98),
        updatemenus=[dict(type="buttons", x=0, y=0, xanchor="right", yanchor="top", pad=dict(t=60, r=10),
                          buttons=[dict(label="▶", method="animate",
                                        args=[None, dict(frame=dict(duration=700, redraw=True),
                                                         transition=dict(duration=500), fromcurrent=False)])])],
        sliders=[dict(x=0, len=1, y=0, yanchor="top", currentvalue=dict(prefix="λ = "), pad=dict(t=40), steps=[
            dict(label=f"{lam:.2f}", method="animate", args=[[f"{lam:.2f}"], dict(mode="immediate")]) for lam in lams])])
    return fig


def presenter_sweep(curve: Sequence[tuple[float, float, float]], class_name: str, lam: float,
                    height: int = 460) -> go.Figure:
    """Accuracy on the forgotten class and on the others as the strength grows (val curve of the forget
    strength), with the chosen strength marked: how the bars change between 'before' and 'after'."""
    class_name = text(class_name)
    lams = [c[0] for c in curve]
    fig = go.Figure([
        go.Scatter(x=lams, y=[100 * c[1] for c in curve], name=f"accuracy on {class_name}", mode="lines",
                   line=dict(color=DROP, width=5)),
        go.Scatter(x=lams, y=[100 * c[2] for c in curve], name="accuracy on the other classes", mode="lines",
                   line=dict(color=SAME, width=5)),
    ])
    fig.add_vline(x=lam, line=dict(color="black", dash="dash", width=2))
    fig.add_annotation(x=lam, y=100, text=f"chosen λ = {lam:.2f}", showarrow=False, yshift=18, font=dict(size=20))
    fig.update_layout(height=height, font=dict(size=22), yaxis=dict(range=[0, 105], title="accuracy (%), val"),
                      xaxis=dict(title="strength λ (edit −λ·κ)"), margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
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
    class_names = texts(class_names)
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
    for c, cname in enumerate(class_names):  # the picture has no legend of its own: one entry per class colour
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=str(cname), hoverinfo="skip",
                                 marker=dict(size=9, color=class_color(c))))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=10), legend=dict(itemsizing="constant",
                                                                                      title="true class"),
                      xaxis=dict(range=[x0, x1], showticklabels=False, showgrid=False, zeroline=False),
                      yaxis=dict(range=[y0, y1], showticklabels=False, showgrid=False, zeroline=False),
                      title=dict(text=f"Edited fine-tuned latents (UMAP) · {int(moved.sum()):,} of {len(xy):,} "
                                      "points moved by the edit", font=dict(size=14)))
    return fig


def cka_curves(cka: dict, height: int = 380) -> go.Figure:
    """Layer-wise linear CKA per encoder-changing method: one panel for the forgotten classes' images and one
    for the retained ones; solid = against the original (fine-tuned) tower, dashed = against the retrained one.

    cka: method -> [{classes, blocks, forget: {ref: [per block]}, retain: {...}}] (``EncoderAudits.results``).
    """
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, subplot_titles=("forgotten-class images",
                                                                            "retained-class images"))
    for i, (method, entries) in enumerate(cka.items()):
        blocks = entries[0]["blocks"]
        for col, part in ((1, "forget"), (2, "retain")):
            for ref, dash in (("original", "solid"), ("retrained", "dash")):
                if ref not in entries[0][part]:
                    continue
                vals = np.mean([e[part][ref] for e in entries], axis=0)
                fig.add_trace(go.Scatter(x=blocks, y=vals, mode="lines+markers", name=f"{method} vs {ref}",
                                         legendgroup=method, showlegend=col == 1,
                                         line=dict(color=class_color(i), dash=dash),
                                         hovertemplate=f"{method} vs {ref}<br>%{{x}}: CKA %{{y:.3f}}<extra></extra>"),
                              row=1, col=col)
    fig.update_yaxes(range=[0, 1.02], title_text="linear CKA", row=1, col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25),
                      title=dict(text="Where each method changed the image tower (1 = same features)",
                                 font=dict(size=14)))
    return fig


def relearning_curves(relearning: dict, height: int = 340) -> go.Figure:
    """Forget accuracy (%) after k relearning steps, one line per encoder-changing method (``retrain`` dashed:
    the reference that never learnt the class)."""
    fig = go.Figure()
    for i, (method, rows) in enumerate(relearning["methods"].items()):
        if not isinstance(rows, list):
            continue
        acc = 100 * np.mean([r["acc_f"] for r in rows], axis=0)
        fig.add_trace(go.Scatter(x=relearning["steps"], y=acc, mode="lines+markers", name=method,
                                 line=dict(color=class_color(i), dash="dash" if method == "retrain" else "solid"),
                                 hovertemplate=f"{method}: %{{y:.1f}}% after %{{x}} steps<extra></extra>"))
    fig.update_layout(height=height, xaxis=dict(title="fine-tuning steps on 5 images per forgotten class"),
                      yaxis=dict(range=[0, 101], title="forget accuracy %"), margin=dict(l=10, r=10, t=40, b=10),
                      title=dict(text="Relearning: does the forgotten class come back?", font=dict(size=14)))
    return fig
