"""Opt-in fine-tuning whose length follows the data (issue 12): epochs -> steps, early stopping on the val
split's accuracy with the best state kept; the default fixed-step recipe and its cache keys unchanged."""
import math

import pytest
import torch

from cv_core.errors import InvalidInputError
from cv_core.features.cache import key_digest
from cv_core.models import finetune as ft
from cv_core.models.finetune import FinetuneConfig
from cv_core.results import ZeroShotHead
from cv_core.stages import encoder_key


def _inputs(tiny_spec, cache_dir, **settings):
    from cv_core.pipeline import RunConfig
    from cv_core.stages import prepare
    cfg = FinetuneConfig(**{"steps": 40, "batch_size": 32, "lr": 1e-3, "warmup": 2, **settings})
    return prepare(RunConfig(backbone=tiny_spec, dataset="digits", device="cpu", cache_dir=str(cache_dir),
                             max_per_class=8, finetune=cfg), None, {}, {})


class _Steps:
    """A cancel hook that counts the training steps (it is polled once per step)."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return False


def test_early_stopping_stops_when_val_accuracy_plateaus(tiny_spec, tmp_path, single_thread):
    # lr so small that the weights barely move: the val accuracy is flat from the first evaluation on
    inp = _inputs(tiny_spec, tmp_path, lr=1e-9, early_stop_patience=2, eval_every=3)
    events, steps = [], _Steps()
    from cv_core.stages import finetune_stage
    state, hit, record = finetune_stage(inp, events.append, steps)
    assert not hit
    assert steps.n == 3 * 3 < 40  # best at the 1st evaluation (step 3), then 2 without gain -> stop at step 9
    last = events[-1]
    assert last.step == last.total == 40 and "stopped: no gain in 2 evaluations" in last.message
    assert "val accuracy" in last.message and "epoch" in last.message and "best" in last.message
    assert any(e.loss is not None for e in events)
    assert set(state) == set(inp.lazy.get().model.visual.state_dict())


def test_the_best_val_state_is_returned_not_the_last(tiny_spec, tmp_path, single_thread, monkeypatch):
    inp = _inputs(tiny_spec, tmp_path, early_stop_patience=3, eval_every=2)
    script, seen = [0.2, 0.5, 0.4, 0.5, 0.3, 0.9], []  # best at the 2nd; the tie (4th) keeps the earlier one

    def scripted(encoder, head, dataset, preprocess, device, batch_size=256):
        assert len(dataset) == len(inp.ft_val)
        seen.append({k: v.detach().clone() for k, v in encoder.visual.state_dict().items()})
        return script[len(seen) - 1]

    monkeypatch.setattr(ft, "val_accuracy", scripted)
    steps = _Steps()
    from cv_core.stages import finetune_stage
    state, _, record = finetune_stage(inp, None, steps)
    assert len(seen) == 5 and steps.n == 10  # evaluations 3, 4, 5 gave no gain -> stopped before the 0.9
    assert {k: record[k] for k in ("steps_run", "steps_budget", "stopped_early", "best_step", "best_val_accuracy")} \
        == {"steps_run": 10, "steps_budget": 40, "stopped_early": True, "best_step": 4, "best_val_accuracy": 0.5}
    # a cache hit gives the same record back (it is kept in the entry's sidecar)
    assert finetune_stage(inp, None, None)[1:] == (True, record)
    assert all(torch.equal(state[k], seen[1][k]) for k in state)
    assert not all(torch.equal(state[k], seen[-1][k]) for k in state)


def test_val_accuracy_is_measured_in_eval_mode_and_restores_train_mode(tiny_spec, tmp_path, single_thread):
    inp = _inputs(tiny_spec, tmp_path, early_stop_patience=1)
    encoder = ft.ImageEncoder(inp.lazy.get().model.visual).train()
    val, transform = inp.prepared.get("val")
    acc = ft.val_accuracy(encoder, inp.head, val, transform, inp.device, batch_size=7)
    assert encoder.training  # back in train mode
    encoder.eval()
    with torch.no_grad():
        images = torch.stack([transform(val[i][0]) for i in range(len(val))])
        labels = torch.as_tensor([val[i][1] for i in range(len(val))])
        expected = (inp.head.predict(encoder(images).float()) == labels).float().mean().item()
    assert acc == pytest.approx(expected, abs=1e-6)


def test_epochs_set_the_step_budget_from_the_train_size(tiny_spec, tmp_path, single_thread):
    cfg = FinetuneConfig(batch_size=64, epochs=2.5)
    assert cfg.steps_per_epoch(1000) == 16  # 15 full batches and one of 40 images
    assert cfg.steps_per_epoch(980) == 15  # the last 20 images (under half a batch) are skipped, as in training
    assert cfg.steps_per_epoch(30) == 1  # a train split smaller than a batch is one batch
    assert cfg.total_steps(1000) == math.ceil(2.5 * 16) == 40
    assert cfg.total_steps(980) == math.ceil(2.5 * 15) == 38
    assert cfg.eval_interval(1000) == 16  # one epoch
    assert FinetuneConfig(batch_size=64, epochs=0.001).total_steps(10) == 1
    assert FinetuneConfig(steps=7).total_steps(1000) == 7  # without epochs: steps, as before
    assert FinetuneConfig(eval_every=5, early_stop_patience=1).eval_interval(1000) == 5
    inp = _inputs(tiny_spec, tmp_path, epochs=1.5)
    events, steps = [], _Steps()
    from cv_core.stages import finetune_stage
    finetune_stage(inp, events.append, steps)
    n = len(inp.data["train"])
    assert steps.n == math.ceil(1.5 * FinetuneConfig(batch_size=32).steps_per_epoch(n)) == events[-1].total


def test_the_default_recipes_and_their_cache_keys():
    """The built-in model's default follows the data (epochs + early stopping); the fixed-step recipes (the
    open_clip defaults and 'fixed-150', the built-in model's default before issue 12) keep their cache keys."""
    old = {"steps": 150, "batch_size": 64, "lr": 0.0005, "weight_decay": 0.1, "warmup": 15, "grad_clip": 1.0,
           "seed": 0}
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert FinetuneConfig.recipe("fixed-150", cpu, small_model=True).as_dict() == old
    builtin = FinetuneConfig.default_for(cpu, small_model=True)
    assert builtin == FinetuneConfig.default_for(cuda, small_model=True) == FinetuneConfig.recipe("auto", cpu, True)
    assert (builtin.epochs, builtin.early_stop_patience, builtin.lr, builtin.batch_size) == (10, 3, 1e-3, 64)
    # the built-in v2 trains at its own learning rate, same length; an unknown version is named
    v2 = FinetuneConfig.recipe("auto", cpu, small_model=True, builtin_version="v2")
    assert v2.lr == 5e-4 and (v2.epochs, v2.early_stop_patience) == (10, 3) and v2.as_dict() != builtin.as_dict()
    with pytest.raises(InvalidInputError, match="built-in version 'v7'"):
        FinetuneConfig.default_for(cpu, small_model=True, builtin_version="v7")
    from cv_core.models.backbones import builtin_version
    assert [builtin_version(s) for s in ("builtin", "builtin:v2", "RN50:openai", "nonsense")] == ["v1", "v2", None, None]
    paper = {"steps": 2000, "batch_size": 128, "lr": 1e-05, "weight_decay": 0.1, "warmup": 200, "grad_clip": 1.0,
             "seed": 0}
    assert FinetuneConfig.default_for(cuda, small_model=False).as_dict() == paper
    assert FinetuneConfig.recipe("paper", cpu, small_model=True).as_dict() == paper
    with pytest.raises(InvalidInputError, match="unknown fine-tune recipe 'fast'.*auto, paper, fixed-150"):
        FinetuneConfig.recipe("fast", cpu)

    class DS:
        class_names, targets = ("a", "b"), [0, 1, 1, 0]

        def __len__(self):
            return 4

    head = ZeroShotHead(torch.arange(6.).reshape(2, 3), 100.0, ("a", "b"), ("a photo of {}",))
    base = {"backbone": "builtin", "weights": "w", "dataset": "digits", "max_per_class": None, "data_seed": 0}
    digests = {  # key_digest(encoder_key(...)) computed with the code before issue 12 (commit eceb338)
        (True, "cpu"): "800742e03b5e61a4e06f1fcdb177f4ef", (False, "cpu"): "9cda864490e46de62b8e71cf06b9985e",
        (False, "cuda"): "39bddc33edd3d2746ce7b4a480226c1d"}
    for (small, dev), digest in digests.items():
        cfg = (FinetuneConfig.recipe("fixed-150", cpu) if small else
               FinetuneConfig.default_for(torch.device(dev), small_model=small))
        assert key_digest(encoder_key(base, DS(), cfg, head)) == digest
    stopping = FinetuneConfig.from_dict({**old, "epochs": 20, "early_stop_patience": 3})
    assert stopping.as_dict() == {**old, "epochs": 20, "early_stop_patience": 3}
    key = encoder_key(base, DS(), stopping, head, DS())
    assert "val" in key and key_digest(key) not in digests.values()


