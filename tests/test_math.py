"""Closed-form tests of the pure tensor math."""
import math

import pytest
import torch

from cv_core.errors import DatasetError, InvalidInputError, NumericalError, UnknownNameError
from cv_core.math.class_vectors import class_means, compute_class_vectors, cosine_matrix
from cv_core.math.collapse import collapse_metrics
from cv_core.math.metrics import forget_retain, score
from cv_core.math.steering import (auto_gamma, centroid_cosines, edit_from_coefficients, gate_mask, move_edit,
                                   steer, steer_rows)
from cv_core.results import FeatureSet, ZeroShotHead

NAMES = ("a", "b", "c")


def _toy():
    # Pretrained latents: every class at +e0 plus small noise; fine-tuned: class c moved to +3 e_{c+1}.
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(20)
    base = torch.zeros(60, 4)
    base[:, 0] = 1.0
    noise = 0.01 * torch.randn(60, 4, generator=g)
    pre = base + noise
    ft = pre.clone()
    ft[torch.arange(60), labels + 1] += 3.0
    return FeatureSet(pre, labels, NAMES, encoder="pretrained"), FeatureSet(ft, labels, NAMES, encoder="finetuned")


def test_class_means_exact():
    f = torch.tensor([[1.0, 0], [3, 0], [0, 2]])
    y = torch.tensor([0, 0, 1])
    assert torch.allclose(class_means(f, y, 2), torch.tensor([[2.0, 0], [0, 2]]))
    with pytest.raises(DatasetError, match="no samples"):
        class_means(f, y, 3)


def test_class_vectors_are_centroid_shifts():
    pre, ft = _toy()
    cv = compute_class_vectors(pre, ft)
    assert torch.allclose(cv.kappa, 3.0 * torch.eye(4)[1:], atol=1e-6)
    assert torch.allclose(cv.mu_ft, cv.mu_pre + cv.kappa)
    assert cv.counts.tolist() == [20, 20, 20]
    few = compute_class_vectors(pre, ft, per_class=2)
    assert few.counts.tolist() == [2, 2, 2]
    assert torch.allclose(few.kappa, cv.kappa, atol=1e-5)


def test_class_vectors_reject_mismatch():
    pre, ft = _toy()
    other = FeatureSet(ft.features, ft.labels, ("x", "y", "z"))
    with pytest.raises(InvalidInputError, match="class lists"):
        compute_class_vectors(pre, other)
    with pytest.raises(InvalidInputError, match="same images"):
        compute_class_vectors(pre, ft.subset(torch.arange(30)))


def test_nan_latents_rejected():
    with pytest.raises(NumericalError, match="NaN"):
        FeatureSet(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), ("a",))


def _predict(cv, x):
    """Unedited predictions of a head whose rows are the fine-tuned centroids."""
    return (torch.nn.functional.normalize(x, dim=-1) @ torch.nn.functional.normalize(cv.mu_ft, dim=-1).T).argmax(-1)


def test_gate_also_covers_what_the_unedited_model_predicts_as_the_class():
    """The gate of a class-c term: cosine above gamma_c, or predicted c by the unedited model. With the cosine
    gate closed (gamma 0.999), exactly the rows predicted c are edited; without predictions it is an error."""
    pre, ft = _toy()
    cv = compute_class_vectors(pre, ft)
    p = _predict(cv, ft.features)
    p[:5] = 1  # five images of class a that the model (as given) calls b
    edit = edit_from_coefficients(cv, {"b": -1.0}, gamma=0.999)
    mask = gate_mask(ft.features, edit, p)[:, 0].bool()
    assert torch.equal(mask, p == 1)
    out = steer(ft.features, edit, p)
    assert torch.allclose(out[p == 1], ft.features[p == 1] - cv.kappa[1]) and torch.equal(out[p != 1], ft.features[p != 1])
    rows, new = steer_rows(ft.features, edit, p)
    assert torch.equal(rows, torch.nonzero(p == 1).flatten()) and torch.allclose(new, out[rows])
    with pytest.raises(InvalidInputError, match="unedited predictions"):
        steer(ft.features, edit)
    with pytest.raises(InvalidInputError, match="unedited predictions"):
        gate_mask(ft.features, edit, p[:3])
    # an ungated edit needs none
    assert torch.equal(steer(ft.features, edit_from_coefficients(cv, {"b": -1.0})), ft.features - cv.kappa[1])


def test_steering_minus_kappa_returns_class_to_pretrained_centroid():
    pre, ft = _toy()
    cv = compute_class_vectors(pre, ft)
    edit = edit_from_coefficients(cv, {"b": -1.0}, gamma=auto_gamma(cv, ft))
    out = steer(ft.features, edit, _predict(cv, ft.features))
    b = ft.labels == 1
    assert torch.allclose(out[b].mean(0), cv.mu_pre[1], atol=1e-5)
    assert torch.equal(out[~b], ft.features[~b])  # the gate keeps other classes untouched


