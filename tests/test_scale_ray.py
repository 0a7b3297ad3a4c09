"""Extraction on Ray Data: the same class vectors and accuracies as the local engine, clear failures."""
import socket
import sys
import time

import pytest
import torch

from cv_core.cli import main
from cv_core.errors import CVError
from cv_core.features.ray_extract import RayUnavailableError, check_address, preflight
from cv_core.models.finetune import FinetuneConfig
from cv_core.pipeline import RunConfig, apply_edit, run

FT = FinetuneConfig(steps=6, batch_size=32, lr=1e-3, warmup=1)


def _config(tmp_path, tiny_spec, **kw):
    return RunConfig(backbone=tiny_spec, dataset="digits", device="cpu", cache_dir=str(tmp_path / "cache"),
                     max_per_class=12, finetune=FT, **kw)


def _same_run(a, b):
    for name in ("kappa", "mu_pre", "mu_ft"):
        assert (getattr(a.class_vectors, name) - getattr(b.class_vectors, name)).abs().max() < 1e-5, name
    assert torch.equal(a.class_vectors.counts, b.class_vectors.counts)
    assert a.zero_shot_accuracy == b.zero_shot_accuracy and a.finetuned_accuracy == b.finetuned_accuracy
    assert torch.equal(a.finetuned.confusion, b.finetuned.confusion)
    ea, eb = apply_edit(a, {"3": -1.0}), apply_edit(b, {"3": -1.0})
    assert torch.equal(ea.after.confusion, eb.after.confusion) and ea.gamma == pytest.approx(eb.gamma, abs=1e-5)


def test_ray_engine_with_two_workers_matches_the_local_engine(ray_session, tmp_path, tiny_spec):
    local = run(_config(tmp_path, tiny_spec))
    ray_run = run(_config(tmp_path, tiny_spec, engine="ray", workers=2))
    assert local.store is None and ray_run.store is not None
    assert ray_run.cache_hits["finetune"] and not ray_run.cache_hits["features"]
    assert ray_run.store.num_rows("train") == local.num_images("train") == 120
    _same_run(local, ray_run)
    assert torch.equal(ray_run.ft["test"].labels, local.ft["test"].labels)  # rows keep the dataset's order
    assert (ray_run.ft["test"].features - local.ft["test"].features).abs().max() < 1e-5
    assert ray_run.store.metadata("test").column("source")[5].as_py() == "digits:test:5"
    again = run(_config(tmp_path, tiny_spec, engine="ray", workers=2))
    assert again.cache_hits["features"] and again.store.root == ray_run.store.root


def test_local_engine_can_write_the_feature_store(tmp_path, tiny_spec):
    files = run(_config(tmp_path, tiny_spec))
    stored = run(_config(tmp_path, tiny_spec, feature_store="on"))
    assert stored.store is not None and stored.store.splits == ("test", "train")
    _same_run(files, stored)