@pytest.mark.parametrize("settings, match", [
    ({"epochs": 0}, "epochs"), ({"epochs": -1.0}, "epochs"), ({"epochs": float("nan")}, "epochs"),
    ({"epochs": float("inf")}, "epochs"), ({"early_stop_patience": 0}, "early_stop_patience"),
    ({"early_stop_patience": 1.5}, "early_stop_patience"), ({"early_stop_patience": True}, "early_stop_patience"),
    ({"eval_every": 0, "early_stop_patience": 1}, "eval_every"), ({"eval_every": 4}, "early_stop_patience"),
])
def test_bad_settings_are_clear_errors(settings, match):
    with pytest.raises(InvalidInputError, match=match):
        FinetuneConfig(**settings)


def test_early_stopping_without_a_val_split_says_what_to_do(tiny_spec, tmp_path, single_thread):
    inp = _inputs(tiny_spec, tmp_path, early_stop_patience=2)
    train, transform = inp.prepared.get("train")
    with pytest.raises(InvalidInputError, match="needs a val split.*drop --early-stop"):
        ft.finetune(inp.lazy.get().model, transform, inp.head, train, inp.ft_cfg, inp.device)


def test_cli_flags(capsys):
    from cv_core.cli import build_parser, config_from_args
    parse = build_parser().parse_args
    cfg = config_from_args(parse(["run", "--device", "cpu", "--epochs", "20", "--early-stop", "5"])).finetune
    assert (cfg.epochs, cfg.early_stop_patience, cfg.lr) == (20.0, 5, 1e-3)
    cfg = config_from_args(parse(["run", "--device", "cpu", "--epochs", "4"])).finetune  # the default's stopping
    assert (cfg.epochs, cfg.early_stop_patience) == (4.0, 3)
    cfg = config_from_args(parse(["finetune", "--device", "cpu", "--steps", "50", "--early-stop", "2"])).finetune
    assert (cfg.steps, cfg.warmup, cfg.epochs, cfg.early_stop_patience) == (50, 5, None, 2)
    cfg = config_from_args(parse(["run", "--device", "cpu", "--steps", "80"])).finetune  # fixed: no epochs/stop
    assert (cfg.steps, cfg.epochs, cfg.early_stop_patience, cfg.lr) == (80, None, None, 1e-3)
    cfg = config_from_args(parse(["run", "--device", "cpu", "--no-early-stop"])).finetune
    assert (cfg.epochs, cfg.early_stop_patience) == (10, None)
    cfg = config_from_args(parse(["run", "--device", "cpu", "--recipe", "fixed-150"])).finetune
    assert cfg == FinetuneConfig.recipe("fixed-150", torch.device("cpu"))
    cfg = config_from_args(parse(["run", "--device", "cpu", "--recipe", "paper", "--steps", "300"])).finetune
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.warmup) == (300, 128, 1e-5, 30)
    assert config_from_args(parse(["run", "--device", "cpu"])).finetune is None  # the default recipe
    with pytest.raises(InvalidInputError, match="unknown fine-tune recipe"):
        config_from_args(parse(["run", "--device", "cpu", "--recipe", "slow"]))
    for bad in (["--steps", "5", "--epochs", "1"], ["--epochs", "0"], ["--epochs", "x"], ["--early-stop", "0"],
                ["--early-stop", "1.5"], ["--epochs", "inf"], ["--early-stop", "2", "--no-early-stop"]):
        with pytest.raises(SystemExit) as exit_info:
            parse(["run", *bad])
        assert exit_info.value.code == 2, bad
    assert "not allowed with argument" in capsys.readouterr().err


