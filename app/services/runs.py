"""Choices of the Setup page, computing and keeping runs, the gate of a run."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable

import numpy as np
import streamlit as st
import torch

from app import synthetic
from app.state import AppRunConfig

SYNTHETIC_ENV = "CVS_SYNTHETIC"  # "1": offer the synthetic 10,000-point run (benchmarks, tests)
SYNTHETIC_SIZE_ENV = "CVS_SYNTHETIC_N"  # test images of the synthetic run (default 10,000; tests use fewer)
SYNTHETIC_CLASSES_ENV = "CVS_SYNTHETIC_C"  # classes of the synthetic run (default 10)
EVAL_SPLIT = "test"


# ---------------------------------------------------------------- choices shown on the Setup page
@st.cache_resource(show_spinner=False)
def warm_imports() -> bool:
    """Import the heavy libraries once per process (the first Setup screen shows a spinner meanwhile)."""
    import pandas  # noqa: F401  (before the UMAP warm-up thread starts: two threads importing the same
    import cv_core.data.datasets  # noqa: F401   packages in different orders can see a half-initialised module)
    import cv_core.edits  # noqa: F401
    import cv_core.models.backbones  # noqa: F401

    return True


def dataset_choices() -> list[str]:
    from cv_core.data.datasets import list_datasets

    names = list_datasets()
    if "digits" in names:  # the offline default first
        names.remove("digits")
        names.insert(0, "digits")
    if os.environ.get(SYNTHETIC_ENV) == "1":
        names.append(synthetic.NAME)
    return names


def dataset_label(name: str) -> str:
    """The name shown in the dataset choice: the synthetic run's id with the sizes it will have (its id
    stays ``synthetic-10k`` whatever ``CVS_SYNTHETIC_N`` says, so say the real size beside it)."""
    if name != synthetic.NAME:
        return name
    try:
        size = _env_int(SYNTHETIC_SIZE_ENV, synthetic.SPLIT_SIZES["test"])
        classes = _env_int(SYNTHETIC_CLASSES_ENV, 10)
    except Exception:  # noqa: BLE001 - a bad setting is reported when the run is computed
        return name
    return f"{name} ({size:,} test points, {classes:,} classes)"


def dataset_description(name: str) -> str:
    if name == synthetic.NAME:
        return synthetic.__doc__.strip().splitlines()[0]
    from cv_core.data.datasets import get_dataset_info

    return get_dataset_info(name).description


@st.cache_data(show_spinner=False)
def backbone_choices() -> list[str]:
    from cv_core.models.backbones import list_backbones

    return list_backbones()


def builtin_label(spec: str) -> str:
    """The built-in version's line for the Setup page's selectbox (from its manifest)."""
    from cv_core.models.backbones import parse_spec
    from cv_core.models.builtin import describe

    return f"{spec} — {describe(parse_spec(spec).version)}"


@st.cache_data(show_spinner=False, ttl=60)
def backbone_availability(spec: str) -> tuple[bool | None, str]:
    """(usable offline, plain message); None when the backbone cannot be used (invalid spec, a checkpoint file
    that is missing, unreadable or does not fit the architecture, or weights to download with no network, which
    a 3-second probe tells). Never downloads."""
    from cv_core.errors import CVError
    from cv_core.models.backbones import check_backbone

    try:
        a = check_backbone(spec)
    except CVError as err:  # an invalid spec, or a local checkpoint that cannot be used: Compute stays disabled
        return None, str(err)
    if not a.available_offline:
        from cv_core.models.checkpoints import network_reachable

        if os.environ.get("HF_HUB_OFFLINE") == "1" or not network_reachable(timeout=3.0):
            return None, (f"{a.message}, and there is no network: put the weights in the Hugging Face cache, "
                          "pass MODEL:/path/to/file, or choose the built-in backbone")
    return a.available_offline, a.message


def device_choices() -> dict[str, str]:
    """Device name -> label, e.g. {'auto': 'auto (cuda: NVIDIA H100)', 'cpu': 'cpu'}."""
    from cv_core.device import describe, resolve_device

    out = {"auto": f"auto ({describe(resolve_device('auto'))})", "cpu": "cpu"}
    if torch.cuda.is_available():
        out["cuda"] = describe(torch.device("cuda"))
    return out


def recipe_text(backbone: str, device: str, recipe: str, freeze_bn_stats: bool = False) -> str:
    """What a fine-tuning recipe will do for this backbone on this device, in words (Setup's caption)."""
    from dataclasses import replace

    from cv_core.device import resolve_device
    from cv_core.models.backbones import is_builtin
    from cv_core.models.finetune import FinetuneConfig

    dev = resolve_device(device)
    cfg = replace(FinetuneConfig.recipe_for(recipe, dev, backbone), freeze_norm_stats=freeze_bn_stats)
    text = f"Fine-tunes the image encoder for {cfg.describe()}."
    if dev.type == "cpu" and not is_builtin(backbone) and cfg.steps * cfg.batch_size > 5_000:
        text += (f" On a CPU an open_clip model trains at a few images a second: {cfg.steps} steps of "
                 f"{cfg.batch_size} images take hours.")
    return text


# ---------------------------------------------------------------- computing and keeping runs
@st.cache_resource(show_spinner=False)
def _runs() -> dict:
    """Computed runs of this server process, keyed by AppRunConfig (shared by all sessions)."""
    return {}


_RUNS_LOCK = threading.Lock()


@st.cache_resource(show_spinner=False)
def _identities() -> dict:
    """AppRunConfig -> data_identity(dataset) when its run was computed."""
    return {}


def data_identity(dataset: str) -> str | None:
    """For an image folder, a digest of its files' (path, size, mtime) read now (cv_core.data.imagefolder's
    folder_signature, the same stats as the disk cache's keys); None for other datasets."""
    prefix, sep, arg = dataset.partition(":")
    if prefix != "imagefolder" or not sep:
        return None
    from cv_core.data.imagefolder import folder_signature

    return folder_signature(arg)


def cached_run(config: AppRunConfig):
    """The computed run for ``config``, or None when it has not been computed in this process."""
    return _runs().get(config)


def compute_run(config: AppRunConfig, progress: Callable | None = None, cancel: Callable | None = None):
    """Compute (or reuse) the run. Runs in a worker thread: must not touch Streamlit.

    A cancelled or failed computation stores nothing (the library writes its disk cache atomically).
    """
    runs, idents = _runs(), _identities()
    ident = data_identity(config.dataset)
    if config in runs and idents.get(config) == ident:  # an image folder whose files changed is computed again
        return runs[config]
    if config.dataset == synthetic.NAME:
        size = _env_int(SYNTHETIC_SIZE_ENV, synthetic.SPLIT_SIZES["test"])
        classes = _env_int(SYNTHETIC_CLASSES_ENV, 10)
        if size >= synthetic.STORE_MIN:  # generated once into a feature store in the cache folder, read from it
            result = synthetic.open_run(None, num_classes=classes, test_size=size, seed=config.seed)
        else:
            result = synthetic.make_run(num_classes=classes, test_size=size, seed=config.seed)
    else:
        result = _run_pipeline(config, progress, cancel)
    with _RUNS_LOCK:
        runs[config], idents[config] = result, ident
    return result


def _env_int(name: str, default: int) -> int:
    from cv_core.errors import InvalidInputError

    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        n = int(value.replace("_", ""))
    except ValueError:
        n = 0
    if n < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return n


def _run_pipeline(config: AppRunConfig, progress, cancel, max_halvings: int = 3):
    """pipeline.run; when the GPU runs out of memory, retry with half the fine-tuning batch (and say so)."""
    from dataclasses import replace

    from cv_core import pipeline
    from cv_core.device import resolve_device
    from cv_core.models.finetune import FinetuneConfig
    from cv_core.progress import Progress

    recipe = FinetuneConfig.recipe_for(config.finetune_recipe, resolve_device(config.device), config.backbone)
    recipe = replace(recipe, freeze_norm_stats=config.freeze_bn_stats)
    # None: the pipeline's default, same keys
    finetune = None if config.finetune_recipe == "auto" and not config.freeze_bn_stats else recipe
    for attempt in range(max_halvings + 1):
        run_config = pipeline.RunConfig(backbone=config.backbone, dataset=config.dataset, device=config.device,
                                        data_root=config.data_root, max_per_class=config.max_per_class,
                                        seed=config.seed, splits=("train", "val", "test"), finetune=finetune)
        try:
            return pipeline.run(run_config, progress=progress, cancel=cancel)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            base = finetune or recipe
            if attempt == max_halvings or base.batch_size == 1:
                raise
            finetune = replace(base, batch_size=max(1, base.batch_size // 2))
            if progress is not None:
                progress(Progress("out of memory", attempt + 1, None,
                                  f"the GPU ran out of memory with batch {base.batch_size}: "
                                  f"retrying with batch {finetune.batch_size}"))


def eval_labels(run) -> np.ndarray:
    """(N,) int64 labels of the evaluation split, from the feature store of a large run (the split's
    latents are not loaded) or from its FeatureSet."""
    if run.store is not None:
        return run.store.labels(EVAL_SPLIT)
    return run.ft[EVAL_SPLIT].labels.numpy()


@st.cache_resource(show_spinner=False)
def gate_thresholds(config: AppRunConfig, gate="auto") -> torch.Tensor | None:
    """The run's gate thresholds by the one rule, ``cv_core.editspec.resolve_gate``: None (gate off) or (C,)
    cosines ('auto', 'own' or one cosine; see ``cv_core.editspec.GATE_HELP``)."""
    from cv_core.editspec import resolve_gate

    return resolve_gate(cached_run(config), gate)
