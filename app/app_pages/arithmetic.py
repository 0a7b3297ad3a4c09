"""Class arithmetic: one slider per class vector; every release updates accuracy, confusion and map."""
from __future__ import annotations

import math
import shlex
import time

import numpy as np

import streamlit as st

from app import charts, live, markup, services, state, url_state
from app.components import live_editor
from app.components.run_gate import require_run
from cv_core.editspec import GATE_HELP
from cv_core.projection.latent_map import placement_text

config, run = require_run()
names = run.head.class_names
C = len(names)
CLASS_COLORS = [charts.class_color(c) for c in range(C)]

st.title("Class arithmetic")
st.caption("Each slider adds a × κ_c to the latents of images that look like class c or that the model "
           "calls c (the gate). "
           "Accuracy and confusion follow the slider as it moves (computed in your browser); "
           "the map follows when you release it.")
FOCUS = state.focus_class(C)
_minus_one = services.minus_one(config, FOCUS)
st.caption(f"What −1 means on this run: {markup.text(_minus_one.text)} (Reference — {_minus_one.reference}.)")


def apply_forget(c: int, lam: float) -> None:
    state.reset_edit(C)
    state.set_coefficients(live.preset_forget(C, c, lam))


def _focus(key: str) -> None:
    state.set_focus_class(st.session_state[key])


def apply_move(source: int, target: int, alpha: float) -> None:
    state.reset_edit(C)
    state.set_moves(live.preset_move(source, target, alpha))


def apply_shift() -> None:
    state.reset_edit(C)
    state.set_moves(live.preset_shift(C))


def presets_ui(gate) -> None:
    with st.expander("Presets", expanded=True):
        c = st.selectbox("Class", range(C), index=FOCUS, format_func=lambda i: names[i], key="preset_forget_class",
                         on_change=_focus, args=("preset_forget_class",))
        s = services.forget_strengths(config, gate)[c]
        st.button(f"Forget this class (λ = {s.lam:.2f})", on_click=apply_forget, args=(c, s.lam), key="preset_forget",
                  width="stretch", help=_strength_help(s))
        if not s.reached:
            st.caption(f"No strength in [0, 3] reaches {100 * s.target:.0f}% on val for {markup.text(names[c])} without costing "
                       f"the other classes more than {100 * s.tolerance:.0f} point; the preset uses the best one.")
        src = st.selectbox("Move class", range(C), format_func=lambda i: names[i], key="preset_move_from")
        t = st.selectbox("towards", range(C), index=min(1, C - 1), format_func=lambda i: names[i],
                         key="preset_move_to")
        a = st.slider("by α", 0.0, 1.0, 0.6, 0.05, key="preset_move_alpha", help=_move_help(src, t))
        st.button("Move", on_click=apply_move, args=(src, t, a), key="preset_move", width="stretch",
                  disabled=src == t)  # a class cannot move onto itself (cv_core.editspec.forget_set)
        st.button("Sequential shift 0→1→…→0", on_click=apply_shift, key="preset_shift", width="stretch")
        st.button("Reset", on_click=state.reset_edit, args=(C,), key="preset_reset", width="stretch")


def _strength_help(s) -> str:
    name = markup.text(names[s.cls])
    cli = shlex.quote(str(names[s.cls])).replace("`", "'")  # inside a code span: shown as typed
    return (f"The forget strength of {name}, chosen on the val split: {s.margin:g} × the smallest λ in "
            f"[0, 3] whose edit −λ·κ brings val accuracy on {name} to ≤ {100 * s.target:.0f}% while the "
            f"other classes lose at most {100 * s.tolerance:.0f} point (the margin because a small val split "
            f"cannot certify {100 * s.target:.0f}% on unseen images). Here: {markup.text(s.describe())}. "
            f"Same value as `python -m cv_core edit --forget {cli}`.")


def _move_help(source: int, target: int) -> str:
    from cv_core.edits.explain import pair_switch_text

    if source == target:
        return "Choose two different classes."
    return markup.text(pair_switch_text(names[source], names[target], services.switch_alpha(config, source, target)))


def gate_ui():
    """The gate threshold: per-class automatic thresholds, one cosine for all, or no gate."""
    mode = st.radio("Gate", list(state.GATE_MODES.values()), horizontal=True, key=state.GATE_AUTO,
                    help=f"auto: {GATE_HELP['auto']}. fixed γ: {GATE_HELP['number']}. off: {GATE_HELP['none']}.")
    if mode == state.GATE_MODES["auto"]:
        state.set_gate("auto")
        return services.gate_thresholds(config, "auto")
    if mode == state.GATE_MODES["off"]:
        state.set_gate(None)
        return None
    gamma = st.slider("γ (cosine to the class's fine-tuned centroid)", -1.0, 1.0, 0.5, 0.01, key=state.GATE_SLIDER)
    state.set_gate(float(gamma))
    return float(gamma)


