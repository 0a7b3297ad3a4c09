"""The app's pure parts: the live edit loop, the figures and the export files (no Streamlit runtime)."""
from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from safetensors.torch import load as load_safetensors

from app import charts, exports, live, synthetic
from app.state import AppRunConfig
from cv_core.math.steering import auto_gamma


@pytest.fixture(scope="module")
def run():
    return synthetic.make_run(test_size=500)


@pytest.fixture(scope="module")
def editor(run):
    xy = np.random.default_rng(0).normal(size=(500, 2)).astype(np.float32)
    return live.LiveEditor(run.ft["test"], run.head, run.class_vectors, xy,
                           reproject=lambda latents, index: np.full((len(index), 2), 99.0, np.float32))


def test_no_edit_changes_nothing(editor):
    res = editor.evaluate([0.0] * 10, None)
    assert res.edited_classes == () and not res.moved.any()
    assert torch.equal(res.after.confusion, res.before.confusion)
    assert np.array_equal(editor.positions(res), editor.xy)


def test_forgetting_one_class_drops_it_and_moves_only_its_points(run, editor):
    gamma = auto_gamma(run.class_vectors, run.ft["train"])
    res = editor.evaluate(live.preset_forget(10, 3), gamma)
    labels = run.ft["test"].labels.numpy()
    assert res.forget < 0.1 and res.retain == pytest.approx(1.0)
    assert res.moved[labels != 3].sum() == 0 and res.moved[labels == 3].mean() > 0.9
    xy = editor.positions(res)
    assert (xy[res.moved] == 99.0).all() and np.array_equal(xy[~res.moved], editor.xy[~res.moved])
    assert (res.preds[labels == 3] == 4).mean() > 0.9  # the synthetic pretrained class 3 leans to class 4


def test_moves_and_shift_send_classes_to_their_targets(run, editor):
    labels = run.ft["test"].labels.numpy()
    res = editor.evaluate([0.0] * 10, 0.5, live.preset_move(2, 5, 1.0))
    assert res.edited_classes == (2,) and (res.preds[labels == 2] == 5).mean() > 0.9
    res = editor.evaluate([0.0] * 10, 0.5, live.preset_shift(10))
    assert (res.preds == (labels + 1) % 10).mean() > 0.9


def test_charts_use_webgl_only_for_large_maps(run):
    labels = np.arange(3000) % 10
    big = charts.latent_map(np.zeros((3000, 2)), labels, labels, run.head.class_names)
    small = charts.latent_map(np.zeros((30, 2)), labels[:30], labels[:30], run.head.class_names,
                              centroids=(np.zeros((10, 2)), np.ones((10, 2))))
    assert isinstance(big.data[0], go.Scattergl) and isinstance(small.data[0], go.Scatter)
    assert len(small.layout.annotations) == 10  # one class-vector arrow per class


def test_accuracy_bars_and_confusion_are_in_percent():
    fig = charts.accuracy_bars(np.array([1.0, 0.5]), np.array([0.0, 0.5]), ["a", "b"], edited=(0,))
    assert list(fig.data[1].y) == [0.0, 50.0] and list(fig.data[0].x) == ["a *", "b"]
    assert list(fig.data[1].marker.color) == [charts.DROP, charts.SAME]  # one colour convention for drops
    conf = charts.confusion_heatmap(np.array([[3, 1], [0, 4]]), ["a", "b"])
    assert np.allclose(conf.data[0].z, [[75, 25], [0, 100]])


def test_export_files_round_trip(run):
    tensors = load_safetensors(exports.class_vectors_safetensors(run.class_vectors))
    assert torch.equal(tensors["kappa"], run.class_vectors.kappa)
    assert torch.equal(tensors["counts"], run.class_vectors.counts)
    config = AppRunConfig(dataset="digits")
    m = exports.metrics(config, run, {"coefficients": {"class 1": -1.0}}, [0.5] * 10, [], None)
    json.dumps(m)  # JSON-ready
    assert m["per_class"][0] == {"class": "class 0", "zero_shot": 0.0, "finetuned": 1.0, "edited": 0.5}
    assert exports.per_class_csv(m).decode().splitlines()[0] == "class,zero_shot,finetuned,edited"
    page = exports.figure_html(charts.accuracy_bars(np.ones(2), np.ones(2), ["a", "b"]))
    assert page.startswith(b"<!doctype html>") and b"<script src=\"http" not in page  # plotly.js inlined


