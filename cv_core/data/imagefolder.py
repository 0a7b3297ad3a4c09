"""``imagefolder:PATH``: the user's own images, one sub-folder per class.

Layouts: ``PATH/train/<class>/*`` and ``PATH/test/<class>/*`` (val carved out of train), or
``PATH/<class>/*`` split deterministically 60/10/30 per class. Unreadable files are skipped,
counted and named in a warning; a class left without images is an error.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes

from ..errors import DatasetError
from . import templates as T
from .datasets import DATASET_FACTORIES, DatasetInfo, carve_split

ONE_TREE = {"train": 0.6, "val": 0.1, "test": 0.3}
VAL_FROM_TRAIN = {"train": 0.9, "val": 0.1}


class FolderImages:
    """Verified image files of one tree: ``samples`` [(path, label)], ``targets``, ``class_names``."""

    def __init__(self, root: Path, classes: list[str]):
        self.class_names = tuple(T.readable(c) for c in classes)
        self.samples: list[tuple[Path, int]] = []
        self.skipped: list[Path] = []
        for label, cls in enumerate(classes):
            for path in sorted((root / cls).rglob("*")):
                if path.is_file():
                    (self.samples.append((path, label)) if _readable_image(path) else self.skipped.append(path))
        self.targets = [t for _, t in self.samples]
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


@lru_cache(maxsize=8)
def _tree(root: str, mtime: float) -> FolderImages:  # mtime in the key: re-scan after changes
    return FolderImages(Path(root), _classes(Path(root)))


def _load_tree(root: Path) -> FolderImages:
    return _tree(str(root), root.stat().st_mtime)


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

    def load(_root: Path, split: str, _download: bool):
        if split_layout:
            if split == "test":
                return _load_tree(path / "test")
            return carve_split(_load_tree(path / "train"), split, VAL_FROM_TRAIN)
        return carve_split(_load_tree(path), split, ONE_TREE)

    return DatasetInfo(name=f"imagefolder:{path.resolve()}", templates=T.GENERIC, load=load,
                       class_names=tuple(T.readable(c) for c in classes), offline=True,
                       description=f"Your images in {path}")


DATASET_FACTORIES["imagefolder"] = imagefolder_info
