"""``imagefolder:PATH``: the user's own images, one sub-folder per class.

Layouts: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (val carved out of train), or
``PATH/<class>/*`` split deterministically 60/10/30 per class. Unreadable files are skipped,
counted and named in a warning; a class left without images is an error, and so are class folders whose
names read the same (``a_b`` and ``a-b`` are both class "a b") and a val split that misses a class.

Every load stats the files afresh (path, size, mtime_ns): the tree is re-scanned when they changed, and
``datasets.fingerprint`` puts them in the cache keys, so replacing images never reuses stale latents.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from ..errors import DatasetError, InvalidInputError
from . import templates as T
from .datasets import DATASET_FACTORIES, DatasetInfo, carve_split

ONE_TREE = {"train": 0.6, "val": 0.1, "test": 0.3}
VAL_FROM_TRAIN = {"train": 0.9, "val": 0.1}


class FolderImages:
    """Verified image files of one tree: ``samples`` [(path, label)], ``targets``, ``class_names``."""

    def __init__(self, root: Path, classes: list[str], stats: dict[str, tuple[int, int]] | None = None):
        self.class_names = tuple(T.readable(c) for c in classes)
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[Path] = []
        stats = _file_stats(root) if stats is None else stats
        for label, cls in enumerate(classes):
            for path in sorted((root / cls).rglob("*")):
                if path.is_file():
                    (self.samples.append((path, label)) if _readable_image(path) else self.skipped.append(path))
        self.targets = [t for _, t in self.samples]
        #: (path relative to the root, size, mtime_ns) per sample: part of the cache keys (datasets.fingerprint)
        self.file_stats = [_stat_row(root, p, stats) for p, _ in self.samples]
        counts = [self.targets.count(i) for i in range(len(classes))]
        empty = [classes[i] for i, n in enumerate(counts) if n == 0]
        if self.skipped:
            shown = ", ".join(p.name for p in self.skipped[:5]) + (" ..." if len(self.skipped) > 5 else "")
            warnings.warn(f"skipped {len(self.skipped)} unreadable or non-image files in {root}: {shown}",
                          stacklevel=2)
        if empty:
            raise DatasetError(f"classes {empty} in {root} have no readable images; add images or remove "
                               "those folders")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as im:
            return im.convert("RGB"), label


def _readable_image(path: Path) -> bool:
    if not path.name.lower().endswith(IMG_EXTENSIONS):
        return False
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many types for corrupt files
        return False


def _classes(root: Path) -> list[str]:
    try:
        classes, _ = find_classes(str(root))
    except FileNotFoundError:
        raise DatasetError(f"no class folders in {root}: expected one sub-folder per class") from None
    return classes


def _file_stats(root: Path) -> dict[str, tuple[int, int]]:
    """Relative posix path -> (size, mtime_ns) of every file under ``root`` (stat calls only, no reads)."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            try:
                st = os.stat(path)
            except OSError:  # vanished meanwhile: the scan skips it too
                continue
            out[Path(os.path.relpath(path, root)).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def folder_signature(path: str | Path) -> str:
    """A digest of every file's (relative path, size, mtime_ns) under ``path``, read afresh: it changes when an
    image is added, removed or replaced (the app compares it before reusing a run it holds in memory)."""
    import hashlib
    h = hashlib.sha256()
    for rel, (size, mtime_ns) in sorted(_file_stats(Path(path).expanduser()).items()):
        h.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _stat_row(root: Path, path: Path, stats: dict[str, tuple[int, int]]) -> tuple[str, int, int]:
    rel = path.relative_to(root).as_posix()
    if rel not in stats:  # added after the walk
        st = path.stat()
        stats[rel] = (st.st_size, st.st_mtime_ns)
    return (rel, *stats[rel])


_TREES: dict[str, tuple[tuple, FolderImages]] = {}  # root -> (its files' stats, the scanned tree)
_TREES_LOCK = threading.Lock()


def _load_tree(root: Path) -> FolderImages:
    """The scanned tree of ``root``, re-scanned (images re-verified) only when a file's path, size or mtime
    changed; the stats themselves are read at every call."""
    stats = _file_stats(root)
    sig = tuple(sorted(stats.items()))
    with _TREES_LOCK:
        hit = _TREES.get(str(root))
    if hit is not None and hit[0] == sig:
        return hit[1]
    tree = FolderImages(root, _classes(root), dict(stats))
    with _TREES_LOCK:
        if len(_TREES) >= 8:
            _TREES.pop(next(iter(_TREES)))
        _TREES[str(root)] = (sig, tree)
    return tree


def _check_names(path: Path, classes: list[str]) -> None:
    """Two folders whose names read the same would merge into one class: an error naming both."""
    by_name: dict[str, list[str]] = {}
    for c in classes:
        by_name.setdefault(T.readable(c), []).append(c)
    clashes = [(name, folders) for name, folders in by_name.items() if len(folders) > 1]
    if clashes:
        said = "; ".join(f"{' and '.join(repr(f) for f in folders)} both become class {name!r}"
                         for name, folders in clashes)
        raise InvalidInputError(f"class folders in {path} would merge: {said} (underscores and hyphens read as "
                                "spaces). Rename the folders so that each class has its own name")


def _check_split(path: Path, ds, split: str, split_layout: bool) -> None:
    """Every class needs a val image (edit strengths and gates are chosen on val), and the test split an image:
    else say how many images a class needs."""
    if split == "test":
        if len(ds) == 0:
            raise DatasetError(f"imagefolder:{path}: no image is left for the test split. Each class needs at least "
                               + ("1 image in test/" if split_layout else
                                  "2 images (one each for train and test; 3 with val)") + ": add images")
        return
    counts = [0] * len(ds.class_names)
    for t in ds.targets:
        counts[t] += 1
    missing = [n for n, k in zip(ds.class_names, counts) if k == 0]
    if not missing:
        return
    need = ("at least 2 images in train/ (val is 10% of train, at least one)" if split_layout else
            "at least 3 images (one each for train, val and test; the split is 60/10/30)")
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    raise DatasetError(f"imagefolder:{path}: {len(missing)} of {len(counts)} classes have no image for the val "
                       f"split ({shown}), which choosing edit strengths and gates needs. Each class needs {need}: "
                       "add images to those class folders (or remove the folders)")


def imagefolder_info(arg: str) -> DatasetInfo:
    path = Path(arg).expanduser()
    if not arg or not path.is_dir():
        raise DatasetError(f"image folder {arg!r} does not exist or is not a folder; give imagefolder:PATH "
                           "with one sub-folder of images per class")
    split_layout = (path / "train").is_dir() and (path / "test").is_dir()
    if split_layout:
        train_cls, test_cls = _classes(path / "train"), _classes(path / "test")
        if train_cls != test_cls:
            raise DatasetError(f"train and test class folders differ in {path}: only in train "
                               f"{sorted(set(train_cls) - set(test_cls))}, only in test "
                               f"{sorted(set(test_cls) - set(train_cls))}")
    classes = _classes(path / "train") if split_layout else _classes(path)
    _check_names(path, classes)

    def load(_root: Path, split: str, _download: bool):
        if split_layout:
            if split == "test":
                return _load_tree(path / "test")  # FolderImages: a class without images is already an error
            ds = carve_split(_load_tree(path / "train"), split, VAL_FROM_TRAIN)
        else:
            ds = carve_split(_load_tree(path), split, ONE_TREE)
        if split in ("val", "test"):
            _check_split(path, ds, split, split_layout)
        return ds

    return DatasetInfo(name=f"imagefolder:{path.resolve()}", templates=T.GENERIC, load=load,
                       class_names=tuple(T.readable(c) for c in classes), offline=True,
                       description=f"Your images in {path}")


DATASET_FACTORIES["imagefolder"] = imagefolder_info
