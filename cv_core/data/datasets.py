"""Dataset registry and split loading.

Every dataset gives three deterministic splits (train, val, test) of labelled RGB images.
``load_split`` is the one entry point; datasets register a :class:`DatasetInfo` whose
``load(root, split, download)`` returns an :class:`ImageDataset`.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from ..errors import DatasetError, InvalidInputError
from ..registry import Registry

SPLITS = ("train", "val", "test")


class ImageDataset(Protocol):
    """``ds[i] -> (PIL.Image in RGB, label int)``; ``targets``: list of labels; ``class_names``."""

    targets: list[int]
    class_names: tuple[str, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> tuple[Image.Image, int]: ...


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    templates: tuple[str, ...]
    load: Callable[[Path, str, bool], ImageDataset]
    class_names: tuple[str, ...] | None = None  # None: read from the files
    offline: bool = False  # True: ships with the product, needs no files or download
    description: str = ""
    files_present: Callable[[Path], bool] | None = None


DATASETS: Registry[DatasetInfo] = Registry("dataset")
#: Dynamic datasets named "PREFIX:ARG" (e.g. "imagefolder:/data/pets") -> factory(ARG).
DATASET_FACTORIES: dict[str, Callable[[str], DatasetInfo]] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    return DATASETS.register(info.name, info)


def default_data_root() -> Path:
    """$CVS_DATA_ROOT, else ~/.cache/class-vector-studio/data."""
    env = os.environ.get("CVS_DATA_ROOT")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "class-vector-studio" / "data"


def get_dataset_info(name: str) -> DatasetInfo:
    _ensure_registered()
    prefix, sep, arg = name.partition(":")
    if sep and prefix in DATASET_FACTORIES:
        return DATASET_FACTORIES[prefix](arg)
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    _ensure_registered()
    return DATASETS.list()


def is_available_offline(name: str, root: Path | None = None) -> bool:
    info = get_dataset_info(name)
    if info.offline:
        return True
    if info.files_present is None:
        return False
    return info.files_present(Path(root) if root else default_data_root())


class ArrayImageDataset:
    """In-memory images: (N, H, W) or (N, H, W, 3) uint8 plus labels (N,)."""

    def __init__(self, images: np.ndarray, labels: Sequence[int], class_names: Sequence[str]):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise InvalidInputError(f"images must be (N, H, W[, 3]) uint8 with one label each, got "
                                    f"{images.shape} {images.dtype} and {len(labels)} labels")
        self.images = images
        self.targets = [int(t) for t in labels]
        self.class_names = tuple(class_names)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Image.Image, int]:
        return Image.fromarray(self.images[i]).convert("RGB"), self.targets[i]


class SubsetDataset:
    """A view of ``base`` restricted to ``indices``."""

    def __init__(self, base: ImageDataset, indices: Sequence[int]):
        self.base, self.indices = base, [int(i) for i in indices]
        self.targets = [base.targets[i] for i in self.indices]
        self.class_names = base.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]


def stratified_parts(targets: Sequence[int], fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Split indices class by class into len(fractions) parts; deterministic for a seed."""
    y = np.asarray(targets)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * len(idx)).astype(int)
        sizes = _at_least_one_each(np.diff(bounds, prepend=0), fractions)
        bounds = np.cumsum(sizes)
        for k, (a, b) in enumerate(zip(np.concatenate([[0], bounds[:-1]]), bounds)):
            parts[k].append(idx[a:b])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, int) for p in parts]


def _at_least_one_each(sizes: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Rounded part sizes of one class, changed only where a part with a positive fraction got no image
    although the class has one for every such part: it then takes one from the largest part. (Rounding
    alone gives 6 images split 60/10/30 no val image, while 4 and 5 get one.)"""
    sizes = sizes.copy()
    wanted = [k for k, f in enumerate(fractions) if f > 0]
    if sizes.sum() < len(wanted):
        return sizes
    for k in wanted:
        if sizes[k] == 0:
            sizes[int(np.argmax(sizes))] -= 1
            sizes[k] = 1
    return sizes


def carve_split(ds: ImageDataset, split: str, fractions: dict[str, float], seed: int = 0) -> SubsetDataset:
    """One split of a dataset that the source does not split (e.g. val out of train)."""
    names = list(fractions)
    part = stratified_parts(ds.targets, [fractions[n] for n in names], seed)[names.index(split)]
    return SubsetDataset(ds, part)


def cap_per_class(ds: ImageDataset, max_per_class: int, seed: int = 0) -> SubsetDataset:
    """At most ``max_per_class`` images per class, chosen by ``seed``."""
    if max_per_class < 1:
        raise InvalidInputError(f"images per class must be at least 1, got {max_per_class}")
    y = np.asarray(ds.targets)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(y == c))[:max_per_class] for c in np.unique(y)]
    return SubsetDataset(ds, np.sort(np.concatenate(keep)))


def load_split(name: str, split: str, root: str | Path | None = None, max_per_class: int | None = None,
               seed: int = 0, download: bool = True) -> ImageDataset:
    """Load one split of a registered dataset.

    root: where downloaded datasets live (default ``default_data_root()``).
    download: allow a torchvision download when the files are missing.
    """
    if split not in SPLITS:
        raise InvalidInputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    info = get_dataset_info(name)
    ds = info.load(Path(root).expanduser() if root else default_data_root(), split, download)
    if len(ds) == 0:
        raise DatasetError(f"dataset {name!r} has no images in split {split!r}")
    if max_per_class is not None:
        ds = cap_per_class(ds, max_per_class, seed)
    return ds


def fingerprint(ds: ImageDataset) -> str:
    """Identity of a loaded split for cache keys: size, labels and class names, and for datasets read from
    files (``file_stats`` on the dataset under the SubsetDataset views, e.g. an image folder) each image's
    (relative path, size, mtime in ns), read afresh at every load: replacing a class's images misses the cache."""
    h = hashlib.sha256()
    h.update(repr(tuple(ds.class_names)).encode())
    h.update(np.asarray(ds.targets, dtype=np.int64).tobytes())
    files = file_stats(ds)
    if files is not None:
        for rel, size, mtime_ns in files:
            h.update(f"{rel}\0{size}\0{mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def file_stats(ds: ImageDataset) -> list[tuple[str, int, int]] | None:
    """(relative path, size, mtime_ns) of each image of ``ds`` in its order, through SubsetDataset views;
    None when the dataset is not read from files."""
    return per_image(ds, "file_stats")


def written_targets(ds: ImageDataset) -> list[int] | None:
    """The class written on each image of a typographic-attack dataset (``digits-typo``, ...), in ``ds``'s
    order through SubsetDataset views; None when the dataset carries no written text."""
    return per_image(ds, "written_targets")


def per_image(ds: ImageDataset, name: str) -> list | None:
    """A per-image column ``name`` of the dataset under ``ds``'s SubsetDataset views, in ``ds``'s order
    (None when the underlying dataset has no such column)."""
    rows = None
    while hasattr(ds, "base") and hasattr(ds, "indices"):
        rows = list(ds.indices) if rows is None else [ds.indices[i] for i in rows]
        ds = ds.base
    column = getattr(ds, name, None)
    if column is None:
        return None
    return list(column) if rows is None else [column[i] for i in rows]


_REGISTERED = False


def _ensure_registered() -> None:
    """Import the modules that register datasets (once)."""
    global _REGISTERED
    if _REGISTERED:
        return
    _REGISTERED = True
    from . import builtin_sets, imagefolder, torchvision_sets  # noqa: F401
    try:
        from . import builtin as _builtin  # noqa: F401  (the built-in model's variants, when present)
    except ImportError:
        pass
