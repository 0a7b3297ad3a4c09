"""Representative references: which k images per class make good class vectors?

The class vector of class c from references R_c is ``mean f_ft(R_c) - mean f_pre(R_c)`` (the paper's
definition restricted to R_c), its gate centroid ``mean f_ft(R_c)`` and its gate threshold the core's
``auto_gamma`` on the references' own fine-tuned latents. Rules (:data:`SELECTION_RULES`), all on the
fine-tuned train latents of class c:

* ``random``: k images drawn at random (seeded);
* ``kmeans_medoids``: scikit-learn k-means with k clusters, the image nearest each centre;
* ``support_points``: support points (Mak & Joseph 2018, Ann. Statist.) — the k points minimising the
  energy distance to the class's latents, by their convex-concave iteration — each snapped to its
  nearest distinct image (references must be real images).

``reference_study`` forgets every class in turn with steering built from each rule's references, the
forget strength chosen on val as ``cv_steer`` chooses it, and reports ACC_f / ACC_r on test for each k.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from ..math.metrics import forget_retain, score
from ..math.steering import auto_gamma, steer_rows
from ..registry import Registry
from ..results import ClassVectors, FeatureSet
from .base import UnlearnContext
from .latent import forget_edit

REFERENCE_KS = (1, 2, 5, 10, 30, None)  # None = every train image of the class
Selector = Callable[[torch.Tensor, int, int], torch.Tensor]  # (n, D) latents, k, seed -> (k,) indices
SELECTION_RULES: Registry[Selector] = Registry("reference selection rule")


def _random(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    return torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:k].sort().values


def _snap(points: np.ndarray, x: np.ndarray) -> torch.Tensor:
    """Each point -> its nearest not yet taken row of x (greedy, in order)."""
    taken: list[int] = []
    d = ((points[:, None, :] - x[None]) ** 2).sum(-1)
    for row in d:
        row = row.copy()
        row[taken] = np.inf
        taken.append(int(row.argmin()))
    return torch.as_tensor(sorted(taken))


def _kmeans_medoids(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    from threadpoolctl import threadpool_limits

    xn = x.double().numpy()
    with threadpool_limits(1):  # small problems: BLAS threads cost more than they save on a shared CPU
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(xn)
    return _snap(km.cluster_centers_, xn)


def support_points(x: np.ndarray, k: int, seed: int = 0, iters: int = 200, tol: float = 1e-7) -> np.ndarray:
    """k support points of the sample x (N, D): the convex-concave procedure of Mak & Joseph (2018),
    x_i <- (sum_m 1/|x_i - y_m|)^-1 [ (N/k) sum_{j!=i} (x_i - x_j)/|x_i - x_j| + sum_m y_m/|x_i - y_m| ]."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    pts = x[rng.choice(n, size=k, replace=False)] + 1e-6 * rng.standard_normal((k, x.shape[1]))
    for _ in range(iters):
        dy = np.sqrt(((pts[:, None] - x[None]) ** 2).sum(-1)).clip(1e-12)          # (k, N)
        dx = pts[:, None] - pts[None]                                               # (k, k, D)
        nx = np.sqrt((dx ** 2).sum(-1))
        np.fill_diagonal(nx, np.inf)
        repel = (n / k) * (dx / nx[..., None]).sum(1)                               # (k, D)
        new = (repel + (x[None] / dy[..., None]).sum(1)) / (1.0 / dy).sum(1, keepdims=True)
        moved = np.abs(new - pts).max()
        pts = new
        if moved < tol:
            break
    return pts


def energy_distance(points: np.ndarray, x: np.ndarray) -> float:
    """Energy distance 2E|P-X| - E|P-P'| - E|X-X'| between the point set and the sample (0 = same law)."""
    def mean_dist(a, b):
        return float(np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)).mean())
    return 2 * mean_dist(points, x) - mean_dist(points, points) - mean_dist(x, x)