def on_release() -> None:
    values = live_editor.release_values(state.LIVE_EDITOR)
    if values is not None and len(values) == C:
        state.set_released(values)


@st.fragment
def editor(gamma) -> None:
    """Sliders, bars, summary, confusion and map: re-scored in the browser while a slider moves; a
    release reruns only this fragment, where the server re-projects the moved points for the map.
    (The presets and the gate sit outside: they are rare, and fewer elements make each rerun cheaper.)"""
    res, map_part, edit_text, scores_ms, placed = server_side(gamma)
    live_editor.live_editor(services.live_tables(config), state.coefficients(C), gamma, state.moves(),
                            state.revision(), state.LIVE_EDITOR, on_release, CLASS_COLORS, map_part,
                            thumbnail=lambda row: services.thumbnail_uri(config, row))
    if map_part is None:
        st.info("Fit the map on the Geometry page to see the edited points move here.")
        st.page_link("app_pages/geometry.py", label="Open Geometry", icon=":material/scatter_plot:")
    timing = f"scores in {scores_ms:.0f} ms" + ("" if map_part is None else f", map in {map_part['ms']:.0f} ms")
    if placed:  # many moved points: approximate neighbours (recall measured) and fewer layout epochs, named
        timing += f"; moved points placed with {markup.text(placed)}"
    st.caption(f"Server, after the last release: {timing} ({int(res.moved.sum()):,} of {len(res.moved):,} "
               f"points edited; {edit_text.lower()}; forget {_pct(res.forget)}, retain {_pct(res.retain)}).")
    url_state.sync()  # a release reruns only this fragment: keep the URL's edit current


def server_side(gamma):
    """The released edit on the server: its scores, the moved points' map positions, and the
    figures the Export page offers -> (LiveResult, map data or None, edit text, scoring ms, how the moved
    points were placed when it was not the ordinary way, or None).
    Kept for the last edit, so a rerun that does not change it (the hover asking for an image, the
    browser reporting what it holds) does not score and re-project again."""
    memo_key = (config, tuple(state.coefficients(C)), repr(gamma), tuple(map(tuple, state.moves())),
                services.cached_map(config) is not None)
    memo = st.session_state.get("_live_server_side")
    if memo is not None and memo[0] == memo_key:
        return memo[1]
    out = _server_side(gamma)
    st.session_state["_live_server_side"] = (memo_key, out)
    return out


def _server_side(gamma):
    start = time.perf_counter()
    points = services.cached_map(config)
    editor_ = services.live_editor(config, points is not None)
    moves, coefs = state.moves(), state.coefficients(C)
    res = editor_.evaluate(coefs, gamma, moves)
    shown = markup.texts(names)  # the caption is Markdown
    terms = [f"{shown[c]} × {a:+.2f}" for c, a in enumerate(coefs) if a]
    terms += [f"{shown[s]}→{shown[t]} (α={a:g})" for s, t, a in moves]
    edit_text = "Edit: " + ("; ".join(terms) if terms else "none")
    before, after, confusion = res.before.per_class.numpy(), res.after.per_class.numpy(), res.after.confusion.numpy()
    # the Plotly versions of the browser's charts are built only when the Export page asks for them
    state.remember_figure("accuracy_bars", lambda: charts.accuracy_bars(before, after, names, res.edited_classes))
    state.remember_figure("confusion", lambda: charts.confusion_heatmap(confusion, names,
                                                                        "Confusion matrix after the edit"))
    scores_ms = 1000 * (time.perf_counter() - start)
    if points is None:
        return res, None, edit_text, scores_ms, None
    start = time.perf_counter()
    placed: dict = {}
    xy = editor_.positions(res, placed)                          # (N, 2): moved points re-projected
    index = np.flatnonzero(res.moved)
    map_ms = 1000 * (time.perf_counter() - start)
    extent = services.map_extent(config)
    labels = services.eval_labels(run)
    state.remember_figure("edited_map", lambda: charts.live_map(xy, labels, res.preds, names, res.moved, extent,
                                                                points.ft_xy[index]))
    return (res, live_editor.map_data(points.ft_xy, extent, coefs, index, xy[index], map_ms), edit_text, scores_ms,
            placement_text(placed, points.projector.refine_epochs()))


def _pct(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


left, right = st.columns([1, 3])
with left:
    gate = gate_ui()
    presets_ui(state.gate())
with right:
    editor(gate)
