"""Presenter mode: a large-type walk through forgetting one class, for a projector.

Step 1 shows only "before"; step 2 shows the class's points moving on the map and the accuracy changing as
the strength grows; step 3 the result at the strength chosen on val, with one honest line about what the
edit does and does not do. A toggle shows coefficient −1 instead, for teaching.
"""
from __future__ import annotations


import streamlit as st

from app import charts, live, markup, services, state
from app.components.run_gate import require_run

config, run = require_run()
names = run.head.class_names
C = len(names)
STEPS = ["1 · Before", "2 · Forgetting", "3 · After"]

st.markdown("""<style>
.cvs-say {font-size: 1.7rem; line-height: 1.45; margin: 0.4rem 0 0.8rem;}
.cvs-num .label {font-size: 1.5rem;} .cvs-num .value {font-size: 5rem; font-weight: 600; line-height: 1.1;}
.cvs-num .delta {font-size: 1.6rem; display: inline-block; padding: 0 0.6rem; border-radius: 0.6rem;}
.cvs-num .drop {color: #d62728; background: rgba(214, 39, 40, 0.1);}
.cvs-num .rise {color: #2ca02c; background: rgba(44, 160, 44, 0.1);}
.cvs-num .same {color: #1f77b4; background: rgba(31, 119, 180, 0.1);}
</style>""", unsafe_allow_html=True)
st.title("What does forgetting a class do?")


def say(text: str) -> None:
    """One large sentence (HTML; class names go through ``app.markup.text``: never read as HTML or Markdown)."""
    st.markdown(f'<p class="cvs-say">{text}</p>', unsafe_allow_html=True)


def big_number(column, label: str, value: float, change: float | None) -> None:
    """A projector-size number; the change coloured by the one convention (red drop, green rise)."""
    delta = ""
    if change is not None:
        kind = "drop" if change <= -0.5 else "rise" if change >= 0.5 else "same"
        delta = f'<span class="delta {kind}">{change:+.1f} pts</span>'
    column.markdown(f'<div class="cvs-num"><div class="label">{markup.text(label)}</div><div class="value">'
                    f'{value:.0f}%</div>{delta}</div>', unsafe_allow_html=True)


def _focus() -> None:
    state.set_focus_class(st.session_state["presenter_class"])


c1, c2, c3 = st.columns([2, 3, 2])
target = c1.selectbox("Class to forget", range(C), index=state.focus_class(C), format_func=lambda i: names[i],
                      key="presenter_class", on_change=_focus)
step = c2.segmented_control("Step", STEPS, default=STEPS[0], key="presenter_step") or STEPS[0]
teach = c3.toggle("Teaching: show λ = 1 (coefficient −1)", key="presenter_minus_one",
                  help="The paper's forget edit: coefficient −1 sends the class back to its pretrained centroid. "
                       "Off: the strength chosen on this run's val split.")

strength = services.forget_strengths(config, "auto")[target]
lam = 1.0 if teach else strength.lam
res = services.current_edit(config, live.preset_forget(C, target, lam), [], "auto")
before, after = res.before.per_class.numpy(), res.after.per_class.numpy()
name = markup.text(names[target])
n = step[0]

if n == "1":
    say(f"The fine-tuned classifier recognises <b>every class</b>, including <b>{name}</b>: "
        f"{100 * before[target]:.0f}% of its test images are right.")
elif n == "2":
    say(f"We subtract λ × the class vector of <b>{name}</b> from the latents of images that look like {name}. "
        f"No retraining: one vector, applied behind a gate. λ grows from 0 to {lam:.2f}.")
else:
    gone = after[target] <= strength.target
    verdict = (f"<b>{name}</b> is forgotten: {100 * after[target]:.0f}% of its test images are still recognised"
               if gone else f"<b>{name}</b> is only partly forgotten: {100 * after[target]:.0f}% of its test images "
                            "are still recognised")
    how = "coefficient −1 (the paper's edit)" if teach else f"λ = {lam:.2f}, chosen on the val split"
    say(f"At {how}: {verdict}; the other classes keep {100 * res.retain:.0f}% (they had "
        f"{100 * res.retain_before:.0f}%).")
    say(f"<i>What it does not do:</i> the image encoder is untouched — a linear probe on its features still "
        f"finds {name} (see the Unlearning page). The edit changes what the classifier says for images that "
        "look like this class.")
    if teach:
        st.caption(markup.text(services.minus_one(config, target).text))

m1, m2 = st.columns(2)
shown = before if n != "3" else after
big_number(m1, f"Accuracy on {names[target]}", 100 * shown[target],
           None if n != "3" else 100 * (after[target] - before[target]))
others = res.retain if n == "3" else res.retain_before
big_number(m2, "Accuracy on the other classes", 100 * others,
           None if n != "3" else 100 * (res.retain - res.retain_before))

if n == "2":
    points = services.cached_map(config)
    left, right = st.columns(2)
    with left:
        if points is None:
            st.info("Fit the map on the Geometry page to see the class's points move here.")
        else:
            st.plotly_chart(services.presenter_map(config, target, lam), key="presenter_map")
    with right:
        curve = strength.curve if not teach else [c for c in strength.curve if c[0] <= 1.0]
        st.plotly_chart(charts.presenter_sweep(curve, names[target], lam), key="presenter_sweep")
else:
    st.plotly_chart(charts.presenter_bars(before, after, names, target, show_after=n == "3"), key="presenter_bars")
st.caption("Colours on every page: grey = before; after in blue, red where a class dropped, green where it rose. "
           "The starred class is the one being forgotten.")
