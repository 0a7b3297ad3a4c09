"""Issue 16, I/O hardening: stale image-folder caches, the unsafe checkpoint fallback, merged class folders,
full disks (cache and output folder), one-class runs, orphan temporaries, bad devices and too few images."""
import errno
import io
import os
import struct
import time
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from cv_core.cli import main
from cv_core.errors import CacheError, CVError, DatasetError, InvalidInputError, WeightsUnavailableError
from tests.conftest import TINY

TINY_STEPS = ["--backbone", f"{TINY}:random", "--device", "cpu", "--steps", "1"]


def _png(path, seed: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _folder(root, classes, per_class: int, seed: int = 0):
    for c, name in enumerate(classes):
        for i in range(per_class):
            _png(root / name / f"img{i}.png", seed + 1000 * c + i)
    return root


def _tiny_config(dataset, cache, splits=("train", "test")):
    from cv_core.models.finetune import FinetuneConfig
    from cv_core.pipeline import RunConfig
    return RunConfig(backbone=f"{TINY}:random", dataset=dataset, device="cpu", cache_dir=str(cache), splits=splits,
                     finetune=FinetuneConfig(steps=1, batch_size=8, lr=1e-3, warmup=0))


# ------------------------------------------------------------------ 1. image-folder cache keys cover the files
def test_replacing_a_class_images_misses_the_cache(tmp_path):
    from cv_core.pipeline import run
    root = _folder(tmp_path / "imgs", ["cat", "dog", "fox"], 5)
    cfg = _tiny_config(f"imagefolder:{root}", tmp_path / "cache")
    first = run(cfg)
    assert all(run(cfg).cache_hits.values())  # unchanged files: everything from the cache
    later = time.time() + 10
    for i in range(5):  # same names, same counts, other pixels and a newer mtime
        path = root / "dog" / f"img{i}.png"
        _png(path, 99_000 + i)
        os.utime(path, (later, later))
    again = run(cfg)
    assert not again.cache_hits["pre:test"] and not again.cache_hits["ft:test"] and not again.cache_hits["finetune"]
    assert not torch.equal(again.pre["test"].features, first.pre["test"].features)


def test_the_app_recomputes_a_run_whose_image_folder_changed(tmp_path):
    from app.services.runs import compute_run
    from app.state import AppRunConfig
    root = _folder(tmp_path / "imgs", ["cat", "dog", "fox"], 5)
    config = AppRunConfig(backbone=f"{TINY}:random", dataset=f"imagefolder:{root}", device="cpu")
    first = compute_run(config)
    assert compute_run(config) is first  # unchanged files: the run held in memory
    later = time.time() + 10
    for i in range(5):
        path = root / "dog" / f"img{i}.png"
        _png(path, 77_000 + i)
        os.utime(path, (later, later))
    again = compute_run(config)
    assert again is not first and not again.cache_hits["pre:test"]


def test_folder_fingerprint_changes_with_a_file_and_not_without(tmp_path):
    from cv_core.data.datasets import fingerprint, load_split
    root = _folder(tmp_path / "imgs", ["a", "b"], 6)
    name = f"imagefolder:{root}"

    def prints():
        return [fingerprint(load_split(name, s)) for s in ("train", "val", "test")]
    before = prints()
    assert prints() == before
    path = root / "a" / "img0.png"
    st = path.stat()
    _png(path, 12345, size=9)  # other size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with the old mtime
    after = prints()
    assert sum(a != b for a, b in zip(after, before)) == 1  # the split holding img0.png


# ------------------------------------------------------------------ 2. no unsafe pickle path, whatever the environment
def _crafted_pickle(marker) -> bytes:
    """A pickle that torch's weights-only unpickler rejects with a TypeError (a BUILD on an OrderedDict with a
    (None, slots) state) and that the full unpickler runs: open_clip's fallback used to retry it unsafely."""
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    b = b"\x80\x02" + b"ccollections\nOrderedDict\n" + b")R"
    b += b"N}X" + struct.pack("<I", 1) + b"aK\x01s" + b"\x86b0"
    b += b"cbuiltins\nexec\nX" + struct.pack("<I", len(code)) + code + b"\x85R0"
    return b + b"}."


def _as_torch_zip(pkl: bytes, path) -> None:
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for info in src.infolist():
            z.writestr(info.filename, pkl if info.filename.endswith("data.pkl") else src.read(info))


@pytest.mark.parametrize("layout", ["raw pickle", "torch zip"])
def test_a_crafted_checkpoint_never_runs_even_with_torch_force_no_weights_only(tmp_path, monkeypatch, layout):
    from cv_core.models.backbones import load_backbone
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    if layout == "raw pickle":
        path.write_bytes(_crafted_pickle(marker))
    else:
        _as_torch_zip(_crafted_pickle(marker), path)
    with pytest.raises(WeightsUnavailableError, match="safetensors"):
        load_backbone(f"{TINY}:{path}")
    assert not marker.exists(), "the checkpoint's pickle ran"
    assert main(["run", "--dataset", "digits", "--max-per-class", "2", "--out", str(tmp_path / "out"),
                 *TINY_STEPS[:1], f"{TINY}:{path}", *TINY_STEPS[2:]]) == 2
    assert not marker.exists(), "the checkpoint's pickle ran"


def test_the_pickle_is_scanned_before_torch_load_is_reached(tmp_path, monkeypatch):
    """Even a torch whose load ignored weights_only (the variable's effect on calls that omit it) would not run
    the crafted pickle: the static scan refuses the file before torch.load is called."""
    from cv_core.models.checkpoints import load_weights
    marker, path = tmp_path / "marker", tmp_path / "evil.pt"
    _as_torch_zip(_crafted_pickle(marker), path)
    calls = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(WeightsUnavailableError, match="not loaded for safety"):
        load_weights(path)
    assert calls == [] and not marker.exists()


def test_plain_torch_weights_still_load_with_the_variable_set(tmp_path, monkeypatch):
    from cv_core.models.backbones import load_backbone
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ref = load_backbone(f"{TINY}:random", seed=5)
    path = tmp_path / "ok.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.model.state_dict().items()}}, path)
    loaded = load_backbone(f"{TINY}:{path}")
    for k, v in ref.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k


# ------------------------------------------------------------------ 3. class folders that would merge
def test_class_folders_that_normalise_to_one_name_are_an_error(tmp_path):
    from cv_core.data.datasets import get_dataset_info
    root = _folder(tmp_path / "imgs", ["a_b", "a-b", "c"], 2)
    with pytest.raises(InvalidInputError, match=r"a-b.*a_b|a_b.*a-b") as err:
        get_dataset_info(f"imagefolder:{root}")
    assert "rename" in str(err.value).lower()
    assert main(["run", "--dataset", f"imagefolder:{root}", "--out", str(tmp_path / "out"), *TINY_STEPS]) == 2


# ------------------------------------------------------------------ 4. a full disk under the cache
def _no_space(*args, **kwargs):
    from safetensors import SafetensorError
    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                          'left on device" })')


