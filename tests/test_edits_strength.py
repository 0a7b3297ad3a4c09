"""Forget strength chosen on data (DEFINITIONS.md item 4), on a synthetic problem with a known answer."""
from __future__ import annotations

import pytest
import torch

from cv_core.edits import run_method
from cv_core.edits.latent import gate_thresholds
from cv_core.edits.strength import (STRENGTH_GRID, choose_forget_strength, forget_strengths,
                                    strength_from_curve)
from cv_core.edits.synthetic import make_context
from cv_core.errors import InvalidInputError
from cv_core.math.metrics import forget_retain, score
from cv_core.math.steering import edit_from_coefficients, steer


@pytest.fixture(scope="module")
def ctx():
    return make_context()


def _val_forget_retain(ctx, c, lam, gamma):
    x = ctx.ft["val"].features
    z = steer(x, edit_from_coefficients(ctx.class_vectors, {c: -lam}, gamma), ctx.head.predict(x))
    return forget_retain(score(ctx.head.predict(z), ctx.labels("val"), ctx.num_classes), [c])


def test_the_chosen_strength_is_the_smallest_grid_value_that_forgets(ctx):
    gamma = gate_thresholds(ctx, "auto")
    s = choose_forget_strength(ctx.head, ctx.ft["val"], ctx.class_vectors, 2, gamma, margin=1.0)
    assert s.reached and s.forget <= 0.05 and s.retain >= s.retain_before - 0.01 and s.lam == s.lam_min
    # brute force with the library's steering: the chosen value forgets, every smaller one does not
    f, r = _val_forget_retain(ctx, 2, s.lam, gamma)
    assert f == pytest.approx(s.forget) and r == pytest.approx(s.retain)
    smaller = [lam for lam in STRENGTH_GRID if lam < s.lam]
    assert smaller and all(_val_forget_retain(ctx, 2, lam, gamma)[0] > 0.05 for lam in smaller)
    # at lambda = 1 the class is back at its pretrained latent, which this head cannot read (dims 4..8)
    assert s.at_one == pytest.approx(_val_forget_retain(ctx, 2, 1.0, gamma)[0])


def test_a_target_out_of_reach_is_said_and_the_best_value_returned():
    grid = (0.0, 0.5, 1.0, 1.5, 2.0)
    # forget falls to 10% at 1.0 and 0% at 2.0, but from 1.5 on retain drops 3 points
    curve = torch.tensor([[0.9, 0.95], [0.5, 0.95], [0.1, 0.948], [0.0, 0.92], [0.0, 0.92]], dtype=torch.float64)
    s = strength_from_curve(0, "a", curve, grid)
    assert not s.reached and s.lam == 1.0 and s.forget == pytest.approx(0.1)
    ok = strength_from_curve(0, "a", curve, grid, target=0.5, margin=1.0)
    assert ok.reached and ok.lam == 0.5
    assert strength_from_curve(0, "a", curve, grid, target=0.5).lam == 1.0  # 1.5 x 0.5 -> 1.0 on this grid
    with pytest.raises(InvalidInputError):
        strength_from_curve(0, "a", curve, (0.5, 1.0, 1.5, 2.0, 3.0))  # must start at the unedited model


def test_strengths_are_cached_with_the_run_and_equal_the_direct_choice(ctx, tmp_path):
    gamma = gate_thresholds(ctx, "auto")
    first = forget_strengths(ctx.head, ctx.ft["val"], ctx.class_vectors, gamma, str(tmp_path))
    entries = list((tmp_path / "forget_strength").glob("*.json"))
    assert len(entries) == 1
    again = forget_strengths(ctx.head, ctx.ft["val"], ctx.class_vectors, gamma, str(tmp_path))
    assert first == again
    direct = [choose_forget_strength(ctx.head, ctx.ft["val"], ctx.class_vectors, c, gamma) for c in range(4)]
    assert [s.lam for s in first] == [s.lam for s in direct]


def test_cv_steer_uses_the_forget_strength(ctx):
    gamma = gate_thresholds(ctx, "auto")
    out = run_method("cv_steer", ctx, [1])
    assert out.info["lambda"] == pytest.approx(choose_forget_strength(ctx.head, ctx.ft["val"], ctx.class_vectors,
                                                                      1, gamma).lam)
    assert out.info["target_reached"] == "yes"
    two = run_method("cv_steer", ctx, [1, 3])
    assert isinstance(two.info["lambda"], str) and two.info["lambda"].count(",") == 1


def test_the_margin_multiplies_the_smallest_strength_and_steps_back_for_retain():
    grid = tuple(round(0.25 * i, 2) for i in range(13))   # 0 .. 3
    f = [0.9, 0.6, 0.3, 0.0] + [0.0] * 9                   # reaches 0% at 0.75
    r = [0.95] * 5 + [0.945] + [0.93] * 7                   # from 1.5 on retain falls 2 points
    s = strength_from_curve(0, "a", torch.tensor(list(zip(f, r)), dtype=torch.float64), grid, margin=1.5)
    assert s.reached and s.lam_min == 0.75 and s.lam == 1.25 and s.margin == 1.5  # 1.125 -> grid 1.25
    wide = strength_from_curve(0, "a", torch.tensor(list(zip(f, r)), dtype=torch.float64), grid, margin=3.0)
    assert wide.lam == 1.25            # 2.25 wanted; 1.5 .. 2.25 cost retain, so it steps back to 1.25
    assert "= 3 × 0.75" in wide.describe()
    capped = strength_from_curve(0, "a", torch.tensor(list(zip(f, [0.95] * 13)), dtype=torch.float64), grid,
                                 margin=10.0)
    assert capped.lam == 3.0           # capped at the grid's end
    with pytest.raises(InvalidInputError):
        choose_forget_strength(None, None, None, 0, None, margin=0.5)
