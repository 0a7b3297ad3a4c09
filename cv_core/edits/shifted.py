"""Lambda sweeps for shifted variants of the run's dataset (environment such as snow, typography).

A variant is any registered dataset named ``<dataset>-<something>`` with the same classes (the
built-in ``digits-snow``, ``digits-typo``, ...). kappa_{env+c} is estimated on the variant's train
split; lambda is chosen on its val split (when it has one) and the removal edit is scored on its test
split. Absent variants are skipped with a reason.

Per variant (``properties.shift_removal[variant]``): ``acc_clean`` (the run's fine-tuned accuracy on the
clean test split, what the shift is measured against), ``acc_unedited`` (fine-tuned on the shifted test
split), ``val_lambda`` and ``accuracy_at_val_lambda`` (test accuracy at the lambda the val split chose),
``recovered_share`` ((edited - unedited) / (clean - unedited) at that lambda; None when the shift cost
nothing), and ``best_lambda`` / ``best_accuracy`` read off the test curve itself (optimistic, kept for
comparison). Typographic variants whose images carry their written class
(``datasets.written_targets``) also give ``properties.typography[variant]``: ``read_share``, the share of
test images zero-shot predicts as the written class (chance: 1/C), the same for the fine-tuned encoder,
and the zero-shot accuracy with and without the text.
"""
from __future__ import annotations

import torch

from ..errors import CVError
from . import properties

TYPOGRAPHY_MARKERS = ("typo", "text", "typographic")


def variant_names(dataset: str) -> list[str]:
    from ..data.datasets import list_datasets

    return [n for n in list_datasets() if n.startswith(f"{dataset}-")]


def _load(run_result, name: str, split: str):
    from ..data.datasets import load_split

    c = run_result.config
    ds = load_split(name, split, c.data_root, c.max_per_class, c.seed, False)
    if tuple(ds.class_names) != tuple(run_result.class_names):
        raise CVError(f"{name} has different classes than {run_result.dataset}")
    return ds


def _encode(run_result, ds, split: str, models, pretrained: bool = True) -> tuple:
    from ..features.extract import encode_images

    pre_model, ft_model, preprocess = models
    dev = run_result.device
    pre = encode_images(pre_model, ds, preprocess, dev, encoder="pretrained", split=split) if pretrained else None
    return pre, encode_images(ft_model, ds, preprocess, dev, encoder="finetuned", split=split)


def _val_split(run_result, name: str, models):
    """Fine-tuned latents of the variant's val split, or None when it has none."""
    try:
        ds = _load(run_result, name, "val")
    except CVError:
        return None
    return _encode(run_result, ds, "val", models, pretrained=False)[1]


def shifted_sweeps(run_result, ctx) -> dict:
    """variant -> {kind, rows, acc_clean, acc_unedited, val_lambda, accuracy_at_val_lambda, recovered_share,
    best_lambda, best_accuracy[, read]} or {'skipped': reason}; see the module docstring."""
    names = variant_names(run_result.dataset)
    if not names:
        return {"skipped": f"no shifted variants of {run_result.dataset!r} are registered (expected e.g. "
                           f"{run_result.dataset}-snow, {run_result.dataset}-typo); the sweeps need them"}
    backbone = run_result.backbone()
    models = (backbone.model, run_result.finetuned_encoder(), backbone.preprocess)
    out: dict = {}
    for name in names:
        try:
            tr_pre, tr_ft = _encode(run_result, _load(run_result, name, "train"), "train", models)
            test = _load(run_result, name, "test")
            te_pre, te_ft = _encode(run_result, test, "test", models)
        except CVError as err:
            out[name] = {"skipped": str(err)}
            continue
        va_ft = _val_split(run_result, name, models)
        out[name] = removal_summary(ctx.head, ctx.class_vectors, tr_pre, tr_ft, te_ft, va_ft,
                                    run_result.finetuned_accuracy)
        out[name]["kind"] = "typography" if any(m in name for m in TYPOGRAPHY_MARKERS) else "environment"
        read = read_shares(ctx.head, test, te_pre, te_ft)
        if read is not None:
            out[name]["read"] = read
    return out


def removal_summary(head, cv, tr_pre, tr_ft, te_ft, va_ft, acc_clean: float) -> dict:
    """The removal sweep on test, lambda chosen on val (``va_ft``; None: on nothing, val fields None)."""
    rows = properties.shift_removal_sweep(head, cv, tr_pre, tr_ft, te_ft)
    best = max(rows, key=lambda r: r["accuracy"])  # first of equals: the lambdas run from negative to positive
    unedited = next(r["accuracy"] for r in rows if r["lambda"] == 0.0)
    out = {"rows": rows, "acc_clean": acc_clean, "acc_unedited": unedited, "best_lambda": best["lambda"],
           "best_accuracy": best["accuracy"], "val_lambda": None, "val_accuracy": None,
           "accuracy_at_val_lambda": None, "recovered_share": None}
    if va_ft is None:
        return out
    val_rows = properties.shift_removal_sweep(head, cv, tr_pre, tr_ft, va_ft)
    # ties go to the smallest |lambda| (the gentlest edit), then to the first
    chosen = max(val_rows, key=lambda r: (r["accuracy"], -abs(r["lambda"])))
    at = next(r["accuracy"] for r in rows if r["lambda"] == chosen["lambda"])
    lost = acc_clean - unedited
    out.update(val_lambda=chosen["lambda"], val_accuracy=chosen["accuracy"], accuracy_at_val_lambda=at,
               recovered_share=(at - unedited) / lost if lost > 0 else None)
    return out


def read_shares(head, test, te_pre, te_ft) -> dict | None:
    """Share of the test images each encoder classifies as the class written on them (typographic attack);
    None when the dataset does not say what is written."""
    from ..data.datasets import written_targets

    written = written_targets(test)
    if written is None:
        return None
    w = torch.as_tensor(written, dtype=torch.long)
    zero_shot, finetuned = head.predict(te_pre.features), head.predict(te_ft.features)
    return {"read_share": float((zero_shot == w).float().mean()),
            "read_share_finetuned": float((finetuned == w).float().mean()),
            "zero_shot_accuracy": float((zero_shot == te_pre.labels).float().mean()),
            "chance": 1.0 / len(head.class_names)}


def typography_summary(sweeps: dict) -> dict:
    """``properties.typography``: variant -> its read shares and its removal sweep (from ``shifted_sweeps``)."""
    if "skipped" in sweeps:
        return {"skipped": sweeps["skipped"]}
    out = {name: {**s["read"], "removal": {k: v for k, v in s.items() if k not in ("read", "kind")}}
           for name, s in sweeps.items() if "read" in s}
    return out or {"skipped": "no typographic variant of this dataset says which class is written on its images"}
