"""Editing and unlearning methods, their audits, property studies and the report.

Importing this package registers every method in :data:`UNLEARNING_METHODS`.
"""
from . import baselines, fucrt, latent, lrp_npp, task_vector, weight_map, wf_net  # noqa: F401  (register the methods)
from . import report_md_audits  # noqa: F401  (registers the audit columns in columns.COLUMNS)
from .audits import Audit, audit, summarize
from .base import (UNLEARNING_METHODS, EncoderInputs, MethodOutput, UnlearnContext, UnlearningMethod,
                   check_forget, list_methods, run_method)

__all__ = ["UNLEARNING_METHODS", "Audit", "EncoderInputs", "MethodOutput", "UnlearnContext",
           "UnlearningMethod", "audit", "check_forget", "list_methods", "run_method", "summarize"]
