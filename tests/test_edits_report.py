"""The report: files written, every requested method present, figures checked, studies included."""
import json

import pytest
import torch

from cv_core.edits import properties, recipes
from cv_core.edits.report import ReportConfig, build_report
from cv_core.edits.synthetic import make_context
from cv_core.errors import InvalidInputError, UnknownNameError


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def result(tiny_digits_run):
    return tiny_digits_run


def test_report_writes_json_and_markdown(result, tmp_path):
    events = []
    rep = build_report(result, ["cv_steer", "random_vector", "cv_weight_map"], tmp_path, progress=events.append,
                       config=ReportConfig(encoder_classes=2, probe=True, save_checkpoint=True))
    data = json.loads((tmp_path / "report.json").read_text())
    assert set(data["methods"]) == {"finetuned", "cv_steer", "random_vector", "cv_weight_map"}
    assert data["methods"]["cv_steer"]["classes"] == list(range(10))
    assert data["methods"]["cv_weight_map"]["classes"] == [0, 9]
    assert len(data["methods"]["cv_steer"]["per_class"]) == 10
    assert {c["method"] for c in data["checks"]} >= {"cv_steer", "cv_weight_map", "neggrad", "random_vector"}
    md = (tmp_path / "report.md").read_text()
    assert "| `cv_steer` |" in md and "by construction" in md and "Sequential shift" in md
    assert rep["files"]["markdown"].endswith("report.md") and events
    assert (tmp_path / "weight_map_forget_0.safetensors").is_file()
    # the audits: relearning and CKA for the encoder-changing method, by construction for steering
    audits = data["audits"]
    assert set(audits) == {"relearning", "cka", "references", "quantized"}
    rel = audits["relearning"]["methods"]
    assert [len(e["acc_f"]) for e in rel["cv_weight_map"]] == [3, 3] and "by_construction" in rel["cv_steer"]
    assert {e["classes"][0] for e in audits["cka"]["cv_weight_map"]} == {0, 9}
    assert len(audits["references"]["rows"]) == 3 * 5 + 1
    assert {r["edit"] for r in audits["quantized"]["dynamic_int8"]["rows"]} == {"cv_steer", "cv_weight_map"}
    for title in ("## Relearning audit", "## Layer-wise CKA", "## Representative references", "## Int8 deployment"):
        assert title in md
    assert any(c["method"] == "relearning" and c["met"] is not None for c in data["checks"])
    # human column names with direction and unit, a glossary entry for each, and the run's own sentences
    assert "Forget accuracy ↓ (%)" in md and "## Glossary" in md and "**MIA efficacy ↑ (%)**:" in md
    assert "`mia`" not in md and "trainable_params" not in md
    assert set(data["properties"]["findings"]) == {"independence", "collapse", "interpolation", "minus_one"}
    assert "mean |cos|" in md and "Reference — paper" in md
    strengths = data["properties"]["forget_strengths"]
    assert len(strengths) == 10 and all(0.0 <= s["lam"] <= 3.0 for s in strengths)
    # issue 12 part 4: each variant against the clean fine-tuned accuracy, lambda chosen on val; typography read
    shifts, typo = data["properties"]["shift_removal"], data["properties"]["typography"]
    for name, s in shifts.items():
        curve = {r["lambda"]: r["accuracy"] for r in s["rows"]}
        assert s["acc_clean"] == data["finetuned_accuracy"] and s["acc_unedited"] == curve[0.0]
        assert s["accuracy_at_val_lambda"] == curve[s["val_lambda"]]
    assert set(typo) == {"digits-typo", "digits-typo-word"}
    for name, t in typo.items():
        assert 0.0 <= t["read_share"] <= 1.0 and t["chance"] == 0.1 and t["removal"]["rows"] == shifts[name]["rows"]
        assert shifts[name]["kind"] == "typography" and shifts[name]["read"]["read_share"] == t["read_share"]
    assert "chosen on val" in md and "reads the written class" in md
    # the patch trigger is the largest square within 8% of the image (issue 12: a patch of <= 8% of the area)
    patch = data["properties"]["trigger"]["patch"]
    assert patch["size_px"] == 9 and patch["area_share"] == round(81 / 1024, 4) <= 0.08
    assert patch["trainable_params"] == 81 * 3 and "patch 9×9 px (7.9% of the image)" in md
    # the fine-tune behind every figure is named (its settings, in words, and what it did)
    ft = data["finetune"]
    assert ft["settings"] == result.finetune_config.as_dict() and ft["run"] == dict(result.finetune_run)
    assert ft["recipe"] == result.finetune_config.describe(len(result.ft["train"]))
    assert f"Fine-tuned with {ft['recipe']}" in md


