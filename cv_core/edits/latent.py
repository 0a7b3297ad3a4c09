"""Latent-space methods: they leave the image encoder untouched and work on cached latents.

Registered: ``pretrained``, ``finetuned``, ``cv_steer`` (Class-Vector steering, Algorithm 1 with
the cosine gate), ``random_vector`` (same gate and norm as the steering edit, random direction),
``cmf`` (class-mean-features classifier without the forgotten rows) and ``classifier_ft``
(a linear head fine-tuned on frozen latents). Because the encoder is untouched, a linear probe on
f(x) recovers every "forgotten" class of these methods by construction.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidInputError
from ..math.metrics import forget_retain, score
from ..math.steering import SteeringEdit, auto_gamma, steer
from .base import SPLITS, MethodOutput, UnlearnContext, output, register_method

#: Candidate steering strengths; lambda is chosen on the validation split, never on test.
LAMBDA_GRID = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
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
    """(C,) gate thresholds from the core's ``auto_gamma`` on the train latents: 'auto' = halfway between
    a class's own latents and the closest other class; 'own' = 99% of each class's own train latents inside
    its gate; or one cosine in [-1, 1]."""
    if gamma is None or gamma == "auto":
        return auto_gamma(ctx.class_vectors, ctx.ft["train"])
    if gamma == "own":
        return auto_gamma(ctx.class_vectors, ctx.ft["train"], margin=False)
    g = _finite(gamma, "gate gamma")
    if not -1.0 <= g <= 1.0:
        raise InvalidInputError(f"gate gamma must be a cosine in [-1, 1], 'auto' or 'own', got {gamma!r}")
    return torch.full((ctx.num_classes,), g)


def forget_edit(ctx: UnlearnContext, forget: Sequence[int], lam: float, gamma: torch.Tensor,
                directions: torch.Tensor | None = None) -> SteeringEdit:
    """Gated edit z_c = -lam * kappa_c for each forgotten class c (or -lam * directions[i]).

    directions: optional (K, D) replacement vectors (the random-vector baseline).
    """
    lam = _finite(lam, "steering strength lambda")
    idx = torch.as_tensor(list(forget), dtype=torch.long)
    vecs = ctx.class_vectors.kappa[idx] if directions is None else directions
    return SteeringEdit(-lam * vecs, ctx.class_vectors.mu_ft[idx], gamma[idx])


def _finite(value, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise InvalidInputError(f"{what} must be a finite number, got {value!r}")
    return v


def choose_lambda(ctx: UnlearnContext, forget: Sequence[int], gamma: torch.Tensor,
                  grid: Sequence[float] = LAMBDA_GRID) -> float:
    """The lambda of ``grid`` maximising val (ACC_r - ACC_f); ties go to the smallest lambda."""
    val = ctx.ft["val"]
    best, best_gain = float(grid[0]), -float("inf")
    for lam in sorted(grid):
        z = steer(val.features, forget_edit(ctx, forget, lam, gamma))
        s = score(ctx.head.predict(z), val.labels, ctx.num_classes)
        acc_f, acc_r = forget_retain(s.per_class, forget)
        gain = acc_r - acc_f
        if gain > best_gain + 1e-9:
            best, best_gain = float(lam), gain
    return best


def _steering_setup(ctx: UnlearnContext, forget, options) -> tuple[float, torch.Tensor]:
    gamma = gate_thresholds(ctx, options.get("gamma", "auto"))
    lam = options.get("lam", "auto")
    lam = choose_lambda(ctx, forget, gamma) if lam == "auto" else _finite(lam, "steering strength lambda")
    return lam, gamma


def _steered_output(ctx, edit: SteeringEdit, lam: float, note: str) -> MethodOutput:
    latents = {s: steer(ctx.ft[s].features, edit) for s in SPLITS}
    return output(ctx, latents, info={"lambda": lam, "probe_note": note})


@register_method("cv_steer", "Class-Vector steering r' = r - lambda*kappa_c behind the cosine gate "
                             "(Algorithm 1; training-free, encoder untouched)")
def cv_steer(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    lam, gamma = _steering_setup(ctx, forget, options)
    edit = forget_edit(ctx, forget, lam, gamma)
    return _steered_output(ctx, edit, lam, "encoder untouched: a probe on f(x) recovers the class "
                                           "by construction")


@register_method("random_vector", "steering by a random direction with the norm of lambda*kappa_c, "
                                  "same gate and lambda as cv_steer (control)")
def random_vector(ctx: UnlearnContext, forget, seed, options) -> MethodOutput:
    lam, gamma = _steering_setup(ctx, forget, options)
    kappa = ctx.class_vectors.kappa[list(forget)]
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(kappa.shape, generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True) * kappa.norm(dim=1, keepdim=True)
    edit = forget_edit(ctx, forget, lam, gamma, directions=rand)
    return _steered_output(ctx, edit, lam, "encoder untouched")


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

