"""The artifact cache: hits, key changes, corrupted entries, unwritable folders."""
import pytest
import torch

from cv_core.errors import CacheError
from cv_core.features.cache import ArtifactCache


def _counting():
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(6.0).reshape(2, 3)}
    return compute, calls


def test_hit_miss_and_key_change(tmp_path):
    cache = ArtifactCache(tmp_path)
    compute, calls = _counting()
    a, hit = cache.get_or_compute("features", {"model": "m", "split": "test"}, compute)
    b, hit2 = cache.get_or_compute("features", {"model": "m", "split": "test"}, compute)
    assert (hit, hit2, len(calls)) == (False, True, 1) and torch.equal(a["x"], b["x"])
    cache.get_or_compute("features", {"model": "other", "split": "test"}, compute)
    assert len(calls) == 2
    assert not list(tmp_path.rglob("*.tmp")), "no temporary files may be left behind"


@pytest.mark.parametrize("damage", ["truncate", "garbage_json", "delete_tensors", "flip_byte"])
def test_corrupted_entries_are_recomputed_with_a_warning(tmp_path, damage):
    cache = ArtifactCache(tmp_path)
    key = {"model": "m"}
    compute, calls = _counting()
    cache.get_or_compute("features", key, compute)
    tensors, sidecar = cache.paths("features", key)
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:20])
    elif damage == "garbage_json":
        sidecar.write_text("{not json")
    elif damage == "delete_tensors":
        tensors.unlink()
    else:
        data = bytearray(tensors.read_bytes())
        data[-1] ^= 0xFF
        tensors.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="broken cache entry"):
        out, hit = cache.get_or_compute("features", key, compute)
    assert not hit and len(calls) == 2 and torch.equal(out["x"], torch.arange(6.0).reshape(2, 3))
    assert cache.load("features", key) is not None  # repaired


def test_unwritable_cache_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CacheError, match="not writable.*--cache-dir"):
        ArtifactCache(blocker / "cache")


def test_failed_compute_leaves_no_entry(tmp_path):
    cache = ArtifactCache(tmp_path)

    def boom():
        raise RuntimeError("cancelled halfway")
    with pytest.raises(RuntimeError):
        cache.get_or_compute("features", {"k": 1}, boom)
    assert cache.load("features", {"k": 1}) is None and not list(tmp_path.rglob("*.safetensors"))


def test_concurrent_writers_never_leave_a_broken_entry(tmp_path):
    """Two processes rewrite one entry while this one reads it: every read after the first write is a hit
    with the right tensors (a broken entry would warn and miss), and the reads really overlapped the writes."""
    import subprocess
    import sys
    import time
    import warnings
    stop = tmp_path / "stop"
    script = (
        "import os, sys, time, torch; from cv_core.features.cache import ArtifactCache\n"
        "c = ArtifactCache(sys.argv[1]); n = 0; t = time.time()\n"
        "while not os.path.exists(sys.argv[2]) and time.time() - t < 120:\n"
        "    c.save('f', {'k': 1}, {'x': torch.full((256, 64), 1.0)}); n += 1\n"
        "    open(sys.argv[3], 'w').close()\n"
        "print(n)\n"
    )
    started = [tmp_path / f"started{i}" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "c"), str(stop), str(started[i])],
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    cache = ArtifactCache(tmp_path / "c")
    hits = hits_while_both_write = misses_after_first_hit = 0
    deadline = time.time() + 120
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "ignoring a broken cache entry" fails the test
            while hits_while_both_write < 200 and time.time() < deadline and all(p.poll() is None for p in procs):
                both = all(s.exists() for s in started)
                hit = cache.load("f", {"k": 1})
                if hit is not None:
                    hits += 1
                    hits_while_both_write += both
                    assert torch.equal(hit[0]["x"], torch.full((256, 64), 1.0))
                elif hits:
                    misses_after_first_hit += 1
    finally:
        stop.touch()  # the writers stop, also when an assertion failed
        writes = [int(p.communicate(timeout=60)[0] or 0) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert hits_while_both_write == 200 and misses_after_first_hit == 0
    assert min(writes) >= 2, f"each writer must have written while the reads went on, wrote {writes}"
    assert cache.load("f", {"k": 1}) is not None and not list(tmp_path.rglob("*.tmp"))
