"""Unlearning metrics and audits of one method's output.

* ACC_f / ACC_r: test accuracy on the forgotten classes / on the others.
* UA = 1 - accuracy on the forget classes' train samples; RA = accuracy on the retain train samples;
  TA = test accuracy on the retain classes (the SalUn conventions).
* MIA efficacy: an RBF SVC on true-label confidence, trained on retain-train (members) against
  retain-class test samples (non-members), applied to the forget train samples; the share judged
  non-members.
* Linear-probe recovery: a logistic regression trained on the edited train latents with the true
  labels, scored on the forgotten classes of the test split. High = the class is still in the
  representation.
* Calibration check: the best single constant added to the forgotten classes' logits (chosen on the
  validation split) and how much test accuracy it brings back.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ..math.metrics import forget_retain, score
from .base import MethodOutput, UnlearnContext

PROBE_MAX_TRAIN = 20_000  # probe / MIA training rows are subsampled above this (seeded)


@dataclass(frozen=True)
class Audit:
    """Every metric of one method forgetting one class set (accuracies in [0, 1])."""

    method: str
    forget: tuple[int, ...]
    acc_f: float
    acc_r: float
    ua: float
    ra: float
    ta: float
    mia: float
    probe_f: float
    probe_r: float
    calib_acc_f: float
    calib_acc_r: float
    calib_shift: float
    seconds: float
    trainable_params: int
    encoder_changed: bool
    pre_block_probe_f: float = float("nan")
    info: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def split_accuracy(out: MethodOutput, ctx: UnlearnContext, split: str) -> tuple[float, float]:
    """(forget accuracy, retain accuracy) of the edited classifier on ``split``."""
    s = score(out.predictions(split), ctx.labels(split), ctx.num_classes)
    return forget_retain(s, out.forget)


def _forget_mask(labels: torch.Tensor, forget: Sequence[int]) -> torch.Tensor:
    return torch.isin(labels, torch.as_tensor(list(forget), dtype=labels.dtype))


def _subsample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= k else np.sort(rng.choice(n, size=k, replace=False))


def mia_efficacy(out: MethodOutput, ctx: UnlearnContext, seed: int = 0) -> float:
    """Share of forget train samples that an SVC on true-label confidence judges non-members."""
    from sklearn.svm import SVC

    def confidence(split: str) -> tuple[np.ndarray, torch.Tensor]:
        y = ctx.labels(split)
        p = torch.softmax(out.logits[split].double(), dim=-1).gather(1, y[:, None]).squeeze(1)
        return p.numpy(), _forget_mask(y, out.forget)

    tr_p, tr_f = confidence("train")
    te_p, te_f = confidence("test")
    rng = np.random.default_rng(seed)
    members, non_members = tr_p[~tr_f.numpy()], te_p[~te_f.numpy()]
    n = min(len(members), len(non_members), PROBE_MAX_TRAIN // 2)
    members = members[_subsample(len(members), n, rng)]
    non_members = non_members[_subsample(len(non_members), n, rng)]
    x = np.concatenate([members, non_members])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(non_members))])
    forget_p = tr_p[tr_f.numpy()]
    with threadpool_limits(1):
        svc = SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)
        return float((svc.predict(forget_p[:, None]) == 0).mean()) if len(forget_p) else float("nan")


_PROBE_CACHE: list[tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]] = []  # (train, test, seed, preds)


def probe_predictions(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Fit a standardised logistic regression on train (N, D) with labels (N,) -> test predictions (M,).

    Methods that leave the latents alone pass the same tensors for every forget class; the probe does not
    depend on the forget set, so it is fitted once per (train, test) pair (kept while those tensors live).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    for tr, te, sd, preds in _PROBE_CACHE:
        if tr is train and te is test and sd == seed:
            return preds
    rng = np.random.default_rng(seed)
    keep = _subsample(train.shape[0], PROBE_MAX_TRAIN, rng)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0, random_state=seed))
    with threadpool_limits(1):  # multi-threaded BLAS on small matrices was 27x slower on a busy 2-core CPU
        probe.fit(train.double().numpy()[keep], train_y.numpy()[keep])
        preds = torch.as_tensor(probe.predict(test.double().numpy()))
    _PROBE_CACHE.append((train, test, seed, preds))
    del _PROBE_CACHE[:-4]
    return preds


def probe_recovery(train: torch.Tensor, train_y: torch.Tensor, test: torch.Tensor, test_y: torch.Tensor,
                   forget: Sequence[int], seed: int = 0) -> tuple[float, float]:
    """Linear probe on (N, D) train latents -> (accuracy on forget classes, on retain classes) of test.

    A method whose encoder diverged (NaN/inf latents, e.g. NegGrad on a tiny model) gets NaN: nothing to probe.
    """
    if not (torch.isfinite(train).all() and torch.isfinite(test).all()):
        return float("nan"), float("nan")
    pred = probe_predictions(train, train_y, test, seed)
    is_f = _forget_mask(test_y, forget)
    correct = (pred == test_y).double()
    f = float(correct[is_f].mean()) if is_f.any() else float("nan")
    r = float(correct[~is_f].mean()) if (~is_f).any() else float("nan")
    return f, r


def calibration_check(out: MethodOutput, ctx: UnlearnContext, max_candidates: int = 200) -> tuple[float, float, float]:
    """Best constant b added to the forgotten classes' logits, chosen on val for overall accuracy.

    Returns (b, test ACC_f, test ACC_r) after the shift. b = 0 means no shift helps.
    """
    val_logits, val_y = out.logits["val"].double(), ctx.labels("val")
    forget = list(out.forget)
    is_f = _forget_mask(val_y, forget)
    others = val_logits.clone()
    others[:, forget] = float("-inf")
    gap = others.max(1).values - val_logits[:, forget].max(1).values  # shift that flips a sample to forget
    cands = torch.unique(gap[is_f & torch.isfinite(gap)] + 1e-6)
    if cands.numel() > max_candidates:
        cands = torch.quantile(cands, torch.linspace(0, 1, max_candidates, dtype=cands.dtype))
    best_b, best_acc = 0.0, _shifted_accuracy(val_logits, val_y, forget, 0.0)
    for b in cands.clamp(min=0).tolist():
        acc = _shifted_accuracy(val_logits, val_y, forget, b)
        if acc > best_acc + 1e-12:
            best_b, best_acc = b, acc
    test = out.logits["test"].double().clone()
    test[:, forget] += best_b
    s = score(test.argmax(1), ctx.labels("test"), ctx.num_classes)
    acc_f, acc_r = forget_retain(s, forget)
    return best_b, acc_f, acc_r


def _shifted_accuracy(logits: torch.Tensor, y: torch.Tensor, forget: list[int], b: float) -> float:
    shifted = logits.clone()
    shifted[:, forget] += b
    return float((shifted.argmax(1) == y).double().mean())


def audit(ctx: UnlearnContext, out: MethodOutput, seed: int = 0, probe: bool = True) -> Audit:
    """Compute every metric of ``out``. ``probe=False`` skips the (slower) linear probes."""
    acc_f, acc_r = split_accuracy(out, ctx, "test")
    tr_f, tr_r = split_accuracy(out, ctx, "train")
    nan = float("nan")
    probe_f = probe_r = pre_f = nan
    if probe:
        y_tr, y_te = ctx.labels("train"), ctx.labels("test")
        probe_f, probe_r = probe_recovery(out.latents["train"], y_tr, out.latents["test"], y_te,
                                          out.forget, seed)
        if out.pre_block_latents is not None:
            pre = out.pre_block_latents
            pre_f, _ = probe_recovery(pre["train"], y_tr, pre["test"], y_te, out.forget, seed)
    info = dict(out.info)
    diverged = not all(torch.isfinite(t).all() for d in (out.logits, out.latents) for t in d.values())
    if diverged:  # e.g. NegGrad blowing up the encoder: report it instead of crashing the whole report
        info["note"] = "diverged: the edited model outputs NaN/inf; MIA and calibration not computed"
        b = cal_f = cal_r = mia = nan
    else:
        b, cal_f, cal_r = calibration_check(out, ctx)
        mia = mia_efficacy(out, ctx, seed)
    return Audit(out.method, out.forget, acc_f, acc_r, 1.0 - tr_f, tr_r, acc_r, mia,
                 probe_f, probe_r, cal_f, cal_r, b, out.seconds, out.trainable_params, out.encoder_changed,
                 pre_f, info)


METRICS = ("acc_f", "acc_r", "ua", "ra", "ta", "mia", "probe_f", "probe_r", "calib_acc_f", "calib_acc_r",
           "pre_block_probe_f", "seconds", "trainable_params")


def summarize(audits: Sequence[Audit]) -> dict[str, dict[str, float]]:
    """Mean and (population) std of every metric over the forget sets -> {metric: {mean, std}}."""
    out: dict[str, dict[str, float]] = {}
    for m in METRICS:
        vals = np.array([float(getattr(a, m)) for a in audits], dtype=float)
        vals = vals[~np.isnan(vals)]
        out[m] = {"mean": float(vals.mean()) if vals.size else math.nan,
                  "std": float(vals.std()) if vals.size else math.nan}
    return out
