"""The chosen run and the current edit in the page's URL (``st.query_params``), so that a reload, a new tab or
a shared link reopens the same screen.

Parameters (only what differs from the defaults is written):
``backbone``, ``dataset``, ``device``, ``root``, ``cap``, ``seed``, ``recipe`` (the run; ``recipe`` the
fine-tuning recipe when not 'auto'); ``coefs`` ("3:-1.6,5:0.5", class
index: coefficient); ``moves`` ("3>5:0.6"); ``gate`` ("auto", "off" or a cosine); ``class`` (the class the
pages focus on). :func:`restore` reads them into the session once, before the page is drawn; :func:`sync`
writes the session back after each run (page navigation clears the URL's parameters).
"""
from __future__ import annotations

import streamlit as st

from app import state
from cv_core.models.finetune import RECIPES

_RESTORED = "url_restored"  # session flag: the URL was read once in this session


def encode(config: state.AppRunConfig | None, coefs: list[float], moves: list, gate, focus: int | None) -> dict:
    """The query parameters of a run and an edit (strings only)."""
    if config is None:
        return {}
    out = {"backbone": config.backbone, "dataset": config.dataset}
    if config.device != "auto":
        out["device"] = config.device
    if config.data_root:
        out["root"] = config.data_root
    if config.max_per_class:
        out["cap"] = str(config.max_per_class)
    if config.seed:
        out["seed"] = str(config.seed)
    if config.finetune_recipe != "auto":
        out["recipe"] = config.finetune_recipe
    if config.freeze_bn_stats:
        out["bn"] = "frozen"
    terms = [f"{c}:{a:g}" for c, a in enumerate(coefs) if a]
    if terms:
        out["coefs"] = ",".join(terms)
    if moves:
        out["moves"] = ",".join(f"{s}>{t}:{a:g}" for s, t, a in moves)
    if gate != "auto":
        out["gate"] = "off" if gate is None else f"{float(gate):g}"
    if focus:
        out["class"] = str(focus)
    return out


def decode_config(params) -> state.AppRunConfig | None:
    """The run named by the parameters, or None when they name none (or are malformed)."""
    if not params.get("dataset") or not params.get("backbone"):
        return None
    try:
        cap = int(params["cap"]) if params.get("cap") else None
        seed = int(params.get("seed", 0))
    except ValueError:
        return None
    recipe = params.get("recipe", "auto")
    if recipe not in RECIPES:
        return None
    if params.get("bn", "updated") not in ("updated", "frozen"):
        return None
    return state.AppRunConfig(params["backbone"], params["dataset"], params.get("device", "auto"),
                              params.get("root") or None, cap, seed, recipe, params.get("bn") == "frozen")


def decode_edit(params, num_classes: int) -> tuple[list[float], list[tuple[int, int, float]], object, int]:
    """(coefficients (C,), moves, gate, focus class) from the parameters; malformed parts are dropped."""
    coefs = [0.0] * num_classes
    for item in filter(None, params.get("coefs", "").split(",")):
        c, _, a = item.partition(":")
        if _finite_int(c, num_classes) is not None and _finite(a) is not None:
            coefs[int(c)] = float(a)
    moves = []
    for item in filter(None, params.get("moves", "").split(",")):
        pair, _, a = item.partition(":")
        s, _, t = pair.partition(">")
        if None not in (_finite_int(s, num_classes), _finite_int(t, num_classes), _finite(a)) and s != t:
            moves.append((int(s), int(t), float(a)))
    g = params.get("gate", "auto")
    gate = None if g == "off" else "auto" if g == "auto" or _finite(g) is None else max(-1.0, min(1.0, float(g)))
    focus = _finite_int(params.get("class", "0"), num_classes) or 0
    return coefs, moves, gate, focus


def _finite(text: str):
    """A coefficient, alpha or gate read from the URL, or None when it is not one the library accepts."""
    from cv_core.errors import InvalidInputError
    from cv_core.results import check_coefficient

    try:
        return check_coefficient(text)
    except InvalidInputError:
        return None


def _finite_int(text: str, n: int):
    try:
        v = int(text)
    except (TypeError, ValueError):
        return None
    return v if 0 <= v < n else None


def restore() -> None:
    """Once per session: open the run the URL names (from this server's memory, or its disk cache with a
    progress panel) and put its edit back. Does nothing when the session already has a run."""
    from app import services

    if st.session_state.get(_RESTORED):
        return
    st.session_state[_RESTORED] = True
    params = st.query_params.to_dict()
    config = decode_config(params)
    if config is None or state.run_config() is not None:
        return
    run = services.cached_run(config)
    if run is None:
        from app.components.compute import run_with_progress

        outcome = run_with_progress(lambda progress, cancel: services.compute_run(config, progress, cancel),
                                    f"Reopening {config.label()} from the link")
        if outcome.error:
            st.error(f"The run in this link could not be reopened: {outcome.error}")
            return
        run = outcome.value
    state.set_run_config(config)
    coefs, moves, gate, focus = decode_edit(params, len(run.head.class_names))
    if any(coefs):
        state.set_coefficients(coefs)
    state.set_moves(moves)
    state.restore_gate(gate)
    state.set_focus_class(focus)


def sync() -> None:
    """Write the session's run and edit into the URL (only when they changed)."""
    config = state.run_config()
    if config is None:
        return
    want = encode(config, state.stored_coefficients(), state.moves(), state.gate(), state.focus_class(None))
    if st.query_params.to_dict() != want:
        st.query_params.from_dict(want)
