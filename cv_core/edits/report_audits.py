"""The report's audits beyond the per-method table: relearning, layer-wise CKA, representative references
and the int8 deployment check (see the modules of the same names).

Relearning and CKA need each edited image tower while it exists; :class:`EncoderAudits` is handed every
method output as the report produces it, runs those audits on the methods that change the encoder
(the registry's ``encoder_changed``; the others are answered by construction) and keeps only what later
audits need: the retrained towers (the CKA reference, run first) and the weight-mapping outputs (the
int8 check).
"""
from __future__ import annotations

from .base import UNLEARNING_METHODS, MethodOutput, UnlearnContext
from .cka import cka_audit
from .encoder_ops import visual_copy
from .relearn import BY_CONSTRUCTION, relearn

AUDITS = ("relearning", "cka", "references", "quantized")
QUANTIZED_EDITS = ("cv_weight_map",)  # weight edits checked on int8; steering is checked for every class


class EncoderAudits:
    """Collects relearning and CKA results per method: {method: [{forget, ...}, ...]}."""

    def __init__(self, ctx: UnlearnContext, audits, seed: int = 0, relearn_steps=(0, 10, 50), shots: int = 5):
        self.ctx, self.audits, self.seed = ctx, set(audits), seed
        self.steps, self.shots = tuple(relearn_steps), shots
        self.relearning: dict[str, list | dict] = {}
        self.cka: dict[str, list] = {}
        self.retrained: dict[tuple[int, ...], object] = {}
        self.weight_maps: list[MethodOutput] = []
        self._original = None

    def observe(self, out: MethodOutput) -> None:
        changed = UNLEARNING_METHODS.get(out.method).encoder_changed and out.visual is not None
        if out.method == "retrain" and out.visual is not None:
            self.retrained[out.forget] = out.visual
        if out.method in QUANTIZED_EDITS and "quantized" in self.audits:
            self.weight_maps.append(out)
        if not changed:
            if "relearning" in self.audits and out.method not in ("pretrained", "finetuned"):
                self.relearning[out.method] = {"by_construction": BY_CONSTRUCTION}
            return
        if "relearning" in self.audits:
            rows = relearn(self.ctx, out.visual, out.forget, self.steps, self.shots, seed=self.seed)
            self.relearning.setdefault(out.method, []).append({"classes": list(out.forget), **rows})
        if "cka" in self.audits:
            refs = {"original": self.original()}
            if out.method != "retrain" and out.forget in self.retrained:
                refs["retrained"] = self.retrained[out.forget]
            self.cka.setdefault(out.method, []).append({"classes": list(out.forget),
                                                        **cka_audit(self.ctx, out, refs, self.seed)})

    def original(self):
        if self._original is None:
            self._original = visual_copy(self.ctx)
        return self._original

    def results(self) -> dict:
        out = {}
        if "relearning" in self.audits:
            from .relearn import DEFAULT_LR
            out["relearning"] = {"steps": list(self.steps), "shots": self.shots, "lr": DEFAULT_LR,
                                 "methods": self.relearning}
        if "cka" in self.audits:
            out["cka"] = self.cka
        return out


def run_other_audits(ctx: UnlearnContext, audits, collector: EncoderAudits | None, seed: int,
                     steer_options: dict | None = None, steer_classes=None, reference_ks=None) -> dict:
    """Representative references (latents only) and the int8 check (needs the encoder; steering checked for
    ``steer_classes``, default every class)."""
    out: dict = {}
    if "references" in audits:
        from .references import REFERENCE_KS, reference_study
        out["references"] = {"rows": reference_study(ctx, reference_ks or REFERENCE_KS, seed=seed)}
    if "quantized" in audits:
        if ctx.encoder is None:
            out["quantized"] = {"skipped": "no encoder method was requested, so the model and images were not loaded"}
        else:
            from .quantized import quantized_check
            maps = collector.weight_maps if collector is not None else []
            classes = range(ctx.num_classes) if steer_classes is None else steer_classes
            out["quantized"] = quantized_check(ctx, classes, maps, steer_options)
    return out


def job_order(jobs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Retraining first, so every later method's CKA can compare with the retrained tower."""
    return sorted(jobs, key=lambda j: j[0] != "retrain")


def run_audits(ctx: UnlearnContext, methods, forget, audits=AUDITS, seed: int = 0, on_method=None,
               reference_ks=None) -> dict:
    """The audits for one forget set (what the app's Unlearning page shows): each method forgets ``forget``,
    relearning and CKA run on the encoder-changing ones (CKA against ``retrain`` when it is among
    ``methods``), then the reference study and the int8 check of steering and weight mapping on ``forget``.
    on_method(name): called before each method."""
    from .base import check_forget, run_method

    forget = check_forget(ctx.class_names, forget)
    unknown = sorted(set(audits) - set(AUDITS))
    if unknown:
        from ..errors import InvalidInputError
        raise InvalidInputError(f"unknown audit(s) {unknown}; available: {', '.join(AUDITS)}")
    collector = EncoderAudits(ctx, audits, seed)
    needs_outputs = {"relearning", "cka", "quantized"} & set(audits)
    for name in job_order([(m, 0) for m in methods]) if needs_outputs else []:
        name = name[0]
        if UNLEARNING_METHODS.get(name).needs_encoder and ctx.encoder is None:
            continue
        if on_method is not None:
            on_method(name)
        collector.observe(run_method(name, ctx, list(forget), seed=seed))
    out = collector.results()
    out.update(run_other_audits(ctx, audits, collector, seed, steer_classes=forget, reference_ks=reference_ks))
    return out
