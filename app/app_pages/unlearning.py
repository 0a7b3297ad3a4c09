"""Unlearning: forget classes with every registered method and compare them."""
from __future__ import annotations

import streamlit as st

from app import charts, services, state
from app.components.run_gate import require_run

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
with st.form("unlearn_form"):
    forget = st.multiselect("Classes to forget", range(len(names)), default=[0], format_func=lambda i: names[i],
                            key="unlearn_forget")
    slow = " (retrains the encoder: minutes on a CPU)"
    chosen = st.multiselect("Methods", usable, default=fast, key="unlearn_methods",
                            help="\n".join(f"- **{m}**: {d}{slow if enc else ''}" for m, d, enc, _ in methods))
    probe = st.checkbox("Linear-probe audit (slower)", value=True, key="unlearn_probe")
    go = st.form_submit_button("Compare", type="primary")
if unusable:
    st.caption(f"Not offered for this run (they retrain the image encoder, and this run has no model): "
               f"{', '.join(unusable)}.")

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
        except Exception as err:  # shown in plain words, never a traceback
            from app.components.compute import plain_error

            st.error(f"The comparison failed: {plain_error(err)}")

rows = state.unlearn_rows()
if rows:
    percent = st.column_config.NumberColumn(format="%.1f%%")
    table = [{**r, **{k: 100 * r[k] for k in ("acc_f", "acc_r", "probe_f", "mia")}} for r in rows]
    st.dataframe(table, hide_index=True, column_config={
        "acc_f": st.column_config.NumberColumn("forget acc ↓", format="%.1f%%"),
        "acc_r": st.column_config.NumberColumn("retain acc ↑", format="%.1f%%"),
        "probe_f": st.column_config.NumberColumn("probe recovery ↓", format="%.1f%%"),
        "mia": percent, "seconds": st.column_config.NumberColumn("time (s)", format="%.3f")})
    fig = charts.method_comparison(rows)
    st.plotly_chart(fig, key="unlearn_chart")
    state.remember_figure("unlearning", fig)
