"""Fixtures of the app tests: the synthetic run stands in for a real backbone (fast, no model)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "app" / "streamlit_app.py")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TIMEOUT = 60  # AppTest's default of 3 s is too short for a first UMAP or torch import


@pytest.fixture
def synthetic_env(monkeypatch):
    monkeypatch.setenv("CVS_SYNTHETIC", "1")