def test_recipe_names_the_run_and_the_edit():
    from cv_core.editspec import EditSpec

    spec = EditSpec.build(["zero", "one"], [0.0, -1.0], [(0, 1, 0.5)], "auto")
    text = exports.recipe(AppRunConfig(max_per_class=50), ["zero", "one"], spec)
    assert "python -m cv_core run --backbone builtin --dataset digits --device auto --seed 0 --max-per-class 50" in text
    assert "--coef one=-1 --move zero:one=0.5 --gate auto" in text


def test_a_chosen_fine_tuning_recipe_travels_to_the_pipeline_the_url_and_the_script(monkeypatch):
    import shlex

    from app import services, url_state
    from cv_core import cli, pipeline
    from cv_core.models.finetune import RECIPES, FinetuneConfig

    config = AppRunConfig(device="cpu", finetune_recipe="fixed-150")
    seen = []
    monkeypatch.setattr(pipeline, "run", lambda c, progress=None, cancel=None: seen.append(c.finetune) or "run")
    assert services._run_pipeline(config, None, None) == "run"
    assert services._run_pipeline(AppRunConfig(device="cpu"), None, None) == "run"
    assert seen == [FinetuneConfig.recipe("fixed-150", torch.device("cpu"), small_model=True), None]
    # the URL keeps it (only when not the default) and refuses a name that is none
    params = url_state.encode(config, [0.0] * 10, [], "auto", None)
    assert params["recipe"] == "fixed-150" and "recipe" not in url_state.encode(AppRunConfig(), [], [], "auto", None)
    assert url_state.decode_config(params) == config
    assert url_state.decode_config({**params, "recipe": "fastest"}) is None
    # the reproduction script runs the same recipe
    from cv_core.editspec import EditSpec
    script = exports.recipe(config, [str(i) for i in range(10)], EditSpec.build([str(i) for i in range(10)],
                                                                                [0.0] * 10, [], "auto"))
    run_line = next(line for line in script.splitlines() if line.startswith("python -m cv_core run"))
    args = cli.build_parser().parse_args(shlex.split(run_line)[3:])
    assert cli.config_from_args(args).finetune == seen[0]
    assert set(RECIPES) == {"auto", "paper", "fixed-150"}
    assert "10 epochs of batch 64" in services.recipe_text("builtin", "cpu", "auto")
    assert "take hours" in services.recipe_text("ViT-B-32:openai", "cpu", "paper")
    assert "hours" not in services.recipe_text("ViT-B-32:openai", "cpu", "auto")  # 100 steps of 32


def test_frozen_batchnorm_statistics_travel_to_the_pipeline_the_url_and_the_script(monkeypatch):
    import dataclasses
    import shlex

    from app import services, url_state
    from cv_core import cli, pipeline
    from cv_core.editspec import EditSpec
    from cv_core.models.finetune import FinetuneConfig

    config = AppRunConfig(device="cpu", freeze_bn_stats=True)
    seen = []
    monkeypatch.setattr(pipeline, "run", lambda c, progress=None, cancel=None: seen.append(c.finetune) or "run")
    services._run_pipeline(config, None, None)
    expected = FinetuneConfig.recipe("auto", torch.device("cpu"), small_model=True)
    assert seen == [dataclasses.replace(expected, freeze_norm_stats=True)]
    assert "BatchNorm statistics frozen" in config.label() and "BatchNorm" not in AppRunConfig().label()
    assert "BatchNorm statistics frozen" in services.recipe_text("builtin", "cpu", "auto", True)
    params = url_state.encode(config, [0.0] * 10, [], "auto", None)
    assert params["bn"] == "frozen" and "bn" not in url_state.encode(AppRunConfig(), [], [], "auto", None)
    assert url_state.decode_config(params) == config
    assert url_state.decode_config({**params, "bn": "maybe"}) is None
    names = [str(i) for i in range(10)]
    script = exports.recipe(config, names, EditSpec.build(names, [0.0] * 10, [], "auto"))
    run_line = next(line for line in script.splitlines() if line.startswith("python -m cv_core run"))
    assert cli.config_from_args(cli.build_parser().parse_args(shlex.split(run_line)[3:])).finetune == seen[0]


