"""Property studies of class vectors (the paper's figures), as tables (lists of dicts) and numbers.

Inputs are latents and the head; nothing here loads a model. ``gamma`` is (C,) gate thresholds
(see ``cv_core.math.steering.auto_gamma``) or None for ungated edits.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..math.class_vectors import cosine_matrix
from ..math.factored import FactoredScores
from ..math.metrics import Scores, forget_retain, score
from ..math.steering import SteeringEdit, steer, steer_with
from ..results import ClassVectors, FeatureSet, ZeroShotHead
from . import recipes

SCALING_COEFS = tuple(round(-2.0 + 0.25 * i, 2) for i in range(17))
ALPHAS = tuple(round(0.05 * i, 2) for i in range(21))


def _scores(head: ZeroShotHead, fs: FeatureSet, edit: SteeringEdit, before: torch.Tensor) -> Scores:
    """Scores of ``fs`` after ``edit``; before: the unedited predictions of ``fs`` (the gate reads them),
    computed once by the caller for all its edits."""
    return score(head.predict(steer(fs.features, edit, before)), fs.labels, fs.num_classes)


def independence(cv: ClassVectors) -> dict:
    """cos(kappa_c, mu_ft^{c'}) as a (C, C) table; near 0 off the diagonal = edits do not leak."""
    cos = cosine_matrix(cv.kappa, cv.mu_ft)
    off = cos[~torch.eye(cv.num_classes, dtype=torch.bool)]
    return {"cos_kappa_mu_ft": cos.tolist(), "diag_mean": float(cos.diagonal().mean()),
            "offdiag_mean": float(off.mean()), "offdiag_abs_mean": float(off.abs().mean()),
            "offdiag_abs_max": float(off.abs().max())}


def scaling_sweep(head: ZeroShotHead, fs: FeatureSet, cv: ClassVectors, gamma=None,
                  coefs: Sequence[float] = SCALING_COEFS, targets: Sequence[int] | None = None) -> list[dict]:
    """For each coefficient a, edit a*kappa_t for each target t -> mean target and non-target accuracy."""
    targets = list(range(cv.num_classes)) if targets is None else list(targets)
    before = head.predict(fs.features)
    rows = []
    for a in coefs:
        tgt, rest = [], []
        for t in targets:
            edit = recipes.combine(cv, {t: a}, gamma) if a != 0 else SteeringEdit(torch.zeros(0, cv.kappa.shape[1]))
            f, r = forget_retain(_scores(head, fs, edit, before), [t])
            tgt.append(f)
            rest.append(r)
        rows.append({"coef": float(a), "target_acc": sum(tgt) / len(tgt), "nontarget_acc": sum(rest) / len(rest)})
    return rows


def addition(head: ZeroShotHead, fs: FeatureSet, cv: ClassVectors, groups: Sequence[Sequence[int]],
             lam: float = 1.0, gamma=None) -> list[dict]:
    """Forget several classes at once with sum_c -lam kappa_c -> accuracy of the group and of the rest."""
    before = head.predict(fs.features)
    rows = []
    for group in groups:
        f, r = forget_retain(_scores(head, fs, recipes.forget(cv, list(group), lam, gamma), before), group)
        rows.append({"classes": [cv.class_names[c] for c in group], "forget_acc": f, "retain_acc": r})
    return rows


def interpolation(head: ZeroShotHead, fs: FeatureSet, cv: ClassVectors, source: int, target: int,
                  gamma=None, alphas: Sequence[float] = ALPHAS) -> dict:
    """Share of source-class test images predicted source / target as alpha goes 0 -> 1, and the switch
    point (alpha where the target share first reaches the source share, linearly interpolated)."""
    x = fs.features[fs.labels == source]
    before = head.predict(x)
    return _interpolation_curve(cv, source, target, alphas, lambda a: head.predict(
        steer(x, recipes.interpolate(cv, source, target, a, gamma), before)))


def interpolation_from(fac: FactoredScores, labels: torch.Tensor, cv: ClassVectors, source: int, target: int,
                       gamma=None, alphas: Sequence[float] = ALPHAS) -> dict:
    """:func:`interpolation` from the factored tables of the latents (``math.factored``: the same gated move
    source -> target, scored without the latents; for a split kept in a feature store) and their labels."""
    mask = torch.as_tensor(labels).long() == source
    base = fac.predict()
    coefs = [0.0] * fac.num_classes

    def predict(a: float) -> torch.Tensor:  # the source-class rows' predictions after the move by a
        moved, w = fac.edit_rows(coefs, gamma, [(source, target, float(a))])
        pred = base.clone()
        if moved.numel():
            pred[moved] = fac.predict_rows(moved, w)
        return pred[mask]

    return _interpolation_curve(cv, source, target, alphas, predict)


def _interpolation_curve(cv: ClassVectors, source: int, target: int, alphas: Sequence[float], predict) -> dict:
    """The interpolation result from predict(alpha) -> (M,) predictions of the source-class images."""
    rows = []
    for a in alphas:
        pred = predict(a)
        rows.append({"alpha": float(a), "p_source": float((pred == source).float().mean()),
                     "p_target": float((pred == target).float().mean())})
    return {"source": cv.class_names[source], "target": cv.class_names[target], "curve": rows,
            "switch_alpha": _crossing(rows)}


def _crossing(rows: list[dict]) -> float | None:
    prev = None
    for row in rows:
        d = row["p_target"] - row["p_source"]
        if d >= 0:
            if prev is None:
                return row["alpha"]
            a0, d0 = prev
            return a0 + (row["alpha"] - a0) * (-d0) / (d - d0)
        prev = (row["alpha"], d)
    return None


def sequential_shift(head: ZeroShotHead, fs: FeatureSet, cv: ClassVectors, order: Sequence[int] | None = None,
                     alpha: float = 1.0, gamma=None) -> dict:
    """All classes shifted at once to their successor in ``order`` (cyclic) -> share that lands there."""
    order = list(range(cv.num_classes)) if order is None else list(order)
    pred = head.predict(steer_with(head, fs.features, recipes.sequential_shift(cv, order, alpha, gamma)))
    rows = []
    for src, dst in zip(order, order[1:] + order[:1]):
        mask = fs.labels == src
        rows.append({"source": cv.class_names[src], "target": cv.class_names[dst],
                     "p_target": float((pred[mask] == dst).float().mean())})
    return {"order": [cv.class_names[c] for c in order], "alpha": alpha, "rows": rows,
            "mean_p_target": sum(r["p_target"] for r in rows) / len(rows)}


def shift_removal_sweep(head: ZeroShotHead, cv: ClassVectors, build_pre: FeatureSet, build_ft: FeatureSet,
                        eval_ft: FeatureSet, lambdas: Sequence[float] = SCALING_COEFS) -> list[dict]:
    """Accuracy on shifted (snow, typography, ...) images after z = lam (kappa_{env+c} - kappa_c).

    build_pre / build_ft: shifted reference images (e.g. train) under both encoders, to estimate
    kappa_{env+c}; eval_ft: fine-tuned latents of other shifted images (e.g. test) that are scored.
    """
    rows = []
    for lam in lambdas:
        edit = recipes.shift_removal(cv, build_pre, build_ft, lam)
        s = score(head.predict(steer_with(head, eval_ft.features, edit)), eval_ft.labels, cv.num_classes)
        rows.append({"lambda": float(lam), "accuracy": s.accuracy})
    return rows
