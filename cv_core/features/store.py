"""A sharded feature store for runs too large for one safetensors file (clip-retrieval's layout).

Layout of a store folder ``ROOT``::

    ROOT/manifest.json                         written last: key, class names, dim, dtype, shards
    ROOT/<split>/<encoder>/<i>.npy             (n, D) float32|float16 features, rows [start, start + n)
    ROOT/<split>/<encoder>/<i>.parquet         the same rows' metadata: row, label, split, source

Vectors stay out of Parquet (a list column loads 20x slower than a memory-mapped .npy). Every shard
is a contiguous range of rows; together the shards of one (split, encoder) tile rows 0..N-1.

Writes are atomic at two levels: each file is written to a temporary name and renamed, and the whole
store is built in a temporary sibling folder that is renamed into place under a lock only once its
manifest is written. A reader therefore sees either no store or a complete one; an exception inside
``with FeatureStoreWriter(...)`` leaves nothing. Two runs writing the same store both succeed: the
second to finish finds a complete store with the same key and discards its own copy.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import CacheError, InvalidInputError
from .cache import CACHE_VERSION, WRITER_LOCK, key_digest, write_error

FORMAT = "cvs-feature-store"
FORMAT_VERSION = 1
ENCODERS = ("pre", "ft")
DTYPES = ("float32", "float16")


def store_root(cache_root: str | Path, key: dict) -> Path:
    """Where the store of ``key`` lives inside a cache folder: ``CACHE/stores/<digest>``."""
    return Path(cache_root) / "stores" / key_digest(key)


def _canonical(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True, default=str))


class FeatureStoreWriter:
    """Write features of both encoders per split; ``close()`` publishes the store.

    ``add(split, encoder, features (n, D), labels (n,) int64, rows (n,) int64 | None, source)``:
    rows default to the rows after the last ones added for that (split, encoder). Rows may arrive in
    any order (Ray blocks do); runs of consecutive rows are buffered into shards of ``shard_rows``.
    """

    def __init__(self, root: str | Path, key: dict, class_names: Sequence[str], dim: int,
                 dtype: str = "float32", shard_rows: int = 65536):
        if dtype not in DTYPES:
            raise InvalidInputError(f"feature store dtype must be one of {DTYPES}, got {dtype!r}")
        if dim < 1 or shard_rows < 1:
            raise InvalidInputError(f"feature store dim and shard_rows must be >= 1, got {dim}, {shard_rows}")
        self.root, self.key = Path(root), _canonical(key)
        self.class_names, self.dim, self.dtype, self.shard_rows = tuple(class_names), int(dim), dtype, shard_rows
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(dir=self.root.parent, prefix=f".{self.root.name}-", suffix=".tmp"))
            self._alive = _hold_writer_lock(self._tmp)
        except OSError as err:
            raise write_error(self.root.parent.parent, self.root, err) from None
        self._shards: dict[tuple[str, str], list[dict]] = {}
        self._pending: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray, np.ndarray, list]]] = {}
        self._next_row: dict[tuple[str, str], int] = {}
        self._closed = False

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, split: str, encoder: str, features, labels, rows=None, source: Sequence[str] | None = None) -> None:
        """Append rows of one (split, encoder). features: (n, D); labels: (n,) ints in [0, C)."""
        if self._closed:
            raise InvalidInputError("this feature store writer is already closed")
        if encoder not in ENCODERS:
            raise InvalidInputError(f"feature store encoder must be one of {ENCODERS}, got {encoder!r}")
        if not split or "/" in split or split.startswith("."):
            raise InvalidInputError(f"invalid split name {split!r}")
        feats = np.asarray(features.detach().cpu() if hasattr(features, "detach") else features)
        labels = np.asarray(labels.detach().cpu() if hasattr(labels, "detach") else labels).astype(np.int64)
        n = len(labels)
        if feats.ndim != 2 or feats.shape != (n, self.dim):
            raise InvalidInputError(f"features must be ({n}, {self.dim}); got {feats.shape}")
        if n and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise InvalidInputError(f"labels must be in [0, {len(self.class_names)}); got {labels.min()}..{labels.max()}")
        k = (split, encoder)
        start = self._next_row.get(k, 0)
        rows = np.arange(start, start + n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        source = [""] * n if source is None else [str(s) for s in source]
        if rows.shape != (n,) or len(source) != n:
            raise InvalidInputError(f"rows and source must have one entry per feature row ({n})")
        if n == 0:
            return
        order = np.argsort(rows, kind="stable")
        rows, feats, labels = rows[order], feats[order], labels[order]
        source = [source[i] for i in order]
        if rows[0] < 0:
            raise InvalidInputError("row indices must be >= 0")
        self._next_row[k] = int(rows[-1]) + 1
        # split into runs of consecutive rows; each run joins the buffer if it continues it
        breaks = np.nonzero(np.diff(rows) != 1)[0] + 1
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, n]):
            self._buffer(k, rows[lo:hi], feats[lo:hi], labels[lo:hi], source[lo:hi])

    def _buffer(self, k, rows, feats, labels, source) -> None:
        pending = self._pending.get(k) or []
        if pending and int(pending[-1][0][-1]) + 1 != int(rows[0]):
            self._flush(k, everything=True)
        self._pending.setdefault(k, []).append((rows, feats.astype(self.dtype, copy=False), labels, list(source)))
        self._flush(k, everything=False)

    def _flush(self, k, everything: bool) -> None:
        pending = self._pending.get(k) or []
        if not pending:
            return
        total = sum(len(p[0]) for p in pending)
        if total < self.shard_rows and not everything:
            return
        rows = np.concatenate([p[0] for p in pending])
        feats = np.concatenate([p[1] for p in pending])
        labels = np.concatenate([p[2] for p in pending])
        source = [s for p in pending for s in p[3]]
        cut = total if everything else (total // self.shard_rows) * self.shard_rows
        for lo in range(0, cut, self.shard_rows):
            hi = min(lo + self.shard_rows, cut)
            self._write_shard(k, rows[lo:hi], feats[lo:hi], labels[lo:hi], source[lo:hi])
        self._pending[k] = [(rows[cut:], feats[cut:], labels[cut:], source[cut:])] if cut < total else []

    def _write_shard(self, k, rows, feats, labels, source) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq
        split, encoder = k
        shards = self._shards.setdefault(k, [])
        folder = self._tmp / split / encoder
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{len(shards):05d}"
        feats = np.ascontiguousarray(feats)
        try:
            with _atomic(folder / f"{name}.npy") as tmp:
                np.save(tmp, feats)
            table = pa.table({"row": pa.array(rows, pa.int64()), "label": pa.array(labels, pa.int64()),
                              "split": pa.array([split] * len(rows), pa.string()),
                              "source": pa.array(source, pa.string())})
            with _atomic(folder / f"{name}.parquet") as tmp:
                pq.write_table(table, tmp)
        except OSError as err:
            raise write_error(self.root.parent.parent, folder / f"{name}.npy", err) from None
        shards.append({"file": f"{split}/{encoder}/{name}.npy", "meta": f"{split}/{encoder}/{name}.parquet",
                       "start": int(rows[0]), "rows": len(rows),
                       "sha256": hashlib.sha256(feats.tobytes()).hexdigest()})

    def close(self) -> Path:
        """Flush, check that every (split, encoder) tiles rows 0..N-1, write the manifest, publish."""
        if self._closed:
            return self.root
        try:
            for k in list(self._pending):
                self._flush(k, everything=True)
            manifest = self._manifest()
            with _atomic(self._tmp / "manifest.json") as tmp:
                Path(tmp).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            self._publish()
        except OSError as err:
            self.abort()
            raise write_error(self.root.parent.parent, self.root / "manifest.json", err) from None
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.root

    def abort(self) -> None:
        """Drop everything written so far (no manifest, nothing published)."""
        self._closed = True
        self._release()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _release(self) -> None:
        """Drop the writer lock that keeps ``ArtifactCache``'s orphan clean-up away from this temporary folder."""
        if self._alive is not None:
            self._alive.close()
            self._alive = None
            (self._tmp / WRITER_LOCK).unlink(missing_ok=True)

    def _manifest(self) -> dict:
        splits: dict[str, dict] = {}
        for (split, encoder), shards in sorted(self._shards.items()):
            shards.sort(key=lambda s: s["start"])
            expected = 0
            for s in shards:
                if s["start"] != expected:
                    raise InvalidInputError(f"feature store {split}/{encoder}: rows {expected}..{s['start'] - 1} "
                                            "are missing or written twice")
                expected += s["rows"]
            entry = splits.setdefault(split, {"num_rows": expected, "encoders": {}})
            if entry["num_rows"] != expected:
                raise InvalidInputError(f"feature store {split}: encoders hold different numbers of rows "
                                        f"({entry['num_rows']} vs {expected})")
            entry["encoders"][encoder] = shards
        if not splits:
            raise InvalidInputError("the feature store is empty: add features before closing it")
        self._check_labels_agree(splits)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "cache_version": CACHE_VERSION,
                "key": self.key, "class_names": list(self.class_names), "dim": self.dim, "dtype": self.dtype,
                "shard_rows": self.shard_rows, "splits": splits, "complete": True}

    def _check_labels_agree(self, splits: dict) -> None:
        for split, entry in splits.items():
            encs = list(entry["encoders"])
            ref = _read_labels(self._tmp, entry["encoders"][encs[0]])
            for enc in encs[1:]:
                if not np.array_equal(ref, _read_labels(self._tmp, entry["encoders"][enc])):
                    raise InvalidInputError(f"feature store {split}: the labels of {encs[0]!r} and {enc!r} differ "
                                            "row by row; both encoders must see the same images in the same rows")

    def _publish(self) -> None:
        self._release()
        with _lock(self.root.parent / f".{self.root.name}.lock"):
            if self.root.exists():
                try:
                    FeatureStore.open(self.root, self.key)
                    shutil.rmtree(self._tmp, ignore_errors=True)  # another run finished it first: same content
                    return
                except CacheError:
                    old = Path(tempfile.mkdtemp(dir=self.root.parent, prefix=f".{self.root.name}-", suffix=".old"))
                    os.replace(self.root, old / "store")
                    shutil.rmtree(old, ignore_errors=True)
            os.replace(self._tmp, self.root)


