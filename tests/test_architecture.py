"""Rule 1 of STYLE.md: the library never imports the app or Streamlit."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import cv_core

ROOT = Path(__file__).resolve().parents[1]


def test_importing_every_cv_core_module_does_not_import_streamlit():
    modules = [m.name for m in pkgutil.walk_packages(cv_core.__path__, "cv_core.")
               if not m.name.endswith("__main__")]
    code = ("import importlib, sys\n"
            f"for m in {modules!r}: importlib.import_module(m)\n"
            "bad = [m for m in sys.modules if m == 'streamlit' or m.startswith(('streamlit.', 'app.'))]\n"
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(modules) > 15


def test_no_source_file_in_cv_core_mentions_streamlit_or_app_imports():
    for path in (ROOT / "cv_core").rglob("*.py"):
        text = path.read_text()
        assert "import streamlit" not in text and "from app" not in text, path
