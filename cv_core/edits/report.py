"""The unlearning report: every method forgets each class in turn, every audit, the property studies.

``build_report(run_result, methods, out_dir, progress=None)`` writes ``out_dir/report.json`` and
``out_dir/report.md`` and returns the JSON dict. Latent methods forget every class in turn; methods
that retrain the encoder forget ``encoder_classes`` evenly spaced classes (a CPU budget; set it to
None for all), and the report says which classes each mean is over.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidInputError
from .latent import gate_thresholds
from ..progress import Progress, ProgressFn
from . import properties
from .audits import audit, summarize
from .base import UNLEARNING_METHODS, run_method
from .checks import figure_checks
from .context import context_from_run
from .explain import run_findings
from .strength import forget_strengths
from .report_audits import AUDITS, EncoderAudits, job_order, run_other_audits
from .report_md import render_markdown
from .shifted import shifted_sweeps, typography_summary

DEFAULT_METHODS = ("pretrained", "finetuned", "cv_steer", "random_vector", "cmf", "classifier_ft",
                   "cv_weight_map", "neggrad", "retain_ft", "random_labels", "task_vector", "forget_vector",
                   "retrain", "wf_net", "lrp_npp", "fucrt_latent", "fucrt_transform")
#: Above this many train images the report subsamples each split for encoder methods: preprocessed
#: 224 px images take 0.6 MB each and must fit in memory (1,500 -> 0.9 GB per split).
ENCODER_MAX_TRAIN = 1500


@dataclass(frozen=True)
class ReportConfig:
    """seed: every method and probe; encoder_classes: how many forget classes encoder methods run (None =
    all); probe: run the linear-probe audits; max_per_class: cap per split (None = automatic)."""

    seed: int = 0
    encoder_classes: int | None = 3
    probe: bool = True
    max_per_class: int | None = None
    trigger_pair: tuple[int, int] | None = (0, 1)
    trigger_patch_area: float = 0.08  # the patch trigger: the largest square within this share of the image
    method_options: dict = field(default_factory=dict)  # method name -> options, e.g. {"cv_weight_map": {...}}
    save_checkpoint: bool = False  # also write the weight-mapped model forgetting class 0 as a checkpoint
    audits: tuple[str, ...] = AUDITS  # relearning, cka (encoder-changing methods), references, quantized
    relearn_steps: tuple[int, ...] = (0, 10, 50)
    relearn_shots: int = 5

    def __post_init__(self):
        if not 0 < self.trigger_patch_area <= 1:
            raise InvalidInputError("trigger_patch_area is a share of the image in (0, 1], got "
                                    f"{self.trigger_patch_area}")
        if self.encoder_classes is not None and self.encoder_classes < 1:
            raise InvalidInputError(f"encoder_classes must be at least 1 or None, got {self.encoder_classes}")
        unknown = sorted(set(self.audits) - set(AUDITS))
        if unknown:
            raise InvalidInputError(f"unknown audit(s) {unknown}; available: {', '.join(AUDITS)}")


def _classes_for(num_classes: int, k: int | None) -> list[int]:
    if k is None or k >= num_classes:
        return list(range(num_classes))
    return sorted({round(i * (num_classes - 1) / max(1, k - 1)) for i in range(k)}) if k > 1 else [0]


def _emit(progress: ProgressFn, step: int, total: int, message: str) -> None:
    if progress is not None:
        progress(Progress("report", step, total, message))


def _warm_up() -> None:
    """Pay torch.optim's one-time lazy imports before any method is timed."""
    p = torch.nn.Parameter(torch.zeros(1))
    torch.optim.AdamW([p]).step()


