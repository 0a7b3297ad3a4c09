"""On-disk cache of tensors: safetensors file + JSON sidecar, keyed by everything that determines them.

Layout: ``ROOT/<kind>/<digest>.safetensors`` and ``ROOT/<kind>/<digest>.json``, where the digest is
the sha256 of the canonical JSON of the key. The sidecar stores the key and the sha256 of the tensor
file; an entry is used only if both match. Writes go to temporary files that are renamed into place
(tensors first, sidecar last), so readers never see half an entry and two writers cannot corrupt one.
A writer killed mid-write leaves a temporary (``.NAME-XXXX.tmp`` file, or a feature store's ``.DIGEST-XXXX.tmp``
folder); opening the cache removes those older than ``ORPHAN_AGE_S`` (a folder by its newest file, and never
one whose writer still holds its lock), so a concurrent writer's fresh temporaries are kept.
A write that fails (a full disk, a quota, permissions) is a ``CacheError`` saying what to do.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CacheError

#: Bump when the meaning of cached values changes; it is part of every key.
CACHE_VERSION = 1
#: Temporaries older than this (seconds) are a killed writer's and removed when a cache is opened.
ORPHAN_AGE_S = 3600.0
#: Created and share-locked inside a feature store's temporary folder while its writer is alive.
WRITER_LOCK = ".writer.lock"


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
        remove_orphans(self.root)

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
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        tmp = None
        try:
            tensor_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = _temp_path(tensor_path)
            save_file(tensors, str(tmp))
            sha = file_sha256(tmp)
            os.replace(tmp, tensor_path)
            sidecar = {"key": key, "sha256": sha, "cache_version": CACHE_VERSION, **(meta or {})}
            _atomic_write_text(meta_path, json.dumps(sidecar, indent=1, sort_keys=True, default=str))
        except (OSError, SafetensorError) as err:
            mb = sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
            raise write_error(self.root, tensor_path, err, f"{mb:.1f} MB") from None
        finally:
            if tmp is not None:
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


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC / EDQUOT, as an OSError or inside a library's message (safetensors: 'StorageFull')."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err)
    return any(s in text for s in ("No space left", "StorageFull", "Disk quota", "QuotaExceeded"))


def write_error(root: Path, path: Path, err: BaseException, size: str = "") -> CacheError:
    """The CacheError of a failed cache write: what failed and what to do (free space, or --cache-dir)."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    if is_disk_full(err):
        need = f" (this entry needs {size})" if size else ""
        return CacheError(f"the cache folder {root} is full: No space left on device while writing {path.name}"
                          f"{need}. Free space there, or choose a cache folder on another disk with --cache-dir "
                          "(or the CVS_CACHE_DIR environment variable), then run again")
    return CacheError(f"cannot write the cache entry {path} ({reason}); check that {root} is writable and has free "
                      "space, or choose another cache folder with --cache-dir (or CVS_CACHE_DIR)")


def remove_orphans(root: Path, max_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Remove temporaries of killed writers under ``root`` (in it and its sub-folders, one level: where the
    cache and the feature stores write them) older than ``max_age_s``; -> the removed paths. Folders count by
    their newest file and are kept while a writer holds their lock; failures are ignored (another process may
    be removing the same orphan)."""
    now, removed = time.time(), []
    try:
        folders = [root] + [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return removed
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for p in entries:
            if not _is_temporary(p.name):
                continue
            try:
                if p.is_dir():
                    if now - _newest_mtime(p) < max_age_s or _writer_alive(p):
                        continue
                    shutil.rmtree(p)
                else:
                    if now - p.stat().st_mtime < max_age_s:
                        continue
                    p.unlink()
                removed.append(p)
            except OSError:
                continue
    return removed


def _is_temporary(name: str) -> bool:
    """Names our writers give temporaries: .NAME-XXXX.tmp[.ext], .DIGEST-XXXX.old, .probe-XXXX."""
    return name.startswith(".") and (name.endswith(".tmp") or ".tmp." in name or name.endswith(".old")
                                     or name.startswith(".probe-"))


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for sub, dirs, files in os.walk(folder):
        for name in dirs + files:
            try:
                newest = max(newest, os.stat(os.path.join(sub, name)).st_mtime)
            except OSError:
                pass
    return newest


def _writer_alive(folder: Path) -> bool:
    """Does a live writer hold the lock file in ``folder``? (The kernel drops the lock of a killed process.)"""
    lock = folder / WRITER_LOCK
    if not lock.exists():
        return False
    try:
        import fcntl
    except ImportError:  # no advisory locks: trust the age
        return False
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


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
