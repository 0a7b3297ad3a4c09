"""The JavaScript and CSS of the app's browser components, read from the files next to this module.

Components v2 take one inline ES module per component, so the helpers every map shares
(``map_canvas.js``: table decoding, canvas sizing, legend, hover with thumbnails) are prepended to
each component's own module. Tests load the same text (``module_source``), so what they run is what
the browser runs.
"""
from __future__ import annotations

import base64
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
SHARED_JS = ("map_canvas.js", "gl_points.js")
SHARED_CSS = ("map_canvas.css",)


def module_source(name: str) -> str:
    """The shared helpers followed by ``<name>.js``."""
    return "\n".join((HERE / f).read_text() for f in (*SHARED_JS, f"{name}.js"))


def style_source(name: str) -> str:
    """The shared styles followed by ``<name>.css``."""
    return "\n".join((HERE / f).read_text() for f in (*SHARED_CSS, f"{name}.css"))


def register(name: str, root_class: str):
    """Register the component ``cvs_<name>`` (its module and styles, a root element of ``root_class``)
    and return its mount function."""
    import streamlit as st

    return st.components.v2.component(f"cvs_{name}", html=f'<div class="{root_class}"></div>',
                                      css=style_source(name), js=module_source(name))


def float32_b64(array) -> str:
    """An array (numpy or torch) as little-endian float32 bytes in base64, as map_canvas.js decodes it."""
    values = array.numpy() if hasattr(array, "numpy") else array
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode("ascii")
