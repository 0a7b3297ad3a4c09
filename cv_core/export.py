"""JSON and safetensors exports of results (used by the CLI and the app's export page)."""
from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .device import describe
from .errors import InvalidInputError, OutputError
from .results import ClassVectors


def _clean(x):
    """NaN -> None so the JSON is standard."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give: 0o666 less the process umask (mkstemp gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def text_writer(text: str) -> Callable[[str], None]:
    """A writer of ``text`` (UTF-8) for ``write_outputs``."""
    return lambda tmp: _write_text(tmp, text)


def json_writer(data: dict) -> Callable[[str], None]:
    """A writer of ``data`` as standard JSON (NaN -> null) for ``write_outputs``; serialised before any file
    is opened, so only I/O can fail while writing."""
    return text_writer(json.dumps(_clean(data), indent=2))


def class_vectors_writer(cv: ClassVectors) -> Callable[[str], None]:
    """A writer of kappa, mu_pre, mu_ft (C, D) and counts (C,), class names in the safetensors metadata."""
    tensors = {"kappa": cv.kappa.contiguous(), "mu_pre": cv.mu_pre.contiguous(), "mu_ft": cv.mu_ft.contiguous(),
               "counts": cv.counts.contiguous()}
    return lambda tmp: save_file(tensors, tmp, metadata={"class_names": json.dumps(list(cv.class_names))})


def write_outputs(folder: Path, files: list[tuple[str, Callable[[str], None]]]) -> list[Path]:
    """Write every file to a temporary name in ``folder``, then rename them into place in the order given (put
    summary.json last: it never exists without its companions). A failure (a full disk, permissions) removes
    every temporary, leaves what was there before, and is an OutputError saying what to do. Permissions follow
    the umask. -> the written paths."""
    folder = Path(folder)
    temps: list[str] = []
    try:
        for name, write in files:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-")
            os.close(fd)
            temps.append(tmp)
            write(tmp)
            os.chmod(tmp, _file_mode())
        for (name, _), tmp in zip(files, temps):
            os.replace(tmp, folder / name)
    except (OSError, SafetensorError) as err:
        raise _output_error(folder, name, err) from None
    finally:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
    return [folder / name for name, _ in files]


def _output_error(folder: Path, name: str, err: BaseException) -> OutputError:
    from .features.cache import is_disk_full
    reason = "No space left on device" if is_disk_full(err) else (
        err.strerror if isinstance(err, OSError) and err.strerror else str(err))
    todo = ("free space there or choose an output folder on another disk with --out" if is_disk_full(err) else
            "check that the folder is writable, or choose another output folder with --out")
    return OutputError(f"cannot write {name} in {folder} ({reason}); {todo}. None of this command's output files "
                       "were written")


def write_json(path: Path, data: dict) -> None:
    """Atomic write (temp file + rename), so a crash never leaves half a file; permissions follow the umask."""
    path = Path(path)
    write_outputs(path.parent, [(path.name, json_writer(data))])


def summary_dict(result) -> dict:
    names = result.class_names
    zs, ft = result.zero_shot.per_class.tolist(), result.finetuned.per_class.tolist()
    return {
        "backbone": result.backbone_name,
        "weights": result.weights_id,
        "dataset": result.dataset,
        "device": describe(result.device),
        "num_classes": len(names),
        "num_test": result.num_images("test"),
        "num_train": result.num_images("train"),
        "zero_shot_accuracy": result.zero_shot_accuracy,
        "finetuned_accuracy": result.finetuned_accuracy,
        "per_class": {n: {"zero_shot": zs[i], "finetuned": ft[i]} for i, n in enumerate(names)},
        "finetune": result.finetune_config.as_dict(),
        "finetune_run": result.finetune_run,
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "cache_hits": result.cache_hits,
        "versions": {"cv_core": __version__, "torch": torch.__version__},
    }


def edit_dict(result, report, strengths=()) -> dict:
    """The edit (in the one JSON form, ``cv_core.editspec.EditSpec.to_json``: coefficients, moves, gate) and
    its scores; ``gate_thresholds``: the (C,) cosines the gate resolved to (None: no gate);
    ``strengths``: ForgetStrength of each class forgotten by --forget."""
    names = result.class_names
    before, after = report.before.per_class.tolist(), report.after.per_class.tolist()
    return {
        "backbone": result.backbone_name,
        "dataset": result.dataset,
        "split": report.split,
        **report.spec.to_json(names),
        "gate_thresholds": report.gamma,
        "forget_strengths": {s.name: s.as_dict() for s in strengths},
        "forget_classes": [names[i] for i in report.forget_classes],
        "forget_accuracy": report.forget_accuracy,
        "retain_accuracy": report.retain_accuracy,
        "forget_accuracy_before": report.forget_accuracy_before,
        "retain_accuracy_before": report.retain_accuracy_before,
        "accuracy_before": report.before.accuracy,
        "accuracy_after": report.after.accuracy,
        "per_class": {n: {"before": before[i], "after": after[i]} for i, n in enumerate(names)},
        "confusion_before": report.before.confusion.tolist(),
        "confusion_after": report.after.confusion.tolist(),
    }


def save_class_vectors(path: Path, cv: ClassVectors) -> None:
    """kappa, mu_pre, mu_ft (C, D) and counts (C,), class names in the safetensors metadata (atomic)."""
    path = Path(path)
    write_outputs(path.parent, [(path.name, class_vectors_writer(cv))])


def load_class_vectors(path: Path) -> ClassVectors:
    from safetensors import safe_open
    try:
        with safe_open(str(path), "pt") as f:
            names = tuple(json.loads(f.metadata()["class_names"]))
        t = load_file(str(path))
        return ClassVectors(t["kappa"], t["mu_pre"], t["mu_ft"], names, t["counts"])
    except Exception as err:
        raise InvalidInputError(f"{path} is not a class-vector file written by Class Vector Studio ({err})") from None
