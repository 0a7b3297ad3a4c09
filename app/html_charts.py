"""Light charts for the live screen: per-class accuracy bars and the confusion matrix as plain HTML.

Every slider release replaces these two charts. As Plotly figures each one cost the browser a new
plot (Streamlit remounts a chart whose figure changed, then lays it out a second time at the
column's width), about 0.2 s apiece on this CPU; as a few dozen styled ``<div>``s they cost the
browser a few milliseconds and the server no figure validation. Hover texts are ``title``
attributes. The Plotly versions (:func:`app.charts.accuracy_bars`, :func:`app.charts.confusion_heatmap`)
remain for the Export page and the presenter screen.
"""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

BEFORE_COLOR = "rgba(120,120,120,0.55)"
AFTER_COLOR = "#d62728"
#: Above this many classes the confusion matrix has no numbers in its cells (too small to read).
LABELLED_UP_TO = 20


def accuracy_bars_html(before: np.ndarray, after: np.ndarray, class_names: Sequence[str],
                       edited: Sequence[int] = (), height: int = 220) -> str:
    """Grouped vertical bars of per-class accuracy (C,) before (grey) and after (red), in percent."""
    before, after = 100 * np.asarray(before, dtype=float), 100 * np.asarray(after, dtype=float)
    edited = set(int(c) for c in edited)
    groups = []
    for c, name in enumerate(class_names):
        label = escape(f"{name} *" if c in edited else str(name))
        b, a = _pct(before[c]), _pct(after[c])
        groups.append(
            f'<div style="flex:1;min-width:0;display:flex;flex-direction:column;align-items:stretch" '
            f'title="{label}: before {b:.1f}%, after {a:.1f}%">'
            f'<div style="height:{height}px;display:flex;align-items:flex-end;gap:1px;padding:0 2px">'
            f'<div style="flex:1;height:{b:.1f}%;background:{BEFORE_COLOR}"></div>'
            f'<div style="flex:1;height:{a:.1f}%;background:{AFTER_COLOR}"></div></div>'
            f'<div style="font-size:11px;text-align:center;overflow:hidden;white-space:nowrap;'
            f'{"font-weight:bold" if c in edited else ""}">{label}</div></div>')
    legend = (f'<span style="color:{BEFORE_COLOR}">■</span> before &nbsp; '
              f'<span style="color:{AFTER_COLOR}">■</span> after &nbsp; (* edited class; 0–100%)')
    return (f'<div style="font-family:sans-serif"><div style="font-size:14px;margin-bottom:4px">'
            f'Per-class accuracy</div><div style="font-size:11px;margin-bottom:4px">{legend}</div>'
            f'<div style="display:flex;border-bottom:1px solid #999;border-left:1px solid #999">'
            + "".join(groups) + "</div></div>")


def confusion_html(confusion: np.ndarray, class_names: Sequence[str],
                   title: str = "Confusion matrix after the edit") -> str:
    """confusion: (C, C) counts, rows true, columns predicted; cells shaded by row percent."""
    conf = np.asarray(confusion, dtype=np.int64)
    pct = 100 * conf / np.maximum(conf.sum(1, keepdims=True), 1)
    names = [escape(str(n)) for n in class_names]
    numbers = len(names) <= LABELLED_UP_TO
    cell = "padding:2px 3px;text-align:center;font-size:11px;"
    head = "".join(f'<th style="{cell}font-weight:normal">{n}</th>' for n in names)
    rows = []
    for i, true in enumerate(names):
        cells = "".join(
            f'<td style="{cell}background:{_blue(p)};color:{"#fff" if p > 55 else "#000"}" '
            f'title="true {true}, predicted {names[j]}: {p:.1f}% ({conf[i, j]})">'
            f'{f"{p:.0f}" if numbers else ""}</td>' for j, p in enumerate(pct[i]))
        rows.append(f'<tr><th style="{cell}font-weight:normal;text-align:right">{true}</th>{cells}</tr>')
    return (f'<div style="font-family:sans-serif"><div style="font-size:14px;margin-bottom:4px">{escape(title)}'
            f'</div><div style="font-size:11px">rows: true class, columns: predicted (% of the row)</div>'
            f'<table style="border-collapse:collapse;table-layout:fixed;width:100%">'
            f'<tr><th></th>{head}</tr>' + "".join(rows) + "</table></div>")


def _pct(value: float) -> float:
    return 0.0 if not np.isfinite(value) else float(min(max(value, 0.0), 100.0))


def _blue(percent: float) -> str:
    """Plotly's 'Blues' end points, interpolated linearly: 0% -> #f7fbff, 100% -> #08306b."""
    t = _pct(percent) / 100
    r, g, b = (round(lo + t * (hi - lo)) for lo, hi in ((247, 8), (251, 48), (255, 107)))
    return f"rgb({r},{g},{b})"