class FeatureStore:
    """Read a published store. Features come back float32; they are memory-mapped, never all loaded."""

    def __init__(self, root: Path, manifest: dict):
        self.root, self.manifest = root, manifest
        self._labels: dict[str, np.ndarray] = {}

    @classmethod
    def open(cls, root: str | Path, key: dict | None = None) -> FeatureStore:
        """CacheError when the manifest is missing, incomplete, from another format, or of another key."""
        root = Path(root)
        path = root / "manifest.json"
        try:
            manifest = json.loads(path.read_text())
        except FileNotFoundError:
            raise CacheError(f"no feature store at {root} (manifest.json is missing)") from None
        except (OSError, ValueError) as err:
            raise CacheError(f"the feature store manifest {path} is unreadable ({err})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not manifest.get("complete"):
            raise CacheError(f"{path} is not a complete feature store manifest")
        if manifest.get("format_version") != FORMAT_VERSION or manifest.get("cache_version") != CACHE_VERSION:
            raise CacheError(f"the feature store {root} was written by another version; recompute it")
        if key is not None and manifest.get("key") != _canonical(key):
            raise CacheError(f"the feature store {root} holds another run's features (cache key differs)")
        store = cls(root, manifest)
        for split in store.splits:
            for enc in store.encoders(split):
                for s in manifest["splits"][split]["encoders"][enc]:
                    if not (root / s["file"]).is_file() or not (root / s["meta"]).is_file():
                        raise CacheError(f"the feature store {root} is incomplete: {s['file']} is missing")
        return store

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["class_names"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    @property
    def key(self) -> dict:
        return self.manifest["key"]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.manifest["splits"])

    def encoders(self, split: str | None = None) -> tuple[str, ...]:
        """Encoders stored for ``split`` (default: those stored for every split), in ('pre', 'ft') order."""
        names = [split] if split is not None else list(self.splits)
        have = [set(self._split(s)["encoders"]) for s in names]
        return tuple(e for e in ENCODERS if all(e in h for h in have))

    def num_rows(self, split: str) -> int:
        return int(self._split(split)["num_rows"])

    def labels(self, split: str) -> np.ndarray:
        """(N,) int64 labels of ``split`` in row order."""
        if split not in self._labels:
            self._labels[split] = _read_labels(self.root, self._shards(split, self._first_encoder(split)))
        return self._labels[split]

    def metadata(self, split: str, encoder: str | None = None):
        """A pyarrow Table of (row, label, split, source) for ``split`` in row order (as written with
        ``encoder``'s features; default 'pre')."""
        import pyarrow as pa
        import pyarrow.parquet as pq
        enc = encoder or self._first_encoder(split)
        return pa.concat_tables([pq.read_table(self.root / s["meta"]) for s in self._shards(split, enc)])

    def features(self, split: str, encoder: str, rows=None) -> np.ndarray:
        """(N, D) float32 of all rows, or (len(rows), D) of the given row indices (in that order)."""
        if rows is None:
            out = np.empty((self.num_rows(split), self.dim), np.float32)
            for start, block in self.iter_blocks(split, encoder):
                out[start:start + len(block)] = block
            return out
        rows = np.asarray(rows, dtype=np.int64)
        n = self.num_rows(split)
        if rows.ndim != 1 or (len(rows) and (rows.min() < 0 or rows.max() >= n)):
            raise InvalidInputError(f"row indices must be a 1-D array in [0, {n})")
        shards = self._shards(split, encoder)
        starts = np.array([s["start"] for s in shards])
        which = np.searchsorted(starts, rows, side="right") - 1
        out = np.empty((len(rows), self.dim), np.float32)
        for i in np.unique(which):
            mask = which == i
            out[mask] = self._map(shards[i])[rows[mask] - starts[i]]
        return out

    def iter_blocks(self, split: str, encoder: str, block_rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start row, (n, D) float32) blocks of ``block_rows`` rows (the last may be shorter),
        read from memory-mapped shards: at most one block is in memory at a time."""
        if block_rows < 1:
            raise InvalidInputError(f"block_rows must be >= 1, got {block_rows}")
        pieces, held, start = [], 0, 0
        for s in self._shards(split, encoder):
            mm, at = self._map(s), 0
            while at < len(mm):
                take = min(block_rows - held, len(mm) - at)
                pieces.append(mm[at:at + take])
                held, at = held + take, at + take
                if held == block_rows:
                    yield start, _as_f32(pieces)
                    pieces, start, held = [], start + held, 0
        if held:
            yield start, _as_f32(pieces)

    def class_sums(self, split: str, encoder: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-class float64 sums (C, D) and counts (C,) of ``split``, computed block by block."""
        import torch
        c = len(self.class_names)
        sums = torch.zeros((c, self.dim), dtype=torch.float64)
        labels = self.labels(split)
        for start, block in self.iter_blocks(split, encoder):
            y = torch.from_numpy(labels[start:start + len(block)])
            sums.index_add_(0, y, torch.from_numpy(block).double())
        return sums.numpy(), np.bincount(labels, minlength=c).astype(np.int64)

    def verify(self) -> None:
        """Check every shard's sha256 (reads every byte); CacheError naming the first bad shard."""
        for split in self.splits:
            for enc in self.encoders(split):
                for s in self._shards(split, enc):
                    if hashlib.sha256(np.ascontiguousarray(self._map(s)).tobytes()).hexdigest() != s["sha256"]:
                        raise CacheError(f"feature store shard {self.root / s['file']} is corrupt; recompute")

    def _split(self, split: str) -> dict:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise InvalidInputError(f"split {split!r} is not in the feature store; available: "
                                    f"{list(self.splits)}") from None

    def _first_encoder(self, split: str) -> str:
        return next(e for e in ENCODERS if e in self._split(split)["encoders"])

    def _shards(self, split: str, encoder: str) -> list[dict]:
        encs = self._split(split)["encoders"]
        if encoder not in encs:
            raise InvalidInputError(f"encoder {encoder!r} is not stored for {split!r}; available: {sorted(encs)}")
        return encs[encoder]

    def _map(self, shard: dict) -> np.ndarray:
        try:
            mm = np.load(self.root / shard["file"], mmap_mode="r")
        except (OSError, ValueError) as err:  # a truncated or damaged file after publishing: never read as data
            raise CacheError(f"feature store shard {self.root / shard['file']} is unreadable ({err}); "
                             "delete the store folder to recompute it") from None
        if mm.shape != (shard["rows"], self.dim):
            raise CacheError(f"feature store shard {shard['file']} has shape {mm.shape}, expected "
                             f"({shard['rows']}, {self.dim}); recompute the store")
        return mm


def _as_f32(pieces: list[np.ndarray]) -> np.ndarray:
    return pieces[0].astype(np.float32) if len(pieces) == 1 else np.concatenate(pieces).astype(np.float32, copy=False)


def _read_labels(root: Path, shards: list[dict]) -> np.ndarray:
    import pyarrow.parquet as pq
    parts = [pq.read_table(root / s["meta"], columns=["label"]).column("label").to_numpy() for s in shards]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


@contextlib.contextmanager
def _atomic(path: Path):
    """Yield a temporary path next to ``path``; rename it into place when the block succeeds."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp" + path.suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _hold_writer_lock(folder: Path):
    """A shared lock on FOLDER/.writer.lock, held while this writer lives (None where flock is missing)."""
    try:
        import fcntl
    except ImportError:
        return None
    f = open(folder / WRITER_LOCK, "a+")
    fcntl.flock(f, fcntl.LOCK_SH)
    return f


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock on ``path`` (a second writer waits for the first to publish)."""
    import fcntl
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
