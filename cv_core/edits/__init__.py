"""Editing and unlearning methods, their audits, property studies and the report.

Importing this package registers every method in :data:`UNLEARNING_METHODS`.
"""
from . import baselines, latent, task_vector, weight_map  # noqa: F401  (register the methods)
from .audits import Audit, audit, summarize
from .base import (UNLEARNING_METHODS, EncoderInputs, MethodOutput, UnlearnContext, UnlearningMethod,
                   check_forget, run_method)

__all__ = ["UNLEARNING_METHODS", "Audit", "EncoderInputs", "MethodOutput", "UnlearnContext",
           "UnlearningMethod", "audit", "check_forget", "run_method", "summarize"]
