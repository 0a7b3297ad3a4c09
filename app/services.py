"""The only door from the app to ``cv_core``: every library call, and all caching, lives here.

Models and runs are kept with ``st.cache_resource`` (one copy shared by all sessions, never
pickled); derived arrays and tables with ``st.cache_data`` keyed by the hashable
:class:`~app.state.AppRunConfig`. Pages call these functions and draw what they return.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from app import synthetic
from app.live import LiveEditor
from app.state import AppRunConfig

SYNTHETIC_ENV = "CVS_SYNTHETIC"  # "1": offer the synthetic 10,000-point run (benchmarks, tests)
SYNTHETIC_SIZE_ENV = "CVS_SYNTHETIC_N"  # test images of the synthetic run (default 10,000; tests use fewer)
EVAL_SPLIT = "test"


# ---------------------------------------------------------------- choices shown on the Setup page
@st.cache_resource(show_spinner=False)
def warm_imports() -> bool:
    """Import the heavy libraries once per process (the first Setup screen shows a spinner meanwhile)."""
    import cv_core.data.datasets  # noqa: F401
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


def dataset_description(name: str) -> str:
    if name == synthetic.NAME:
        return synthetic.__doc__.strip().splitlines()[0]
    from cv_core.data.datasets import get_dataset_info

    return get_dataset_info(name).description


@st.cache_data(show_spinner=False)
def backbone_choices() -> list[str]:
    from cv_core.models.backbones import list_backbones

    return list_backbones()


@st.cache_data(show_spinner=False, ttl=60)
def backbone_availability(spec: str) -> tuple[bool | None, str]:
    """(usable offline, plain message); None when the spec itself is invalid. Never downloads."""
    from cv_core.errors import CVError
    from cv_core.models.backbones import check_backbone

    try:
        a = check_backbone(spec)
    except CVError as err:
        return None, str(err)
    return a.available_offline, a.message


def device_choices() -> dict[str, str]:
    """Device name -> label, e.g. {'auto': 'auto (cuda: NVIDIA H100)', 'cpu': 'cpu'}."""
    from cv_core.device import describe, resolve_device

    out = {"auto": f"auto ({describe(resolve_device('auto'))})", "cpu": "cpu"}
    if torch.cuda.is_available():
        out["cuda"] = describe(torch.device("cuda"))
    return out


# ---------------------------------------------------------------- computing and keeping runs
@st.cache_resource(show_spinner=False)
def _runs() -> dict:
    """Computed runs of this server process, keyed by AppRunConfig (shared by all sessions)."""
    return {}


_RUNS_LOCK = threading.Lock()


def cached_run(config: AppRunConfig):
    """The computed run for ``config``, or None when it has not been computed in this process."""
    return _runs().get(config)


def compute_run(config: AppRunConfig, progress: Callable | None = None, cancel: Callable | None = None):
    """Compute (or reuse) the run. Runs in a worker thread: must not touch Streamlit.

    A cancelled or failed computation stores nothing (the library writes its disk cache atomically).
    """
    runs = _runs()
    if config in runs:
        return runs[config]
    if config.dataset == synthetic.NAME:
        size = int(os.environ.get(SYNTHETIC_SIZE_ENV, synthetic.SPLIT_SIZES["test"]))
        result = synthetic.make_run(test_size=size, seed=config.seed)
    else:
        result = _run_pipeline(config, progress, cancel)
    with _RUNS_LOCK:
        runs[config] = result
    return result


def _run_pipeline(config: AppRunConfig, progress, cancel, max_halvings: int = 3):
    """pipeline.run; when the GPU runs out of memory, retry with half the fine-tuning batch (and say so)."""
    from dataclasses import replace

    from cv_core import pipeline
    from cv_core.device import resolve_device
    from cv_core.models.finetune import FinetuneConfig
    from cv_core.progress import Progress

    finetune = None
    for attempt in range(max_halvings + 1):
        run_config = pipeline.RunConfig(backbone=config.backbone, dataset=config.dataset, device=config.device,
                                        data_root=config.data_root, max_per_class=config.max_per_class,
                                        seed=config.seed, splits=("train", "val", "test"), finetune=finetune)
        try:
            return pipeline.run(run_config, progress=progress, cancel=cancel)
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            base = finetune or FinetuneConfig.default_for(resolve_device(config.device),
                                                          small_model=config.backbone == "builtin")
            if attempt == max_halvings or base.batch_size == 1:
                raise
            finetune = replace(base, batch_size=max(1, base.batch_size // 2))
            if progress is not None:
                progress(Progress("out of memory", attempt + 1, None,
                                  f"the GPU ran out of memory with batch {base.batch_size}: "
                                  f"retrying with batch {finetune.batch_size}"))


# ---------------------------------------------------------------- derived data
@st.cache_resource(show_spinner=False)
def start_umap_warm_up() -> threading.Thread:
    """Compile UMAP's numba code once per server process, in the background, at start-up."""
    from cv_core.projection import warm_up

    thread = threading.Thread(target=warm_up, name="cvs-umap-warm-up", daemon=True)
    thread.start()
    return thread

