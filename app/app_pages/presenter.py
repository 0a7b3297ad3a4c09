"""Presenter mode: one large-type screen that walks through forgetting one class."""
from __future__ import annotations

import streamlit as st

from app import charts, live, services
from app.components.run_gate import require_run

config, run = require_run()
names = run.head.class_names
C = len(names)

st.markdown("<style>.block-container p, .block-container li {font-size: 1.5rem !important;} "
            "[data-testid='stMetricValue'] {font-size: 3rem !important;}</style>", unsafe_allow_html=True)
st.title("What does forgetting a class do?")

target = st.selectbox("Class to forget", range(C), format_func=lambda i: names[i], key="presenter_class")
step = st.segmented_control("Step", ["1 · Before", "2 · Forget", "3 · After"], default="1 · Before",
                            key="presenter_step") or "1 · Before"

res = services.current_edit(config, live.preset_forget(C, target), [], "auto")
before = res.before.per_class.numpy()
after = res.after.per_class.numpy() if not step.startswith("1") else before

if step.startswith("1"):
    st.markdown(f"The fine-tuned classifier recognises **every class**, including **{names[target]}**: "
                f"{100 * before[target]:.0f}% of its test images are right.")
elif step.startswith("2"):
    st.markdown(f"We subtract the class vector of **{names[target]}** from the latents of images that look "
                f"like {names[target]}. No retraining: one vector, applied behind a gate.")
else:
    st.markdown(f"**{names[target]}** is forgotten ({100 * res.forget:.0f}% left); the other classes keep "
                f"{100 * res.retain:.0f}% accuracy (they had {100 * res.retain_before:.0f}%).")

m1, m2 = st.columns(2)
m1.metric(f"Accuracy on {names[target]}", f"{100 * after[target]:.0f}%",
          delta=None if step.startswith("1") else f"{100 * (after[target] - before[target]):+.0f} pts")
others = res.retain_before if step.startswith("1") else res.retain
m2.metric("Accuracy on the other classes", f"{100 * others:.0f}%")
st.plotly_chart(charts.presenter_bars(before, after, names, target), key="presenter_bars")
st.caption("Grey: before the edit. Red: after. The starred class is the one being forgotten.")
