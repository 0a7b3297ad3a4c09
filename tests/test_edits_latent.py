"""Latent-space unlearning methods: contract over the registry and known-answer behaviour."""
import math

import pytest
import torch

from cv_core.edits import UNLEARNING_METHODS, audit, run_method, summarize
from cv_core.edits.synthetic import make_context
from cv_core.errors import InvalidInputError, UnknownNameError

LATENT_METHODS = [n for n, m in UNLEARNING_METHODS.items() if not m.needs_encoder]


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def ctx():
    return make_context()


def _snapshot(ctx):
    return [t.clone() for s in ("train", "val", "test") for t in
            (ctx.pre[s].features, ctx.ft[s].features, ctx.ft[s].labels)] + \
        [ctx.head.weights.clone(), ctx.class_vectors.kappa.clone()]


@pytest.mark.parametrize("name", LATENT_METHODS)
def test_contract_shapes_determinism_no_mutation(ctx, name):
    before = _snapshot(ctx)
    a = run_method(name, ctx, ["1"], seed=3)
    b = run_method(name, ctx, [1], seed=3)
    assert a.method == name and a.forget == (1,)
    for s in ("train", "val", "test"):
        n = len(ctx.ft[s])
        assert a.logits[s].shape == (n, 4)
        assert a.latents[s].shape == ctx.ft[s].features.shape
        assert torch.equal(a.logits[s], b.logits[s])
        assert torch.isfinite(a.logits[s]).all()
    assert a.seconds >= 0 and a.trainable_params >= 0 and not a.encoder_changed
    for x, y in zip(before, _snapshot(ctx)):
        assert torch.equal(x, y), "the method changed its inputs"


def test_steering_minus_kappa_returns_class_to_pretrained_latents(ctx):
    out = run_method("cv_steer", ctx, [1], options={"lam": 1.0, "gamma": 0.5})
    y = ctx.labels("test")
    steered, pre, ft = out.latents["test"], ctx.pre["test"].features, ctx.ft["test"].features
    assert torch.allclose(steered[y == 1], pre[y == 1], atol=1e-5)
    assert torch.equal(steered[y != 1], ft[y != 1])


def test_steering_auto_lambda_forgets_and_keeps_the_rest(ctx):
    a = audit(ctx, run_method("cv_steer", ctx, [2]))
    assert a.info["lambda"] >= 1.0
    assert a.acc_f <= 0.1 and a.acc_r >= 0.97
    # the encoder is untouched: the class is still linearly decodable
    assert a.probe_f >= 0.9 and "by construction" in a.info["probe_note"]


def test_random_vector_forgets_nothing(ctx):
    a = audit(ctx, run_method("random_vector", ctx, [2], options={"lam": 1.0}), probe=False)
    assert a.acc_f >= 0.9 and a.acc_r >= 0.97


@pytest.mark.parametrize("name", ["cmf", "classifier_ft"])
def test_probe_recovers_a_class_only_the_head_forgot(ctx, name):
    a = audit(ctx, run_method(name, ctx, [0]))
    assert a.acc_f <= 0.05 and a.acc_r >= 0.95
    assert a.probe_f >= 0.9


def test_calibration_check_brings_back_a_masked_class(ctx):
    a = audit(ctx, run_method("cmf", ctx, [3]), probe=False)
    assert a.acc_f == 0.0
    assert a.calib_shift > 0 and a.calib_acc_f >= 0.9


def test_finetuned_forget_set_looks_like_members(ctx):
    a = audit(ctx, run_method("finetuned", ctx, [1]), probe=False)
    assert a.acc_f == 1.0 and a.ua == 0.0 and a.mia <= 0.2


def test_summary_mean_and_std(ctx):
    audits = [audit(ctx, run_method("cmf", ctx, [c]), probe=False) for c in range(4)]
    s = summarize(audits)
    assert s["acc_f"] == {"mean": 0.0, "std": 0.0}
    assert math.isnan(s["probe_f"]["mean"])


def test_bad_inputs_are_clear_errors(ctx):
    with pytest.raises(InvalidInputError, match="every class"):
        run_method("cv_steer", ctx, [0, 1, 2, 3])
    with pytest.raises(InvalidInputError, match="empty"):
        run_method("cv_steer", ctx, [])
    with pytest.raises(UnknownNameError):
        run_method("cv_steer", ctx, ["seven"])
    with pytest.raises(InvalidInputError, match="out of range"):
        run_method("cv_steer", ctx, [9])
    with pytest.raises(InvalidInputError, match="finite"):
        run_method("cv_steer", ctx, [1], options={"lam": float("nan")})
    with pytest.raises(InvalidInputError, match="gate"):
        run_method("cv_steer", ctx, [1], options={"gamma": 2.0})
    with pytest.raises(UnknownNameError, match="cv_steer"):
        run_method("cv_stear", ctx, [1])