@st.cache_resource(show_spinner=False)
def gate_thresholds(config: AppRunConfig) -> torch.Tensor:
    """Per-class gate thresholds (C,) that keep 99% of each class's own train latents inside the gate."""
    from cv_core.math.steering import auto_gamma

    run = cached_run(config)
    return auto_gamma(run.class_vectors, run.ft["train"])


@dataclass(frozen=True)
class MapPoints:
    """The shared 2-D map of one run's test latents.

    pre_xy, ft_xy: (N, 2) positions of the pretrained / fine-tuned latents;
    pre_centroids, ft_centroids: (C, 2) class centroids; projector: the fitted LatentMap
    (its ``reproject`` places edited latents without UMAP's slow ``transform``).
    """

    pre_xy: np.ndarray
    ft_xy: np.ndarray
    pre_centroids: np.ndarray
    ft_centroids: np.ndarray
    projector: object


@st.cache_resource(show_spinner=False)
def _maps() -> dict:
    """Fitted maps of this server process, keyed by AppRunConfig."""
    return {}


def cached_map(config: AppRunConfig) -> MapPoints | None:
    return _maps().get(config)


def compute_map(config: AppRunConfig, progress: Callable | None = None, cancel: Callable | None = None) -> MapPoints:
    """Fit one UMAP on the pretrained and fine-tuned test latents together. Worker thread: no Streamlit."""
    maps = _maps()
    if config in maps:
        return maps[config]
    from cv_core.features.cache import ArtifactCache
    from cv_core.projection import LatentMap, fit_cached

    run = cached_run(config)
    pre, ft = run.pre[EVAL_SPLIT].features, run.ft[EVAL_SPLIT].features
    latents = torch.cat([pre, ft]).numpy()                                         # (2N, D)
    disk = None if config.dataset == synthetic.NAME else ArtifactCache(None)      # the library's cache folder
    lm, _ = fit_cached(LatentMap(random_state=config.seed), latents, disk, progress, cancel)
    emb = np.asarray(lm.embedding_, dtype=np.float32)
    cv = run.class_vectors
    centroids = np.asarray(lm.reproject(torch.cat([cv.mu_pre, cv.mu_ft]).numpy()), dtype=np.float32)
    n, c = pre.shape[0], cv.num_classes
    points = MapPoints(emb[:n], emb[n:], centroids[:c], centroids[c:], lm)
    with _RUNS_LOCK:
        maps[config] = points
    return points


@st.cache_data(show_spinner=False)
def map_extent(config: AppRunConfig) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) of the fitted map (pretrained and fine-tuned points), padded."""
    from app import charts

    points = cached_map(config)
    return charts.map_extent(np.concatenate([points.pre_xy, points.ft_xy]))


@st.cache_resource(show_spinner=False)
def live_editor(config: AppRunConfig, with_map: bool) -> LiveEditor:
    """The precomputed live loop of one run; with_map: also move the edited points on the map."""
    run = cached_run(config)
    test = run.ft[EVAL_SPLIT]
    points = cached_map(config) if with_map else None
    if points is None:
        return LiveEditor(test, run.head, run.class_vectors)
    n = len(test)  # the map's rows are [pretrained latents; fine-tuned latents]
    return LiveEditor(test, run.head, run.class_vectors, points.ft_xy,
                      lambda latents, index: points.projector.reproject(latents, index=index + n))


@st.cache_resource(show_spinner=False)
def live_tables(config: AppRunConfig) -> dict:
    """The browser's tables of one run (see app/components/live_editor.py): built once, sent on each draw."""
    from app.components.live_editor import payload

    editor = live_editor(config, False)
    return payload(editor.factored, editor.labels, editor.cv.class_names)


@st.cache_data(show_spinner=False)
def collapse_table(config: AppRunConfig) -> list[dict]:
    """NC1-NC4 of the pretrained and fine-tuned test latents, with one-line explanations."""
    from cv_core.math.collapse import EXPLANATIONS, collapse_metrics

    run = cached_run(config)
    pre = collapse_metrics(run.pre[EVAL_SPLIT], run.head.weights).as_dict()
    ft = collapse_metrics(run.ft[EVAL_SPLIT], run.head.weights).as_dict()
    return [{"metric": k, "pretrained": pre[k], "fine-tuned": ft[k], "meaning": EXPLANATIONS[k]} for k in pre]


