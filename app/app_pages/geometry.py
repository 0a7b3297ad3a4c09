"""Geometry: the shared UMAP map, class vectors as arrows, cosine heat maps and neural collapse."""
from __future__ import annotations

import streamlit as st

from app import charts, markup, services, state
from app.components import latent_map
from app.components.compute import run_with_progress
from app.components.run_gate import require_run

config, run = require_run()
names = run.head.class_names
labels = services.eval_labels(run)

st.title("Latent geometry")
st.caption(f"{config.label()} · {len(labels):,} test images · one UMAP fitted on the pretrained and the "
           "fine-tuned latents together, so both live in the same 2-D coordinates.")

points = services.cached_map(config)
if points is None:
    st.info("The map is fitted once per run and then cached. Above 20,000 latents UMAP is fitted on a "
            "stratified sample and the other points are placed on it; the page then names the sample and "
            "its fidelity. " + services.warm_up_status())
    if st.button("Fit the map", type="primary", key="geometry_fit"):
        outcome = run_with_progress(lambda progress, cancel: services.compute_map(config, progress, cancel),
                                    "Fitting the UMAP map")
        if outcome.error:
            (st.warning if outcome.cancelled else st.error)(outcome.error)
        else:
            st.rerun()  # draw the page again without the fitting panel

@st.fragment
def map_view() -> None:
    """The WebGL map; the hover's image request reruns only this fragment."""
    colors = tuple(charts.class_color(c) for c in range(len(names)))
    latent_map.latent_map(services.latent_map_data(config, colors), key="geometry_map",
                          thumbnail=lambda row: services.thumbnail_uri(config, row))


if points is not None:
    if points.note:
        st.caption(points.note)
    map_view()
    pre_pred, ft_pred = services.predictions(config)
    # the Plotly version, for the Export page only (built when it is asked for)
    state.remember_figure("latent_map", lambda: charts.latent_map(
        points.ft_xy, labels, ft_pred, names, name="fine-tuned", background_xy=points.pre_xy,
        background_name="pretrained (grey)", centroids=(points.pre_centroids, points.ft_centroids)))

found = services.findings(config)


def finding(topic: str) -> None:
    """The run's own sentence, with the paper's value beside it as a reference."""
    f = found[topic]
    (st.success if f.verdict == "holds" else st.info if f.verdict == "partly" else st.warning)(markup.text(f.text))
    st.caption(f"Reference — {f.reference}.")


st.subheader("Independence of class vectors")
finding("independence")
kk, km = services.cosines(config)
c1, c2 = st.columns(2)
fig_kk = charts.cosine_heatmap(kk, names, names, "cos(κ_c, κ_c′)")
fig_km = charts.cosine_heatmap(km, names, names, "cos(κ_c, μ_ft of c′)")
c1.plotly_chart(fig_kk, key="geometry_kk")
c2.plotly_chart(fig_km, key="geometry_km")
state.remember_figure("cosines_kappa", fig_kk)
state.remember_figure("cosines_kappa_centroid", fig_km)
with st.expander("Interference: how much every class moves when one class is forgotten"):
    st.caption("Row: the class forgotten at its forget strength (chosen on val); column: change of each class's "
               "test accuracy in points. The diagonal is the forgotten class itself.")
    fig_int = charts.interference_heatmap(found["independence"].numbers["table"], names)
    st.plotly_chart(fig_int, key="geometry_interference")
    state.remember_figure("interference", fig_int)

st.subheader("Neural collapse (NC1–NC4)")
finding("collapse")
st.table([{"metric": r["metric"], "pretrained": f"{r['pretrained']:.3f}", "fine-tuned": f"{r['fine-tuned']:.3f}",
           "meaning": r["meaning"]} for r in services.collapse_table(config)])
