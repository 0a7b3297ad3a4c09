"""The synthetic run backed by a feature store (issue 14 part 6): equal to the in-memory run, generated once."""
from __future__ import annotations

import pytest
import torch

from app import synthetic
from cv_core.errors import InvalidInputError
from cv_core.features.store import FeatureStore
from cv_core.math.factored import FactoredScores

PARAMS = dict(num_classes=7, dim=32, test_size=700, seed=3)


def test_store_run_equals_the_in_memory_run(tmp_path):
    mem = synthetic.make_run(**PARAMS)
    run = synthetic.open_run(tmp_path, **PARAMS)
    assert isinstance(run.store, FeatureStore) and mem.store is None
    for split in ("train", "val", "test"):
        for a, b in ((mem.pre[split], run.pre[split]), (mem.ft[split], run.ft[split])):
            assert torch.equal(a.features, b.features), split
            assert torch.equal(a.labels, b.labels), split
    assert torch.equal(mem.head.weights, run.head.weights)
    assert torch.equal(mem.class_vectors.kappa, run.class_vectors.kappa)
    assert torch.equal(mem.finetuned.confusion, run.finetuned.confusion)
    assert torch.equal(mem.zero_shot.confusion, run.zero_shot.confusion)
    assert run.store.num_rows("test") == 700 and run.store.dim == 32