def test_patience_running_out_at_the_last_step_is_not_reported_as_a_stop(tiny_spec, tmp_path, single_thread,
                                                                        monkeypatch):
    inp = _inputs(tiny_spec, tmp_path, steps=6, early_stop_patience=2, eval_every=2)
    script = iter([0.5, 0.4, 0.4])
    monkeypatch.setattr(ft, "val_accuracy", lambda *a, **k: next(script))
    events, steps = [], _Steps()
    from cv_core.stages import finetune_stage
    finetune_stage(inp, events.append, steps)
    assert steps.n == 6 and events[-1].step == 6 and "stopped" not in events[-1].message
    assert "best 0.500 at step 2" in events[-1].message


def test_the_cli_prints_one_line_per_val_evaluation(capsys):
    from cv_core.cli import _progress_printer
    from cv_core.progress import Progress
    show = _progress_printer()
    show(Progress("finetune", 1, 34, "epoch 0.1 · step 1/34 · loss 2.100 · best not yet measured", 2.1))
    show(Progress("finetune", 17, 34, "epoch 1.0 · step 17/34 · loss 0.900 · val accuracy 0.812 (best 0.812 at "
                                      "step 17)", 0.9))
    lines = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if line.startswith("[")]
    assert lines == ["[finetune] epoch 1.0 · step 17/34 · loss 0.900 · val accuracy 0.812 (best 0.812 at step 17)"]