def test_report_summary_is_short(result, tmp_path):
    from cv_core.edits.report_md import summary_lines

    rep = build_report(result, ["cv_steer"], tmp_path, config=ReportConfig(probe=False))
    lines = summary_lines(rep)
    assert 5 <= len(lines) <= 20 and "cv_steer" in lines[3] and "Forget accuracy ↓ (%)" in lines[1]


def test_report_rejects_unknown_methods_before_working(result, tmp_path):
    with pytest.raises(UnknownNameError, match="cv_steer"):
        build_report(result, ["cv_steeer"], tmp_path)
    with pytest.raises(InvalidInputError):
        ReportConfig(encoder_classes=0)
    with pytest.raises(InvalidInputError, match="share of the image"):
        ReportConfig(trigger_patch_area=0)


def test_properties_on_the_synthetic_problem():
    ctx = make_context()
    cv, head, test = ctx.class_vectors, ctx.head, ctx.ft["test"]
    ind = properties.independence(cv)
    assert ind["offdiag_abs_mean"] < 0.05 < ind["diag_mean"]
    rows = {r["coef"]: r for r in properties.scaling_sweep(head, test, cv, 0.5)}
    assert rows[0.0]["target_acc"] == 1.0 and rows[-2.0]["target_acc"] <= 0.05
    assert rows[-2.0]["nontarget_acc"] == 1.0
    interp = properties.interpolation(head, test, cv, 0, 1, 0.5)
    assert 0.3 <= interp["switch_alpha"] <= 0.7
    seq = properties.sequential_shift(head, test, cv, None, 1.0, 0.5)
    assert seq["mean_p_target"] >= 0.95


def test_recipes_validate_input():
    cv = make_context().class_vectors
    with pytest.raises(InvalidInputError, match="finite"):
        recipes.forget(cv, [0], float("nan"))
    with pytest.raises(InvalidInputError, match="two distinct"):
        recipes.sequential_shift(cv, [1, 1])
    edit = recipes.combine(cv, {0: -1.0, 2: 0.5}, 0.5)
    assert edit.vectors.shape == (2, 64)


def test_shift_removal_undoes_a_known_shift():
    ctx = make_context()
    cv, head = ctx.class_vectors, ctx.head
    # "environment": shifted images push every latent towards head row 0, and the fine-tuned encoder
    # moves them only 0.2 kappa_c: kappa_{env+c} - kappa_c = -0.8 kappa_c, so lambda < 0 restores the class
    shift = torch.zeros(64)
    shift[0] = 3.0
    pre, ft = ctx.pre["test"], ctx.ft["test"]
    from cv_core.results import FeatureSet
    env_pre = FeatureSet(pre.features + shift, pre.labels, pre.class_names)
    env_ft = FeatureSet(pre.features + shift + 0.2 * cv.kappa[pre.labels], pre.labels, pre.class_names)
    rows = {r["lambda"]: r["accuracy"] for r in properties.shift_removal_sweep(head, cv, env_pre, env_ft, env_ft)}
    assert rows[0.0] <= 0.5
    assert max(acc for lam, acc in rows.items() if lam < 0) >= rows[0.0] + 0.3
    assert max(acc for lam, acc in rows.items() if lam > 0) <= rows[0.0]