def test_a_full_cache_disk_is_a_clear_error_with_exit_2(tmp_path, monkeypatch, capsys):
    import cv_core.features.cache as cache_mod
    monkeypatch.setattr(cache_mod, "save_file", _no_space)
    cache = tmp_path / "cache"
    code = main(["run", "--dataset", "digits", "--max-per-class", "2", "--cache-dir", str(cache),
                 "--out", str(tmp_path / "out"), *TINY_STEPS])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no space left" in err.lower() and "--cache-dir" in err and "free" in err.lower()
    assert not [p for p in cache.rglob("*") if p.name.endswith(".tmp")], "temporary files left in the cache"


def test_an_oserror_enospc_in_the_cache_is_a_cache_error(tmp_path, monkeypatch):
    import cv_core.features.cache as cache_mod
    from cv_core.features.cache import ArtifactCache

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(cache_mod, "save_file", full)
    with pytest.raises(CacheError, match="(?i)no space left.*free.*--cache-dir"):
        ArtifactCache(tmp_path / "c").save("encoders", {"k": 1}, {"x": torch.zeros(3)})


# ------------------------------------------------------------------ 5. a full output folder
@pytest.mark.parametrize("failing", ["tensors", "json"])
def test_a_full_output_folder_leaves_nothing_half_written(tmp_path, monkeypatch, capsys, failing):
    import cv_core.export as export
    out = tmp_path / "out"
    args = ["run", "--dataset", "digits", "--max-per-class", "2", "--out", str(out), *TINY_STEPS]
    if failing == "tensors":
        monkeypatch.setattr(export, "save_file", _no_space)
    else:
        def full(*a, **k):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(export, "_write_text", full)
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no space left" in err.lower() and str(out) in err and "--out" in err
    assert sorted(p.name for p in out.iterdir()) == [], "a half-written or orphan output was left"
    monkeypatch.undo()
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["class_vectors.safetensors", "summary.json"]


# ------------------------------------------------------------------ 6. one class
def test_one_class_is_refused_up_front(tmp_path):
    from cv_core.pipeline import run
    root = _folder(tmp_path / "imgs", ["only"], 6)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        run(_tiny_config(f"imagefolder:{root}", tmp_path / "cache"))
    assert main(["run", "--dataset", f"imagefolder:{root}", "--out", str(tmp_path / "out"), *TINY_STEPS]) == 2


