"""User-given text (class names, folder names) shown as text, never as markup: one helper for every place
where such text reaches Plotly (trace names, tick labels, hover text, titles; also the exported HTML) or
Streamlit Markdown (captions, ``st.markdown`` with or without HTML, metric labels).

Plotly reads ``<b>``, ``<a href>`` and friends in every label; Streamlit Markdown reads ``[x](url)``, ``**``,
``$...$`` and HTML. Both decode character references (``&#91;``) as plain characters after parsing, so
writing each special character as one shows the name as typed in both.
"""
from __future__ import annotations

from collections.abc import Iterable

# HTML's & < > " ' plus every character Markdown (and Streamlit's :directives:, $math$) gives a meaning to
_SPECIAL = "&<>\"'\\`*_{}[]()#+!|~$:="
_TABLE = str.maketrans({c: f"&#{ord(c)};" for c in _SPECIAL})


def text(value) -> str:
    """``str(value)`` with every markup character written as a character reference: shown as typed in Plotly
    labels and in Streamlit Markdown/HTML."""
    return str(value).translate(_TABLE)


def texts(values: Iterable) -> list[str]:
    """``text`` of each value (a list of class names for a chart axis or legend)."""
    return [text(v) for v in values]