@st.cache_data(show_spinner=False)
def cosines(config: AppRunConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos(kappa_c, kappa_c') and cos(kappa_c, mu_ft^c'), both (C, C)."""
    from cv_core.math.class_vectors import cosine_matrix

    cv = cached_run(config).class_vectors
    return cosine_matrix(cv.kappa, cv.kappa).numpy(), cosine_matrix(cv.kappa, cv.mu_ft).numpy()


@st.cache_data(show_spinner=False)
def predictions(config: AppRunConfig) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class of every test image, pretrained and fine-tuned (N,) each."""
    run = cached_run(config)
    return (run.head.predict(run.pre[EVAL_SPLIT].features).numpy(),
            run.head.predict(run.ft[EVAL_SPLIT].features).numpy())


@st.cache_data(show_spinner=False, max_entries=64)
def thumbnail(config: AppRunConfig, index: int):
    """The test image ``index`` as a PIL image, or None for the synthetic run."""
    images = _eval_images(config)
    if images is None:
        return None
    image, _ = images[int(index)]
    return image.resize((96, 96), resample=0) if max(image.size) < 96 else image  # 0: nearest, keeps pixels


@st.cache_resource(show_spinner=False, max_entries=4)
def _eval_images(config: AppRunConfig):
    """The evaluation split's ImageDataset, in the order of the latents (None for the synthetic run)."""
    run = cached_run(config)
    if config.dataset == synthetic.NAME or run is None:
        return None
    return run.images(EVAL_SPLIT)


# ---------------------------------------------------------------- unlearning
def unlearning_methods(config: AppRunConfig) -> list[tuple[str, str, bool, bool]]:
    """(name, description, needs_encoder, usable) of every registered method.

    Encoder methods retrain part of the image encoder: they need the model and the images, which
    the synthetic run does not have.
    """
    from cv_core.edits import UNLEARNING_METHODS

    has_model = config.dataset != synthetic.NAME
    return [(name, m.description, m.needs_encoder, has_model or not m.needs_encoder)
            for name, m in UNLEARNING_METHODS.items()]


@st.cache_resource(show_spinner=False, max_entries=2)
def _unlearn_context(config: AppRunConfig, encoder: bool):
    from cv_core.edits import UnlearnContext
    from cv_core.edits.context import context_from_run

    run = cached_run(config)
    if config.dataset == synthetic.NAME:
        return UnlearnContext(run.head, run.pre, run.ft, run.class_vectors)
    return context_from_run(run, encoder=encoder, seed=config.seed)


@st.cache_data(show_spinner=False)
def compare_unlearning(config: AppRunConfig, forget: tuple[int, ...], methods: tuple[str, ...],
                       probe: bool = True, _on_method: Callable | None = None) -> list[dict]:
    """Run each method on the forget set and audit it -> one row of metrics per method.

    _on_method(name): called before each method (not part of the cache key).
    """
    from cv_core.edits import UNLEARNING_METHODS, audit, run_method

    encoder = any(UNLEARNING_METHODS.get(m).needs_encoder for m in methods)
    ctx = _unlearn_context(config, encoder)
    rows = []
    for name in methods:
        if _on_method is not None:
            _on_method(name)
        a = audit(ctx, run_method(name, ctx, list(forget), seed=config.seed), seed=config.seed, probe=probe)
        rows.append({"method": name, "acc_f": a.acc_f, "acc_r": a.acc_r, "probe_f": a.probe_f, "mia": a.mia,
                     "seconds": a.seconds, "trainable_params": a.trainable_params,
                     "encoder_changed": a.encoder_changed})
    return rows


# ---------------------------------------------------------------- export
def current_edit(config: AppRunConfig, coefs: list[float], moves: list, gate):
    """The LiveResult of the session's current edit (cheap: a few matrix products)."""
    gamma = gate_thresholds(config) if gate == "auto" else gate
    return live_editor(config, False).evaluate(coefs, gamma, moves)


def export_bundle(config: AppRunConfig, coefs: list[float], moves: list, gate, unlearning) -> dict[str, bytes]:
    """File name -> bytes for the Export page (vectors, metrics JSON and CSV, recipe)."""
    import json

    from app import exports

    run = cached_run(config)
    names = run.head.class_names
    res = current_edit(config, coefs, moves, gate)
    edit = {"coefficients": {n: a for n, a in zip(names, coefs) if a},
            "moves": [{"from": names[s], "to": names[t], "alpha": a} for s, t, a in moves],
            "gate": gate if gate in ("auto", None) else float(gate),
            "forget_accuracy": None if res.forget != res.forget else res.forget,
            "retain_accuracy": None if res.retain != res.retain else res.retain}
    m = exports.metrics(config, run, edit, res.after.per_class.tolist(), collapse_table(config), unlearning)
    return {"class_vectors.safetensors": exports.class_vectors_safetensors(run.class_vectors),
            "metrics.json": json.dumps(m, indent=2).encode(),
            "per_class.csv": exports.per_class_csv(m),
            "recipe.sh": exports.recipe(config, names, coefs, moves, gate).encode()}
