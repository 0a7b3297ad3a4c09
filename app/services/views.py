"""What the pages draw from a computed run: the live editor and its tables, cosines, collapse
metrics, predictions and thumbnails."""
from __future__ import annotations

import numpy as np
import streamlit as st

from app import synthetic
from app.live import LiveEditor
from app.state import AppRunConfig

from .maps import cached_map
from .runs import EVAL_SPLIT, cached_run, eval_labels


@st.cache_resource(show_spinner=False)
def live_editor(config: AppRunConfig, with_map: bool) -> LiveEditor:
    """The precomputed live loop of one run; with_map: also move the edited points on the map."""
    points = cached_map(config) if with_map else None
    if points is None:
        run = cached_run(config)
        if run.store is not None:  # a large run: the tables from memory-mapped blocks, the split never loaded
            return LiveEditor.from_store(run.store, EVAL_SPLIT, run.head, run.class_vectors)
        return LiveEditor(run.ft[EVAL_SPLIT], run.head, run.class_vectors)
    base = live_editor(config, False)  # the same tables: built once per run, map or not
    return base.with_map(points.ft_xy, points.reproject, None if points.edit_coords is None else points.place_edit)


@st.cache_resource(show_spinner=False)
def live_tables(config: AppRunConfig) -> dict:
    """The browser's tables of one run (see app/components/live_editor.py): built once, sent until the
    browser holds them."""
    from app.components.live_editor import tables_packet

    editor = live_editor(config, False)
    return tables_packet(editor.factored, editor.labels, editor.cv.class_names, thumbnail_sheet(config),
                         seed=config.seed, images=_eval_images(config) is not None)


@st.cache_resource(show_spinner=False)
def thumbnail_sheet(config: AppRunConfig) -> dict | None:
    """Every test image as one picture for the maps' hover (None for the synthetic run or > 12,000 images)."""
    from app.components.live_editor import thumbnail_atlas

    images = _eval_images(config)
    return None if images is None else thumbnail_atlas([images[i][0] for i in range(len(images))])


@st.cache_resource(show_spinner=False)
def latent_map_data(config: AppRunConfig, colors: tuple[str, ...]) -> dict:
    """The Geometry map's data for the browser (positions, predictions, centroids; whether images exist)."""
    from app.components.latent_map import map_packet

    from .maps import map_extent

    run, points = cached_run(config), cached_map(config)
    pre_pred, ft_pred = predictions(config)
    return map_packet(points.pre_xy, points.ft_xy, eval_labels(run), pre_pred, ft_pred,
                      points.pre_centroids, points.ft_centroids, map_extent(config), run.head.class_names,
                      colors, images=_eval_images(config) is not None, note=points.note, seed=config.seed)


def thumbnail_uri(config: AppRunConfig, row: int, size: int = 64) -> str | None:
    """One test image as a PNG data URI (the map's hover asks for the point under the mouse only)."""
    import base64
    from io import BytesIO

    from PIL import Image

    images = _eval_images(config)
    if images is None or not 0 <= row < len(images):
        return None
    image = images[row][0].convert("RGB")
    image.thumbnail((size, size), Image.NEAREST if max(image.size) <= size else Image.BILINEAR)
    buf = BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@st.cache_data(show_spinner=False)
def collapse_table(config: AppRunConfig) -> list[dict]:
    """NC1-NC4 of the pretrained and fine-tuned test latents, with one-line explanations."""
    from cv_core.math.collapse import EXPLANATIONS, collapse_metrics

    run = cached_run(config)
    if run.store is not None:  # a large run: the findings' own numbers (two passes over the store's blocks per
        from .explain import findings  # encoder, ~30 s each at 1M x 512: computed once, not twice)

        numbers = findings(config)["collapse"].numbers
        pre, ft = numbers["pretrained"], numbers["finetuned"]
    else:
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
    if run.store is not None:  # block by block from the memory-mapped store
        from cv_core.features.stored import predictions as stored_predictions

        return tuple(stored_predictions(run.head, run.store, EVAL_SPLIT, enc).numpy() for enc in ("pre", "ft"))
    return (run.head.predict(run.pre[EVAL_SPLIT].features).numpy(),
            run.head.predict(run.ft[EVAL_SPLIT].features).numpy())


@st.cache_resource(show_spinner=False, max_entries=4)
def _eval_images(config: AppRunConfig):
    """The evaluation split's ImageDataset, in the order of the latents (None for the synthetic run)."""
    run = cached_run(config)
    if config.dataset == synthetic.NAME or run is None:
        return None
    return run.images(EVAL_SPLIT)


@st.cache_resource(show_spinner=False, max_entries=16)
def presenter_map(config: AppRunConfig, target: int, lam: float, frames: int = 6):
    """The Presenter's animated map: class ``target``'s test points re-projected at strengths 0 .. lam."""
    from app import charts

    from .runs import gate_thresholds

    points = cached_map(config)
    editor = live_editor(config, True)
    c = len(editor.cv.class_names)
    gamma = gate_thresholds(config, "auto")
    mask = editor.labels.numpy() == target
    steps = [lam * k / (frames - 1) for k in range(frames)]
    xys = []
    for s in steps:
        coefs = [0.0] * c
        coefs[target] = -s
        xys.append(editor.positions(editor.evaluate(coefs, gamma))[mask])
    return charts.presenter_map(points.ft_xy, xys, steps, str(editor.cv.class_names[target]),
                                charts.class_color(target))
