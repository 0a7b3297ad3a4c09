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