def test_an_image_folder_without_val_images_cannot_early_stop(tiny_spec, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    from cv_core.pipeline import RunConfig
    from cv_core.stages import prepare
    for c, name in enumerate(["cat", "dog"]):  # 2 images per class: the 60/10/30 split gives val none
        for i in range(2):
            path = tmp_path / "imgs" / name / f"img{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.random.default_rng(10 * c + i).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    cfg = RunConfig(backbone=tiny_spec, dataset=f"imagefolder:{tmp_path / 'imgs'}", device="cpu",
                    cache_dir=str(tmp_path / "cache"),
                    finetune=FinetuneConfig(steps=2, batch_size=2, lr=1e-3, warmup=0, early_stop_patience=1))
    with pytest.raises(InvalidInputError, match="early stopping scores the val split.*drop --early-stop"):
        prepare(cfg, None, {}, {})
    # the default recipe's early stopping is not an error there: it trains the whole budget and says so
    import dataclasses
    stopping = FinetuneConfig(steps=2, batch_size=2, lr=1e-3, warmup=0, epochs=2, early_stop_patience=1)
    monkeypatch.setattr(FinetuneConfig, "default_for",
                        classmethod(lambda cls, device, small_model=False, builtin_version="v1": stopping))
    events = []
    inp = prepare(dataclasses.replace(cfg, finetune=None), events.append, {}, {})
    assert inp.ft_cfg == stopping.without_early_stopping() and inp.ft_val is None
    assert any("no early stopping" in e.message and "whole budget of 2 steps" in e.message for e in events)


def test_the_recipe_and_what_it_did_read_as_words():
    from cv_core.models.finetune import describe_run
    default = FinetuneConfig.default_for(torch.device("cpu"), small_model=True)
    assert default.describe(1078) == ("10 epochs (170 steps) of batch 64, lr 0.001, early stopping on the val split "
                                      "(patience 3)")
    assert FinetuneConfig.recipe("fixed-150", torch.device("cpu")).describe() == "150 steps of batch 64, lr 0.0005"
    assert describe_run({}) == ""
    assert describe_run({"steps_run": 150, "steps_budget": 150, "stopped_early": False}) == "150 of 150 steps"
    assert describe_run({"steps_run": 153, "steps_budget": 170, "stopped_early": True, "best_step": 102,
                         "best_val_accuracy": 0.98324}) == "153 of 170 steps; stopped early, kept step 102, val accuracy 0.983"


def _norm_stats(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_freezing_norm_stats_keeps_the_pretrained_batchnorm_statistics(tmp_path, single_thread):
    """The built-in tower is a ResNet with BatchNorm: by default a fine-tune re-estimates its running statistics;
    with freeze_norm_stats they stay as pretrained while the rest (BatchNorm weights too) trains."""
    from cv_core.stages import finetune_stage

    states = {}
    for frozen in (False, True):
        inp = _inputs("builtin", tmp_path / str(frozen), steps=6, freeze_norm_stats=frozen)
        pretrained = inp.lazy.get().model.visual.state_dict()
        state, hit, _ = finetune_stage(inp, None, None)
        assert not hit
        before, after = _norm_stats(pretrained), _norm_stats(state)
        assert before and set(before) == set(after)
        states[frozen] = (before, after, pretrained, state)
    before, after, _, _ = states[False]
    assert sum(not torch.equal(before[k], after[k]) for k in before) == len(before)
    before, after, pretrained, state = states[True]
    assert all(torch.equal(before[k], after[k]) for k in before)
    bn_weights = [k for k in pretrained
                  if k.endswith(".weight") and k[:-len("weight")] + "running_mean" in pretrained]
    assert bn_weights and any(not torch.equal(pretrained[k], state[k]) for k in bn_weights)


def test_freeze_norm_stats_is_in_the_cache_key_only_when_set():
    plain, frozen = FinetuneConfig(), FinetuneConfig(freeze_norm_stats=True)
    assert "freeze_norm_stats" not in plain.as_dict() and frozen.as_dict()["freeze_norm_stats"] is True
    assert "BatchNorm statistics frozen" in frozen.describe() and "BatchNorm" not in plain.describe()
    with pytest.raises(InvalidInputError, match="freeze_norm_stats"):
        FinetuneConfig(freeze_norm_stats="yes")


def test_the_cli_flag_sets_it():
    from cv_core.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--freeze-bn-stats"])
    assert config_from_args(args).finetune.freeze_norm_stats is True
    assert config_from_args(build_parser().parse_args(["run"])).finetune is None  # the default recipe, its keys
