"""What the Export page hands out, as bytes: class vectors, metrics, figures and a CLI recipe.

No Streamlit here; ``app.services`` calls these with the session's run and edit.
"""
from __future__ import annotations

import csv
import io
import math
import shlex
from collections.abc import Sequence

import tempfile
from pathlib import Path

from app.state import AppRunConfig
from cv_core.editspec import EditSpec
from cv_core.export import save_class_vectors


def class_vectors_safetensors(cv) -> bytes:
    """The library's class-vector file (``cv_core.export.load_class_vectors`` reads it back)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "class_vectors.safetensors"
        save_class_vectors(path, cv)
        return path.read_bytes()


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else round(x, 6)


def _finetune(run) -> dict | None:
    """The fine-tuning settings and what it did (None: nothing was fine-tuned, the synthetic run)."""
    if run.finetune_config is None:
        return None
    return {"settings": run.finetune_config.as_dict(), "run": run.finetune_run}


def metrics(config: AppRunConfig, run, edit: dict, after_per_class: Sequence[float] | None,
            collapse: list[dict], unlearning: list[dict] | None) -> dict:
    """Everything measured in the session, JSON-ready (accuracies in [0, 1])."""
    names = list(run.head.class_names)
    per_class = []
    for c, name in enumerate(names):
        row = {"class": name, "zero_shot": _num(run.zero_shot.per_class[c]),
               "finetuned": _num(run.finetuned.per_class[c])}
        if after_per_class is not None:
            row["edited"] = _num(after_per_class[c])
        per_class.append(row)
    return {
        "run": {"backbone": config.backbone, "dataset": config.dataset, "device": config.device,
                "max_per_class": config.max_per_class, "seed": config.seed,
                "finetune_recipe": config.finetune_recipe, "freeze_bn_stats": config.freeze_bn_stats,
                "finetune": _finetune(run)},
        "accuracy": {"zero_shot": _num(run.zero_shot_accuracy), "finetuned": _num(run.finetuned_accuracy)},
        "per_class": per_class,
        "edit": edit,
        "neural_collapse": [{k: r[k] for k in ("metric", "pretrained", "fine-tuned")} for r in collapse],
        "unlearning": unlearning or [],
    }


def per_class_csv(metrics_: dict) -> bytes:
    rows = metrics_["per_class"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def figure_html(fig) -> bytes:
    """A self-contained HTML page (plotly.js inlined, so it opens offline)."""
    return fig.to_html(full_html=True, include_plotlyjs=True).encode()


def recipe(config: AppRunConfig, class_names: Sequence[str], spec: EditSpec) -> str:
    """A shell script that reproduces the session with the CLI (``cvstudio run`` / ``edit``); the edit's
    arguments are ``EditSpec.cli_args``, which the CLI reads back to the same edit."""
    common = ["--backbone", config.backbone, "--dataset", config.dataset, "--device", config.device,
              "--seed", str(config.seed)]
    if config.data_root:
        common += ["--data-root", config.data_root]
    if config.max_per_class:
        common += ["--max-per-class", str(config.max_per_class)]
    if config.finetune_recipe != "auto":
        common += ["--recipe", config.finetune_recipe]
    if config.freeze_bn_stats:
        common += ["--freeze-bn-stats"]
    lines = ["#!/bin/sh", "# Reproduces a Class Vector Studio session with the CLI (python -m cv_core, or cvstudio "
             "once the package is installed).", "set -e", "python -m cv_core run " + shlex.join(common)]
    if any(spec.coefficients) or spec.moves:
        lines.append("python -m cv_core edit " + shlex.join(common + spec.cli_args(class_names)))
    return "\n".join(lines) + "\n"
