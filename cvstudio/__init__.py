"""``cvstudio``: the installed command. ``cvstudio app`` starts the Streamlit app from any working directory;
every other command is the library's command line (``python -m cv_core``: list, run, finetune, edit, report).

In a wheel the app's files are the package ``cvstudio.app`` (mapped from the checkout's ``app/``, see
pyproject.toml) and ``streamlit_app.py`` puts their parent on ``sys.path``, so the app's ``import app`` works;
in a checkout the launcher uses ``app/`` and ``.streamlit/config.toml`` at the repository root.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
APP_HELP = "cvstudio app [--port PORT] [--address HOST] [STREAMLIT OPTIONS]: start the Streamlit app"


def app_dir() -> Path:
    """The folder of ``streamlit_app.py``: inside the installed package, else the checkout's ``app/``."""
    installed = HERE / "app"
    return installed if (installed / "streamlit_app.py").exists() else HERE.parent / "app"


def config_path() -> Path:
    """The app's Streamlit settings (localhost only, no telemetry): installed copy, else the checkout's."""
    installed = HERE / "streamlit" / "config.toml"
    return installed if installed.exists() else HERE.parent / ".streamlit" / "config.toml"


def streamlit_flags(path: Path) -> list[str]:
    """``config.toml`` as ``--section.key value`` flags: the same settings whatever the working directory
    (Streamlit itself reads ``.streamlit/config.toml`` only from the working directory)."""
    flags = []
    for section, values in tomllib.loads(path.read_text()).items():
        for key, value in values.items():
            text = str(value).lower() if isinstance(value, bool) else str(value)
            flags += [f"--{section}.{key}", text]
    return flags


def app_command(argv: list[str]) -> list[str]:
    """The ``streamlit run`` command line of ``cvstudio app ARGV``."""
    parser = argparse.ArgumentParser(prog="cvstudio app", description="Start the Class Vector Studio app "
                                     "(Streamlit); other options go to `streamlit run`.")
    parser.add_argument("--port", type=int, default=8501, help="port to listen on (default 8501)")
    parser.add_argument("--address", default=None, help="address to listen on (default: localhost only)")
    args, rest = parser.parse_known_args(argv)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_dir() / "streamlit_app.py"),
           *streamlit_flags(config_path()), "--server.port", str(args.port)]
    if args.address:
        cmd += ["--server.address", args.address]
    return cmd + rest


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["app"]:
        try:
            return subprocess.call(app_command(argv[1:]))
        except KeyboardInterrupt:
            return 130
    from cv_core.cli import main as cli_main

    if argv[:1] in (["-h"], ["--help"]) or not argv:
        print(APP_HELP)
    return cli_main(argv, prog="cvstudio")
