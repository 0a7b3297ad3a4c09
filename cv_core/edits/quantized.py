"""Quantized deployment check (after ClimbQ's warning that quantization hurts some classes more): do
steering and weight-mapping edits still forget, and still keep every other class, on an int8 encoder?

Schemes (:data:`QUANT_SCHEMES`), each a function of an image tower returning (quantized copy or None, note):

* ``dynamic_int8``: ``torch.ao.quantization.quantize_dynamic`` (int8 weights, activations quantized on
  the fly) on every ``nn.Linear`` the tower calls as a module. Dynamic quantization covers Linear layers
  only: a ViT's MLPs are quantized, but a ModifiedResNet (the built-in model) has none it calls — its
  attention pool reads ``q_proj.weight`` etc. as tensors for ``F.multi_head_attention_forward``, which a
  quantized Linear no longer has (``TypeError: expected Tensor ... but got method``) — so the scheme
  returns None with that note.
* ``weight_int8``: every Conv2d / Linear weight rounded to int8 per output channel (symmetric, scales
  from ``torch.ao.quantization.PerChannelMinMaxObserver``) and computed in float (simulated int8 weights,
  float activations): the part of int8 deployment that applies to any tower.

Steering edits are applied with the class vectors and gates of the float model to the int8 latents
(the deployment: vectors computed once, served on the int8 encoder).
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence

import torch

from ..math.metrics import forget_retain, score
from ..math.steering import steer
from ..registry import Registry
from .base import MethodOutput, UnlearnContext
from .encoder_ops import encode, visual_copy
from .latent import _steering_setup, forget_edit

Quantizer = Callable[[torch.nn.Module, torch.Tensor], tuple[torch.nn.Module | None, str]]
QUANT_SCHEMES: Registry[Quantizer] = Registry("quantization scheme")


def _called_linears(visual: torch.nn.Module, image: torch.Tensor) -> list[str]:
    called: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: called.append(n))
               for n, m in visual.named_modules() if type(m) is torch.nn.Linear]
    try:
        with torch.no_grad():
            visual.eval()(image)
    finally:
        for h in handles:
            h.remove()
    return sorted(set(called))


def dynamic_int8(visual: torch.nn.Module, image: torch.Tensor) -> tuple[torch.nn.Module | None, str]:
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    names = _called_linears(visual, image)
    total = sum(p.numel() for p in visual.parameters())
    if not names:
        return None, (f"no nn.Linear of this {type(visual).__name__} runs as a module (convolutions are not "
                      "covered by dynamic quantization; an attention pool that reads its projection weights "
                      "directly breaks once they are quantized), so dynamic int8 quantizes nothing here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; the API is the one the issue names
        q = quantize_dynamic(copy.deepcopy(visual).eval(), {n: default_dynamic_qconfig for n in names},
                             dtype=torch.qint8)
    share = sum(p.numel() for n, m in visual.named_modules() if n in names for p in m.parameters()) / total
    return q, f"{len(names)} Linear layers ({100 * share:.0f}% of the tower's parameters) in int8"


def weight_int8(visual: torch.nn.Module, image: torch.Tensor) -> tuple[torch.nn.Module | None, str]:
    from torch.ao.quantization import PerChannelMinMaxObserver

    q = copy.deepcopy(visual).eval()
    n_layers, n_params, total = 0, 0, sum(p.numel() for p in q.parameters())
    with torch.no_grad():
        for m in q.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                obs = PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
                obs(m.weight)
                s, zp = obs.calculate_qparams()
                m.weight.copy_(torch.fake_quantize_per_channel_affine(m.weight, s.float(), zp.int(), 0, -128, 127))
                n_layers, n_params = n_layers + 1, n_params + m.weight.numel()
    return q, f"{n_layers} Conv2d/Linear weights ({100 * n_params / total:.0f}% of the parameters) rounded to int8"


QUANT_SCHEMES.register("dynamic_int8", dynamic_int8)
QUANT_SCHEMES.register("weight_int8", weight_int8)


def _scores(ctx: UnlearnContext, latents: torch.Tensor, forget: Sequence[int]) -> dict:
    s = score(ctx.head.predict(latents), ctx.labels("test"), ctx.num_classes)
    f, r = forget_retain(s, forget)
    return {"acc_f": f, "acc_r": r, "per_class": s.per_class.tolist()}


def _row(ctx, edit: str, forget, before: dict, after: dict) -> dict:
    keep = [c for c in range(ctx.num_classes) if c not in forget]
    drops = [before["per_class"][c] - after["per_class"][c] for c in keep]
    worst = max(range(len(keep)), key=lambda i: drops[i])
    return {"edit": edit, "forget": list(forget), "float_acc_f": before["acc_f"], "float_acc_r": before["acc_r"],
            "int8_acc_f": after["acc_f"], "int8_acc_r": after["acc_r"], "worst_retained_class": keep[worst],
            "worst_retained_drop": drops[worst]}


def quantized_check(ctx: UnlearnContext, steer_classes: Sequence[int], weight_maps: Sequence[MethodOutput],
                    steer_options: dict | None = None, schemes: Sequence[str] | None = None) -> dict:
    """scheme -> {note, unedited: per-class float/int8, rows: one per edit and forgotten class} (or skipped)."""
    enc = ctx.encoder
    images, dev = enc.images["test"], enc.device
    out: dict = {}
    for name in schemes or QUANT_SCHEMES.list():
        q_ft, note = QUANT_SCHEMES.get(name)(visual_copy(ctx), images[:1].to(dev))
        if q_ft is None:
            out[name] = {"skipped": note}
            continue
        z_q = encode(q_ft, images, dev)
        base_f, base_q = _scores(ctx, ctx.ft["test"].features, []), _scores(ctx, z_q, [])
        rows = []
        x_f = ctx.ft["test"].features
        before_f, before_q = ctx.head.predict(x_f), ctx.head.predict(z_q)  # the gate's unedited predictions
        for c in steer_classes:
            lam, gamma, _ = _steering_setup(ctx, [c], dict(steer_options or {}))
            edit = forget_edit(ctx, [c], lam, gamma)
            rows.append(_row(ctx, "cv_steer", [c], _scores(ctx, steer(x_f, edit, before_f), [c]),
                             _scores(ctx, steer(z_q, edit, before_q), [c])))
        for wm in weight_maps:
            q_wm, _ = QUANT_SCHEMES.get(name)(wm.visual, images[:1].to(dev))
            rows.append(_row(ctx, wm.method, wm.forget, _scores(ctx, wm.latents["test"], wm.forget),
                             _scores(ctx, encode(q_wm, images, dev), wm.forget)))
        out[name] = {"note": note, "unedited_float": base_f["per_class"], "unedited_int8": base_q["per_class"],
                     "rows": rows}
    return out
