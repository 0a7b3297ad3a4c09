"""Lambda sweeps for shifted variants of the run's dataset (environment such as snow, typography).

A variant is any registered dataset named ``<dataset>-<something>`` with the same classes (the
built-in ``digits-snow``, ``digits-typo``, ...). kappa_{env+c} is estimated on the variant's train
split and the removal edit is scored on its test split. Absent variants are skipped with a reason.
"""
from __future__ import annotations

from ..errors import CVError
from . import properties

TYPOGRAPHY_MARKERS = ("typo", "text", "typographic")


def variant_names(dataset: str) -> list[str]:
    from ..data.datasets import list_datasets

    return [n for n in list_datasets() if n.startswith(f"{dataset}-")]


def _encode(run_result, name: str, split: str, models) -> tuple:
    from ..data.datasets import load_split
    from ..features.extract import encode_images

    c = run_result.config
    ds = load_split(name, split, c.data_root, c.max_per_class, c.seed, False)
    if tuple(ds.class_names) != tuple(run_result.class_names):
        raise CVError(f"{name} has different classes than {run_result.dataset}")
    pre_model, ft_model, preprocess = models
    dev = run_result.device
    return (encode_images(pre_model, ds, preprocess, dev, encoder="pretrained", split=split),
            encode_images(ft_model, ds, preprocess, dev, encoder="finetuned", split=split))


def shifted_sweeps(run_result, ctx) -> dict:
    """variant -> {kind, rows, acc_unedited, best_lambda, best_accuracy} or {'skipped': reason}."""
    names = variant_names(run_result.dataset)
    if not names:
        return {"skipped": f"no shifted variants of {run_result.dataset!r} are registered (expected e.g. "
                           f"{run_result.dataset}-snow, {run_result.dataset}-typo); the sweeps need them"}
    backbone = run_result.backbone()
    models = (backbone.model, run_result.finetuned_encoder(), backbone.preprocess)
    out: dict = {}
    for name in names:
        try:
            tr_pre, tr_ft = _encode(run_result, name, "train", models)
            _, te_ft = _encode(run_result, name, "test", models)
        except CVError as err:
            out[name] = {"skipped": str(err)}
            continue
        rows = properties.shift_removal_sweep(ctx.head, ctx.class_vectors, tr_pre, tr_ft, te_ft)
        best = max(rows, key=lambda r: r["accuracy"])
        kind = "typography" if any(m in name for m in TYPOGRAPHY_MARKERS) else "environment"
        unedited = next(r["accuracy"] for r in rows if r["lambda"] == 0.0)
        out[name] = {"kind": kind, "rows": rows, "acc_unedited": unedited, "best_lambda": best["lambda"],
                     "best_accuracy": best["accuracy"]}
    return out
