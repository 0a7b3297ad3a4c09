"""Forget strengths and the sentences about a run, for the pages (cached per run and gate)."""
from __future__ import annotations

import streamlit as st

from app.state import AppRunConfig

from .runs import EVAL_SPLIT, cached_run, gate_thresholds


@st.cache_resource(show_spinner=False)
def forget_strengths(config: AppRunConfig, gate="auto") -> tuple:
    """Every class's ForgetStrength (cv_core.edits.strength), chosen on the run's val split with this gate
    (cached in the run's ``cache_dir``; the synthetic run keeps them in memory)."""
    from cv_core.edits.strength import run_forget_strengths

    return run_forget_strengths(cached_run(config), gate)


@st.cache_resource(show_spinner=False)
def findings(config: AppRunConfig) -> dict:
    """topic -> Finding (cv_core.edits.explain.run_findings) for the run with the automatic gate."""
    from cv_core.edits.explain import run_findings, store_findings

    run = cached_run(config)
    if run.store is not None:  # a large run: from the live loop's tables and the store's blocks, never loaded whole
        from .views import live_editor

        return store_findings(run.head, run.store, EVAL_SPLIT, run.class_vectors, gate_thresholds(config, "auto"),
                              forget_strengths(config, "auto"), run.zero_shot.per_class,
                              factored=live_editor(config, False).factored)
    return run_findings(run.head, run.pre[EVAL_SPLIT], run.ft[EVAL_SPLIT], run.class_vectors,
                        gate_thresholds(config, "auto"), forget_strengths(config, "auto"))


def minus_one(config: AppRunConfig, cls: int, gate="auto"):
    """The Finding that says what coefficient -1 does to class ``cls`` on this run."""
    from cv_core.edits.explain import minus_one_finding

    run = cached_run(config)
    s = forget_strengths(config, gate)[cls]
    return minus_one_finding(run.head.class_names[cls], s.at_one, float(run.zero_shot.per_class[cls]), s)


@st.cache_data(show_spinner=False)
def switch_alpha(config: AppRunConfig, source: int, target: int) -> float | None:
    """The alpha where ``source`` test images switch to ``target`` (automatic gate), None if never within 1."""
    from cv_core.edits.properties import interpolation, interpolation_from

    if source == target:
        return None
    run = cached_run(config)
    gamma = gate_thresholds(config, "auto")
    if run.store is not None:  # a large run: the live loop's tables instead of the latents
        from .views import live_editor

        return interpolation_from(live_editor(config, False).factored, run.store.labels(EVAL_SPLIT),
                                  run.class_vectors, source, target, gamma)["switch_alpha"]
    return interpolation(run.head, run.ft[EVAL_SPLIT], run.class_vectors, source, target, gamma)["switch_alpha"]
