"""The Unlearning page's audits section: relearning, layer-wise CKA, representative references, int8.

Rendered by :func:`audits_section` below the comparison table; every number comes from
``services.unlearning_audits`` (the report's code in ``cv_core.edits.report_audits``).
"""
from __future__ import annotations

import streamlit as st

from app import charts, services, state

AUDIT_LABELS = {"relearning": "Relearning (5 images, 0/10/50 steps)", "cka": "Layer-wise CKA",
                "references": "Representative references (k per class)", "quantized": "Int8 deployment"}
ENCODER_AUDITS = ("relearning", "cka", "quantized")


def audits_section(config, names, forget: list[int], methods: list[str], has_model: bool) -> None:
    st.subheader("Audits")
    st.caption("Relearning and CKA examine the methods that change the image encoder; methods that leave it "
               "untouched are answered by construction. The reference study forgets every class in turn.")
    offered = [a for a in AUDIT_LABELS if has_model or a not in ENCODER_AUDITS]
    with st.form("unlearn_audit_form"):
        chosen = st.multiselect("Audits", offered, default=[a for a in offered if a != "quantized"],
                                format_func=lambda a: AUDIT_LABELS[a], key="unlearn_audit_choice")
        ks = st.multiselect("References per class (k)", [1, 2, 5, 10, 30, "all"], default=[1, 2, 5, 10, 30, "all"],
                            key="unlearn_reference_ks", help="for the representative-references study")
        go = st.form_submit_button("Run audits")
    if not has_model:
        st.caption("Relearning, CKA and int8 need the model and images, which this run does not have.")
    if go and chosen and forget and len(forget) < len(names):
        try:
            with st.status("Running audits…", expanded=True) as status:
                res = services.unlearning_audits(config, tuple(sorted(forget)), tuple(methods), tuple(chosen),
                                                 tuple(None if k == "all" else k for k in ks) or (1, 5, None),
                                                 _on_method=lambda n: st.write(f"running **{n}**"))
                status.update(label="audits done", state="complete", expanded=False)
            state.set_unlearn_audits(res)
        except Exception as err:  # shown in plain words, never a traceback
            from app.components.compute import plain_error
            st.error(f"The audits failed: {plain_error(err)}")
    res = state.unlearn_audits()
    if res:
        _show(res, names)


def _show(res: dict, names) -> None:
    rel = res.get("relearning")
    if rel:
        rows = [{"method": m, **{f"forget acc after {k} ↓": 100 * sum(e["acc_f"][i] for e in r) / len(r)
                                 for i, k in enumerate(rel["steps"])}}
                for m, r in rel["methods"].items() if isinstance(r, list)]
        if rows:
            st.dataframe(rows, hide_index=True, key="audit_relearning")
            st.plotly_chart(charts.relearning_curves(rel), key="audit_relearning_chart")
        for m, r in rel["methods"].items():
            if isinstance(r, dict):
                st.caption(f"**{m}**: {r['by_construction']}")
    if res.get("cka"):
        fig = charts.cka_curves(res["cka"])
        st.plotly_chart(fig, key="audit_cka_chart")
        state.remember_figure("cka", fig)
    if res.get("references"):
        st.dataframe([{"rule": r["rule"], "k": str(r["k"]), "forget acc ↓": 100 * r["acc_f"],
                       "retain acc ↑": 100 * r["acc_r"]} for r in res["references"]["rows"]],
                     hide_index=True, key="audit_references")
    q = res.get("quantized")
    if q and "skipped" not in q:
        for scheme, r in q.items():
            if "skipped" in r:
                st.caption(f"**{scheme}**: not applicable — {r['skipped']}")
                continue
            st.caption(f"**{scheme}**: {r['note']}")
            st.dataframe([{"edit": row["edit"], "forgotten": ", ".join(names[c] for c in row["forget"]),
                           "forget acc float → int8": f"{100 * row['float_acc_f']:.1f} → {100 * row['int8_acc_f']:.1f}",
                           "retain acc float → int8": f"{100 * row['float_acc_r']:.1f} → {100 * row['int8_acc_r']:.1f}",
                           "worst retained-class drop ↓": 100 * row["worst_retained_drop"]} for row in r["rows"]],
                         hide_index=True, key=f"audit_int8_{scheme}")
