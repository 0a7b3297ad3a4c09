"""The only door from the app to ``cv_core``: every library call, and all caching, lives here.

Models and runs are kept with ``st.cache_resource`` (one copy shared by all sessions, never
pickled); derived arrays and tables with ``st.cache_data`` keyed by the hashable
:class:`~app.state.AppRunConfig`. Pages call ``services.<function>`` and draw what it returns; the
functions live in four modules by subject: ``runs`` (Setup's choices, computing and keeping runs,
gates), ``maps`` (the shared UMAP map), ``views`` (what the Geometry, Class-arithmetic and
Presenter pages draw), ``unlearning`` (method comparisons and the Export page's files).
"""
from .maps import MapPoints, cached_map, compute_map, map_extent, start_umap_warm_up, warm_up_status
from .runs import (EVAL_SPLIT, SYNTHETIC_CLASSES_ENV, SYNTHETIC_ENV, SYNTHETIC_SIZE_ENV, _run_pipeline,
                   backbone_availability, backbone_choices, builtin_label, cached_run, compute_run, dataset_choices,
                   dataset_description, dataset_label, device_choices, eval_labels, gate_thresholds, recipe_text,
                   warm_imports)
from .explain import findings, forget_strengths, minus_one, switch_alpha
from .unlearning import compare_unlearning, current_edit, export_bundle, unlearning_audits, unlearning_methods
from .views import (collapse_table, cosines, latent_map_data, live_editor, live_tables, predictions,
                    presenter_map, thumbnail_sheet, thumbnail_uri)

__all__ = ["EVAL_SPLIT", "SYNTHETIC_CLASSES_ENV", "SYNTHETIC_ENV", "SYNTHETIC_SIZE_ENV", "MapPoints", "eval_labels", "backbone_availability",
           "backbone_choices", "builtin_label", "recipe_text", "cached_map", "cached_run", "collapse_table", "compare_unlearning", "compute_map",
           "compute_run", "cosines", "current_edit", "dataset_choices", "dataset_description", "dataset_label", "device_choices",
           "export_bundle", "findings", "forget_strengths", "minus_one", "switch_alpha", "presenter_map", "gate_thresholds", "latent_map_data", "live_editor", "live_tables", "map_extent", "predictions",
           "start_umap_warm_up", "warm_up_status", "thumbnail_sheet", "thumbnail_uri", "unlearning_audits", "unlearning_methods", "warm_imports", "_run_pipeline"]