def test_one_class_is_refused_by_the_app(tmp_path):
    from app.services.runs import compute_run
    from app.state import AppRunConfig
    root = _folder(tmp_path / "imgs", ["only"], 10)
    with pytest.raises(InvalidInputError, match="at least 2 classes"):
        compute_run(AppRunConfig(backbone=f"{TINY}:random", dataset=f"imagefolder:{root}", device="cpu"))


def test_collapse_metrics_of_one_class_do_not_divide_by_zero():
    from cv_core.math.collapse import collapse_metrics
    from cv_core.results import FeatureSet
    fs = FeatureSet(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), ("only",), "test", "ft")
    m = collapse_metrics(fs, torch.randn(1, 4))
    assert np.isnan(m.nc2_equiangular) and np.isnan(m.nc2_equinorm) and m.nc4 == 1.0


# ------------------------------------------------------------------ 8. orphan temporaries
def test_orphan_temporaries_older_than_an_hour_are_removed_on_open(tmp_path):
    from cv_core.features.cache import ArtifactCache
    cache = ArtifactCache(tmp_path)
    cache.save("features", {"k": 1}, {"x": torch.zeros(2)})
    entry, sidecar = cache.paths("features", {"k": 1})
    old = time.time() - 2 * 3600
    orphan = tmp_path / "features" / ".abc-123.tmp"
    fresh = tmp_path / "features" / ".abc-456.tmp"  # a concurrent writer's: kept
    old_dir = tmp_path / "stores" / ".digest-789.tmp"
    fresh_dir = tmp_path / "stores" / ".digest-000.tmp"
    for d in (old_dir, fresh_dir):
        (d / "train").mkdir(parents=True)
        (d / "train" / "shard.npy").write_bytes(b"x")
    orphan.write_bytes(b"half")
    fresh.write_bytes(b"half")
    for p in (orphan, old_dir / "train" / "shard.npy", old_dir / "train", old_dir, entry, sidecar,
              fresh_dir / "train", fresh_dir):  # fresh_dir holds a fresh shard: a writer is still at work
        os.utime(p, (old, old))
    ArtifactCache(tmp_path)
    assert not orphan.exists() and not old_dir.exists()
    assert fresh.exists() and fresh_dir.exists()
    assert cache.load("features", {"k": 1}) is not None  # old entries are entries, not orphans


# ------------------------------------------------------------------ 10. bad devices, too few images for val
@pytest.mark.parametrize("device", ["cpu:x", "cpu:-1", "cuda:a"])
def test_a_malformed_device_is_an_invalid_input(device, capsys):
    from cv_core.device import resolve_device
    with pytest.raises(InvalidInputError, match="device"):
        resolve_device(device)
    assert main(["run", "--device", device, "--dataset", "digits", "--max-per-class", "2"]) == 2
    assert "unexpected" not in capsys.readouterr().err


def test_report_on_two_images_per_class_names_the_remedy(tmp_path, capsys):
    root = _folder(tmp_path / "imgs", [f"c{i:03d}" for i in range(200)], 2, seed=1)
    code = main(["report", "--dataset", f"imagefolder:{root}", "--out", str(tmp_path / "out"), *TINY_STEPS])
    err = capsys.readouterr().err
    assert code == 2
    assert "no images in split" not in err and "at least 3 images" in err and "add images" in err


def test_report_is_refused_by_the_app_on_two_images_per_class(tmp_path):
    from app.services.runs import compute_run
    from app.state import AppRunConfig
    root = _folder(tmp_path / "imgs", ["a", "b", "c"], 2)
    with pytest.raises(DatasetError, match="at least 3 images.*add images"):
        compute_run(AppRunConfig(backbone=f"{TINY}:random", dataset=f"imagefolder:{root}", device="cpu"))


def test_one_image_per_class_names_the_remedy_for_the_test_split(tmp_path):
    from cv_core.data.datasets import load_split
    root = _folder(tmp_path / "imgs", ["a", "b"], 1)
    with pytest.raises(DatasetError, match="at least 2 images.*add images"):
        load_split(f"imagefolder:{root}", "test")


@pytest.mark.parametrize("n", range(3, 40))
def test_every_class_with_three_images_has_one_in_each_split(n):
    from cv_core.data.datasets import stratified_parts
    parts = stratified_parts([0] * n + [1] * 50, [0.6, 0.1, 0.3], seed=n)
    for p in parts:
        assert (np.asarray([0] * n + [1] * 50)[p] == 0).sum() >= 1
