"""The JavaScript and CSS of the app's browser components, read from the files next to this module.

Components v2 take one inline ES module per component, so the helpers every map shares
(``map_canvas.js``: table decoding, canvas sizing, legend, hover with thumbnails) are prepended to
each component's own module. Tests load the same text (``module_source``), so what they run is what
the browser runs.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
SHARED_JS = ("map_canvas.js",)
SHARED_CSS = ("map_canvas.css",)


def module_source(name: str) -> str:
    """The shared helpers followed by ``<name>.js``."""
    return "\n".join((HERE / f).read_text() for f in (*SHARED_JS, f"{name}.js"))


def style_source(name: str) -> str:
    """The shared styles followed by ``<name>.css``."""
    return "\n".join((HERE / f).read_text() for f in (*SHARED_CSS, f"{name}.css"))
