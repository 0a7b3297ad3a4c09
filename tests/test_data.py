"""Datasets: the bundled digits, torchvision formats written by the test, image folders, bad input."""
import struct
import warnings

import numpy as np
import pytest
from PIL import Image

from cv_core.data.datasets import fingerprint, is_available_offline, list_datasets, load_split
from cv_core.data.digits import digits_arrays
from cv_core.errors import DatasetError, InvalidInputError, UnknownNameError


def test_digits_splits_are_deterministic_disjoint_and_stratified():
    sizes = {}
    for split in ("train", "val", "test"):
        a, y = digits_arrays(split)
        b, y2 = digits_arrays(split)
        assert np.array_equal(a, b) and np.array_equal(y, y2)
        assert a.dtype == np.uint8 and a.shape[1:] == (8, 8) and set(y.tolist()) == set(range(10))
        sizes[split] = len(y)
    assert sum(sizes.values()) == 1797 and sizes["test"] == pytest.approx(0.3 * 1797, abs=10)
    ds = load_split("digits", "test")
    image, label = ds[0]
    assert image.mode == "RGB" and image.size == (8, 8) and ds.class_names[label] == str(label)


def test_max_per_class_and_fingerprint():
    ds = load_split("digits", "train", max_per_class=3)
    assert len(ds) == 30 and sorted(set(ds.targets)) == list(range(10))
    assert fingerprint(ds) == fingerprint(load_split("digits", "train", max_per_class=3))
    assert fingerprint(ds) != fingerprint(load_split("digits", "train", max_per_class=4))
    with pytest.raises(InvalidInputError):
        load_split("digits", "train", max_per_class=0)


def test_unknown_dataset_and_split():
    with pytest.raises(UnknownNameError, match="Did you mean: mnist"):
        load_split("mnsit", "test")
    with pytest.raises(InvalidInputError, match="split"):
        load_split("digits", "holdout")
    assert {"digits", "mnist", "cifar10", "eurosat", "gtsrb", "dtd", "svhn", "flowers102"} <= set(list_datasets())


def _write_idx(path, array: np.ndarray):
    """MNIST's idx format (as torchvision leaves it after extracting the .gz): magic (0, 0, dtype 0x08,
    ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(root, n_train=100, n_test=20):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)


def test_mnist_loads_from_real_idx_files_offline(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_split("mnist", "test", root=tmp_path, download=False)
    assert not is_available_offline("mnist", tmp_path)
    _write_mnist(tmp_path)
    assert is_available_offline("mnist", tmp_path)
    test = load_split("mnist", "test", root=tmp_path, download=False)
    train = load_split("mnist", "train", root=tmp_path, download=False)
    val = load_split("mnist", "val", root=tmp_path, download=False)
    assert len(test) == 20 and len(train) + len(val) == 100 and len(val) >= 1
    image, label = test[3]
    assert image.mode == "RGB" and image.size == (28, 28) and label == 3
    assert test.class_names == tuple(str(i) for i in range(10))


def _png(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 12), colour).save(path)


def test_imagefolder_single_tree_with_a_corrupt_file(tmp_path):
    for cls in ("cat", "dog_breed"):
        for i in range(10):
            _png(tmp_path / cls / f"{i}.png")
    (tmp_path / "cat" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable.*broken.png"):
        train = load_split(f"imagefolder:{tmp_path}", "train")
    test = load_split(f"imagefolder:{tmp_path}", "test")
    assert train.class_names == ("cat", "dog breed")
    assert len(train) + len(test) + len(load_split(f"imagefolder:{tmp_path}", "val")) == 20
    assert train[0][0].mode == "RGB"


def test_imagefolder_train_test_layout_and_errors(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            for i in range(4):
                _png(tmp_path / "ok" / split / cls / f"{i}.png")
    assert len(load_split(f"imagefolder:{tmp_path / 'ok'}", "test")) == 8
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(f"imagefolder:{tmp_path / 'missing'}", "test")
    for split, classes in (("train", ("a", "b")), ("test", ("a", "c"))):
        for cls in classes:
            _png(tmp_path / "mismatch" / split / cls / "0.png")
    with pytest.raises(DatasetError, match="differ"):
        load_split(f"imagefolder:{tmp_path / 'mismatch'}", "test")
    _png(tmp_path / "empty" / "a" / "0.png")
    (tmp_path / "empty" / "b").mkdir(parents=True)
    (tmp_path / "empty" / "b" / "bad.jpg").write_bytes(b"\x00\x01")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError, match=r"\['b'\].*no readable images"):
            load_split(f"imagefolder:{tmp_path / 'empty'}", "train")