def _support_points(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    xn = x.double().numpy()
    return _snap(support_points(xn, k, seed), xn)


SELECTION_RULES.register("random", _random)
SELECTION_RULES.register("kmeans_medoids", _kmeans_medoids)
SELECTION_RULES.register("support_points", _support_points)


def select_references(ctx: UnlearnContext, rule: str, k: int | None, seed: int = 0) -> dict[int, torch.Tensor]:
    """class -> indices into the train split of its k references (all of the class for k = None)."""
    select = SELECTION_RULES.get(rule)
    y, ft = ctx.labels("train"), ctx.ft["train"].features
    out = {}
    for c in range(ctx.num_classes):
        idx = torch.nonzero(y == c).flatten()
        if k is None or k >= idx.numel():
            out[c] = idx
            continue
        if k < 1:
            raise InvalidInputError(f"k must be at least 1 reference per class, got {k}")
        out[c] = idx[select(ft[idx], k, seed + 7919 * c)]
    return out


def class_vectors_from(ctx: UnlearnContext, refs: dict[int, torch.Tensor]) -> tuple[ClassVectors, torch.Tensor]:
    """ClassVectors and (C,) gate thresholds from the references only."""
    pre, ft = ctx.pre["train"].features, ctx.ft["train"].features
    order = range(ctx.num_classes)
    mu_pre = torch.stack([pre[refs[c]].mean(0) for c in order])
    mu_ft = torch.stack([ft[refs[c]].mean(0) for c in order])
    counts = torch.as_tensor([refs[c].numel() for c in order])
    cv = ClassVectors(mu_ft - mu_pre, mu_pre, mu_ft, ctx.class_names, counts)
    idx = torch.cat([refs[c] for c in order])
    ref_set = FeatureSet(ft[idx], ctx.labels("train")[idx], ctx.class_names)
    return cv, auto_gamma(cv, ref_set)


class _Split:
    """One split's fine-tuned latents, their unit vectors and unedited predictions, computed once: a forget
    edit changes only its gated rows (``steer_rows``), so each candidate edit re-scores those rows alone."""

    def __init__(self, ctx: UnlearnContext, split: str):
        self.ctx, self.x, self.y = ctx, ctx.ft[split].features, ctx.labels(split)
        self.unit = torch.nn.functional.normalize(self.x, dim=-1)
        self.base = ctx.head.predict(self.x)

    def accuracies(self, edit, cls: int) -> tuple[float, float]:
        rows, z = steer_rows(self.x, edit, self.base, self.unit)
        pred = self.base.clone()
        pred[rows] = self.ctx.head.predict(z)
        return forget_retain(score(pred, self.y, self.ctx.num_classes), [cls])


def forget_with(ctx: UnlearnContext, cv: ClassVectors, gamma: torch.Tensor, cls: int,
                splits: dict | None = None) -> tuple[float, float, float]:
    """Steering with these class vectors forgets ``cls`` -> (test ACC_f, test ACC_r, lambda), lambda the
    forget strength chosen on val as ``cv_steer`` chooses it (:func:`strength.choose_forget_strength`)."""
    from dataclasses import replace

    from .strength import choose_forget_strength

    test = (splits or {}).get("test") or _Split(ctx, "test")
    lam = choose_forget_strength(ctx.head, ctx.ft["val"], cv, cls, gamma).lam
    f, r = test.accuracies(forget_edit(replace(ctx, class_vectors=cv), [cls], lam, gamma), cls)
    return f, r, float(lam)


def reference_study(ctx: UnlearnContext, ks: Sequence[int | None] = REFERENCE_KS,
                    rules: Sequence[str] | None = None, seed: int = 0) -> list[dict]:
    """One row per (rule, k): mean / std over forgetting each class in turn of ACC_f and ACC_r."""
    rows = []
    splits = {"test": _Split(ctx, "test")}
    for rule in rules or SELECTION_RULES.list():
        for k in ks:
            if k is None and rule != (rules or SELECTION_RULES.list())[0]:
                continue  # "all" is the same set for every rule
            cv, gamma = class_vectors_from(ctx, select_references(ctx, rule, k, seed))
            res = np.array([forget_with(ctx, cv, gamma, c, splits) for c in range(ctx.num_classes)])
            rows.append({"rule": "all" if k is None else rule, "k": "all" if k is None else int(k),
                         "acc_f": float(res[:, 0].mean()), "acc_f_std": float(res[:, 0].std()),
                         "acc_r": float(res[:, 1].mean()), "acc_r_std": float(res[:, 1].std()),
                         "lambda_mean": float(res[:, 2].mean())})
    return rows
