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
#: Version -> open_clip model name. v1 stays selectable (``builtin:v1``) so old results reproduce.
VERSIONS = {"v1": BUILTIN_MODEL_NAME, "v2": "cvs-tiny-clip-v2", "v3": "cvs-tiny-clip-v3"}
DEFAULT_VERSION = "v1"
# Installed (a wheel): the package data cv_core/models/builtin/assets (mapped from assets/builtin, see
# pyproject.toml); in a checkout: assets/builtin at the repository root.
_INSTALLED = Path(__file__).resolve().with_name("assets")
ASSET_DIR = _INSTALLED if _INSTALLED.is_dir() else Path(__file__).resolve().parents[3] / "assets" / "builtin"

__all__ = ["BUILTIN_MODEL_NAME", "VERSIONS", "DEFAULT_VERSION", "model_name", "version_of", "config_path",
           "weights_file", "manifest_file", "register_config", "weights_path", "manifest_path", "manifest", "describe",
           "verify_weights", "sha256_file", "compare_weights"]


def _check_version(version: str) -> str:
    if version not in VERSIONS:
        from ...errors import UnknownNameError
        raise UnknownNameError("built-in model version", version, list(VERSIONS))
    return version


def model_name(version: str = DEFAULT_VERSION) -> str:
    """The open_clip model name of a built-in version ('v1' -> 'cvs-tiny-clip')."""
    return VERSIONS[_check_version(version)]


def version_of(name: str) -> str | None:
    """The version of an open_clip model name that is a built-in one, else None."""
    return next((v for v, n in VERSIONS.items() if n == name), None)


def config_path(version: str = DEFAULT_VERSION) -> Path:
    return Path(__file__).resolve().with_name(f"{model_name(version)}.json")


def weights_file(version: str = DEFAULT_VERSION) -> str:
    """The weights' file name of a version (in the assets folder, or a pretraining run's output folder)."""
    return f"{model_name(version)}.safetensors"


def manifest_file(version: str = DEFAULT_VERSION) -> str:
    return f"{model_name(version)}.manifest.json"


#: v1's config and weights file (the default version's).
CONFIG_PATH = config_path()
WEIGHTS_FILE = weights_file()


def register_config() -> None:
    """Make every built-in version known to open_clip (idempotent)."""
    import open_clip

    for version, name in VERSIONS.items():
        if name not in open_clip.list_models():
            open_clip.add_model_config(config_path(version))


def weights_path(version: str = DEFAULT_VERSION) -> Path:
    """Path of the shipped safetensors weights (it may be missing in a broken checkout)."""
    return ASSET_DIR / weights_file(version)


def manifest_path(version: str = DEFAULT_VERSION) -> Path:
    return ASSET_DIR / manifest_file(version)


def manifest(version: str = DEFAULT_VERSION) -> dict:
    """The JSON manifest next to the weights: config, ``sha256`` of the weights, recipe, metrics."""
    path = manifest_path(version)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the built-in model's manifest {path} is missing; restore assets/builtin/ from the repository "
            "or regenerate it with `python -m cv_core.models.builtin.pretrain`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise WeightsUnavailableError(f"the built-in model's manifest {path} is not valid JSON: {err}") from None


def describe(version: str = DEFAULT_VERSION) -> str:
    """One line about a built-in version from its manifest (size and this model's own digits figures), or why
    it cannot be used."""
    try:
        m = manifest(version)
    except WeightsUnavailableError:
        return f"{version}: missing its manifest {manifest_path(version)}"
    metrics = m.get("metrics", {})
    figures = ", ".join(f"{label} {metrics[key]:.1%}" for key, label in
                        (("zero_shot_test", "zero-shot"), ("finetuned_test", "150-step fine-tune"))
                        if isinstance(metrics.get(key), (int, float)))
    extra = f"; on digits test: {figures}" if figures else ""
    default = " (the default)" if version == DEFAULT_VERSION else ""
    return f"{version}{default}: {m.get('bytes', 0) / 2**20:.1f} MB{extra}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@lru_cache(maxsize=4)
def _verified(path: str, mtime_ns: int, size: int, expected: str) -> str:
    return sha256_file(Path(path))


def verify_weights(version: str = DEFAULT_VERSION) -> None:
    """Raise :class:`WeightsUnavailableError` unless the weights exist and match the manifest's sha256."""
    path = weights_path(version)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"the built-in model's weights {path} are missing; restore assets/builtin/ from the repository "
            "(git checkout -- assets/builtin) or retrain with `python -m cv_core.models.builtin.pretrain`")
    expected = manifest(version).get("sha256")
    if not expected:
        raise WeightsUnavailableError(f"the manifest {manifest_path(version)} has no 'sha256' entry; regenerate it")
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