def test_store_spans_several_blocks_like_the_in_memory_run(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_ROWS", 256)  # 700 test rows: three blocks, three shards
    mem = synthetic.make_run(**PARAMS)
    run = synthetic.open_run(tmp_path, **PARAMS)
    assert len(run.store.manifest["splits"]["test"]["encoders"]["ft"]) == 3
    assert torch.equal(mem.ft["test"].features, run.ft["test"].features)


def test_second_open_is_a_cache_hit_and_other_parameters_are_not(tmp_path, monkeypatch):
    first = synthetic.open_run(tmp_path, **PARAMS)
    calls = []
    real = synthetic.write_store
    monkeypatch.setattr(synthetic, "write_store", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = synthetic.open_run(tmp_path, **PARAMS)
    assert calls == [] and again.store.root == first.store.root
    other = synthetic.open_run(tmp_path, **dict(PARAMS, seed=4))
    assert len(calls) == 1 and other.store.root != first.store.root
    assert not torch.equal(other.ft["test"].features, first.ft["test"].features)


def test_app_uses_the_store_from_store_min(tmp_path, monkeypatch):
    from app.services.runs import compute_run
    from app.state import AppRunConfig

    monkeypatch.setenv("CVS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CVS_SYNTHETIC_N", "300")
    monkeypatch.setenv("CVS_SYNTHETIC_C", "5")
    monkeypatch.setattr(synthetic, "STORE_MIN", 300)
    run = compute_run(AppRunConfig(dataset=synthetic.NAME, seed=11))
    assert run.store is not None and run.store.root.is_relative_to(tmp_path)
    assert run.store.num_rows("test") == 300 and len(run.class_names) == 5
    monkeypatch.setenv("CVS_SYNTHETIC_N", "many")
    with pytest.raises(InvalidInputError, match="CVS_SYNTHETIC_N"):
        compute_run(AppRunConfig(dataset=synthetic.NAME, seed=12))


def test_live_editor_from_the_store_equals_the_one_from_memory(tmp_path):
    from app.live import LiveEditor, preset_forget, preset_move

    mem = synthetic.make_run(**PARAMS)
    run = synthetic.open_run(tmp_path, **PARAMS)
    a = LiveEditor(mem.ft["test"], mem.head, mem.class_vectors)
    b = LiveEditor.from_store(run.store, "test", run.head, run.class_vectors)
    gamma = torch.full((7,), 0.5)
    for coefs, moves in ((preset_forget(7, 3), []), ([0.0] * 7, preset_move(2, 4, 0.8))):
        ra, rb = a.evaluate(coefs, gamma, moves), b.evaluate(coefs, gamma, moves)
        assert ra.moved.any() and (ra.moved == rb.moved).all() and (ra.preds == rb.preds).all()
        assert torch.equal(ra.after.confusion, rb.after.confusion) and ra.retain == rb.retain
        assert torch.allclose(a.moved_latents(ra), b.moved_latents(rb))


def test_store_run_map_and_live_loop_never_load_the_test_split(tmp_path, monkeypatch):
    """A store-backed run's map, predictions and live editor read the memory-mapped store: the test split is
    never handed out as a whole FeatureSet (StoreSplits would load it into memory)."""
    import numpy as np

    from app import services
    from app.state import AppRunConfig

    monkeypatch.setenv("CVS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CVS_SYNTHETIC_N", "400")
    monkeypatch.setattr(synthetic, "STORE_MIN", 400)
    monkeypatch.setattr("cv_core.projection.DEFAULT_SAMPLE", 300)  # 800 map points: a sample and placed ones
    config = AppRunConfig(dataset=synthetic.NAME, seed=21)
    run = services.compute_run(config)
    points = services.compute_map(config)
    assert points.sampled and "stratified sample of 300 of 800" in points.note
    assert points.ft_xy.shape == (400, 2) and np.isfinite(points.pre_xy).all()
    pre_pred, ft_pred = services.predictions(config)
    assert (ft_pred == run.head.predict(torch.from_numpy(run.store.features("test", "ft"))).numpy()).all()
    editor = services.live_editor(config, True)
    res = editor.evaluate([0.0, 0, 0, -1, 0, 0, 0, 0, 0, 0], None)
    assert res.moved.all() and editor.positions(res).shape == (400, 2)
    # the moved rows are placed from the map's coordinate table, where the edited latents would put them
    assert editor.place_edit is not None and points.edit_coords.table.shape[0] == 400
    plain = editor.with_map(points.ft_xy, points.reproject)  # the same editor, reading the moved latents
    shift = np.linalg.norm(editor.positions(res) - plain.positions(res), axis=1)  # layout epochs amplify rounding
    assert np.median(shift) < 0.02 * np.ptp(points.ft_xy)
    assert (services.eval_labels(run) == run.store.labels("test")).all()
    table = services.collapse_table(config)  # NC1-NC4 from the store's blocks, as from the whole split
    from cv_core.math.collapse import collapse_metrics
    from cv_core.results import FeatureSet

    whole = FeatureSet(torch.from_numpy(run.store.features("test", "ft")), torch.from_numpy(run.store.labels("test")),
                       run.class_vectors.class_names)
    want = collapse_metrics(whole, run.head.weights).as_dict()
    assert {r["metric"]: pytest.approx(r["fine-tuned"], rel=1e-9) for r in table} == want
    found = services.findings(config)  # the sentences, from the live loop's tables and the store's blocks
    assert set(found) == {"independence", "collapse", "interpolation", "minus_one"}
    alpha = services.switch_alpha(config, 1, 2)
    assert alpha is None or 0.0 <= alpha <= 1.0
    assert "test" not in run.ft._loaded and "test" not in run.pre._loaded


def test_the_dataset_choice_says_the_synthetic_runs_real_size(monkeypatch):
    from app.services import dataset_label

    monkeypatch.setenv("CVS_SYNTHETIC_N", "1000000")
    monkeypatch.setenv("CVS_SYNTHETIC_C", "1000")
    assert dataset_label(synthetic.NAME) == "synthetic-10k (1,000,000 test points, 1,000 classes)"
    monkeypatch.delenv("CVS_SYNTHETIC_N")
    monkeypatch.delenv("CVS_SYNTHETIC_C")
    assert dataset_label(synthetic.NAME) == "synthetic-10k (10,000 test points, 10 classes)"
    assert dataset_label("digits") == "digits"
    monkeypatch.setenv("CVS_SYNTHETIC_N", "many")  # reported when the run is computed, not in the list
    assert dataset_label(synthetic.NAME) == "synthetic-10k"


def test_findings_of_a_store_run_equal_those_from_memory(tmp_path):
    """The sentences about a store run (interference, collapse, interpolation, minus one) come from its
    tables and blocks and say exactly what the steering path says on the same latents in memory."""
    from cv_core.editspec import resolve_gate
    from cv_core.edits.explain import run_findings, store_findings
    from cv_core.edits.properties import interpolation, interpolation_from
    from cv_core.edits.strength import run_forget_strengths

    mem = synthetic.make_run(**PARAMS)
    run = synthetic.open_run(tmp_path, **PARAMS)
    gamma = resolve_gate(mem, "auto")
    strengths = run_forget_strengths(mem, "auto")
    want = run_findings(mem.head, mem.pre["test"], mem.ft["test"], mem.class_vectors, gamma, strengths)
    got = store_findings(run.head, run.store, "test", run.class_vectors, gamma, strengths, mem.zero_shot.per_class)
    assert got.keys() == want.keys()
    for topic in want:
        assert got[topic].text == want[topic].text and got[topic].verdict == want[topic].verdict, topic
    for a, b in ((2, 4), (6, 0)):
        steered = interpolation(mem.head, mem.ft["test"], mem.class_vectors, a, b, gamma)
        tabled = interpolation_from(FactoredScores.from_store(run.store, "test", "ft", run.head.weights,
                                                              run.class_vectors), run.store.labels("test"),
                                    run.class_vectors, a, b, gamma)
        assert tabled == steered
    assert "test" not in run.ft._loaded and "test" not in run.pre._loaded


def test_a_store_runs_map_comes_from_the_disk_cache_in_a_new_server(tmp_path, monkeypatch):
    """A store run's sampled map is kept in the cache folder (a 1M map takes minutes): a new server process (the
    in-memory maps cleared) restores it, says so in its note, and places edited points as before."""
    import numpy as np

    from app import services
    from app.services import maps
    from app.state import AppRunConfig

    monkeypatch.setenv("CVS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CVS_SYNTHETIC_N", "400")
    monkeypatch.setattr(synthetic, "STORE_MIN", 400)
    monkeypatch.setattr("cv_core.projection.DEFAULT_SAMPLE", 300)
    config = AppRunConfig(dataset=synthetic.NAME, seed=22)
    services.compute_run(config)
    first = services.compute_map(config)
    assert "Loaded from the cache" not in first.note
    maps._maps().clear()
    again = services.compute_map(config)
    assert "Loaded from the cache" in again.note
    assert np.array_equal(again.ft_xy, first.ft_xy) and np.array_equal(again.pre_xy, first.pre_xy)
    res = services.live_editor(config, True).evaluate([0.0, 0, 0, -1, 0, 0, 0, 0, 0, 0], None)
    np.testing.assert_allclose(again.place_edit(np.flatnonzero(res.moved), res.moved_weights),
                               first.place_edit(np.flatnonzero(res.moved), res.moved_weights), atol=1e-4)
