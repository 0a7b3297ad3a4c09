"""Setup: choose a backbone, a dataset and a device, then compute the run."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from app import services, state, synthetic
from app.components.compute import run_with_progress
from cv_core.models.finetune import RECIPE_LABELS, RECIPES, describe_run

st.title("Setup")
st.caption("Pick a backbone and a dataset, then compute the zero-shot head, the fine-tune, the latents and "
           "the class vectors. Computed pairs are cached: reopening one is instant.")


def backbone_ui() -> str | None:
    """The backbone spec chosen by the user ('builtin', 'MODEL:TAG' or 'MODEL:/path/file')."""
    kind = st.radio("Backbone", ["built-in (offline)", "open_clip MODEL:TAG", "local checkpoint"],
                    horizontal=True, key="setup_backbone_kind")
    if kind.startswith("built-in"):
        versions = [b for b in services.backbone_choices() if b.startswith("builtin")]
        if len(versions) == 1:
            return versions[0]
        spec = st.selectbox("Version", versions, key="setup_builtin_version", format_func=services.builtin_label)
        ok, message = services.backbone_availability(spec)
        if not ok:
            st.error(f"{spec}: {message} — Compute is disabled until this is fixed.")
            return None
        return spec
    if kind.startswith("open_clip"):
        choices = [b for b in services.backbone_choices() if not b.startswith("builtin")]
        spec = st.selectbox("open_clip model and pretrained tag", choices, key="setup_openclip",
                            index=choices.index("ViT-B-32:openai") if "ViT-B-32:openai" in choices else 0)
    else:
        c1, c2 = st.columns([1, 2])
        model = c1.text_input("Architecture", "ViT-B-32", key="setup_ckpt_model")
        path = c2.text_input("Checkpoint file (.safetensors, .pt, .bin)", key="setup_ckpt_path")
        if not path:
            st.info("Type the path of a checkpoint file on this machine.")
            return None
        spec = f"{model}:{Path(path).expanduser()}"
    with st.spinner("Checking the backbone…"):
        ok, message = services.backbone_availability(spec)
    if ok is None:
        st.error(f"{message} — Compute is disabled until this is fixed.")
        return None
    (st.success if ok else st.warning)(f"{spec}: {message}")
    return spec


def dataset_ui() -> tuple[str | None, int | None]:
    """(dataset name or 'imagefolder:PATH', images per class or None)."""
    kind = st.radio("Dataset", ["registry", "image folder"], horizontal=True, key="setup_dataset_kind")
    if kind == "registry":
        name = st.selectbox("Dataset", services.dataset_choices(), key="setup_dataset",
                            format_func=services.dataset_label)  # the synthetic run's real size beside its id
        st.caption(services.dataset_description(name))
    else:
        folder = st.text_input("Folder with one sub-folder of images per class", key="setup_folder")
        if not folder:
            st.info("Type the path of an image folder (`class_a/*.png`, `class_b/*.png`, …).")
            return None, None
        if not Path(folder).expanduser().is_dir():
            st.error(f"There is no folder at {folder}. Check the path.")
            return None, None
        name = f"imagefolder:{Path(folder).expanduser()}"
    cap = st.number_input("Images per class (0 = all)", min_value=0, value=0, step=50, key="setup_cap")
    return name, (int(cap) or None)


with st.spinner("Loading the catalogue of backbones and datasets (imports torch and open_clip)…"):
    services.warm_imports()
backbone = backbone_ui()
dataset, cap = dataset_ui()
devices = services.device_choices()
device = st.selectbox("Device", list(devices), format_func=devices.get, key="setup_device")
recipe, frozen = "auto", False
if dataset != synthetic.NAME and backbone is not None:
    recipe = st.selectbox("Fine-tuning", list(RECIPES), format_func=RECIPE_LABELS.get, key="setup_recipe")
    frozen = st.checkbox("Keep BatchNorm statistics as pretrained", key="setup_freeze_bn", help=(
        "ResNet image towers (the built-in models, RN50, ...) re-estimate their BatchNorm statistics on the "
        "fine-tuning images by default; that can make the fine-tuned model fail on shifted images (a reference "
        "measured once, not this run: built-in v3, seed 0, 9.8% on digits-noise, 85.0% with the statistics kept; "
        "docs/finetuning.md). No effect on a ViT."))
    st.caption(services.recipe_text(backbone, device, recipe, frozen))

ready = backbone is not None and dataset is not None
if dataset == synthetic.NAME:
    backbone = "synthetic"  # the synthetic run has no model
config = (state.AppRunConfig(backbone or "", dataset or "", device, max_per_class=cap, finetune_recipe=recipe,
                             freeze_bn_stats=frozen)
          if ready else None)
already = config is not None and services.cached_run(config) is not None

c1, c2, _ = st.columns([1, 1, 4])
compute = c1.button("Open" if already else "Compute", type="primary", disabled=not ready, key="setup_compute")
cancel = c2.button("Cancel", key="setup_cancel", help="Stops the computation; nothing half-done is kept.")

if cancel:
    st.warning("The computation was cancelled. Nothing was cached for it; press Compute to start again.")
if compute and config is not None:
    outcome = run_with_progress(lambda progress, cancel: services.compute_run(config, progress, cancel),
                                f"Computing {config.label()}")
    if outcome.error:
        (st.warning if outcome.cancelled else st.error)(outcome.error)
    else:
        state.set_run_config(config)
        st.rerun()  # redraw the sidebar and the pages with the new run

current = state.run_config()
run = services.cached_run(current) if current is not None else None
if run is not None:
    st.subheader(f"Current run: {current.label()}")
    m1, m2, m3 = st.columns(3)
    m1.metric("Zero-shot accuracy", f"{100 * run.zero_shot_accuracy:.1f}%")
    m2.metric("Fine-tuned accuracy", f"{100 * run.finetuned_accuracy:.1f}%")
    m3.metric("Classes", len(run.head.class_names))
    if run.timings:
        st.caption("Stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in run.timings.items()))
    ft_config = run.finetune_config  # None for the synthetic run (no encoder was fine-tuned)
    if ft_config is not None:
        done = describe_run(run.finetune_run)
        st.caption(f"Fine-tuning: {ft_config.describe()}" + (f"; ran {done}." if done else "."))
    st.page_link("app_pages/arithmetic.py", label="Edit classes with sliders", icon=":material/sliders:")
