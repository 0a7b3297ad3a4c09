"""The installable package (issue 16 part 3): the wheel holds the library, the app, the built-in model and the
``cvstudio`` command, and declares the same dependencies as requirements.txt. Builds a real wheel (~3 s)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("cv_core", "cvstudio", "app", "assets/builtin", ".streamlit", "pyproject.toml", "README.md")


def _requirements() -> list[str]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("-")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the checkout's package sources (so no build/ folder lands in the tree)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for rel in SOURCES:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / rel).is_dir():
            shutil.copytree(ROOT / rel, src / rel, ignore=ignore)
        else:
            shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(src)], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [path] = out.glob("class_vector_studio-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_the_library_the_app_and_the_builtin_model(wheel):
    names = set(wheel.namelist())
    for path in (ROOT / "cv_core").rglob("*.py"):
        assert path.relative_to(ROOT).as_posix() in names, path
    for path in (ROOT / "app").rglob("*"):  # the app's code, scripts and styles, as the package cvstudio.app
        if path.suffix in (".py", ".js", ".css"):
            assert "cvstudio/" + path.relative_to(ROOT).as_posix() in names, path
    assets = "cv_core/models/builtin/assets/"
    for path in (ROOT / "assets" / "builtin").rglob("*"):
        if path.is_file():
            assert assets + path.relative_to(ROOT / "assets" / "builtin").as_posix() in names, path
    assert {"cv_core/models/builtin/cvs-tiny-clip.json", "cvstudio/streamlit/config.toml"} <= names
    dist = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert re.search(r"^cvstudio = cvstudio:main$", wheel.read(dist).decode(), re.M)
    assert not any(n.startswith(("tests/", "bench/", "app/")) for n in names)  # no stray top-level packages


def test_the_wheel_declares_the_requirements_and_the_extras(wheel):
    meta = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    from packaging.requirements import Requirement

    def norm(r: str) -> tuple:
        req = Requirement(r)
        return req.name.lower().replace("_", "-"), req.specifier, frozenset(req.extras)

    plain = sorted((norm(r) for r in requires if "extra ==" not in r), key=str)
    assert plain == sorted((norm(r) for r in _requirements()), key=str)
    extras = set(re.findall(r"^Provides-Extra: (.+)$", meta, re.M))
    assert {"dev", "scale", "audit"} <= extras
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = [ln.strip() for ln in (ROOT / "requirements-dev.txt").read_text().splitlines()
           if ln.strip() and not ln.startswith(("#", "-"))]
    optional = {r for group in project["optional-dependencies"].values() for r in group}
    assert set(dev) <= optional, set(dev) - optional  # every dev requirement is in an extra


def test_cvstudio_app_runs_the_app_file_with_the_projects_streamlit_settings(tmp_path, monkeypatch):
    import cvstudio

    monkeypatch.chdir(tmp_path)  # any working directory
    cmd = cvstudio.app_command(["--port", "8600", "--theme.base", "dark"])
    script = Path(cmd[4])
    assert cmd[1:4] == ["-m", "streamlit", "run"] and script.name == "streamlit_app.py" and script.is_file()
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.address"] == "localhost"
    assert flags["--server.port"] == "8600" and flags["--theme.base"] == "dark"
    assert cvstudio.main(["list", "datasets"]) == 0