def evaluate_methods(ctx, methods: list[str], config: ReportConfig, progress: ProgressFn = None,
                     collector: EncoderAudits | None = None) -> dict:
    """method -> {classes, per_class: [Audit dicts], summary}; ``collector`` sees every output (relearning,
    CKA) before it is dropped."""
    jobs = []
    for name in methods:
        m = UNLEARNING_METHODS.get(name)
        classes = _classes_for(ctx.num_classes, config.encoder_classes if m.needs_encoder else None)
        jobs += [(name, c) for c in classes]
    jobs = job_order(jobs)
    results: dict[str, dict] = {}
    for i, (name, c) in enumerate(jobs):
        _emit(progress, i, len(jobs), f"{name}: forgetting class {ctx.class_names[c]}")
        out = run_method(name, ctx, [c], seed=config.seed, options=config.method_options.get(name))
        a = audit(ctx, out, config.seed, probe=config.probe)
        if collector is not None:
            collector.observe(out)
        results.setdefault(name, {"classes": [], "per_class": []})
        results[name]["classes"].append(c)
        results[name]["per_class"].append(a)
    _emit(progress, len(jobs), len(jobs), "methods done")
    for entry in results.values():
        entry["summary"] = summarize(entry["per_class"])
        entry["per_class"] = [a.as_dict() for a in entry["per_class"]]
    return results


def property_studies(ctx) -> dict:
    cv, head, test = ctx.class_vectors, ctx.head, ctx.ft["test"]
    gamma = gate_thresholds(ctx, "auto")
    c = cv.num_classes
    pairs = [(i, (i + 1) % c) for i in range(c)]
    interp = [properties.interpolation(head, test, cv, s, t, gamma) for s, t in pairs]
    switches = [r["switch_alpha"] for r in interp if r["switch_alpha"] is not None]
    strengths = forget_strengths(head, ctx.ft["val"], cv, gamma, False)
    findings = run_findings(head, ctx.pre["test"], test, cv, gamma, strengths, interp, focus=0)
    return {
        "forget_strengths": [s.as_dict() for s in strengths],
        "findings": {k: f.as_dict() for k, f in findings.items()},
        "gate_gamma": gamma.tolist(),
        "independence": properties.independence(cv),
        "scaling": properties.scaling_sweep(head, test, cv, gamma),
        "addition": properties.addition(head, test, cv, [list(p) for p in pairs], 1.0, gamma),
        "addition_strong": properties.addition(head, test, cv, [list(p) for p in pairs], 2.0, gamma),
        "interpolation": interp,
        "interpolation_switch_mean": sum(switches) / len(switches) if switches else None,
        "interpolation_no_switch": len(interp) - len(switches),
        "sequential_shift": properties.sequential_shift(head, test, cv, None, 1.0, gamma),
    }


def trigger_study(ctx, config: ReportConfig) -> dict:
    """Patch and perturbation triggers for one (source, target) pair; skipped without the encoder."""
    if config.trigger_pair is None:
        return {"skipped": "no trigger pair configured"}
    if ctx.encoder is None:
        return {"skipped": "no encoder method was requested, so the model and images were not loaded"}
    from .trigger import optimize_trigger

    s, t = config.trigger_pair
    _, _, h, w = ctx.encoder.images["train"].shape
    side = max(1, int((config.trigger_patch_area * h * w) ** 0.5))
    out = {}
    for kind in ("patch", "perturbation"):
        r = optimize_trigger(ctx, s, t, kind, config.seed, **({"size": side} if kind == "patch" else {}))
        out[kind] = {k: v for k, v in asdict(r).items() if k not in ("trigger", "mask")}
    out["patch"].update(size_px=side, area_share=round(side * side / (h * w), 4))
    return out


def _finetune_summary(run_result) -> dict:
    """The fine-tuning behind every figure: its settings, the recipe in words and what it did (steps run, the
    kept step) — the report's edit figures change with the fine-tuned encoder (docs/reports/builtin-v3-digits.md)."""
    from ..models.finetune import describe_run

    cfg = run_result.finetune_config
    n_train = len(run_result.ft["train"]) if "train" in run_result.ft else None
    return {"settings": cfg.as_dict(), "recipe": cfg.describe(n_train), "run": dict(run_result.finetune_run),
            "what_it_did": describe_run(run_result.finetune_run)}


