"""Unlearning comparisons and the Export page's files."""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from app import synthetic
from app.state import AppRunConfig

from .runs import cached_run, gate_thresholds
from .views import collapse_table, live_editor


def unlearning_methods(config: AppRunConfig) -> list[tuple[str, str, bool, bool]]:
    """(name, description, needs_encoder, usable) of every registered method.

    Encoder methods retrain part of the image encoder: they need the model and the images, which
    the synthetic run does not have.
    """
    from cv_core.edits import UNLEARNING_METHODS

    has_model = config.dataset != synthetic.NAME
    return [(name, m.description, m.needs_encoder, has_model or not m.needs_encoder)
            for name, m in UNLEARNING_METHODS.items()]


@st.cache_resource(show_spinner=False, max_entries=2)
def _unlearn_context(config: AppRunConfig, encoder: bool):
    from cv_core.edits import UnlearnContext
    from cv_core.edits.context import context_from_run

    run = cached_run(config)
    if config.dataset == synthetic.NAME:
        return UnlearnContext(run.head, run.pre, run.ft, run.class_vectors)
    return context_from_run(run, encoder=encoder, seed=config.seed)


@st.cache_data(show_spinner=False)
def compare_unlearning(config: AppRunConfig, forget: tuple[int, ...], methods: tuple[str, ...],
                       probe: bool = True, _on_method: Callable | None = None) -> list[dict]:
    """Run each method on the forget set and audit it -> one row of metrics per method.

    _on_method(name): called before each method (not part of the cache key).
    """
    from cv_core.edits import UNLEARNING_METHODS, audit, run_method
    from cv_core.edits.columns import COLUMNS

    encoder = any(UNLEARNING_METHODS.get(m).needs_encoder for m in methods)
    ctx = _unlearn_context(config, encoder)
    rows = []
    for name in methods:
        if _on_method is not None:
            _on_method(name)
        a = audit(ctx, run_method(name, ctx, list(forget), seed=config.seed), seed=config.seed, probe=probe)
        values = a.as_dict()
        if not probe:  # not measured: no column of NaNs
            values = {k: v for k, v in values.items() if not k.startswith(("probe_", "pre_block_probe"))}
        rows.append({"method": name, **{k: None if isinstance(v, float) and v != v else v
                                        for k, v in values.items() if k in COLUMNS}})
    return rows


# ---------------------------------------------------------------- export
def current_edit(config: AppRunConfig, coefs: list[float], moves: list, gate):
    """The LiveResult of the session's current edit (cheap: a few matrix products)."""
    return live_editor(config, False).evaluate(coefs, gate_thresholds(config, gate), moves)


def export_bundle(config: AppRunConfig, coefs: list[float], moves: list, gate, unlearning) -> dict[str, bytes]:
    """File name -> bytes for the Export page (vectors, metrics JSON and CSV, recipe)."""
    import json

    from app import exports

    from cv_core.editspec import EditSpec

    run = cached_run(config)
    names = run.head.class_names
    spec = EditSpec.build(names, coefs, moves, gate)
    res = current_edit(config, coefs, moves, gate)
    edit = {**spec.to_json(names), "forget_classes": [names[c] for c in spec.forget()],
            "forget_accuracy": _number(res.forget), "retain_accuracy": _number(res.retain)}
    m = exports.metrics(config, run, edit, res.after.per_class.tolist(), collapse_table(config), unlearning)
    return {"class_vectors.safetensors": exports.class_vectors_safetensors(run.class_vectors),
            "metrics.json": json.dumps(m, indent=2).encode(),
            "per_class.csv": exports.per_class_csv(m),
            "recipe.sh": exports.recipe(config, names, spec).encode()}


def _number(x: float | None) -> float | None:
    """None for no value (nothing forgotten) or NaN (no image), so the JSON stays standard."""
    return None if x is None or x != x else float(x)


@st.cache_data(show_spinner=False)
def unlearning_audits(config: AppRunConfig, forget: tuple[int, ...], methods: tuple[str, ...],
                      audits: tuple[str, ...], reference_ks: tuple = (1, 2, 5, 10, 30, None),
                      _on_method: Callable | None = None) -> dict:
    """Relearning, layer-wise CKA, representative references and the int8 check for one forget set
    (``cv_core.edits.report_audits.run_audits``, the report's code)."""
    from cv_core.edits import UNLEARNING_METHODS
    from cv_core.edits.report_audits import run_audits

    encoder = config.dataset != synthetic.NAME and (
        any(UNLEARNING_METHODS.get(m).encoder_changed for m in methods) or "quantized" in audits)
    ctx = _unlearn_context(config, encoder)
    return run_audits(ctx, methods, forget, audits, seed=config.seed, on_method=_on_method,
                      reference_ks=reference_ks)
