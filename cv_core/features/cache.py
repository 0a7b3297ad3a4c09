"""On-disk cache of tensors: safetensors file + JSON sidecar, keyed by everything that determines them.

Layout: ``ROOT/<kind>/<digest>.safetensors`` and ``ROOT/<kind>/<digest>.json``, where the digest is
the sha256 of the canonical JSON of the key. The sidecar stores the key and the sha256 of the tensor
file; an entry is used only if both match. Writes go to temporary files that are renamed into place
(tensors first, sidecar last), so readers never see half an entry and two writers cannot corrupt one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..errors import CacheError

#: Bump when the meaning of cached values changes; it is part of every key.
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """$CVS_CACHE_DIR, else ~/.cache/class-vector-studio."""
    env = os.environ.get("CVS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "class-vector-studio"


def key_digest(key: dict) -> str:
    text = json.dumps({"cache_version": CACHE_VERSION, **key}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ArtifactCache:
    """get_or_compute(kind, key, compute) -> (tensors, hit)."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_cache_dir()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-"):
                pass
        except OSError as err:
            raise CacheError(f"cache directory {self.root} is not writable ({err.strerror}); choose another with "
                             "--cache-dir or the CVS_CACHE_DIR environment variable") from None

    def paths(self, kind: str, key: dict) -> tuple[Path, Path]:
        d = key_digest(key)
        return self.root / kind / f"{d}.safetensors", self.root / kind / f"{d}.json"

    def load(self, kind: str, key: dict) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The entry's tensors and sidecar, or None when absent, mismatched or corrupt (with a warning)."""
        tensor_path, meta_path = self.paths(kind, key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != json.loads(json.dumps(key, default=str)):
                raise ValueError("key mismatch")
            if file_sha256(tensor_path) != meta.get("sha256"):
                raise ValueError("checksum mismatch (truncated or modified file)")
            return load_file(tensor_path), meta
        except Exception as err:  # corrupt JSON, missing or truncated tensors: recompute
            warnings.warn(f"ignoring a broken cache entry {tensor_path.name} ({err}); recomputing", stacklevel=2)
            return None

    def save(self, kind: str, key: dict, tensors: dict[str, torch.Tensor], meta: dict | None = None) -> Path:
        tensor_path, meta_path = self.paths(kind, key)
        tensor_path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = _temp_path(tensor_path)
        try:
            save_file(tensors, str(tmp))
            sha = file_sha256(tmp)
            os.replace(tmp, tensor_path)
            sidecar = {"key": key, "sha256": sha, "cache_version": CACHE_VERSION, **(meta or {})}
            _atomic_write_text(meta_path, json.dumps(sidecar, indent=1, sort_keys=True, default=str))
        except OSError as err:
            raise CacheError(f"cannot write the cache entry {tensor_path}: {err.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)
        return tensor_path

    def get_or_compute(self, kind: str, key: dict, compute: Callable[[], dict[str, torch.Tensor]],
                       meta: dict | None = None) -> tuple[dict[str, torch.Tensor], bool]:
        hit = self.load(kind, key)
        if hit is not None:
            return hit[0], True
        tensors = compute()
        self.save(kind, key, tensors, meta)
        return tensors, False


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
    os.close(fd)
    return Path(name)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _temp_path(path)
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