def test_gate_from_precomputed_centroid_cosines_equals_the_direct_gate():
    g = torch.Generator().manual_seed(1)
    pre = torch.randn(300, 16, generator=g)
    labels = torch.arange(3).repeat(100)
    ft = FeatureSet(pre + 2.0 * torch.eye(16)[labels], labels, NAMES)
    cv = compute_class_vectors(FeatureSet(pre, labels, NAMES), ft)
    cos = centroid_cosines(ft.features, cv)
    assert cos.shape == (300, 3)
    gamma = torch.tensor([0.3, 0.5, 0.2])
    p = _predict(cv, ft.features)
    for edit in (edit_from_coefficients(cv, [-1.0, 0.0, 0.5], gamma), move_edit(cv, "b", "c", 0.7, gamma)):
        direct = gate_mask(ft.features, edit, p)
        assert 0 < direct.sum() < direct.numel()  # the gate really selects
        assert torch.equal(gate_mask(ft.features, edit, p, centroid_cosines=cos), direct)
        assert torch.equal(steer(ft.features, edit, p, centroid_cosines=cos), steer(ft.features, edit, p))
        rows, new = steer_rows(ft.features, edit, p, centroid_cosines=cos)
        assert torch.equal(rows, torch.nonzero(direct.any(1)).flatten())
        full = steer(ft.features, edit, p)
        assert torch.allclose(new, full[rows]) and torch.equal(full[direct.any(1) == 0], ft.features[direct.any(1) == 0])
    with pytest.raises(InvalidInputError, match="rows"):
        gate_mask(ft.features[:10], edit, p[:10], centroid_cosines=cos)


def test_ungated_sum_and_coefficient_validation():
    pre, ft = _toy()
    cv = compute_class_vectors(pre, ft)
    out = steer(ft.features, edit_from_coefficients(cv, [1.0, 0.0, -0.5]))
    assert torch.allclose(out - ft.features, (cv.kappa[0] - 0.5 * cv.kappa[2]).expand(60, -1))
    with pytest.raises(InvalidInputError, match="finite"):
        edit_from_coefficients(cv, {"a": float("nan")})
    with pytest.raises(UnknownNameError, match="unknown class"):
        edit_from_coefficients(cv, {"zebra": -1.0})
    with pytest.raises(InvalidInputError, match="out of range"):
        edit_from_coefficients(cv, {"7": -1.0})
    with pytest.raises(InvalidInputError, match="gamma"):
        edit_from_coefficients(cv, {"a": -1.0}, gamma=2.0)


def test_move_edit_flips_prediction_near_half():
    pre, ft = _toy()
    cv = compute_class_vectors(pre, ft)
    head = ZeroShotHead(torch.nn.functional.normalize(cv.mu_ft, dim=-1), 100.0, NAMES)
    src = ft.subset(torch.nonzero(ft.labels == 0).flatten())
    for alpha, expected in [(0.4, 0), (0.6, 2)]:
        moved = steer(src.features, move_edit(cv, "a", "c", alpha, gamma=auto_gamma(cv, ft)), head.predict(src.features))
        assert (head.predict(moved) == expected).all()


def test_score_confusion_and_forget_retain():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    s = score(preds, labels, 4)
    assert s.accuracy == pytest.approx(4 / 6)
    assert s.confusion[0].tolist() == [1, 1, 0, 0] and s.confusion.sum() == 6
    assert s.per_class[:3].tolist() == [0.5, 1.0, 0.5] and math.isnan(float(s.per_class[3]))
    assert forget_retain(s, [1]) == (1.0, 0.5)
    # sample-weighted: classes 0 and 2 hold 2 + 2 images with 2 right -> 0.5; nothing forgotten -> (None, overall)
    assert forget_retain(score(torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 0, 1, 2]), 3), [2]) == (0.0, 0.8)
    assert forget_retain(s, []) == (None, pytest.approx(4 / 6))


def test_cosine_matrix():
    a = torch.tensor([[1.0, 0], [0, 2]])
    assert torch.allclose(cosine_matrix(a, a), torch.eye(2))


def test_collapse_metrics_on_perfect_simplex():
    c = 4
    etf = torch.eye(c) - 1.0 / c            # simplex ETF directions in R^4
    labels = torch.arange(c).repeat(5)
    fs = FeatureSet(etf[labels] * 10 + 5.0, labels, tuple("abcd"))
    m = collapse_metrics(fs, etf)
    assert m.nc1 == pytest.approx(0.0, abs=1e-9)
    assert m.nc2_equinorm == pytest.approx(0.0, abs=1e-9)
    assert m.nc2_equiangular == pytest.approx(0.0, abs=1e-9)
    assert m.nc3 == pytest.approx(0.0, abs=1e-9)
    noisy = FeatureSet(fs.features + torch.randn(20, 4, generator=torch.Generator().manual_seed(0)),
                       labels, tuple("abcd"))
    assert collapse_metrics(noisy, etf).nc1 > 0.01


def test_collapse_from_blocks_equals_the_whole_split_and_checks_its_rows():
    from cv_core.errors import DatasetError, InvalidInputError
    from cv_core.math.collapse import collapse_from_blocks

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 5, (1000,), generator=g)
    x = torch.randn(5, 16, generator=g)[labels] * 3 + torch.randn(1000, 16, generator=g)
    head = torch.randn(5, 16, generator=g)
    whole = collapse_metrics(FeatureSet(x, labels, tuple("abcde")), head).as_dict()
    pieces = collapse_from_blocks(lambda: ((s, x[s:s + 128].numpy()) for s in range(0, 1000, 128)), labels, 5,
                                  head).as_dict()
    assert pieces.keys() == whole.keys()
    for k in whole:
        assert pieces[k] == pytest.approx(whole[k], rel=1e-9, abs=1e-12), k
    with pytest.raises(InvalidInputError, match="999 rows but there are 1000 labels"):
        collapse_from_blocks(lambda: [(0, x[:999])], labels, 5, head)
    with pytest.raises(DatasetError, match="no samples"):
        collapse_from_blocks(lambda: [(0, x)], labels, 6, torch.randn(6, 16))