def build_report(run_result, methods: list[str] | None, out_dir: Path, progress: ProgressFn = None,
                 config: ReportConfig = ReportConfig()) -> dict:
    """Run the methods and studies on ``run_result`` (a ``cv_core.pipeline.RunResult``); write
    ``out_dir/report.json`` and ``out_dir/report.md``; return the JSON dict (with ``files``)."""
    start = time.perf_counter()
    methods = list(methods) if methods else list(DEFAULT_METHODS)
    if "finetuned" not in methods:
        methods.insert(0, "finetuned")  # the reference every figure is compared with
    for name in methods:
        UNLEARNING_METHODS.get(name)  # unknown names fail before any work
    needs_encoder = any(UNLEARNING_METHODS.get(n).needs_encoder for n in methods)
    cap = config.max_per_class
    if cap is None and needs_encoder and len(run_result.ft["train"]) > ENCODER_MAX_TRAIN:
        cap = max(1, ENCODER_MAX_TRAIN // len(run_result.class_names))
    _emit(progress, 0, 1, "preparing latents" + (" and images" if needs_encoder else ""))
    ctx = context_from_run(run_result, encoder=needs_encoder, max_per_class=cap, seed=config.seed)
    _warm_up()
    collector = EncoderAudits(ctx, config.audits, config.seed, config.relearn_steps, config.relearn_shots)
    results = evaluate_methods(ctx, methods, config, progress, collector)
    results = {n: results[n] for n in methods}  # the table keeps the requested order
    _emit(progress, 0, 1, "audits: relearning, CKA, representative references, int8")
    audits = collector.results()
    audits.update(run_other_audits(ctx, config.audits, collector, config.seed,
                                   config.method_options.get("cv_steer")))
    props = property_studies(ctx)
    _emit(progress, 0, 1, "shifted datasets (environment / typography)")
    props["shift_removal"] = shifted_sweeps(run_result, ctx)
    props["typography"] = typography_summary(props["shift_removal"])
    props["trigger"] = trigger_study(ctx, config)
    if config.save_checkpoint and "cv_weight_map" in methods:
        from .weight_map import export_weight_map
        report_ckpt = export_weight_map(ctx, [0], Path(out_dir) / "weight_map_forget_0.safetensors", config.seed,
                                        config.method_options.get("cv_weight_map"))
        props["weight_map_checkpoint"] = report_ckpt
    report = {
        "backbone": run_result.backbone_name, "dataset": run_result.dataset, "device": str(run_result.device),
        "class_names": list(ctx.class_names), "config": asdict(config),
        "samples": {s: len(ctx.ft[s]) for s in ("train", "val", "test")},
        "val_source": "val split" if "val" in run_result.ft else "carved from train (15% per class)",
        "max_per_class": cap,
        "zero_shot_accuracy": run_result.zero_shot_accuracy, "finetuned_accuracy": run_result.finetuned_accuracy,
        "finetune": _finetune_summary(run_result),
        "methods": {n: {"description": UNLEARNING_METHODS.get(n).description, **results[n]} for n in methods},
        "properties": props,
        "audits": audits,
    }
    report["checks"] = figure_checks(report)
    report["seconds"] = time.perf_counter() - start
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out_dir / "report.json"), "markdown": str(out_dir / "report.md")}
    report["files"] = files
    from ..export import text_writer, write_outputs
    text = json.dumps(_clean(report), indent=1, default=str, allow_nan=False)
    write_outputs(out_dir, [("report.md", text_writer(render_markdown(report))),
                            ("report.json", text_writer(text))])  # atomic: both or neither
    return report


def _clean(obj):
    """JSON-safe copy: tensors to lists, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _clean(obj.tolist())
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None
    return obj
