"""Class Vector Studio: entry point of the Streamlit app (`streamlit run app/streamlit_app.py`)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `streamlit run` puts only app/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

st.set_page_config(page_title="Class Vector Studio", page_icon=":material/explore:", layout="wide")

PAGES = [
    st.Page("app_pages/setup.py", title="Setup", icon=":material/tune:", default=True),
    st.Page("app_pages/geometry.py", title="Geometry", icon=":material/scatter_plot:"),
    st.Page("app_pages/arithmetic.py", title="Class arithmetic", icon=":material/sliders:"),
    st.Page("app_pages/unlearning.py", title="Unlearning", icon=":material/cleaning_services:"),
    st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
    st.Page("app_pages/presenter.py", title="Presenter", icon=":material/slideshow:"),
]

from app import services, url_state  # noqa: E402
from app.components.run_gate import sidebar_summary  # noqa: E402

page = st.navigation(PAGES)
services.warm_imports()  # once per process, in this thread, before the UMAP warm-up thread imports anything
url_state.restore()  # a reload, a new tab or a shared link: the run and the edit named in the URL
with st.sidebar:
    sidebar_summary()
try:
    page.run()
except Exception as err:  # a bug must still read as a sentence, never as a traceback
    from app.components.compute import plain_error

    st.error(f"This page could not be drawn: {plain_error(err)}")
finally:
    url_state.sync()  # after st.stop() too: navigation clears the URL's parameters
# After the first page is drawn (not before: it would compete for the CPU with the first screen),
# compile UMAP's numba code in the background so that the first map does not pay for it.
services.start_umap_warm_up()