def test_missing_ray_names_the_extra(monkeypatch, tmp_path, tiny_spec, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(RayUnavailableError, match=r"class-vector-studio\[scale\]"):
        preflight(None)
    code = main(["run", "--backbone", tiny_spec, "--engine", "ray", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "[scale]" in err


def test_an_unreachable_cluster_fails_within_30_seconds(tmp_path, tiny_spec):
    start = time.perf_counter()
    with pytest.raises(RayUnavailableError, match="does not answer"):
        run(_config(tmp_path, tiny_spec, engine="ray", ray_address="127.0.0.1:1"))
    with pytest.raises(CVError, match="HOST:PORT"):
        check_address("no-port-here")
    assert time.perf_counter() - start < 30


def _refused_before_any_work(tmp_path, tiny_spec, address, match):
    """run() and the CLI with ``address`` fail with ``match`` in seconds, before the fine-tuning: no progress
    event, nothing in the cache; the CLI prints one line and exits 2."""
    events, start = [], time.perf_counter()
    with pytest.raises(RayUnavailableError, match=match):
        run(_config(tmp_path, tiny_spec, engine="ray", ray_address=address), progress=events.append)
    assert events == [] and not (tmp_path / "cache").exists()
    return time.perf_counter() - start


def test_a_non_routable_cluster_address_fails_within_30_seconds(tmp_path, tiny_spec, capsys):
    # 10.255.255.1 is private and unassigned: the TCP probe gets no answer (or no route) and gives up
    took = _refused_before_any_work(tmp_path, tiny_spec, "10.255.255.1:6379", "10.255.255.1:6379 does not answer")
    assert took < 30
    start = time.perf_counter()
    code = main(["run", "--backbone", tiny_spec, "--engine", "ray", "--ray-address", "10.255.255.1:6379",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "does not answer" in err
    assert time.perf_counter() - start < 30 and not (tmp_path / "cache").exists()


def test_a_running_head_passes_the_address_check(ray_session):
    gcs = ray_session.get_runtime_context().gcs_address  # this session's head: host:port
    start = time.perf_counter()
    check_address(gcs)
    assert time.perf_counter() - start < 10
    host, port = gcs.rsplit(":", 1)
    with socket.socket() as other:  # accepts TCP, never speaks gRPC: refused before ray.init, in timeout_s
        other.bind((host, 0))
        other.listen()
        with pytest.raises(RayUnavailableError, match=f"{host}:{other.getsockname()[1]} does not answer"):
            check_address(f"{host}:{other.getsockname()[1]}", timeout_s=5)


@pytest.fixture
def no_local_ray(tmp_path, monkeypatch):
    """This machine as one without a Ray cluster: no RAY_ADDRESS, an empty Ray temp folder (no address file
    of a 'ray start' head), and no GCS process found (other sessions' Ray on a shared CI machine would be)."""
    services = pytest.importorskip("ray._private.services")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "ray-tmp"))
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset())
    (tmp_path / "ray-tmp" / "ray").mkdir(parents=True)
    return tmp_path / "ray-tmp" / "ray"


def test_ray_address_auto_without_a_cluster_fails_up_front(tmp_path, tiny_spec, capsys, no_local_ray):
    took = _refused_before_any_work(tmp_path, tiny_spec, "auto", r"auto found no Ray cluster to join .*ray start")
    assert took < 10
    code = main(["run", "--backbone", tiny_spec, "--engine", "ray", "--ray-address", "auto",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--ray-address auto" in err
    # a stopped 'ray start' head leaves its address file behind: auto resolves it, and it does not answer
    (no_local_ray / "ray_current_cluster").write_text("127.0.0.1:1")
    assert _refused_before_any_work(tmp_path, tiny_spec, "auto", r":1 does not answer") < 10  # Ray names its IP


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _kill_encoder_actor_after_first_batch(events: list, killed: list) -> None:
    """SIGKILL one encoder actor of this test session's Ray (found by its process title, under this
    process's raylet: never another test run's) once the driver has received a batch."""
    import os
    import signal
    while not killed:
        for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
            try:
                title = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"EncodePair" in title and events and _descends_from(pid, os.getpid()):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the actor's process through /proc")
def test_a_killed_encoder_actor_is_retried_and_the_store_is_complete(ray_session, tmp_path, tiny_spec):
    import threading

    from cv_core.data.datasets import load_split
    from cv_core.features.extract import encode_images
    from cv_core.features.ray_extract import extract_with_ray
    from cv_core.features.store import FeatureStore, FeatureStoreWriter
    from cv_core.models.backbones import load_backbone
    b = load_backbone(tiny_spec, "cpu")
    data = {"test": load_split("digits", "test", max_per_class=30)}
    events, killed = [], []
    threading.Thread(target=_kill_encoder_actor_after_first_batch, args=(events, killed), daemon=True).start()
    with FeatureStoreWriter(tmp_path / "s", {"k": 1}, data["test"].class_names, b.embed_dim) as w:
        extract_with_ray(b.model.visual, b.model.visual, data, b.preprocess, w, workers=2, batch_size=8,
                         progress=events.append)
    assert killed, "the actor was not killed during the run"
    store = FeatureStore.open(tmp_path / "s")  # every row exactly once, or close() would have refused
    want = encode_images(b.model, data["test"], b.preprocess, torch.device("cpu"))
    assert (torch.from_numpy(store.features("test", "pre")) - want.features).abs().max() < 1e-5
    assert torch.equal(torch.from_numpy(store.labels("test")), want.labels)


def test_a_failing_task_is_a_clear_error_and_publishes_nothing(ray_session, tmp_path, tiny_spec):
    from cv_core.data.datasets import load_split
    from cv_core.features.ray_extract import extract_with_ray
    from cv_core.features.store import FeatureStore, FeatureStoreWriter
    from cv_core.models.backbones import load_backbone
    b = load_backbone(tiny_spec, "cpu")
    base = load_split("digits", "test", max_per_class=3)

    class Unreadable:  # defined here: cloudpickle ships it to the workers by value
        targets, class_names = base.targets, base.class_names

        def __len__(self):
            return len(base)

        def __getitem__(self, i):
            if i == 7:
                raise ValueError("image 7 is unreadable")
            return base[i]

    with pytest.raises(CVError, match="nothing was published.*image 7 is unreadable"):
        with FeatureStoreWriter(tmp_path / "s", {"k": 1}, base.class_names, b.embed_dim) as w:
            extract_with_ray(b.model.visual, b.model.visual, {"test": Unreadable()}, b.preprocess, w, workers=1,
                             batch_size=4)
    with pytest.raises(CVError, match="manifest.json is missing"):
        FeatureStore.open(tmp_path / "s")
    assert list(tmp_path.iterdir()) == []  # the writer's temporary folder is gone too
