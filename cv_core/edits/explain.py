"""Every explanatory sentence the product shows about a run, computed from that run.

Each function turns measured numbers into a :class:`Finding`: a verdict, one sentence about THIS run, and the
paper's value beside it as a reference (never stated as a fact about the run). The report, the CLI and the
app call the same functions, so they say the same thing. :func:`run_findings` measures what the sentences
need from a run's latents (interference table, collapse metrics, interpolation switch points, strengths).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..math.class_vectors import cosine_matrix
from ..math.factored import FactoredScores
from ..math.metrics import score
from ..results import ClassVectors, FeatureSet, ZeroShotHead

#: What the paper (Kim & Do, NeurIPS 2025) reports, shown beside each sentence as a reference.
REFERENCES = {
    "independence": "paper: cos(κ_c, μ_ft^c′) ≈ 0 for c ≠ c′, so editing one class leaves the others at full "
                    "accuracy (CLIP ViT)",
    "collapse": "theory behind it: fine-tuned class means approach a simplex ETF (neural collapse: NC1–NC3 → 0, "
                "NC4 → 1)",
    "interpolation": "paper: the prediction switches from source to target near α ≈ 0.5",
    "minus_one": "paper: coefficient −1 forgets the class (ACC_f 0.0 on MNIST, EuroSAT, GTSRB with CLIP ViT)",
}
ORTHOGONAL_COS = 0.1     # off-diagonal mean |cos| below this (and max below ORTHOGONAL_MAX) reads as
ORTHOGONAL_MAX = 0.3     # "nearly orthogonal"
MOVED_POINTS = 0.02      # a class whose accuracy changes by 2 points or more was moved by the edit
COLLAPSE_SHARE = 0.10    # a metric moved toward collapse when it improved by at least 10% (NC4: 0.02)
#: NC metric -> True when smaller is closer to collapse (NC4 grows instead)
NC_DIRECTION = {"nc1": True, "nc2_equinorm": True, "nc2_equiangular": True, "nc3": True, "nc4": False}
NC_LABELS = {"nc1": "NC1", "nc2_equinorm": "NC2 (equinorm)", "nc2_equiangular": "NC2 (equiangular)",
             "nc3": "NC3", "nc4": "NC4"}


@dataclass(frozen=True)
class Finding:
    """topic; verdict ('holds' | 'partly' | 'fails'); text: the sentence about this run; reference: the
    paper's value; numbers: what the sentence was computed from."""

    topic: str
    verdict: str
    text: str
    reference: str
    numbers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _names(names: Sequence[str], idx: Sequence[int]) -> str:
    out = [str(names[i]) for i in idx]
    return out[0] if len(out) == 1 else ", ".join(out[:-1]) + " and " + out[-1]


# ------------------------------------------------------------------ independence
def interference_table(head: ZeroShotHead, fs: FeatureSet, cv: ClassVectors, gamma: torch.Tensor | None,
                       strengths: Sequence[float]) -> np.ndarray:
    """(C, C) float: change of class j's accuracy (after - before, in [-1, 1]) when class i alone is forgotten
    with the gated edit -strengths[i] * kappa_i on ``fs`` (row i, column j). gamma: (C,) thresholds or None."""
    return interference_from(FactoredScores.from_latents(fs.features, head.weights, cv), fs.labels, gamma, strengths)


def interference_from(fac: FactoredScores, labels: torch.Tensor, gamma: torch.Tensor | None,
                      strengths: Sequence[float]) -> np.ndarray:
    """:func:`interference_table` from the factored tables of the latents (``FactoredScores``, built from a
    feature store's blocks for a split too large to hold) and their (N,) labels."""
    c = fac.num_classes
    labels = torch.as_tensor(labels).long()
    base = fac.predict()
    before = score(base, labels, c).per_class.double()
    table = np.zeros((c, c))
    for i in range(c):
        coefs = [0.0] * c
        coefs[i] = -float(strengths[i])
        rows, w = fac.edit_rows(coefs, gamma)
        preds = base.clone()
        if rows.numel():
            preds[rows] = fac.predict_rows(rows, w)
        table[i] = (score(preds, labels, c).per_class.double() - before).nan_to_num(0.0).numpy()
    return table