def test_removal_lambda_is_chosen_on_val_and_compared_with_clean_accuracy():
    from cv_core.edits.shifted import removal_summary
    from cv_core.results import FeatureSet

    ctx = make_context()
    cv, head = ctx.class_vectors, ctx.head
    shift = torch.zeros(64)
    shift[0] = 3.0
    pre = ctx.pre["test"]
    env_pre = FeatureSet(pre.features + shift, pre.labels, pre.class_names)
    env_ft = FeatureSet(pre.features + shift + 0.2 * cv.kappa[pre.labels], pre.labels, pre.class_names)
    s = removal_summary(head, cv, env_pre, env_ft, env_ft, env_ft, acc_clean=0.95)
    curve = {r["lambda"]: r["accuracy"] for r in s["rows"]}
    assert s["val_lambda"] < 0 and s["accuracy_at_val_lambda"] == curve[s["val_lambda"]]
    assert s["recovered_share"] == pytest.approx((curve[s["val_lambda"]] - curve[0.0]) / (0.95 - curve[0.0]))
    assert s["recovered_share"] > 0.5
    # a val split that prefers no edit (the clean latents): lambda 0 is chosen, nothing recovered
    clean = removal_summary(head, cv, env_pre, env_ft, env_ft, ctx.ft["test"], acc_clean=0.95)
    assert clean["val_lambda"] == 0.0 and clean["recovered_share"] == 0.0
    none = removal_summary(head, cv, env_pre, env_ft, env_ft, None, acc_clean=0.95)
    assert none["val_lambda"] is None and none["recovered_share"] is None and none["best_lambda"] == s["best_lambda"]
    nothing_lost = removal_summary(head, cv, env_pre, env_ft, env_ft, env_ft, acc_clean=0.0)
    assert nothing_lost["recovered_share"] is None


def test_read_share_counts_predictions_of_the_written_class():
    import numpy as np

    from cv_core.data.datasets import ArrayImageDataset, cap_per_class
    from cv_core.edits.shifted import read_shares
    from cv_core.results import FeatureSet

    head = make_context().head
    c = len(head.class_names)
    labels = torch.arange(40) % c
    written = (labels + 1) % c
    ds = ArrayImageDataset(np.zeros((40, 4, 4), np.uint8), labels.tolist(), head.class_names)
    ds.written_targets = written.tolist()
    # zero-shot reads the text on the first 10 images; the fine-tuned encoder never
    pre = FeatureSet(head.weights[torch.where(torch.arange(40) < 10, written, labels)], labels, head.class_names)
    ft = FeatureSet(head.weights[labels], labels, head.class_names)
    r = read_shares(head, ds, pre, ft)
    assert r == {"read_share": 0.25, "read_share_finetuned": 0.0, "zero_shot_accuracy": 0.75, "chance": 1 / c}
    # through a capped view the written classes follow the kept images
    view = cap_per_class(ds, 2, seed=1)
    idx = torch.as_tensor(view.indices)
    r = read_shares(head, view, FeatureSet(pre.features[idx], labels[idx], head.class_names),
                    FeatureSet(ft.features[idx], labels[idx], head.class_names))
    assert r["read_share"] == float((idx < 10).float().mean())
    plain = ArrayImageDataset(np.zeros((40, 4, 4), np.uint8), labels.tolist(), head.class_names)
    assert read_shares(head, plain, pre, ft) is None


def test_weak_or_surprising_rows_get_one_sentence():
    from cv_core.edits.columns import COLUMNS, interpret

    ref = {"acc_f": 0.96, "acc_r": 0.96}
    calib = interpret("cv_steer", {"acc_f": 0.04, "acc_r": 0.96, "calib_acc_f": 0.33, "probe_f": 0.95}, ref)
    assert "4% back to 33%" in calib
    assert "does not forget" in interpret("retrain", {"acc_f": 0.29, "acc_r": 0.95}, ref)
    assert "damages the other classes" in interpret("neggrad", {"acc_f": 0.0, "acc_r": 0.3}, ref)
    assert interpret("cmf", {"acc_f": 0.0, "acc_r": 0.96, "calib_acc_f": 0.02, "probe_f": 0.1}, ref) is None
    assert interpret("random_vector", {"acc_f": 0.95, "acc_r": 0.96}, ref) is None
    assert all(c.help and c.label for c in COLUMNS.values())


def test_cli_report_rejects_an_unknown_audit_in_one_line(tmp_path, capsys):
    from cv_core.cli import main

    assert main(["report", "--audits", "relearning,bogus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bogus" in err[0] and "relearning, cka, references, quantized" in err[0]


def test_cli_report_encoder_classes_is_checked_before_any_work(tmp_path, capsys):
    from cv_core.cli import _encoder_classes, main

    assert _encoder_classes("all") is None and _encoder_classes("ALL") is None and _encoder_classes("10") == 10
    for bad in ("two", "0"):
        assert main(["report", "--encoder-classes", bad, "--out", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "encoder" in err[0]
    assert not list(tmp_path.iterdir())
