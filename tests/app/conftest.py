"""Fixtures of the app tests: the synthetic run stands in for a real backbone (fast, no model)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app" / "streamlit_app.py")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TIMEOUT = 90  # AppTest's default of 3 s is too short for the first import of torch and open_clip


@pytest.fixture
def synthetic_env(monkeypatch):
    """Offer the synthetic run, with 600 test points so that UMAP and probes stay quick."""
    monkeypatch.setenv("CVS_SYNTHETIC", "1")
    monkeypatch.setenv("CVS_SYNTHETIC_N", "600")


def _new_app():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    return at


@pytest.fixture
def new_app():
    """Factory of a fresh AppTest of the whole app, already run once (the Setup page)."""
    return _new_app


@pytest.fixture
def computed_app(synthetic_env):
    """An AppTest whose session has computed the synthetic run on the Setup page."""
    at = _new_app()
    at.selectbox(key="setup_dataset").select("synthetic-10k").run()
    at.button(key="setup_compute").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at