def independence_finding(cos_kappa_mu: np.ndarray, interference: np.ndarray, names: Sequence[str],
                         strengths: Sequence[float] | None = None) -> Finding:
    """Are edits independent on this run? cos_kappa_mu: (C, C) cos(kappa_c, mu_ft^c'); interference: (C, C)
    from :func:`interference_table` (row = edited class)."""
    cos, inter = np.asarray(cos_kappa_mu, dtype=float), np.asarray(interference, dtype=float)
    c = cos.shape[0]
    off = ~np.eye(c, dtype=bool)
    mean_abs, max_abs = float(np.abs(cos[off]).mean()), float(np.abs(cos[off]).max())
    i_max, j_max = np.unravel_index(np.argmax(np.where(off, np.abs(cos), -1)), cos.shape)
    side = np.where(off, inter, 0.0)
    leaks = {i: [j for j in np.argsort(side[i]) if abs(side[i, j]) >= MOVED_POINTS - 1e-9] for i in range(c)}
    leaking = [i for i in range(c) if leaks[i]]
    orthogonal = mean_abs < ORTHOGONAL_COS and max_abs < ORTHOGONAL_MAX
    geometry = (f"off-diagonal cos(κ_c, μ_ft^c′) on this run: mean |cos| {mean_abs:.3f}, max {max_abs:.3f} "
                f"({names[i_max]} vs {names[j_max]})")
    geometry = ("class vectors are nearly orthogonal to the other classes' centroids — " if orthogonal else
                "class vectors are NOT orthogonal to the other classes' centroids — ") + geometry
    how = "when each class is forgotten at its forget strength" if strengths is not None else \
        "when each class is forgotten"
    if not leaking:
        verdict = "holds" if orthogonal else "partly"
        edits = (f"but the gate keeps edits local: {how}, no other class's accuracy changes by "
                 f"{100 * MOVED_POINTS:.0f} points or more" if not orthogonal else
                 f"and {how}, no other class's accuracy changes by {100 * MOVED_POINTS:.0f} points or more")
        text = f"{geometry[0].upper()}{geometry[1:]}; {edits}."
    else:
        verdict = "fails"
        worst = max(leaking, key=lambda i: np.abs(side[i]).max())
        parts = ", ".join(f"{names[j]} {_pts(side[worst, j])} pts" for j in leaks[worst][:4])
        text = (f"Edits leak into other classes on this run: {geometry}; {how}, {len(leaking)} of {c} edits "
                f"also move another class by {100 * MOVED_POINTS:.0f} points or more — editing {names[worst]} "
                f"also moves {parts}.")
    numbers = {"offdiag_abs_mean": mean_abs, "offdiag_abs_max": max_abs, "max_pair": [str(names[i_max]),
               str(names[j_max])], "leaking_edits": [str(names[i]) for i in leaking],
               "moved": {str(names[i]): {str(names[j]): float(side[i, j]) for j in leaks[i]} for i in leaking},
               "table": inter.tolist()}
    return Finding("independence", verdict, text, REFERENCES["independence"], numbers)


