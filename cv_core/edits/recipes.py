"""Class-vector arithmetic recipes: each returns a gated :class:`SteeringEdit` (apply it with ``steer``).

gamma: (C,) per-class gate thresholds (``auto_gamma``), one cosine, or None (no gate).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..errors import InvalidInputError
from ..math.steering import SteeringEdit, edit_from_coefficients, move_edit
from ..results import ClassVectors, FeatureSet, check_finite, class_index
from .latent import _finite


def _gammas(gamma, num_classes: int) -> torch.Tensor | None:
    if gamma is None:
        return None
    g = torch.as_tensor(gamma, dtype=torch.float32).flatten()
    return g.expand(num_classes).clone() if g.numel() == 1 else g


def forget(cv: ClassVectors, classes: Sequence[str | int], lam: float = 1.0, gamma=None) -> SteeringEdit:
    """z_c = -lam kappa_c for each class, each gated on its own fine-tuned centroid."""
    lam = _finite(lam, "forget strength lambda")
    return edit_from_coefficients(cv, {c: -lam for c in classes}, gamma)


def interpolate(cv: ClassVectors, source: str | int, target: str | int, alpha: float, gamma=None) -> SteeringEdit:
    """z = alpha (kappa_target - kappa_source) on source-class inputs (the paper: the prediction flips near alpha
    0.5; ``properties.interpolation`` measures where it flips on a run)."""
    return move_edit(cv, source, target, _finite(alpha, "interpolation alpha"), gamma)


def combine(cv: ClassVectors, coefs: Mapping[str | int, float], gamma=None) -> SteeringEdit:
    """The sum of several class vectors, each with its own coefficient (the app's sliders)."""
    return edit_from_coefficients(cv, coefs, gamma)


def sequential_shift(cv: ClassVectors, order: Sequence[str | int], alpha: float = 1.0, gamma=None) -> SteeringEdit:
    """Every class of ``order`` moves to the next one (cyclic): 0 -> 1 -> ... -> 9 -> 0.

    One gated term per class: z_i = alpha (kappa_{order[i+1]} - kappa_{order[i]}).
    """
    idx = [class_index(cv.class_names, c) for c in order]
    if len(idx) < 2 or len(set(idx)) != len(idx):
        raise InvalidInputError(f"a sequential shift needs at least two distinct classes, got {list(order)}")
    alpha = _finite(alpha, "shift alpha")
    src, dst = torch.tensor(idx), torch.tensor(idx[1:] + idx[:1])
    vectors = alpha * (cv.kappa[dst] - cv.kappa[src])
    g = _gammas(gamma, cv.num_classes)
    if g is None:
        return SteeringEdit(vectors)
    return SteeringEdit(vectors, cv.mu_ft[src], g[src], src)


def shifted_class_vector(pre: FeatureSet, ft: FeatureSet, cls: int) -> tuple[torch.Tensor, torch.Tensor]:
    """kappa_{env+c} and the gate centroid mu_ft^{env+c} from shifted images of class ``cls``.

    pre, ft: latents of the same shifted images under the pretrained / fine-tuned encoder. -> ((D,), (D,))
    """
    mask = ft.labels == cls
    if int(mask.sum()) < 1 or not torch.equal(pre.labels, ft.labels):
        raise InvalidInputError(f"need shifted images of class {cls} encoded by both encoders in the same order")
    mu_ft = ft.features[mask].mean(0)
    return mu_ft - pre.features[mask].mean(0), mu_ft


def shift_removal(cv: ClassVectors, shifted_pre: FeatureSet, shifted_ft: FeatureSet, lam: float,
                  gamma: float | str = "auto") -> SteeringEdit:
    """Environment / typography removal: z_c = lam (kappa_{env+c} - kappa_c) for every class c, gated on
    the fine-tuned centroid of the shifted class-c images (lam < 0 removes the shift).

    gamma: one cosine, or 'auto' = per class, the 1% quantile of its own shifted latents' cosines.
    """
    lam = _finite(lam, "removal strength lambda")
    vecs, cents = [], []
    for c in range(cv.num_classes):
        k_env, mu = shifted_class_vector(shifted_pre, shifted_ft, c)
        vecs.append(lam * (k_env - cv.kappa[c]))
        cents.append(mu)
    vectors, cents = check_finite(torch.stack(vecs), "shift-removal vectors"), torch.stack(cents)
    if gamma == "auto":
        cos = torch.nn.functional.normalize(shifted_ft.features, dim=-1) @ \
            torch.nn.functional.normalize(cents, dim=-1).T
        g = torch.stack([torch.quantile(cos[shifted_ft.labels == c, c], 0.01) - 1e-4
                         for c in range(cv.num_classes)])
    else:
        g = torch.full((cv.num_classes,), _finite(gamma, "gate gamma"))
    return SteeringEdit(vectors, cents, g)
