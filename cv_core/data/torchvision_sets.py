"""torchvision datasets: downloaded as torchvision does when online, loaded from a root offline."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torchvision.datasets as tvd

from ..errors import DatasetError
from . import templates as T
from .datasets import DatasetInfo, carve_split, register_dataset

VAL_FROM_TRAIN = {"train": 0.9, "val": 0.1}
ONE_SET = {"train": 0.6, "val": 0.1, "test": 0.3}


class TorchvisionSplit:
    """Adapter: a torchvision dataset -> (RGB PIL image, label) with ``targets`` and ``class_names``."""

    def __init__(self, ds, targets, class_names):
        self.ds, self.targets, self.class_names = ds, [int(t) for t in targets], tuple(class_names)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image, label = self.ds[i]
        return image.convert("RGB"), int(label)


def _open(name: str, make: Callable[[bool], object], root: Path, download: bool):
    """Construct a torchvision dataset from files; download only when allowed and missing."""
    try:
        return make(False)
    except (RuntimeError, FileNotFoundError, OSError) as missing:
        if not download:
            raise DatasetError(f"{name} files were not found under {root} ({missing}). Put the torchvision "
                               f"layout there, or allow the download.") from None
    try:
        return make(True)
    except Exception as err:  # network errors come in many types (URLError, HTTPError, socket errors)
        raise DatasetError(f"{name} is not under {root} and could not be downloaded ({type(err).__name__}: "
                           f"{err}). Without network, copy the torchvision files for {name} into {root}, or "
                           "choose the built-in 'digits' dataset.") from None


def _targets(ds) -> list[int]:
    for attr in ("targets", "labels", "_labels"):
        if hasattr(ds, attr):
            return [int(t) for t in getattr(ds, attr)]
    if hasattr(ds, "_samples"):  # GTSRB
        return [int(t) for _, t in ds._samples]
    raise DatasetError(f"cannot read the labels of {type(ds).__name__}")


def _train_test(cls, key: str, names: tuple[str, ...] | None, split_kw: str = "train"):
    """Loader for sources with train and test sets; val is carved out of train."""
    def load(root: Path, split: str, download: bool):
        want_train = split in ("train", "val")
        arg = want_train if split_kw == "train" else ("train" if want_train else "test")
        ds = _open(key, lambda dl: cls(str(root), **{split_kw: arg}, download=dl), root, download)
        classes = names or tuple(T.readable(c) for c in ds.classes)
        wrapped = TorchvisionSplit(ds, _targets(ds), classes)
        return carve_split(wrapped, split, VAL_FROM_TRAIN) if want_train else wrapped
    return load


def _native_splits(cls, key: str, names: tuple[str, ...] | None):
    """Loader for sources that ship train/val/test."""
    def load(root: Path, split: str, download: bool):
        ds = _open(key, lambda dl: cls(str(root), split=split, download=dl), root, download)
        classes = names or tuple(T.readable(c) for c in ds.classes)
        return TorchvisionSplit(ds, _targets(ds), classes)
    return load


def _one_set(cls, key: str, names: tuple[str, ...] | None):
    def load(root: Path, split: str, download: bool):
        ds = _open(key, lambda dl: cls(str(root), download=dl), root, download)
        classes = names or tuple(T.readable(c) for c in ds.classes)
        return carve_split(TorchvisionSplit(ds, _targets(ds), classes), split, ONE_SET)
    return load


def _present(folder: str) -> Callable[[Path], bool]:
    return lambda root: (root / folder).exists()


_SOURCES = [
    ("mnist", _train_test(tvd.MNIST, "MNIST", T.DIGIT_NAMES), T.NUMBER, "MNIST", "Handwritten digits, 28x28."),
    ("fashion-mnist", _train_test(tvd.FashionMNIST, "FashionMNIST", T.FASHION_NAMES), T.FASHION,
     "FashionMNIST", "Zalando clothing, 28x28."),
    ("cifar10", _train_test(tvd.CIFAR10, "CIFAR-10", T.CIFAR10_NAMES), T.CIFAR, "cifar-10-batches-py",
     "CIFAR-10, 32x32 photos."),
    ("cifar100", _train_test(tvd.CIFAR100, "CIFAR-100", None), T.CIFAR, "cifar-100-python",
     "CIFAR-100, 32x32 photos."),
    ("svhn", _train_test(tvd.SVHN, "SVHN", T.DIGIT_NAMES, split_kw="split"), T.NUMBER, "train_32x32.mat",
     "Street View house numbers."),
    ("gtsrb", _train_test(tvd.GTSRB, "GTSRB", T.GTSRB_NAMES, split_kw="split"), T.GTSRB, "gtsrb",
     "German traffic signs, 43 classes."),
    ("eurosat", _one_set(tvd.EuroSAT, "EuroSAT", T.EUROSAT_NAMES), T.EUROSAT, "eurosat",
     "Sentinel-2 land use, 10 classes."),
    ("dtd", _native_splits(tvd.DTD, "DTD", None), T.DTD, "dtd", "Describable textures, 47 classes."),
    ("flowers102", _native_splits(tvd.Flowers102, "Flowers102", None), T.FLOWERS, "flowers-102",
     "Oxford flowers, 102 classes."),
]

for _name, _load, _templates, _folder, _desc in _SOURCES:
    register_dataset(DatasetInfo(name=_name, templates=_templates, load=_load, offline=False,
                                 description=_desc + " Downloaded by torchvision.",
                                 files_present=_present(_folder)))
