"""Unlearning: forget classes with every registered method and compare them."""
from __future__ import annotations

import streamlit as st

from app import charts, services, state
from app.components.run_gate import require_run
from cv_core.edits.columns import COLUMNS, TABLE, interpret
from app.components.unlearning_audits import audits_section

config, run = require_run()
names = run.head.class_names

st.title("Unlearning methods compared")
st.caption("Forget accuracy should fall to 0 and retain accuracy stay high. Probe recovery is the accuracy a "
           "fresh linear probe reaches on the forgotten classes from the edited latents: high means the class "
           "is still in the representation. Latent steering leaves the encoder untouched, so a probe on its "
           "edited latents still finds the class unless the edit moved them.")

methods = services.unlearning_methods(config)
usable = [m for m, _, _, ok in methods if ok]
fast = [m for m, _, enc, ok in methods if ok and not enc]
unusable = [m for m, _, _, ok in methods if not ok]
rows = state.unlearn_rows()
measured = {r["method"]: r["seconds"] for r in rows or []}


def _focus() -> None:
    chosen = st.session_state.get("unlearn_forget") or []
    if chosen:
        state.set_focus_class(chosen[0])


with st.form("unlearn_form"):
    forget = st.multiselect("Classes to forget", range(len(names)), default=[state.focus_class(len(names))],
                            format_func=lambda i: names[i], key="unlearn_forget")
    chosen = st.multiselect("Methods", usable, default=fast, key="unlearn_methods",
                            help="Every method is described, with its time measured in this session, under "
                                 "**About the methods** below.")
    probe = st.checkbox("Linear-probe audit (slower)", value=True, key="unlearn_probe")
    go = st.form_submit_button("Compare", type="primary", on_click=_focus)
if unusable:
    st.caption(f"Not offered for this run (they retrain the image encoder, and this run has no model): "
               f"{', '.join(unusable)}.")
with st.expander(f"About the methods ({len(methods)})"):
    st.table([{"method": m, "what it does": d, "changes the encoder": "yes" if enc else "no",
               "time measured here": f"{measured[m]:.2f} s" if m in measured else "not run yet"}
              for m, d, enc, _ in methods])
    st.caption("Times are wall-clock seconds for the last comparison in this session (they depend on the "
               "machine's load). The report (`python -m cv_core report`) measures every method the same way.")

if go:
    if not forget or not chosen:
        st.error("Choose at least one class to forget and one method.")
    elif len(forget) >= len(names):
        st.error("Forgetting every class leaves nothing to retain: choose fewer classes.")
    else:
        try:
            with st.status(f"Running {len(chosen)} methods…", expanded=True) as status:
                rows = services.compare_unlearning(config, tuple(sorted(forget)), tuple(chosen), probe,
                                                   _on_method=lambda name: st.write(f"running **{name}**"))
                status.update(label=f"{len(chosen)} methods compared", state="complete", expanded=False)
            state.set_unlearn_rows(rows)
            st.rerun()  # the method table above shows the times just measured
        except Exception as err:  # shown in plain words, never a traceback
            from app.components.compute import plain_error

            st.error(f"The comparison failed: {plain_error(err)}")


def column_config(keys) -> dict:
    """Human names with direction and unit, and a definition in each tooltip (cv_core.edits.columns)."""
    out = {"method": st.column_config.TextColumn("Method", help="The registered method (see About the methods).")}
    for k in keys:
        c = COLUMNS[k]
        if c.kind == "percent":
            out[k] = st.column_config.NumberColumn(c.heading, help=c.help, format="%.1f")
        elif c.kind == "seconds":
            out[k] = st.column_config.NumberColumn(c.heading, help=c.help, format="%.3f")
        elif c.kind == "count":
            out[k] = st.column_config.NumberColumn(c.heading, help=c.help, format="%d")
        else:
            out[k] = st.column_config.CheckboxColumn(c.heading, help=c.help)
    return out


if rows:
    keys = [k for k in TABLE if any(k in r for r in rows)]
    table = [{"method": r["method"], **{k: (100 * r[k] if COLUMNS[k].kind == "percent" and r.get(k) is not None
                                            else r.get(k)) for k in keys}} for r in rows]
    st.dataframe(table, hide_index=True, column_config=column_config(keys), height=35 * (len(table) + 1) + 3,
                 width="stretch")
    reference = next((r for r in rows if r["method"] == "finetuned"), None)
    notes = [(r["method"], interpret(r["method"], r, reference)) for r in rows]
    for method, text in notes:
        if text:
            st.markdown(f"- **{method}**: {text}")
    fig = charts.method_comparison(rows)
    st.plotly_chart(fig, key="unlearn_chart")
    state.remember_figure("unlearning", fig)
    with st.expander("Glossary"):
        for c in COLUMNS.values():
            st.markdown(f"- **{c.heading}**: {c.help}")

audits_section(config, names, forget, chosen, has_model=not unusable)
