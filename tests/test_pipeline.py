"""End-to-end pipeline and CLI on a tiny random-weight CLIP and the bundled digits."""
import json
import os
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cv_core.cli import main
from cv_core.errors import Cancelled, InvalidInputError
from cv_core.models.finetune import FinetuneConfig
from cv_core.pipeline import RunConfig, apply_edit, run

FAST = FinetuneConfig(steps=4, batch_size=32, lr=1e-3, warmup=1)


@pytest.fixture
def config(tiny_spec, tmp_path):
    return RunConfig(backbone=tiny_spec, dataset="digits", device="cpu", cache_dir=str(tmp_path / "c"),
                     finetune=FAST, max_per_class=12)


def test_run_computes_then_serves_everything_from_cache(config):
    events = []
    first = run(config, progress=events.append)
    assert not any(first.cache_hits.values())
    assert {e.stage for e in events} >= {"finetune", "extract:pretrained:train", "extract:finetuned:test"}
    assert first.pre["train"].features.shape == (120, 32) and len(first.ft["test"]) == 120
    assert 0.0 <= first.zero_shot_accuracy <= 1.0
    assert not torch.equal(first.pre["test"].features, first.ft["test"].features)
    cv = first.class_vectors
    assert torch.allclose(cv.kappa, cv.mu_ft - cv.mu_pre)
    second = run(config)
    assert all(second.cache_hits.values()) and second._backbone._backbone is None  # model never loaded
    assert torch.equal(second.ft["test"].features, first.ft["test"].features)
    changed = run(RunConfig(**{**config.__dict__, "finetune": FinetuneConfig(steps=5, batch_size=32, lr=1e-3,
                                                                             warmup=1)}))
    assert not changed.cache_hits["finetune"] and changed.cache_hits["pre:test"]


def test_finetuned_encoder_reloads_from_cache(tiny_digits_run):
    result = tiny_digits_run
    enc = result.finetuned_encoder()
    ds = result.images("test")
    x = result.backbone().preprocess(ds[0][0])[None]
    with torch.no_grad():
        assert torch.allclose(enc.encode_image(x)[0], result.ft["test"].features[0], atol=1e-4)


def test_edit_forgets_with_the_class_vector(tiny_digits_run):
    result = tiny_digits_run
    best = int(result.finetuned.per_class.nan_to_num(-1).argmax())  # a class the fine-tuned model recognises
    for gate in ("none", "auto"):
        report = apply_edit(result, {str(best): -1.0}, gamma=gate)
        assert report.forget_classes == (best,) and math.isfinite(report.retain_accuracy)
        assert report.forget_accuracy_before >= 0.5, "the test needs a class the model recognises"
        assert report.forget_accuracy < report.forget_accuracy_before - 0.2  # it forgets ...
        if gate == "none":
            assert report.forget_accuracy <= 0.1  # ... entirely without a gate (the gate of this tiny model
            #                                        lets only part of the class's test images through)
        assert report.after.per_class[best] == report.forget_accuracy  # one class: its own accuracy
    with pytest.raises(InvalidInputError, match="every class"):
        apply_edit(result, [-1.0] * 10)
    with pytest.raises(InvalidInputError, match="gate"):
        apply_edit(result, {"3": -1.0}, gamma="wide")


def test_cancel_leaves_no_encoder_in_the_cache(config):
    steps = []

    def cancel():
        return len(steps) >= 2

    with pytest.raises(Cancelled, match="fine-tuning was cancelled"):
        run(config, progress=lambda p: steps.append(p) if p.stage == "finetune" else None, cancel=cancel)
    assert len(steps) == 2
    assert not list(Path(config.cache_dir).rglob("encoders/*.safetensors"))
    assert not list(Path(config.cache_dir).rglob("*.tmp"))


