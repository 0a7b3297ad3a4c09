"""Latent-space methods: they leave the image encoder untouched and work on cached latents.

Registered: ``pretrained``, ``finetuned``, ``cv_steer`` (Class-Vector steering, Algorithm 1 with
the cosine gate plus the gate's prediction term, ``cv_core.math.steering``), ``random_vector`` (same gate and norm as the steering edit, random direction),
``cmf`` (class-mean-features classifier without the forgotten rows) and ``classifier_ft``
(a linear head fine-tuned on frozen latents). Because the encoder is untouched, a linear probe on
f(x) recovers every "forgotten" class of these methods by construction.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidInputError
from ..editspec import resolve_gate
from ..math.steering import SteeringEdit, steer_with
from .base import SPLITS, MethodOutput, UnlearnContext, output, register_method

_MASKED = -1.0e4  # logit of a removed class: finite, so softmax and calibration stay defined


def _latents(ctx: UnlearnContext, which: str) -> dict[str, torch.Tensor]:
    sets = ctx.pre if which == "pre" else ctx.ft
    return {s: sets[s].features for s in SPLITS}


@register_method("pretrained", "zero-shot head on the pretrained encoder (no edit)")
def pretrained(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    return output(ctx, _latents(ctx, "pre"))


@register_method("finetuned", "zero-shot head on the fine-tuned encoder (no edit)")
def finetuned(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    return output(ctx, _latents(ctx, "ft"))


def gate_thresholds(ctx: UnlearnContext, gamma) -> torch.Tensor:
    """(C,) gate thresholds of a method's ``gamma`` option by the one rule, ``cv_core.editspec.resolve_gate``
    ('auto', 'own' or one cosine in [-1, 1]; None means the default, 'auto'). These methods need a gate."""
    g = resolve_gate(ctx, "auto" if gamma is None else gamma)
    if g is None:
        raise InvalidInputError("this method steers behind a gate: give gamma 'auto', 'own' or a cosine in [-1, 1]")
    return g


def forget_edit(ctx: UnlearnContext, forget: Sequence[int], lam, gamma: torch.Tensor,
                directions: torch.Tensor | None = None) -> SteeringEdit:
    """Gated edit z_c = -lam_c * kappa_c for each forgotten class c (or -lam_c * directions[i]).

    lam: one strength for every class, or (K,) strengths in the order of ``forget``;
    directions: optional (K, D) replacement vectors (the random-vector baseline).
    """
    lams = _strengths(lam, len(forget))
    idx = torch.as_tensor(list(forget), dtype=torch.long)
    vecs = ctx.class_vectors.kappa[idx] if directions is None else directions
    return SteeringEdit(-lams[:, None] * vecs, ctx.class_vectors.mu_ft[idx], gamma[idx], idx)


def _strengths(lam, k: int) -> torch.Tensor:
    """One strength or K strengths -> (K,) float32, each checked finite."""
    if isinstance(lam, (int, float, str)) or (isinstance(lam, torch.Tensor) and lam.ndim == 0):
        return torch.full((k,), _finite(lam, "steering strength lambda"))
    vals = [_finite(v, "steering strength lambda") for v in lam]
    if len(vals) != k:
        raise InvalidInputError(f"expected {k} steering strengths (one per forgotten class), got {len(vals)}")
    return torch.tensor(vals)


def _finite(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise InvalidInputError(f"{what} must be a finite number, got {value!r}")
    return v


def _steering_setup(ctx: UnlearnContext, forget, options) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """-> ((K,) strengths in the order of ``forget``, (C,) gate thresholds, info for the output).

    options: ``gamma`` (gate, default 'auto'); ``lam``: 'auto' (default: each class's forget strength
    chosen on val by :func:`cv_core.edits.strength.choose_forget_strength`, the one definition) or a number;
    ``target`` (default 0.05): the val forget accuracy the automatic strength aims at; ``margin`` (default
    :data:`cv_core.edits.strength.MARGIN`): the factor on the smallest strength reaching it."""
    from .strength import MARGIN, TARGET, choose_forget_strength

    gamma = gate_thresholds(ctx, options.get("gamma", "auto"))
    lam = options.get("lam", "auto")
    if lam != "auto":
        lams = _strengths(lam, len(forget))
        return lams, gamma, {"lambda": _lambda_info(lams)}
    chosen = [choose_forget_strength(ctx.head, ctx.ft["val"], ctx.class_vectors, c, gamma,
                                     target=float(options.get("target", TARGET)),
                                     margin=float(options.get("margin", MARGIN))) for c in forget]
    lams = torch.tensor([s.lam for s in chosen])
    missed = [s.name for s in chosen if not s.reached]
    info = {"lambda": _lambda_info(lams), "lambda_source": "chosen on val (forget strength)",
            "target_reached": "yes" if not missed else "no for " + ", ".join(missed)}
    return lams, gamma, info


def _lambda_info(lams: torch.Tensor) -> float | str:
    """One strength as a number; several as 'a, b, ...' in the order of the forget set."""
    vals = [round(float(v), 4) for v in lams]
    return vals[0] if len(vals) == 1 else ", ".join(f"{v:g}" for v in vals)


def _steered_output(ctx, edit: SteeringEdit, info: dict, note: str) -> MethodOutput:
    latents = {s: steer_with(ctx.head, ctx.ft[s].features, edit) for s in SPLITS}
    return output(ctx, latents, info={**info, "probe_note": note})


@register_method("cv_steer", "Class-Vector steering r' = r - lambda*kappa_c behind the gate: cosine to the "
                             "class centroid, or predicted as the class (Algorithm 1 plus the prediction term; "
                             "training-free, encoder untouched)")
def cv_steer(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    lam, gamma, info = _steering_setup(ctx, forget, options)
    edit = forget_edit(ctx, forget, lam, gamma)
    return _steered_output(ctx, edit, info, "encoder untouched: a probe on f(x) recovers the class "
                                           "by construction")


@register_method("random_vector", "steering by a random direction with the norm of lambda*kappa_c, "
                                  "same gate and lambda as cv_steer (control)")
def random_vector(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    lam, gamma, info = _steering_setup(ctx, forget, options)
    kappa = ctx.class_vectors.kappa[list(forget)]
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(kappa.shape, generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True) * kappa.norm(dim=1, keepdim=True)
    edit = forget_edit(ctx, forget, lam, gamma, directions=rand)
    return _steered_output(ctx, edit, info, "encoder untouched")


def cmf_weights(ctx: UnlearnContext) -> torch.Tensor:
    """(C, D) unit rows: class means of the fine-tuned train latents (the CMF classifier)."""
    from ..math.class_vectors import class_means

    train = ctx.ft["train"]
    return torch.nn.functional.normalize(class_means(train.features, train.labels, ctx.num_classes), dim=-1)


@register_method("cmf", "class-mean-features classifier (rows = fine-tuned class means) with the "
                        "forgotten rows removed; encoder untouched")
def cmf(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    w = cmf_weights(ctx)
    mask = torch.zeros(ctx.num_classes, dtype=torch.bool)
    mask[list(forget)] = True

    def logits(f: torch.Tensor) -> torch.Tensor:
        out = ctx.head.logit_scale * torch.nn.functional.normalize(f, dim=-1) @ w.T
        return out.masked_fill(mask, _MASKED)

    return output(ctx, _latents(ctx, "ft"), head_logits=logits,
                  info={"probe_note": "encoder untouched: the class is only hidden by the head"})


@register_method("classifier_ft", "linear head (init = zero-shot head) fine-tuned on frozen latents: "
                                  "cross-entropy on retain, hinge pushing forget samples off their class")
def classifier_ft(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    steps, lr = int(options.get("steps", 200)), float(options.get("lr", 0.01))
    torch.manual_seed(seed)
    train = ctx.ft["train"]
    x = torch.nn.functional.normalize(train.features, dim=-1)
    y = train.labels
    is_f = torch.isin(y, torch.as_tensor(list(forget)))
    w = torch.nn.Parameter(ctx.head.weights.clone())  # (C, D), unit rows; logits keep the head's scale
    b = torch.nn.Parameter(torch.zeros(ctx.num_classes))
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        out = ctx.head.logit_scale * x @ w.T + b
        loss = torch.nn.functional.cross_entropy(out[~is_f], y[~is_f])
        if is_f.any():
            loss = loss + forget_hinge(out[is_f], y[is_f])
        loss.backward()
        opt.step()
    w, b = w.detach(), b.detach()

    def logits(f: torch.Tensor) -> torch.Tensor:
        return ctx.head.logit_scale * torch.nn.functional.normalize(f, dim=-1) @ w.T + b

    n_params = w.numel() + b.numel()
    return output(ctx, _latents(ctx, "ft"), head_logits=logits, trainable_params=n_params,
                  info={"probe_note": "encoder untouched: the class is only hidden by the head"})


def forget_hinge(logits: torch.Tensor, labels: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Mean of relu(logit_true - max_other + margin): zero once every sample is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(dim=1).values
    return torch.relu(true - other + margin).mean()

