"""The sentences about a run, on synthetic runs whose truth is known (orthogonal vs leaking class vectors,
collapse vs none, switch near 0.5 vs never, -1 forgets vs not)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from cv_core.edits import explain
from cv_core.edits.strength import forget_strengths, strength_from_curve
from cv_core.edits.synthetic import make_context
from cv_core.math.class_vectors import compute_class_vectors, cosine_matrix
from cv_core.math.collapse import collapse_metrics
from cv_core.results import FeatureSet


def _leaking_context():
    """make_context, but class 0's fine-tuning also adds 2.5 e_1: kappa_0 points at class 1's head row."""
    ctx = make_context()
    ft = {}
    for s, fs in ctx.ft.items():
        x = fs.features.clone()
        x[fs.labels == 0, 1] += 2.5
        ft[s] = replace(fs, features=x)
    cv = compute_class_vectors(ctx.pre["train"], ft["train"])
    return replace(ctx, ft=ft, class_vectors=cv)


def _independence(ctx, gamma=None):
    cv = ctx.class_vectors
    inter = explain.interference_table(ctx.head, ctx.ft["test"], cv, gamma, [1.5] * cv.num_classes)
    return explain.independence_finding(cosine_matrix(cv.kappa, cv.mu_ft).numpy(), inter, cv.class_names, [1.5] * 4)


def test_orthogonal_vectors_read_as_independent():
    f = _independence(make_context())
    assert f.verdict == "holds" and "nearly orthogonal" in f.text and "leak" not in f.text
    assert f.numbers["offdiag_abs_mean"] < 0.05 and f.reference.startswith("paper:")


def test_leaking_vectors_produce_a_sentence_that_says_they_leak():
    f = _independence(_leaking_context())
    assert f.verdict == "fails"
    assert "leak" in f.text and "NOT orthogonal" in f.text and "editing 0 also moves 1" in f.text
    assert f.numbers["moved"]["0"]["1"] <= -0.5  # class 1 really lost accuracy when 0 was forgotten


def _blobs(spread: float, separation: float, seed: int = 0) -> FeatureSet:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(4).repeat_interleave(50)
    means = separation * torch.eye(4, 16)
    return FeatureSet(means[y] + spread * torch.randn(len(y), 16, generator=g), y, tuple("abcd"), "test", "x")


def test_collapse_is_said_when_it_happens_and_denied_when_not():
    head = torch.eye(4, 16)
    loose, tight = _blobs(1.0, 1.0), _blobs(0.05, 3.0)
    yes = explain.collapse_finding(collapse_metrics(loose, head).as_dict(), collapse_metrics(tight, head).as_dict())
    assert yes.verdict in ("holds", "partly") and "toward collapse" in yes.text and "NC1" in yes.text
    no = explain.collapse_finding(collapse_metrics(loose, head).as_dict(), collapse_metrics(loose, head).as_dict())
    assert no.verdict == "fails" and "no sign of neural collapse" in no.text


def test_interpolation_sentences_follow_the_measured_switch_points():
    near = explain.interpolation_finding([{"source": "a", "target": "b", "switch_alpha": 0.5},
                                          {"source": "b", "target": "c", "switch_alpha": 0.55}])
    assert near.verdict == "holds" and "0.53 on average" in near.text
    late = explain.interpolation_finding([{"source": "a", "target": "b", "switch_alpha": 0.9},
                                          {"source": "b", "target": "c", "switch_alpha": None}])
    assert late.verdict != "holds" and "1 of 2 pairs never switch" in late.text and "0.90" in late.text
    assert "does not switch" in explain.pair_switch_text("a", "b", None)


def _strength(at_one: float, lam: float, reached: bool = True):
    grid = (0.0, 1.0, lam)
    curve = torch.tensor([[0.95, 0.9], [at_one, 0.9], [0.0 if reached else 0.2, 0.9]], dtype=torch.float64)
    return strength_from_curve(0, "3", curve, grid)


def test_minus_one_is_explained_with_this_runs_numbers():
    kept = explain.minus_one_finding("3", 0.5, 0.68, _strength(0.5, 2.0))
    assert kept.verdict == "fails" and "still recognises 3" in kept.text and "68%" in kept.text
    assert "λ = 2.00" in kept.text
    gone = explain.minus_one_finding("3", 0.0, 0.05, _strength(0.0, 2.0))
    assert gone.verdict == "holds" and "−1 forgets 3" in gone.text
    missed = explain.minus_one_finding("3", 0.5, 0.68, _strength(0.5, 2.0, reached=False))
    assert "no λ ≤ 3" in missed.text


def test_run_findings_on_the_synthetic_context():
    from cv_core.edits.latent import gate_thresholds

    ctx = make_context()
    gamma = gate_thresholds(ctx, "auto")
    strengths = forget_strengths(ctx.head, ctx.ft["val"], ctx.class_vectors, gamma, False)
    found = explain.run_findings(ctx.head, ctx.pre["test"], ctx.ft["test"], ctx.class_vectors, gamma, strengths,
                                 focus=2)
    assert set(found) == {"independence", "collapse", "interpolation", "minus_one"}
    assert found["independence"].verdict == "holds"
    # pretrained latents sit on dims 4..8, which this head cannot read: -1 does not bring class 2 back to it
    assert found["minus_one"].numbers["zero_shot_recall"] < 0.9
    assert all(f.text and f.reference for f in found.values())
