"""Latent steering (the paper's Algorithm 1), vectorised.

An edit is K gated terms: r' = r + sum_k beta_k(r) z_k. The paper's gate is
beta_k(r) = 1[cos(r, g_k) > gamma_k], g_k the fine-tuned centroid of the class c_k the term is meant for.
Ours adds the model's own reading of the image: a term for class c_k also applies where the unedited
model predicts c_k,

    beta_k(r) = 1[cos(r, g_k) > gamma_k  or  argmax_j r . w_j = c_k]   (w: the zero-shot head).

Why (measured on the built-in model, ``digits``; docs/methods.md): a cosine gate alone misses images of the
class that the model does recognise (class 4's halfway gate covers 91% of its test images, so no strength
forgets the other 9%), and widening it to reach them edits other classes' images. With the prediction
term, forgetting class 4 at the val-chosen strength leaves 0% of its test images instead of 7.4%. An image
another class's gate would not reach is edited only if the model already calls it c_k, i.e. it is already
counted as an error of c_k: retain accuracy cannot fall through the prediction term.
Terms without a gate class (``shift_removal``'s environment centroids) keep the cosine gate alone.
Without gates every term applies to every latent.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError
from ..results import ClassVectors, FeatureSet, check_coefficient, check_finite, class_index


@dataclass(frozen=True)
class SteeringEdit:
    """vectors: (K, D) edit terms z_k; gate_centroids: (K, D) or None; gamma: (K,) thresholds.

    gate_classes: optional (K,) class index of each term's gate centroid (row of ``ClassVectors.mu_ft``).
    A term with a gate class also applies to every latent the unedited model predicts as that class (the
    module docstring), so applying such an edit needs the unedited predictions; the class also lets
    ``gate_mask`` read the cosines from precomputed ``centroid_cosines``.
    """

    vectors: torch.Tensor
    gate_centroids: torch.Tensor | None = None
    gamma: torch.Tensor | None = None
    gate_classes: torch.Tensor | None = None

    def __post_init__(self):
        if self.vectors.ndim != 2:
            raise InvalidInputError(f"edit vectors must be (K, D), got {tuple(self.vectors.shape)}")
        check_finite(self.vectors, "edit vectors")
        if self.gate_centroids is not None:
            if self.gate_centroids.shape != self.vectors.shape:
                raise InvalidInputError("gate centroids must have the shape of the edit vectors "
                                        f"{tuple(self.vectors.shape)}, got {tuple(self.gate_centroids.shape)}")
            if self.gamma is None or self.gamma.shape != (self.vectors.shape[0],):
                raise InvalidInputError("a gated edit needs one threshold gamma per term")
        if self.gate_classes is not None and (self.gate_centroids is None
                                              or self.gate_classes.shape != (self.vectors.shape[0],)):
            raise InvalidInputError("gate_classes needs gate centroids and one class index per term")

    @property
    def is_empty(self) -> bool:
        return self.vectors.shape[0] == 0


def steer(latents: torch.Tensor, edit: SteeringEdit, predictions: torch.Tensor | None = None,
          unit_latents: torch.Tensor | None = None, centroid_cosines: torch.Tensor | None = None) -> torch.Tensor:
    """latents (N, D) -> edited latents (N, D).

    predictions: (N,) the unedited model's predictions of these latents (``ZeroShotHead.predict``); needed
    when a term has a gate class (the gate's prediction term, module docstring);
    unit_latents: optional precomputed normalize(latents) (N, D), to save a pass in live loops;
    centroid_cosines: optional precomputed ``centroid_cosines(latents, cv)`` (N, C), see ``gate_mask``.
    """
    if edit.is_empty:
        return latents
    z = edit.vectors.to(latents.device, latents.dtype)
    if edit.gate_centroids is None:
        return latents + z.sum(0)
    return latents + gate_mask(latents, edit, predictions, unit_latents, centroid_cosines) @ z


def steer_with(head, latents: torch.Tensor, edit: SteeringEdit) -> torch.Tensor:
    """``steer`` with the unedited predictions read from ``head`` (a ``ZeroShotHead``)."""
    return steer(latents, edit, head.predict(latents) if edit.gate_classes is not None else None)


def steer_rows(latents: torch.Tensor, edit: SteeringEdit, predictions: torch.Tensor | None = None,
               unit_latents: torch.Tensor | None = None,
               centroid_cosines: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Only the latents an edit changes: (rows (M,) int64, their edited latents (M, D)).

    Equal to ``steer(latents, edit)[rows]``, with every other row unchanged, but it touches only the
    M gated rows after the gate: the live loop's path (M is one class's share of N for a forget edit).
    """
    n = latents.shape[0]
    if edit.is_empty:
        return torch.zeros(0, dtype=torch.long, device=latents.device), latents[:0]
    z = edit.vectors.to(latents.device, latents.dtype)
    if edit.gate_centroids is None:
        return torch.arange(n, device=latents.device), latents + z.sum(0)
    mask = gate_mask(latents, edit, predictions, unit_latents, centroid_cosines)          # (N, K)
    rows = torch.nonzero(mask.any(1)).flatten()
    return rows, latents[rows] + mask[rows] @ z


def centroid_cosines(latents: torch.Tensor, cv: ClassVectors) -> torch.Tensor:
    """(N, C) cosines of latents (N, D) with every fine-tuned class centroid: the only thing a gate
    needs from the latents. Computed once per set of cached latents, it makes every later gate an
    (N, K) lookup instead of a pass over (N, D)."""
    u = torch.nn.functional.normalize(latents.float(), dim=-1)
    return u @ torch.nn.functional.normalize(cv.mu_ft.to(u.device, u.dtype), dim=-1).T


def gate_mask(latents: torch.Tensor, edit: SteeringEdit, predictions: torch.Tensor | None = None,
              unit_latents: torch.Tensor | None = None,
              centroid_cosines: torch.Tensor | None = None) -> torch.Tensor:
    """(N, K) float mask: 1 where term k applies to latent n (the module docstring's gate).

    predictions: (N,) unedited predictions, required when the edit has gate classes;
    centroid_cosines: (N, C) from ``centroid_cosines`` for these latents; used when the edit knows its
    gate classes (edits built by ``edit_from_coefficients`` / ``move_edit`` do), same result.
    """
    if edit.gate_centroids is None:
        return torch.ones(latents.shape[0], edit.vectors.shape[0], dtype=latents.dtype, device=latents.device)
    gamma = edit.gamma.to(latents.device, latents.dtype)
    if centroid_cosines is not None and edit.gate_classes is not None:
        if centroid_cosines.shape[0] != latents.shape[0]:
            raise InvalidInputError(f"centroid cosines have {centroid_cosines.shape[0]} rows for "
                                    f"{latents.shape[0]} latents: compute them from these latents")
        inside = centroid_cosines[:, edit.gate_classes] > gamma
    else:
        u = unit_latents if unit_latents is not None else torch.nn.functional.normalize(latents, dim=-1)
        g = torch.nn.functional.normalize(edit.gate_centroids.to(latents.device, latents.dtype), dim=-1)
        inside = (u @ g.T) > gamma
    if edit.gate_classes is not None:
        if predictions is None:
            raise InvalidInputError("this edit's gate also covers the images the model predicts as the class: "
                                    "pass the unedited predictions (steer(..., predictions=head.predict(latents)))")
        if predictions.shape != (latents.shape[0],):
            raise InvalidInputError(f"expected {latents.shape[0]} unedited predictions, got {tuple(predictions.shape)}")
        inside = inside | (predictions.to(latents.device)[:, None] == edit.gate_classes.to(latents.device)[None])
    return inside.to(latents.dtype)


def auto_gamma(cv: ClassVectors, reference: FeatureSet, own_quantile: float = 0.01,
               margin: bool = True) -> torch.Tensor:
    """Per-class gate thresholds (C,): halfway between class c's own reference latents and the closest
    latent of any other class, gamma_c = (q_own(own_quantile) + max_other) / 2 of cos(r, mu_ft^c), raised to
    max_other where the classes overlap (q_own < max_other), so the cosine gate holds no other class's
    reference latent.

    reference: fine-tuned latents of labelled reference images (e.g. the train split).
    The paper does not state gamma. A threshold that only covers the class's own train latents misses
    10-25% of unseen test images of that class (their cosines sit lower than the fitted ones); the
    midpoint keeps the gate on for the class and off for the others. Where classes overlap the midpoint
    would open the gate to the other class's images (built-in model, class 8: an image of another class at
    cos 0.979 to mu_ft^8 put the midpoint at 0.81, and forgetting 8 cost retain accuracy before it cost 8);
    the class's own images above the raised threshold's reach are still edited when the model predicts
    them as the class (the gate's prediction term, module docstring).
    margin=False: the threshold covers only the class's own references, q_own(own_quantile).
    """
    return auto_gamma_from_blocks(cv, [(reference.features, reference.labels)], own_quantile, margin)


def auto_gamma_from_blocks(cv: ClassVectors, blocks: Iterable[tuple[torch.Tensor, torch.Tensor]],
                           own_quantile: float = 0.01, margin: bool = True) -> torch.Tensor:
    """``auto_gamma`` over (features (n, D), labels (n,)) blocks: keeps each row's own-class cosine (N,)
    and a running max of the other classes' (C,), never the (N, C) cosines or all the latents."""
    if not 0.0 <= own_quantile < 0.5:
        raise InvalidInputError(f"own_quantile must be in [0, 0.5), got {own_quantile}")
    mu = torch.nn.functional.normalize(cv.mu_ft, dim=-1)
    own, own_labels = [], []
    other_max = torch.full((cv.num_classes,), float("-inf"))
    for feats, labels in blocks:
        cos = torch.nn.functional.normalize(feats, dim=-1) @ mu.T  # (n, C)
        rows = torch.arange(len(labels))
        own.append(cos[rows, labels])
        own_labels.append(labels)
        cos[rows, labels] = float("-inf")
        if len(labels):
            other_max = torch.maximum(other_max, cos.max(dim=0).values)
    own, own_labels = torch.cat(own), torch.cat(own_labels)
    gammas = torch.zeros(cv.num_classes)
    for c in range(cv.num_classes):
        mine = own[own_labels == c]
        if margin and mine.numel() and other_max[c] > float("-inf"):
            gammas[c] = torch.maximum(0.5 * (torch.quantile(mine, own_quantile) + other_max[c]), other_max[c])
        elif mine.numel():
            gammas[c] = torch.quantile(mine, own_quantile) - 1e-4
    return gammas


def gamma_vector(gamma, num_classes: int) -> torch.Tensor | None:
    """A gate setting as (C,) float32 thresholds: None stays None (no gate), one cosine is repeated."""
    if gamma is None:
        return None
    g = torch.as_tensor(gamma, dtype=torch.float32).flatten()
    if g.numel() == 1:
        g = g.expand(num_classes).clone()
    if g.numel() != num_classes or not torch.isfinite(g).all() or (g.abs() > 1).any():
        raise InvalidInputError(f"gate gamma must be one cosine in [-1, 1] or one per class ({num_classes}), "
                                f"got {gamma!r}")
    return g


def edit_from_coefficients(cv: ClassVectors, coefs: Mapping[str | int, float] | Sequence[float] | torch.Tensor,
                           gamma: float | torch.Tensor | None = None) -> SteeringEdit:
    """The slider edit: term a_c * kappa_c for every non-zero a_c, gated on class c's fine-tuned centroid.

    gamma: None (no gate), one cosine threshold, or (C,) per-class thresholds (see ``auto_gamma``).
    """
    a = cv.coefficients(coefs)
    active = torch.nonzero(a).flatten()
    vectors = a[active, None] * cv.kappa[active]
    g = gamma_vector(gamma, cv.num_classes)
    if g is None:
        return SteeringEdit(vectors)
    return SteeringEdit(vectors, cv.mu_ft[active], g[active], active)


def move_edit(cv: ClassVectors, source: str | int, target: str | int, alpha: float,
              gamma: float | torch.Tensor | None = None) -> SteeringEdit:
    """Move class ``source`` towards ``target``: z = alpha (kappa_target - kappa_source), gated on the source."""
    s, t = class_index(cv.class_names, source), class_index(cv.class_names, target)
    if s == t:
        raise InvalidInputError(f"move {cv.class_names[s]}->{cv.class_names[t]}: a class cannot move onto itself; "
                                "give a different target")
    alpha = check_coefficient(alpha, f"alpha of move {cv.class_names[s]}->{cv.class_names[t]}")
    vec = (alpha * (cv.kappa[t] - cv.kappa[s]))[None]
    g = gamma_vector(gamma, cv.num_classes)
    if g is None:
        return SteeringEdit(vec)
    return SteeringEdit(vec, cv.mu_ft[s][None], g[s:s + 1], torch.tensor([s]))
