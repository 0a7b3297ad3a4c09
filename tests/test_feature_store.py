"""The sharded feature store: round trips, blocks, exact class sums, atomicity, concurrent writers."""
import json
import multiprocessing as mp

import numpy as np
import pytest

from cv_core.errors import CacheError, InvalidInputError
from cv_core.features.store import FeatureStore, FeatureStoreWriter, store_root

CLASSES = ("a", "b", "c")
KEY = {"backbone": "tiny", "dataset": "digits", "n": 1}


def _data(n=1000, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype(np.float32), rng.integers(0, 3, n).astype(np.int64)


def _write(root, feats, labels, dtype="float32", shard_rows=128, key=KEY, blocks=7):
    """Write train (out-of-order blocks, with sources) and test (appended in order) for both encoders."""
    n = len(labels)
    with FeatureStoreWriter(root, key, CLASSES, feats.shape[1], dtype, shard_rows) as w:
        bounds = np.linspace(0, n, blocks + 1).astype(int)
        for lo, hi in reversed(list(zip(bounds[:-1], bounds[1:]))):
            rows = np.arange(lo, hi)
            w.add("train", "pre", feats[lo:hi], labels[lo:hi], rows, [f"img{i}.png" for i in rows])
            w.add("train", "ft", feats[lo:hi] * 2, labels[lo:hi], rows)
        for enc, scale in (("pre", 1), ("ft", 2)):
            for lo in range(0, 100, 33):
                w.add("test", enc, feats[lo:min(lo + 33, 100)] * scale, labels[lo:min(lo + 33, 100)])
    return root


def test_round_trip_blocks_rows_and_exact_class_sums(tmp_path):
    feats, labels = _data()
    store = FeatureStore.open(_write(tmp_path / "s", feats, labels), KEY)
    assert (store.class_names, store.dim, store.dtype, store.splits) == (CLASSES, 8, "float32", ("test", "train"))
    assert store.encoders() == ("pre", "ft") and store.num_rows("train") == 1000 and store.num_rows("test") == 100
    np.testing.assert_array_equal(store.labels("train"), labels)
    np.testing.assert_array_equal(store.features("train", "pre"), feats)
    np.testing.assert_array_equal(store.features("train", "ft"), feats * 2)
    np.testing.assert_array_equal(store.features("test", "ft"), feats[:100] * 2)
    rows = np.array([999, 0, 500, 127, 128, 3])
    np.testing.assert_array_equal(store.features("train", "pre", rows), feats[rows])
    blocks = list(store.iter_blocks("train", "pre", block_rows=300))
    assert [s for s, _ in blocks] == [0, 300, 600, 900] and [len(b) for _, b in blocks] == [300, 300, 300, 100]
    assert all(b.dtype == np.float32 for _, b in blocks)
    sums, counts = store.class_sums("train", "pre")
    assert sums.dtype == np.float64 and counts.dtype == np.int64
    want = np.stack([feats[labels == c].astype(np.float64).sum(0) for c in range(3)])
    np.testing.assert_allclose(sums, want, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(counts, np.bincount(labels, minlength=3))
    meta = store.metadata("train").to_pydict()
    assert meta["row"] == list(range(1000)) and meta["source"][5] == "img5.png" and set(meta["split"]) == {"train"}
    store.verify()
    assert not list(tmp_path.rglob("*.tmp*")), "no temporary files or folders may be left behind"


def test_float16_store_returns_float32(tmp_path):
    feats, labels = _data(300)
    store = FeatureStore.open(_write(tmp_path / "s", feats, labels, dtype="float16"))
    assert store.dtype == "float16"
    out = store.features("train", "pre")
    assert out.dtype == np.float32 and np.abs(out - feats).max() < 2e-3
    assert np.load(next((tmp_path / "s" / "train" / "pre").glob("*.npy"))).dtype == np.float16


def test_open_refuses_missing_incomplete_or_foreign_stores(tmp_path):
    with pytest.raises(CacheError, match="manifest.json is missing"):
        FeatureStore.open(tmp_path / "nothing")
    feats, labels = _data(300)
    root = _write(tmp_path / "s", feats, labels)
    with pytest.raises(CacheError, match="cache key differs"):
        FeatureStore.open(root, {**KEY, "n": 2})
    next((root / "train" / "ft").glob("*.npy")).unlink()
    with pytest.raises(CacheError, match="incomplete"):
        FeatureStore.open(root, KEY)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps({**manifest, "complete": False}))
    with pytest.raises(CacheError, match="not a complete"):
        FeatureStore.open(root)


def test_an_exception_leaves_no_store_and_no_temporary_files(tmp_path):
    feats, labels = _data(300)
    with pytest.raises(RuntimeError, match="worker died"):
        with FeatureStoreWriter(tmp_path / "s", KEY, CLASSES, 8, shard_rows=64) as w:
            w.add("train", "pre", feats, labels)
            raise RuntimeError("worker died")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mistake", ["gap", "labels_differ", "rows_differ", "bad_label", "bad_shape"])
def test_inconsistent_writes_are_refused_and_publish_nothing(tmp_path, mistake):
    feats, labels = _data(200)
    w = FeatureStoreWriter(tmp_path / "s", KEY, CLASSES, 8, shard_rows=64)
    with pytest.raises(InvalidInputError):
        if mistake == "bad_label":
            w.add("train", "pre", feats, labels + 3)
        elif mistake == "bad_shape":
            w.add("train", "pre", feats[:, :4], labels)
        w.add("train", "pre", feats, labels, np.arange(200) + (5 if mistake == "gap" else 0))
        other = (labels + 1) % 3 if mistake == "labels_differ" else labels
        w.add("train", "ft", feats[:150 if mistake == "rows_differ" else 200],
              other[:150 if mistake == "rows_differ" else 200])
        w.close()
    w.abort()
    assert not (tmp_path / "s").exists() and not list(tmp_path.glob(".*.tmp"))


def _write_in_process(root, ready, out):
    """One writer: all shards written, then wait for the other writer (so both publish at the same
    moment), then close (publish) and read the store back."""
    feats, labels = _data(2000, seed=0)
    try:
        with FeatureStoreWriter(root, KEY, CLASSES, 8, shard_rows=100) as w:
            for lo in range(0, 2000, 100):
                w.add("train", "pre", feats[lo:lo + 100], labels[lo:lo + 100])
                w.add("train", "ft", feats[lo:lo + 100] * 2, labels[lo:lo + 100])
            ready.wait(timeout=30)  # both temporary stores complete, neither published yet
        store = FeatureStore.open(root, KEY)
        out.put(("ok", store.num_rows("train"), store.metadata("train").column("row").to_pylist()))
    except Exception as err:  # noqa: BLE001 - the test reads what the writer saw
        out.put(("error", repr(err), None))


def test_two_runs_writing_the_same_store_both_succeed(tmp_path):
    root = store_root(tmp_path / "cache", KEY)
    ctx = mp.get_context("fork")
    ready, out = ctx.Barrier(2), ctx.Queue()
    writers = [ctx.Process(target=_write_in_process, args=(root, ready, out)) for _ in range(2)]
    for p in writers:
        p.start()
    got = [out.get(timeout=60) for _ in writers]
    for p in writers:
        p.join(timeout=30)
    assert [g[0] for g in got] == ["ok", "ok"], got  # both succeed: the second finds the first's store
    assert all(g[1] == 2000 and g[2] == list(range(2000)) for g in got)  # every row exactly once
    feats, labels = _data(2000)
    store = FeatureStore.open(root, KEY)
    np.testing.assert_array_equal(store.features("train", "ft"), feats * 2)
    np.testing.assert_array_equal(store.labels("train"), labels)
    store.verify()
    assert sorted(p.name for p in root.parent.iterdir() if not p.name.endswith(".lock")) == [root.name]
    assert not list(root.parent.rglob("*.tmp*")), "the losing writer's copy is gone"


def test_a_broken_store_is_replaced_by_the_next_complete_write(tmp_path):
    feats, labels = _data(300)
    root = tmp_path / "s"
    root.mkdir()
    (root / "manifest.json").write_text("{half")
    store = FeatureStore.open(_write(root, feats, labels), KEY)
    np.testing.assert_array_equal(store.features("train", "pre"), feats)


def _run_in_process(spec, cache_dir, ready, out):
    """One `run` with the feature store on, started together with another on the same cache."""
    import torch
    torch.set_num_threads(1)
    from cv_core.models.finetune import FinetuneConfig
    from cv_core.pipeline import RunConfig, run
    try:
        ready.wait(timeout=30)
        r = run(RunConfig(backbone=spec, dataset="digits", device="cpu", cache_dir=cache_dir,
                          max_per_class=12, feature_store="on",
                          finetune=FinetuneConfig(steps=4, batch_size=32, lr=1e-3, warmup=1)))
        out.put(("ok", str(r.store.root), r.store.num_rows("train"), r.class_vectors.kappa.numpy(),
                 r.finetuned_accuracy))
    except Exception as err:  # noqa: BLE001 - the test reads what the run saw
        out.put(("error", repr(err), None, None, None))


def test_two_pipeline_runs_on_one_cache_both_succeed(tmp_path, tiny_spec):
    ctx = mp.get_context("fork")  # no re-import of torch and open_clip
    ready, out = ctx.Barrier(2), ctx.Queue()
    runs = [ctx.Process(target=_run_in_process, args=(tiny_spec, str(tmp_path / "cache"), ready, out))
            for _ in range(2)]
    for p in runs:
        p.start()
    got = [out.get(timeout=120) for _ in runs]
    for p in runs:
        p.join(timeout=30)
    assert [g[0] for g in got] == ["ok", "ok"], [g[1] for g in got]
    assert got[0][1] == got[1][1] and got[0][2] == got[1][2] == 120  # one store, every train image once
    np.testing.assert_array_equal(got[0][3], got[1][3])
    assert got[0][4] == got[1][4]
    stores = [p for p in (tmp_path / "cache" / "stores").iterdir() if not p.name.startswith(".")]
    assert len(stores) == 1 and FeatureStore.open(stores[0]).num_rows("train") == 120
    assert not list((tmp_path / "cache").rglob("*.tmp*")), "no temporary files or folders are left"


def _killed_mid_write(root):
    """A writer process killed (no exception, no cleanup) after some shards are on disk."""
    import os
    feats, labels = _data(1000)
    w = FeatureStoreWriter(root, KEY, CLASSES, 8, shard_rows=100)
    w.add("train", "pre", feats[:500], labels[:500])  # five shards flushed into the temporary folder
    os._exit(9)


def test_a_writer_killed_mid_write_publishes_nothing_and_a_damaged_shard_is_never_read(tmp_path):
    root = tmp_path / "s"
    p = mp.get_context("fork").Process(target=_killed_mid_write, args=(root,))
    p.start()
    p.join(timeout=30)
    assert p.exitcode == 9
    assert list(tmp_path.glob(".s-*.tmp/train/pre/*.npy")), "the killed writer had written shards"
    with pytest.raises(CacheError, match="manifest.json is missing"):
        FeatureStore.open(root, KEY)  # its shards are in a temporary folder that no reader looks at
    feats, labels = _data(300)
    store = FeatureStore.open(_write(root, feats, labels), KEY)  # the next run publishes normally
    np.testing.assert_array_equal(store.features("train", "pre"), feats)
    shard = next((root / "train" / "ft").glob("*.npy"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # damaged after publishing
    with pytest.raises(CacheError, match="unreadable|corrupt|shape"):
        FeatureStore.open(root, KEY).features("train", "ft")
    with pytest.raises(CacheError):
        FeatureStore.open(root, KEY).verify()