# ------------------------------------------------------------------ neural collapse
def collapse_finding(pre: Mapping[str, float], ft: Mapping[str, float]) -> Finding:
    """Which NC metrics fine-tuning moved toward collapse, and by how much (pre, ft: CollapseMetrics.as_dict())."""
    toward, barely, away = [], [], []
    for k, smaller_better in NC_DIRECTION.items():
        a, b = float(pre[k]), float(ft[k])
        if not (math.isfinite(a) and math.isfinite(b)):
            continue
        if smaller_better:
            gain = (a - b) / abs(a) if a else 0.0
            moved, change = gain >= COLLAPSE_SHARE, f"{a:.3f} → {b:.3f}, {-100 * gain:+.0f}%"
        else:
            gain = b - a
            moved, change = gain >= 0.02, f"{a:.3f} → {b:.3f}"
        item = f"{NC_LABELS[k]} ({change})"
        (toward if moved else away if gain < 0 else barely).append(item)
    verdict = "holds" if not barely and not away else ("partly" if toward else "fails")
    bits = []
    if toward:
        bits.append("fine-tuning moved " + ", ".join(toward) + " toward collapse")
    if barely:
        bits.append(", ".join(barely) + (" barely moved" if len(barely) > 1 else " barely moved"))
    if away:
        bits.append(", ".join(away) + " moved away from collapse")
    if not toward:
        bits.insert(0, "no sign of neural collapse on this run")
    text = "On this run, " + "; ".join(bits) + "."
    return Finding("collapse", verdict, text, REFERENCES["collapse"],
                   {"pretrained": dict(pre), "finetuned": dict(ft)})


# ------------------------------------------------------------------ interpolation
def interpolation_finding(pairs: Sequence[Mapping]) -> Finding:
    """pairs: {source, target, switch_alpha (None: never switched within alpha <= 1)} per pair."""
    switched = [p for p in pairs if p["switch_alpha"] is not None]
    never = len(pairs) - len(switched)
    if not switched:
        return Finding("interpolation", "fails", f"On this run no pair switches within α ≤ 1 ({len(pairs)} "
                       "pairs tried): moving a class needs α > 1 here.", REFERENCES["interpolation"],
                       {"mean": None, "never": never, "pairs": len(pairs)})
    alphas = [float(p["switch_alpha"]) for p in switched]
    mean = sum(alphas) / len(alphas)
    near = abs(mean - 0.5) <= 0.1 and never == 0
    text = (f"On this run the prediction switches at α {mean:.2f} on average (from {min(alphas):.2f} to "
            f"{max(alphas):.2f})" + (f"; {never} of {len(pairs)} pairs never switch within α ≤ 1" if never else
                                     f" over all {len(pairs)} pairs") + ".")
    return Finding("interpolation", "holds" if near else "partly" if never < len(pairs) / 2 else "fails", text,
                   REFERENCES["interpolation"], {"mean": mean, "min": min(alphas), "max": max(alphas),
                                                 "never": never, "pairs": len(pairs)})


def pair_switch_text(source: str, target: str, switch_alpha: float | None) -> str:
    """The Move preset's help for one pair."""
    if switch_alpha is None:
        return (f"On this run {source} does not switch to {target} within α ≤ 1 (test images); "
                f"{REFERENCES['interpolation']}.")
    return (f"On this run {source} switches to {target} at α ≈ {switch_alpha:.2f} (test images, where the "
            f"target share first reaches the source share); {REFERENCES['interpolation']}.")


# ------------------------------------------------------------------ the meaning of -1
def minus_one_finding(name: str, at_one: float | None, zero_shot_recall: float, strength) -> Finding:
    """What coefficient -1 does to class ``name`` on this run. at_one: val forget accuracy at -1;
    zero_shot_recall: the zero-shot head's test recall of the class; strength: its ForgetStrength."""
    zs = f"zero-shot recall {100 * zero_shot_recall:.0f}%"
    chosen = (f"λ = {strength.lam:.2f} brings it to {100 * strength.forget:.0f}% on val" if strength.reached else
              f"no λ ≤ 3 brings it to {100 * strength.target:.0f}% without costing the other classes over "
              f"{100 * strength.tolerance:.0f} point; the best, λ = {strength.lam:.2f}, leaves "
              f"{100 * strength.forget:.0f}% on val")
    if at_one is not None and at_one <= strength.target:
        verdict = "holds"
        text = (f"On this run −1 forgets {name}: it goes back to its pretrained centroid, where the zero-shot "
                f"head no longer recognises it ({zs}; val accuracy at −1: {100 * at_one:.0f}%).")
    else:
        verdict = "fails"
        at = "—" if at_one is None else f"{100 * at_one:.0f}%"
        text = (f"−1 sends {name} back to its pretrained centroid; this model's zero-shot head still recognises "
                f"{name} there ({zs}; val accuracy at −1: {at}), so forgetting needs more: {chosen}.")
    return Finding("minus_one", verdict, text, REFERENCES["minus_one"],
                   {"class": name, "at_one": at_one, "zero_shot_recall": zero_shot_recall, "lambda": strength.lam,
                    "reached": strength.reached})


