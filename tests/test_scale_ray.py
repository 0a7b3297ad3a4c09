"""Extraction on Ray Data: the same class vectors and accuracies as the local engine, clear failures."""
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
