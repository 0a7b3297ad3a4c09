"""Export: class vectors, metrics, figures and a recipe that reproduces the session with the CLI."""
from __future__ import annotations

import streamlit as st

from app import exports, services, state
from app.components.run_gate import require_run

config, run = require_run()
C = len(run.head.class_names)

st.title("Export")
st.caption("Everything here reflects the current run and the last edit made on the Class arithmetic page.")

files = services.export_bundle(config, state.coefficients(C), state.moves(), state.gate(),
                               state.unlearn_rows())
KINDS = {
    "class_vectors.safetensors": ("Class vectors (safetensors)", "application/octet-stream",
                                  "κ, pretrained and fine-tuned centroids (C × D), class names in the metadata."),
    "metrics.json": ("Metrics (JSON)", "application/json",
                     "Accuracies per class before and after the edit, the edit, NC1–NC4, unlearning rows."),
    "per_class.csv": ("Per-class accuracy (CSV)", "text/csv", "One row per class: zero-shot, fine-tuned, edited."),
    "recipe.sh": ("Recipe (CLI script)", "text/x-shellscript",
                  "Re-runs this session with `python -m cv_core run` and `python -m cv_core edit`."),
}
for name, (label, mime, help_text) in KINDS.items():
    c1, c2 = st.columns([1, 3])
    c1.download_button(label, files[name], file_name=name, mime=mime, key=f"export_{name}", width="stretch",
                       on_click="ignore")  # no rerun: quick successive clicks no longer cancel downloads
    c2.caption(help_text)

with st.expander("Recipe"):
    st.code(files["recipe.sh"].decode(), language="bash")

st.subheader("Figures")
figures = state.figures()
if not figures:
    st.info("No figure yet: open Geometry, Class arithmetic or Unlearning first; their charts appear here.")
for name, fig in figures.items():
    c1, c2 = st.columns([1, 3])
    c1.download_button(f"{name}.html", exports.figure_html(fig), file_name=f"{name}.html", mime="text/html",
                       key=f"export_fig_{name}", width="stretch", on_click="ignore")
    c2.caption("Interactive HTML with plotly.js inside: opens offline in any browser. (PNG needs kaleido and a "
               "browser build it downloads, so it is not offered offline.)")