# ------------------------------------------------------------------ all of it, from a run's latents
def run_findings(head: ZeroShotHead, pre_test: FeatureSet, ft_test: FeatureSet, cv: ClassVectors,
                 gamma: torch.Tensor | None, strengths: Sequence, interpolation_pairs: Sequence[Mapping] | None = None,
                 focus: int = 0) -> dict[str, Finding]:
    """topic -> Finding for one run. strengths: the ForgetStrength of every class; interpolation_pairs: as in
    :func:`interpolation_finding` (computed for the pairs (c, c+1) when None); focus: the class of the
    minus-one sentence."""
    from ..math.collapse import collapse_metrics
    from . import properties

    lams = [s.lam for s in strengths]
    inter = interference_table(head, ft_test, cv, gamma, lams)
    if interpolation_pairs is None:
        c = cv.num_classes
        interpolation_pairs = [properties.interpolation(head, ft_test, cv, i, (i + 1) % c, gamma) for i in range(c)]
    zs = score(head.predict(pre_test.features), pre_test.labels, cv.num_classes).per_class
    return _findings(cv, inter, lams, collapse_metrics(pre_test, head.weights).as_dict(),
                     collapse_metrics(ft_test, head.weights).as_dict(), interpolation_pairs, zs, strengths, focus)


def store_findings(head: ZeroShotHead, store, split: str, cv: ClassVectors, gamma: torch.Tensor | None,
                   strengths: Sequence, zero_shot_per_class: torch.Tensor, focus: int = 0,
                   factored: FactoredScores | None = None) -> dict[str, Finding]:
    """:func:`run_findings` for a split kept in a feature store (``cv_core.features.store``), never loaded
    whole: the interference table and the interpolation switch points from the factored tables of its
    fine-tuned latents (``factored``, or built from the store's blocks; equal to steering the latents,
    ``math.factored``), NC1-NC4 from two passes over each encoder's blocks. zero_shot_per_class: (C,) test
    accuracy of the zero-shot model (the run's ``zero_shot.per_class``)."""
    from ..math.collapse import collapse_from_blocks
    from . import properties

    fac = factored if factored is not None else FactoredScores.from_store(store, split, "ft", head.weights, cv)
    labels = torch.from_numpy(np.asarray(store.labels(split))).long()
    lams = [s.lam for s in strengths]
    inter = interference_from(fac, labels, gamma, lams)
    c = cv.num_classes
    pairs = [properties.interpolation_from(fac, labels, cv, i, (i + 1) % c, gamma) for i in range(c)]
    nc = {enc: collapse_from_blocks(lambda enc=enc: store.iter_blocks(split, enc), labels, c, head.weights).as_dict()
          for enc in ("pre", "ft")}
    return _findings(cv, inter, lams, nc["pre"], nc["ft"], pairs, zero_shot_per_class, strengths, focus)


def _findings(cv: ClassVectors, inter: np.ndarray, lams: Sequence[float], collapse_pre: dict, collapse_ft: dict,
              pairs: Sequence[Mapping], zs: torch.Tensor, strengths: Sequence, focus: int) -> dict[str, Finding]:
    s = strengths[focus]
    return {
        "independence": independence_finding(cosine_matrix(cv.kappa, cv.mu_ft).numpy(), inter, cv.class_names,
                                              lams),
        "collapse": collapse_finding(collapse_pre, collapse_ft),
        "interpolation": interpolation_finding(pairs),
        "minus_one": minus_one_finding(cv.class_names[focus], s.at_one, float(zs[focus]), s),
    }
