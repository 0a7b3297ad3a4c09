"""AppTest of every page, on the synthetic run (no model, a few seconds each)."""
from __future__ import annotations


import json

import numpy as np

import pytest

PAGES = ["app_pages/geometry.py", "app_pages/arithmetic.py", "app_pages/unlearning.py",
         "app_pages/export.py", "app_pages/presenter.py"]


def big_number(at, label: str) -> str:
    """The Presenter's projector-size number under ``label`` ('100%')."""
    import re

    for m in at.markdown:
        found = re.search(r'class="label">' + re.escape(label) + r'</div><div class="value">([^<]+)</div>', m.value)
        if found:
            return found.group(1)
    raise AssertionError(f"no number labelled {label!r}")


def metric(at, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


def edited_points(at) -> tuple[int, int]:
    """(edited, total) from the server's caption under the live editor."""
    text = next(c.value for c in at.caption if "points edited" in c.value)
    edited, total = text.split("(")[1].split(" points")[0].split(" of ")
    return int(edited.replace(",", "")), int(total.replace(",", ""))


def live_data(at) -> dict:
    """The data the page sends to the browser's live editor (sliders, tables, gate, moves)."""
    from app.components.packet import unpack

    (component,) = [e for e in at.get("bidi_component") if e.proto.component_name == "cvs_live_editor"]
    header, arrays = unpack(component.proto.bytes)  # a binary packet (app/components/packet.py)
    return dict(header, arrays=arrays)


def release(at, coefs: list[float]):
    """What the browser sends when a slider is released: the page's state holds the coefficients.
    (The browser side itself is exercised by tests/app/test_browser_e2e.py.)"""
    from app import state

    at.session_state[state.COEFS] = coefs
    return at.run()


def server_caption(at) -> str:
    return next(c.value for c in at.caption if c.value.startswith("Server, after the last release"))


def server_percent(at, what: str) -> float:
    return float(server_caption(at).split(f"{what} ")[1].split("%")[0])


def no_trouble(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def test_setup_defaults_to_the_builtin_model_on_digits(new_app):
    at = new_app()
    no_trouble(at)
    assert at.radio(key="setup_backbone_kind").value.startswith("built-in")
    assert at.selectbox(key="setup_dataset").value == "digits"
    assert at.button(key="setup_compute").label == "Compute"
    assert at.checkbox(key="setup_freeze_bn").value is False  # the default fine-tune re-estimates them
    # every built-in version is offered, v1 first (the default), each with its own manifest's figures
    version = at.selectbox(key="setup_builtin_version")
    assert len(version.options) == 3 and version.value == "builtin"
    assert version.options[0] == ("builtin — v1 (the default): 16.0 MB; on digits test: zero-shot 44.3%, "
                                  "150-step fine-tune 96.5%")
    assert version.options[1].startswith("builtin:v2 — v2: 20.8 MB; on digits test: zero-shot 76.7%")
    assert version.options[2].startswith("builtin:v3 — v3: 20.8 MB; on digits test: zero-shot 70.9%")
    version.set_value("builtin:v2").run()
    no_trouble(at)
    assert at.button(key="setup_compute").label == "Compute"


def test_setup_computes_and_shows_the_run(computed_app):
    at = computed_app
    assert metric(at, "Zero-shot") == "0.0%"
    assert metric(at, "Fine-tuned") == "100.0%"
    assert any("synthetic" in c.value for c in at.sidebar.caption)
    at.run()  # reopening the computed pair is served from the cache: the button says so
    assert at.button(key="setup_compute").label == "Open"


def test_setup_says_plainly_when_a_folder_does_not_exist(new_app):
    at = new_app()
    at.radio(key="setup_dataset_kind").set_value("image folder").run()
    at.text_input(key="setup_folder").input("/no/such/folder").run()
    assert not at.exception
    assert any("no folder" in e.value for e in at.error)
    assert at.button(key="setup_compute").disabled


def test_setup_reports_a_backbone_that_cannot_be_loaded(new_app, tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a checkpoint")
    notes = tmp_path / "notes.txt"
    notes.write_text("a text file is no checkpoint\n")
    at = new_app()
    at.radio(key="setup_backbone_kind").set_value("local checkpoint").run()
    for path, reason in ((bad, "not a readable safetensors file"), (notes, "neither a safetensors file"),
                         (tmp_path / "missing.pt", "no file at")):
        at.text_input(key="setup_ckpt_path").input(str(path)).run()
        assert not at.exception, [e.value for e in at.exception]
        message = at.error[0].value  # said before Compute, which stays disabled
        assert reason in message and "Compute is disabled" in message and "Traceback" not in message, message
        assert at.button(key="setup_compute").disabled


@pytest.mark.parametrize("page", PAGES)
def test_pages_without_a_run_point_to_setup(new_app, page):
    at = new_app()
    at.switch_page(page).run()
    no_trouble(at)
    assert any("No computed run" in i.value for i in at.info)


def test_the_live_editor_gets_the_runs_tables_and_a_release_updates_the_server_side(computed_app):
    at = computed_app.switch_page("app_pages/arithmetic.py").run()
    no_trouble(at)
    data = live_data(at)
    assert data["names"] == [f"class {c}" for c in range(10)] and data["arrays"]["labels"].shape == (600,)
    assert data["arrays"]["base"].shape == data["arrays"]["cosines"].shape == (600, 10)
    assert data["arrays"]["base"].dtype == np.dtype("<f4") and data["note"] == ""  # all rows, no sample
    assert data["coefs"] == [0.0] * 10 and data["moves"] == [] and len(data["gammas"]) == 10
    assert "edit: none" in server_caption(at)
    release(at, [0.0, 0.0, 0.0, -1.0] + [0.0] * 6)
    no_trouble(at)
    assert "edit: class 3 × -1.00" in server_caption(at)
    assert server_percent(at, "forget") < 10 and server_percent(at, "retain") > 99
    assert live_data(at)["rev"] == data["rev"]  # a release does not push values back to the sliders


def test_presets_set_the_sliders_and_reset_clears_them(computed_app):
    at = computed_app.switch_page("app_pages/arithmetic.py").run()
    rev = live_data(at)["rev"]
    at.selectbox(key="preset_forget_class").select(2).run()
    label = at.button(key="preset_forget").label  # "Forget this class (λ = 0.75)": the strength chosen on val
    lam = float(label.split("λ = ")[1].rstrip(")"))
    at.button(key="preset_forget").click().run()
    data = live_data(at)
    assert data["coefs"][2] == pytest.approx(-lam) and data["rev"] > rev  # the browser's sliders move to it
    assert 0 < lam <= 3 and server_percent(at, "forget") <= 5 and server_percent(at, "retain") >= 98
    # the same value as the one definition in cv_core, on the run's val split with the page's gate
    import torch

    from app import services
    from app.state import AppRunConfig
    from cv_core.edits.strength import choose_forget_strength

    run = services.cached_run(AppRunConfig("synthetic", "synthetic-10k"))
    gammas = torch.tensor(live_data(at)["gammas"])
    assert choose_forget_strength(run.head, run.ft["val"], run.class_vectors, 2, gammas).lam == pytest.approx(lam)
    at.button(key="preset_shift").click().run()
    no_trouble(at)
    data = live_data(at)
    assert data["coefs"][2] == 0.0 and [9, 0, 1.0] in data["moves"]
    assert "class 9→class 0 (α=1)" in server_caption(at)
    at.button(key="preset_reset").click().run()
    assert "edit: none" in server_caption(at)
    assert live_data(at)["coefs"] == [0.0] * 10 and live_data(at)["moves"] == []


def test_the_gate_can_be_fixed_or_switched_off(computed_app):
    at = computed_app.switch_page("app_pages/arithmetic.py").run()
    release(at, [0.0, -1.0] + [0.0] * 8)
    edited, total = edited_points(at)
    assert total == 600 and 55 <= edited <= 60  # the auto gate: (about 99% of) class 1's 60 images
    at.radio(key="gate_auto").set_value("off").run()
    no_trouble(at)
    assert edited_points(at) == (600, 600)  # no gate: -kappa_1 is added to every image
    assert live_data(at)["gammas"] is None
    at.radio(key="gate_auto").set_value("fixed γ").run()
    no_trouble(at)
    assert at.slider(key="gate_slider").value == 0.5
    assert live_data(at)["gammas"] == [0.5] * 10


def test_unlearning_compares_the_registered_methods(computed_app):
    at = computed_app.switch_page("app_pages/unlearning.py").run()
    no_trouble(at)
    at.multiselect(key="unlearn_methods").set_value(["finetuned", "cv_steer"])
    at.checkbox(key="unlearn_probe").uncheck()
    at.button[0].click().run()  # the form's submit button
    no_trouble(at)
    table = at.dataframe[0].value
    assert list(table["method"]) == ["finetuned", "cv_steer"]
    steer = table[table["method"] == "cv_steer"].iloc[0]
    assert steer["acc_f"] <= 5 and steer["acc_r"] > 90  # percent
    # human names with direction and unit, a definition in each tooltip
    config = json.dumps(json.loads(at.dataframe[0].proto.columns), ensure_ascii=False)
    assert "Forget accuracy ↓ (%)" in config and "MIA efficacy ↑ (%)" in config and "Time ↓ (s)" in config
    assert "membership-inference" in config
    methods = at.table[0].value  # "About the methods": every registered method, with the time measured here
    from cv_core.edits import UNLEARNING_METHODS
    assert len(methods) == len(list(UNLEARNING_METHODS.items()))
    assert methods.set_index("method").loc["cv_steer", "time measured here"].endswith(" s")


def test_export_offers_every_file_and_a_cli_recipe(computed_app):
    at = computed_app.switch_page("app_pages/arithmetic.py").run()
    release(at, [0.0] * 4 + [-1.0] + [0.0] * 5)
    at.switch_page("app_pages/export.py").run()
    no_trouble(at)
    recipe = at.code[0].value
    assert "python -m cv_core run" in recipe and "--coef 'class 4=-1'" in recipe


def test_presenter_walks_through_forgetting(computed_app):
    at = computed_app.switch_page("app_pages/presenter.py").run()
    no_trouble(at)
    assert big_number(at, "Accuracy on class 0") == "100%"
    at.selectbox(key="presenter_class").select(5).run()
    at.button_group(key="presenter_step").set_value("3 · After").run()
    no_trouble(at)
    assert float(big_number(at, "Accuracy on class 5").rstrip("%")) < 10
    assert big_number(at, "Accuracy on the other classes") == "100%"


def test_presenter_steps_show_before_then_the_change_then_an_honest_result(computed_app):
    at = computed_app.switch_page("app_pages/presenter.py").run()
    (bars,) = [c for c in at.get("plotly_chart") if "presenter_bars" in c.proto.id]
    assert [t["name"] for t in json.loads(bars.proto.spec)["data"]] == ["before"]  # step 1: only "before"
    at.button_group(key="presenter_step").set_value("2 · Forgetting").run()
    no_trouble(at)
    assert any("Fit the map" in i.value for i in at.info)  # no map yet: says where to get it
    (sweep,) = [c for c in at.get("plotly_chart") if "presenter_sweep" in c.proto.id]
    assert "chosen \\u03bb" in sweep.proto.spec  # JSON-escaped "chosen λ"
    at.button_group(key="presenter_step").set_value("3 · After").run()
    text = " ".join(m.value for m in at.markdown)
    assert 'class="delta drop"' in text  # the forgotten class's change in the colour of drops
    assert "chosen on the val split" in text and "encoder is untouched" in text and "linear probe" in text
    assert "is forgotten" in text  # the synthetic run really does reach the target at the chosen strength
    at.toggle(key="presenter_minus_one").set_value(True).run()
    no_trouble(at)
    text = " ".join(m.value for m in at.markdown)
    assert "coefficient −1 (the paper's edit)" in text
    assert any("−1" in c.value and "centroid" in c.value for c in at.caption)


def test_the_url_reopens_the_run_and_the_edit(computed_app):
    at = computed_app.switch_page("app_pages/arithmetic.py").run()
    release(at, [0.0] * 3 + [-1.5] + [0.0] * 6)
    params = {k: v[0] if isinstance(v, list) else v for k, v in dict(at.query_params).items()}
    assert params["dataset"] == "synthetic-10k" and params["coefs"] == "3:-1.5"
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import APP, TIMEOUT
    fresh = AppTest.from_file(APP, default_timeout=TIMEOUT)  # a reload: a new session with only the URL
    for k, v in params.items():
        fresh.query_params[k] = v
    fresh.switch_page("app_pages/arithmetic.py").run()
    no_trouble(fresh)
    assert live_data(fresh)["coefs"] == [0.0] * 3 + [-1.5] + [0.0] * 6
    assert "edit: class 3 × -1.50" in server_caption(fresh)


def test_geometry_shows_cosines_and_collapse_and_offers_the_map(computed_app):
    at = computed_app.switch_page("app_pages/geometry.py").run()
    no_trouble(at)
    nc = at.table[0].value
    assert list(nc["metric"])[:1] == ["nc1"] and nc["meaning"].str.len().min() > 20  # wrapped, never cut off
    # the captions are this run's numbers, never the paper's claim stated as a fact
    from app import services
    from app.state import AppRunConfig

    found = services.findings(AppRunConfig("synthetic", "synthetic-10k"))
    texts = [e.value for e in [*at.success, *at.info, *at.warning]]
    from app.markup import text as shown  # the page writes run sentences as text, never as Markdown
    assert shown(found["independence"].text) in texts and shown(found["collapse"].text) in texts
    mean_abs = found["independence"].numbers["offdiag_abs_mean"]
    assert f"mean |cos| {mean_abs:.3f}" in found["independence"].text
    assert ("NOT orthogonal" in found["independence"].text) == (mean_abs >= 0.1
                                                                 or found["independence"].numbers["offdiag_abs_max"] >= 0.3)
    assert not any("off-diagonal ≈ 0" in c.value or "go to 0" in c.value for c in at.caption)


def test_the_map_is_fitted_once_and_then_moves_edited_points(computed_app):
    at = computed_app.switch_page("app_pages/geometry.py").run()
    at.button(key="geometry_fit").click().run()
    no_trouble(at)
    from app.components.packet import unpack

    (geo,) = [e for e in at.get("bidi_component") if e.proto.component_name == "cvs_latent_map"]
    data, arrays = unpack(geo.proto.bytes)
    assert data["n"] == 600 and len(data["pre_centroids"]) == len(data["ft_centroids"]) == 10
    assert arrays["pre_xy"].shape == arrays["ft_xy"].shape == (600, 2) and arrays["ft_xy"].dtype == np.float16
    assert data["images"] is False and data["note"] == ""  # the synthetic run has no images; 1,200 latents: no sample
    at.switch_page("app_pages/export.py").run()  # the Plotly version is built for Export
    no_trouble(at)
    at.switch_page("app_pages/arithmetic.py").run()
    assert not any("Fit the map" in i.value for i in at.info)  # the map is served from the cache
    assert live_data(at)["arrays"]["map_index"].size == 0  # no edit: nothing re-projected
    release(at, [-1.0] + [0.0] * 9)
    no_trouble(at)
    data = live_data(at)
    m, arrays = data["map"], data["arrays"]
    index, moved_xy = arrays["map_index"], arrays["map_moved"]
    base_xy = arrays["map_xy"].astype(np.float32)
    assert m["coefs"] == [-1.0] + [0.0] * 9 and len(index) in (59, 60) and moved_xy.shape == (len(index), 2)
    assert base_xy.shape == (600, 2) and np.abs(moved_xy - base_xy[index]).max() > 0.1  # they moved
    x0, x1, y0, y1 = m["extent"]
    assert (moved_xy[:, 0] >= x0 - 5).all() and (moved_xy[:, 0] <= x1 + 5).all()
    at.switch_page("app_pages/export.py").run()  # the map is exportable as a figure
    no_trouble(at)


def test_an_unknown_architecture_is_an_error_in_words(new_app, tmp_path):
    at = new_app()
    at.radio(key="setup_backbone_kind").set_value("local checkpoint").run()
    at.text_input(key="setup_ckpt_model").input("No-Such-Net").run()
    at.text_input(key="setup_ckpt_path").input(str(tmp_path / "w.safetensors")).run()
    assert not at.exception
    assert any("unknown open_clip model 'No-Such-Net'" in e.value for e in at.error)
    assert at.button(key="setup_compute").disabled


def test_an_unexpected_failure_on_a_page_is_reported_in_words(computed_app, monkeypatch):
    from app import services

    def broken(config):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(services, "collapse_table", broken)
    at = computed_app.switch_page("app_pages/geometry.py").run()
    assert not at.exception
    assert any("disk on fire" in e.value and "could not be drawn" in e.value for e in at.error)


def test_unlearning_audits_show_the_reference_study(computed_app):
    at = computed_app.switch_page("app_pages/unlearning.py").run()
    no_trouble(at)
    # the synthetic run has no model: relearning and CKA answer by construction, int8 is not offered
    assert "Int8 deployment" not in at.multiselect(key="unlearn_audit_choice").options
    at.multiselect(key="unlearn_methods").set_value(["cv_steer"])
    at.multiselect(key="unlearn_audit_choice").set_value(["references", "relearning"])
    at.multiselect(key="unlearn_reference_ks").set_value([1, "all"])
    at.button[1].click().run()  # the audits form's submit button
    no_trouble(at)
    refs = next(d.value for d in at.dataframe if "rule" in d.value.columns)
    assert set(refs["rule"]) == {"random", "kmeans_medoids", "support_points", "all"}
    assert refs["forget acc ↓"].max() <= 100 and any("by construction" in c.value for c in at.caption)


def test_setup_computes_a_run_with_the_builtin_v2(new_app, monkeypatch, tmp_path):
    """The second built-in version goes through the app's real path (model, fine-tune, cache) and its own
    learning rate; 8 images per class keep it quick."""
    monkeypatch.setenv("CVS_CACHE_DIR", str(tmp_path))
    at = new_app()
    at.selectbox(key="setup_builtin_version").set_value("builtin:v2").run()
    at.number_input(key="setup_cap").set_value(8).run()
    at.button(key="setup_compute").click().run()
    no_trouble(at)
    assert any("builtin:v2" in s.value for s in at.subheader), [s.value for s in at.subheader]
    assert float(metric(at, "Zero-shot").rstrip("%")) > 30  # chance is 10%
    assert any(c.value.startswith("Fine-tuning: ") and "lr 0.0005" in c.value for c in at.caption)
