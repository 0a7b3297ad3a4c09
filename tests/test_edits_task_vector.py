"""Task-vector negation on a BatchNorm image tower (the built-in architecture, random weights).

Fine-tuning in train mode moves BatchNorm running statistics; negating them with the weights drove a
running variance negative on the built-in model (NaN latents). These tests build pretrained/fine-tuned
states by hand so the right answer is known.
"""
from types import SimpleNamespace

import pytest
import torch

from cv_core.edits.base import SPLITS, EncoderInputs
from cv_core.edits.encoder_ops import encode
from cv_core.edits.task_vector import negated_state, negated_visual, recompute_bn_stats
from cv_core.models.backbones import load_backbone

pytestmark = pytest.mark.usefixtures("single_thread")
FROZEN = "attnpool.positional_embedding"  # a parameter fine-tuning left unchanged


@pytest.fixture(scope="module")
def bn_ctx():
    from cv_core.models.builtin import register_config

    register_config()
    model = load_backbone("cvs-tiny-clip:random", "cpu").model
    pre = {k: v.detach().clone() for k, v in model.visual.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    ft = {}
    for k, v in pre.items():
        if k.endswith("running_var"):
            ft[k] = 3.0 * v  # fine-tuning in train mode changed the statistics: pre - 1 * (ft - pre) = -pre
        elif k.endswith("num_batches_tracked"):
            ft[k] = v + 100
        elif v.is_floating_point() and k != FROZEN:
            ft[k] = v + 0.01 * torch.randn(v.shape, generator=g)
        else:
            ft[k] = v.clone()
    images = {s: torch.rand(10, 3, 32, 32, generator=g) for s in SPLITS}
    labels = {s: torch.arange(10) for s in SPLITS}
    return SimpleNamespace(encoder=EncoderInputs(model, pre, ft, images, labels))


def test_negation_applies_only_to_changed_parameters(bn_ctx):
    pre, ft = bn_ctx.encoder.pre_state, bn_ctx.encoder.ft_state
    state = negated_state(bn_ctx, bn_ctx.encoder.model.visual, 1.0)
    w = "layer4.0.conv3.weight"
    assert torch.allclose(state[w], 2 * pre[w] - ft[w])
    assert torch.equal(state[FROZEN], pre[FROZEN])
    for k in pre:
        if "running_" in k or k.endswith("num_batches_tracked"):
            assert torch.equal(state[k], pre[k]), k
    at_zero = negated_state(bn_ctx, bn_ctx.encoder.model.visual, 0.0)
    assert all(torch.equal(at_zero[k], pre[k]) for k in pre)


def test_negated_bn_tower_gives_finite_latents(bn_ctx):
    x, dev = bn_ctx.encoder.images["test"], torch.device("cpu")
    naive = negated_visual(bn_ctx, 1.0)
    naive.load_state_dict({k: p - (bn_ctx.encoder.ft_state[k] - p) if p.is_floating_point() else p
                           for k, p in bn_ctx.encoder.pre_state.items()})
    assert not torch.isfinite(encode(naive, x, dev)).all(), "negating the statistics should break (the old bug)"
    assert torch.isfinite(encode(negated_visual(bn_ctx, 1.0), x, dev)).all()
    assert torch.isfinite(encode(negated_visual(bn_ctx, 1.0, "recompute"), x, dev)).all()
    at_zero = negated_visual(bn_ctx, 0.0)
    assert torch.allclose(encode(at_zero, x, dev), encode(bn_ctx.encoder.model.visual.eval(), x, dev), atol=1e-5)


def test_recompute_bn_stats_restores_momentum_and_eval_mode(bn_ctx):
    visual = negated_visual(bn_ctx, 1.0)
    bn = visual.layer4[0].bn3
    before = bn.running_var.clone()
    n = recompute_bn_stats(visual, bn_ctx.encoder.images["train"], torch.device("cpu"))
    assert n > 0 and not visual.training and bn.momentum == 0.1
    assert not torch.equal(before, bn.running_var) and (bn.running_var > 0).all()