def test_the_live_loop_gives_the_numbers_of_the_cli_edit(run, editor):
    """The slider screen and `python -m cv_core edit` must agree: same steering, same scores."""
    from cv_core.pipeline import apply_edit

    coefs = [0.0, -1.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, -2.0]
    for gate in ("auto", 0.3, None):
        report = apply_edit(run, coefs, gate)
        gamma = auto_gamma(run.class_vectors, run.ft["train"]) if gate == "auto" else gate
        res = editor.evaluate(coefs, gamma)
        assert torch.equal(res.after.confusion, report.after.confusion)
        assert res.forget == pytest.approx(report.forget_accuracy)
    # moves too (the app's presets), given by index in the app and by name on the command line
    names = run.class_vectors.class_names
    moves = [(2, 5, 0.6), (7, 1, 1.0)]
    report = apply_edit(run, [0.0] * 10, "auto", moves=[(names[s], names[t], a) for s, t, a in moves])
    res = editor.evaluate([0.0] * 10, auto_gamma(run.class_vectors, run.ft["train"]), moves)
    assert torch.equal(res.after.confusion, report.after.confusion)
    assert report.forget_classes == (2, 7) and res.forget == pytest.approx(report.forget_accuracy)
    assert report.moves == ((names[2], names[5], 0.6), (names[7], names[1], 1.0))


def test_the_live_map_draws_unchanged_points_as_a_picture_and_edited_ones_as_markers(run):
    xy = np.random.default_rng(1).normal(size=(500, 2)).astype(np.float32)
    labels = run.ft["test"].labels.numpy()
    moved = labels == 3
    fig = charts.live_map(xy, labels, labels, run.head.class_names, moved, charts.map_extent(xy), xy[moved][:5])
    assert fig.layout.images[0].source.startswith("data:image/png;base64,")
    legend = [t for t in fig.data if t.hoverinfo == "skip" and len(t.x) == 1]  # the picture's legend: one empty entry per class colour
    assert [t.name for t in legend] == list(run.head.class_names)
    assert [t.marker.color for t in legend] == [charts.class_color(c) for c in range(len(legend))]
    markers = [t for t in fig.data if t.name != "previous positions" and t.hoverinfo != "skip"]
    assert len(markers) == 1 and len(markers[0].x) == moved.sum()  # one trace, coloured per point
    assert set(markers[0].marker.color) == {charts.class_color(3)}
    assert markers[0].text[0] == "true: class 3<br>predicted: class 3"  # the hover
    assert len(fig.data[0].x) == 5  # the faint trail of the points that moved


def test_raster_places_points_where_the_axes_say():
    import base64
    import io

    from PIL import Image

    uri = charts.raster_points(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([0, 1]), (0.0, 1.0, 0.0, 1.0),
                               size=(11, 11), radius=1)
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert img[10, 0, 3] > 0 and img[0, 10, 3] > 0  # (0, 0) bottom-left, (1, 1) top-right
    assert img[5, 5, 3] == 0


def test_out_of_gpu_memory_retries_with_half_the_batch_and_says_so(monkeypatch, run):
    from app import services
    from cv_core import pipeline

    seen, events = [], []

    def fake_run(config, progress=None, cancel=None):
        seen.append(config.finetune)
        if len(seen) < 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return run

    monkeypatch.setattr(pipeline, "run", fake_run)
    assert services._run_pipeline(AppRunConfig(device="cpu"), events.append, None) is run
    assert seen[0] is None and [c.batch_size for c in seen[1:]] == [32, 16]  # built-in default: 64
    assert "retrying with batch 16" in events[-1].message


def test_progress_lines_name_the_stage_steps_loss_and_eta_once():
    from app.components.compute import describe_event, plain_error
    from cv_core.errors import DatasetError
    from cv_core.progress import Progress

    line = describe_event(Progress("finetune", 40, 200, "step 40/200", loss=0.5123, eta_s=12.4))
    assert line == "finetune · step 40/200 · loss 0.512 · ETA 12 s"
    # a hub download (cv_core.models.backbones._download) is a bar in megabytes, not in "steps"
    mb = Progress("download", 12, 338, "12 of 338 MB")
    assert describe_event(mb) == "download · 12 of 338 MB" and mb.fraction == pytest.approx(12 / 338)
    assert plain_error(DatasetError("no images in /x")) == "no images in /x"
    assert "ran out of memory" in plain_error(RuntimeError("CUDA out of memory. Tried to allocate"))


def test_accuracy_bars_keep_numeric_class_names_as_categories():
    """Digit names ("0".."9") must not turn the x axis numeric, which silently drops the edited "3 *" bar."""
    import numpy as np

    from app.charts import accuracy_bars
    fig = accuracy_bars(np.full(10, 0.9), np.full(10, 0.8), [str(i) for i in range(10)], edited=[3])
    assert fig.layout.xaxis.type == "category" and "3 *" in list(fig.data[0].x)
