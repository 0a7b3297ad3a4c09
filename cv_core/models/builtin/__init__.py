"""The built-in CLIP ("cvs-tiny-clip"): a small open_clip model trained by this project.

Its weights ship in ``assets/builtin/`` so the product runs offline on a CPU. Load it
the standard open_clip way::

    register_config()
    model = open_clip.create_model(BUILTIN_MODEL_NAME, pretrained=str(weights_path()))
    tokenizer = open_clip.get_tokenizer(BUILTIN_MODEL_NAME)

Importing this package is cheap: open_clip is imported only by :func:`register_config`.
The corpus generator, the pretraining script and the evaluation live in submodules.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from ...errors import WeightsUnavailableError

BUILTIN_MODEL_NAME = "cvs-tiny-clip"
CONFIG_PATH = Path(__file__).resolve().with_name(f"{BUILTIN_MODEL_NAME}.json")
# Installed (a wheel): the package data cv_core/models/builtin/assets (mapped from assets/builtin, see
# pyproject.toml); in a checkout: assets/builtin at the repository root.
_INSTALLED = Path(__file__).resolve().with_name("assets")
ASSET_DIR = _INSTALLED if _INSTALLED.is_dir() else Path(__file__).resolve().parents[3] / "assets" / "builtin"
WEIGHTS_FILE = f"{BUILTIN_MODEL_NAME}.safetensors"
MANIFEST_FILE = f"{BUILTIN_MODEL_NAME}.manifest.json"

__all__ = ["BUILTIN_MODEL_NAME", "register_config", "weights_path", "manifest_path", "manifest",
           "verify_weights", "sha256_file", "compare_weights"]


def register_config() -> None:
    """Make ``BUILTIN_MODEL_NAME`` known to open_clip (idempotent)."""
    import open_clip

    if BUILTIN_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


def weights_path() -> Path:
    """Path of the shipped safetensors weights (it may be missing in a broken checkout)."""
    return ASSET_DIR / WEIGHTS_FILE


def manifest_path() -> Path:
    return ASSET_DIR / MANIFEST_FILE


def manifest() -> dict:
    """The JSON manifest next to the weights: config, ``sha256`` of the weights, recipe, metrics."""
    path = manifest_path()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the built-in model's manifest {path} is missing; restore assets/builtin/ from the repository "
            "or regenerate it with `python -m cv_core.models.builtin.pretrain`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise WeightsUnavailableError(f"the built-in model's manifest {path} is not valid JSON: {err}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def _verified(path: str, mtime_ns: int, size: int, expected: str) -> str:
    return sha256_file(Path(path))


def verify_weights() -> None:
    """Raise :class:`WeightsUnavailableError` unless the weights exist and match the manifest's sha256."""
    path = weights_path()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the built-in model's weights {path} are missing; restore assets/builtin/ from the repository "
            "(git checkout -- assets/builtin) or retrain with `python -m cv_core.models.builtin.pretrain`")
    expected = manifest().get("sha256")
    if not expected:
        raise WeightsUnavailableError(f"the manifest {manifest_path()} has no 'sha256' entry; regenerate it")
    stat = path.stat()
    actual = _verified(str(path), stat.st_mtime_ns, stat.st_size, expected)
    if actual != expected:
        raise WeightsUnavailableError(
            f"the built-in weights {path} are corrupt or were replaced: sha256 {actual[:12]}... does not match "
            f"the manifest's {expected[:12]}...; restore them with `git checkout -- assets/builtin`")


def compare_weights(a: Path, b: Path) -> dict:
    """Tensor-by-tensor comparison of two safetensors files (a pretraining rerun against the shipped weights).

    Returns {"tensors": n, "differing": names whose values differ, "missing": names in one file only,
    "max_abs_diff": float, "identical": bool}. File hashes are no test of reproducibility: the header
    (metadata order, padding) can differ while every tensor is bit-for-bit the same.
    """
    from safetensors import safe_open

    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        ka, kb = set(fa.keys()), set(fb.keys())
        differing, worst = [], 0.0
        for name in sorted(ka & kb):
            x, y = fa.get_tensor(name), fb.get_tensor(name)
            if x.shape != y.shape or x.dtype != y.dtype or not bool((x == y).all()):
                differing.append(name)
                if x.shape == y.shape:
                    worst = max(worst, float((x.float() - y.float()).abs().max()))
    missing = sorted(ka ^ kb)
    return {"tensors": len(ka | kb), "differing": differing, "missing": missing, "max_abs_diff": worst,
            "identical": not differing and not missing}
