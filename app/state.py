"""Every session-state key of the app, in one place, with typed accessors.

Pages never spell a key as a string; they call these helpers, so a renamed key is one edit.
"""
from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

RUN_CONFIG = "run_config"            # the AppRunConfig of the computed run the pages show
COEFS = "coefs"                      # list[float], one coefficient per class (the sliders' values)
GATE = "gate"                        # "auto", a cosine threshold gamma, or None (no gate)
LAST_FIGURES = "last_figures"        # dict name -> plotly Figure, for the Export page
UNLEARN_ROWS = "unlearn_rows"        # list[dict] of the last unlearning comparison
UNLEARN_AUDITS = "unlearn_audits"    # dict of the last audits (relearning, CKA, references, int8)
MOVES = "moves"                      # list of (source, target, alpha) move terms set by the presets


LIVE_EDITOR = "live_editor"          # the browser component of the sliders (its state: the last release)
REVISION = "coefs_revision"          # int, bumped whenever the server sets the coefficients (presets, reset)


GATE_SLIDER = "gate_slider"
GATE_AUTO = "gate_auto"
FOCUS = "focus_class"                # int, the class every page selects by default (one default everywhere)
GATE_MODES = {"auto": "auto", "fixed": "fixed γ", "off": "off"}  # the gate radio's labels


@dataclass(frozen=True)
class AppRunConfig:
    """What identifies a computed run in the app (hashable, so it keys caches)."""

    backbone: str = "builtin"
    dataset: str = "digits"
    device: str = "auto"
    data_root: str | None = None
    max_per_class: int | None = None
    seed: int = 0
    finetune_recipe: str = "auto"  # cv_core.models.finetune.RECIPES
    freeze_bn_stats: bool = False  # FinetuneConfig.freeze_norm_stats (CLI --freeze-bn-stats)

    def label(self) -> str:
        parts = ([] if self.finetune_recipe == "auto" else [f"{self.finetune_recipe} fine-tune"]) + (
            ["BatchNorm statistics frozen"] if self.freeze_bn_stats else [])
        return f"{self.backbone} on {self.dataset}" + (f" ({', '.join(parts)})" if parts else "")


def run_config() -> AppRunConfig | None:
    return st.session_state.get(RUN_CONFIG)


def set_run_config(config: AppRunConfig) -> None:
    if st.session_state.get(RUN_CONFIG) != config:
        reset_edit(num_classes=None)
        st.session_state.pop(UNLEARN_ROWS, None)
    st.session_state[RUN_CONFIG] = config


def coefficients(num_classes: int) -> list[float]:
    """The coefficients of the current edit (0 for an untouched class), readable from any page."""
    saved = list(st.session_state.get(COEFS) or [])
    return ([float(v) for v in saved] + [0.0] * num_classes)[:num_classes]


def revision() -> int:
    """Changes whenever the server sets the coefficients, so the browser's sliders follow."""
    return int(st.session_state.get(REVISION, 0))


def set_coefficients(values: list[float]) -> None:
    """Set every class coefficient from the server (presets): the browser's sliders move to them."""
    st.session_state[COEFS] = [float(v) for v in values]
    st.session_state[REVISION] = revision() + 1


def set_released(values: list[float]) -> None:
    """Record the coefficients the browser's sliders were released at (they already show them)."""
    st.session_state[COEFS] = [float(v) for v in values]


def gate() -> str | float | None:
    """The gate of the last edit: 'auto', one cosine threshold, or None (off)."""
    return st.session_state.get(GATE, "auto")


def set_gate(value: str | float | None) -> None:
    st.session_state[GATE] = value


def restore_gate(value: str | float | None) -> None:
    """Set the gate and the Class-arithmetic widgets that choose it (before they are drawn)."""
    set_gate(value)
    if value == "auto":
        st.session_state[GATE_AUTO] = GATE_MODES["auto"]
    elif value is None:
        st.session_state[GATE_AUTO] = GATE_MODES["off"]
    else:
        st.session_state[GATE_AUTO] = GATE_MODES["fixed"]
        st.session_state[GATE_SLIDER] = float(value)


def stored_coefficients() -> list[float]:
    """The coefficients as stored (empty when the edit was reset)."""
    return [float(v) for v in st.session_state.get(COEFS) or []]


def focus_class(num_classes: int | None) -> int:
    """The class the pages select by default (0 until the user picks another on any page)."""
    c = int(st.session_state.get(FOCUS, 0))
    return c if num_classes is None or 0 <= c < num_classes else 0


def set_focus_class(value: int) -> None:
    st.session_state[FOCUS] = int(value)


def reset_edit(num_classes: int | None) -> None:
    """Coefficients back to 0, moves forgotten."""
    st.session_state.pop(COEFS, None)
    st.session_state[REVISION] = revision() + 1
    st.session_state.pop(MOVES, None)


def moves() -> list[tuple[int, int, float]]:
    return list(st.session_state.get(MOVES, []))


def set_moves(values: list[tuple[int, int, float]]) -> None:
    st.session_state[MOVES] = list(values)


def remember_figure(name: str, fig) -> None:
    """Keep a figure for the Export page: a Plotly figure, or a function that builds it (the live
    screen passes builders, so that it does not pay for figures nobody exports)."""
    st.session_state.setdefault(LAST_FIGURES, {})[name] = fig


def figures() -> dict:
    """name -> Plotly figure of every remembered figure (builders are called here)."""
    return {name: fig() if callable(fig) else fig for name, fig in st.session_state.get(LAST_FIGURES, {}).items()}


def unlearn_rows() -> list[dict] | None:
    return st.session_state.get(UNLEARN_ROWS)


def set_unlearn_rows(rows: list[dict]) -> None:
    st.session_state[UNLEARN_ROWS] = rows


def unlearn_audits() -> dict | None:
    return st.session_state.get(UNLEARN_AUDITS)


def set_unlearn_audits(audits: dict) -> None:
    st.session_state[UNLEARN_AUDITS] = audits