def test_cli_run_and_edit_write_their_files(tiny_spec, tmp_path, capsys):
    common = ["--backbone", tiny_spec, "--dataset", "digits", "--device", "cpu", "--max-per-class", "10",
              "--steps", "3", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "out")]
    assert main(["run", *common]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {"backbone", "dataset", "zero_shot_accuracy", "finetuned_accuracy", "per_class", "timings"} <= set(summary)
    assert set(summary["per_class"]) == {str(i) for i in range(10)}
    assert 0 <= summary["finetuned_accuracy"] <= 1 and summary["finetune"]["steps"] == 3
    run_record = summary["finetune_run"]
    assert (run_record["steps_run"], run_record["steps_budget"], run_record["stopped_early"]) == (3, 3, False)
    vectors = load_file(tmp_path / "out" / "class_vectors.safetensors")
    assert vectors["kappa"].shape == (10, 32)
    assert main(["edit", *common, "--coef", "7=-1", "--coef", "2=0.5", "--gate", "none"]) == 0
    edit = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert edit["forget_classes"] == ["7"] and edit["coefficients"] == {"2": 0.5, "7": -1.0}
    for key in ("forget_accuracy", "retain_accuracy", "forget_accuracy_before", "retain_accuracy_before"):
        assert 0 <= edit[key] <= 1
    assert "fine-tuned accuracy" in capsys.readouterr().out
    assert main(["edit", *common, "--move", "3:8=0.6", "--move", "1:2=1", "--gate", "none"]) == 0
    edit = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert edit["moves"] == [{"from": "3", "to": "8", "alpha": 0.6}, {"from": "1", "to": "2", "alpha": 1.0}]
    assert edit["forget_classes"] == ["1", "3"] and edit["coefficients"] == {}
    assert "move 3->8 by 0.6" in capsys.readouterr().out
    assert oct((tmp_path / "out" / "edit.json").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cli_edit_forget_uses_the_strength_chosen_on_val(tiny_spec, tmp_path, capsys):
    from cv_core.cli import config_from_args
    from cv_core.edits.strength import run_forget_strengths

    common = ["--backbone", tiny_spec, "--dataset", "digits", "--device", "cpu", "--max-per-class", "10",
              "--steps", "3", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "out")]
    assert main(["edit", *common, "--forget", "3", "--forget", "5", "--coef", "1=0.5"]) == 0
    edit = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert set(edit["forget_strengths"]) == {"3", "5"}
    # a class already at or below the target on val gets lambda 0 (no edit, so not in the forget set)
    assert edit["forget_classes"] == [n for n in ("3", "5") if edit["forget_strengths"][n]["lam"] > 0]
    # the same run, the same function: the chosen lambdas are the run's cached strengths
    from cv_core.cli import build_parser
    result = run(config_from_args(build_parser().parse_args(["edit", *common]), ("train", "val", "test")))
    chosen = run_forget_strengths(result)
    for name in ("3", "5"):
        assert edit["forget_strengths"][name]["lam"] == pytest.approx(chosen[int(name)].lam)
        assert edit["coefficients"].get(name, 0.0) == pytest.approx(-chosen[int(name)].lam)
    report = apply_edit(result, {"1": 0.5, "3": -chosen[3].lam, "5": -chosen[5].lam}, "auto")
    assert edit["retain_accuracy"] == pytest.approx(report.retain_accuracy)
    assert [edit["per_class"][str(c)]["after"] for c in range(10)] == pytest.approx(report.after.per_class.tolist(),
                                                                                    nan_ok=True)
    assert "forget strength of class 3" in capsys.readouterr().out
    assert main(["edit", *common, "--forget", "3", "--coef", "3=-1"]) == 2
    assert "given twice" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["run", "--dataset", "mnsit"], "Did you mean: mnist"),
    (["run", "--backbone", "ViT-B-32:openai", "--no-download"], "not cached"),
    (["edit", "--coef", "3=nan"], "finite"),
    (["edit", "--coef", "three"], "CLASS=VALUE"),
    (["edit"], "--move SOURCE:TARGET=ALPHA"),
    (["edit", "--move", "3=0.5"], "SOURCE:TARGET=ALPHA"),
    (["edit", "--move", "3:5=x"], "is not a number"),
    (["run", "--device", "tpu"], "unknown device"),
])
def test_cli_errors_are_one_line_with_exit_2(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # progress notes may come first
    assert last.startswith("error:") and message in last
