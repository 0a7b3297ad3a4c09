"""Pages that show a computed run start with :func:`require_run`."""
from __future__ import annotations

import streamlit as st

from app import services, state


def require_run():
    """(config, run) of the session's computed run, or a pointer to Setup and a stop."""
    config = state.run_config()
    run = services.cached_run(config) if config is not None else None
    if run is None:
        st.info("No computed run yet. Choose a backbone and a dataset on the Setup page and press "
                "**Compute** (the built-in model on digits takes well under a minute on a CPU).")
        st.page_link("app_pages/setup.py", label="Go to Setup", icon=":material/tune:")
        st.stop()
    return config, run


def sidebar_summary() -> None:
    """One line in the sidebar saying which run the pages show."""
    config = state.run_config()
    run = services.cached_run(config) if config is not None else None
    if run is None:
        st.caption("No run computed yet.")
        return
    st.caption(f"**Run:** {config.label()}  \nzero-shot {100 * run.zero_shot_accuracy:.1f}% → "
               f"fine-tuned {100 * run.finetuned_accuracy:.1f}%")
