"""Typed values that flow between the stages: latents, heads, class vectors.

These are frozen dataclasses around tensors. They hold no paths and do no I/O.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import torch

from .editspec import COEF_LIMIT, check_coefficient  # noqa: F401  (re-exported: the one range check)
from .errors import InvalidInputError, NumericalError, UnknownNameError

if TYPE_CHECKING:
    from .features.store import FeatureStore
    from .math.metrics import Scores
    from .models.finetune import FinetuneConfig


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`NumericalError` if ``x`` holds NaN or inf."""
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise NumericalError(f"{what} contains {bad} NaN or infinite values; the model or data is broken "
                             "(check the checkpoint, lower the learning rate, or recompute the cache)")
    return x


@dataclass(frozen=True)
class FeatureSet:
    """Latents of one encoder on one split.

    features: (N, D) float32, the image embedding before L2 normalisation
    labels:   (N,) int64 in [0, C)
    """

    features: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    split: str = "test"
    encoder: str = "pretrained"  # "pretrained" | "finetuned" | an edit name

    def __post_init__(self):
        f, y = self.features, self.labels
        if f.ndim != 2 or y.ndim != 1 or f.shape[0] != y.shape[0]:
            raise InvalidInputError(f"features must be (N, D) and labels (N,), got {tuple(f.shape)} "
                                    f"and {tuple(y.shape)}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(self.class_names)):
            raise InvalidInputError(f"labels must lie in [0, {len(self.class_names)}), "
                                    f"got [{int(y.min())}, {int(y.max())}]")
        check_finite(f, f"{self.encoder} latents of split {self.split!r}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> FeatureSet:
        return FeatureSet(self.features[index], self.labels[index], self.class_names, self.split, self.encoder)


def class_index(class_names: Sequence[str], key: str | int) -> int:
    """Resolve a class given by exact name or by index (as a string or an int)."""
    if isinstance(key, int) or (isinstance(key, str) and key.strip().lstrip("-").isdigit()
                                and key not in class_names):
        i = int(key)
        if not 0 <= i < len(class_names):
            raise InvalidInputError(f"class index {i} is out of range: there are {len(class_names)} classes "
                                    f"(0..{len(class_names) - 1})")
        return i
    if key in class_names:
        return list(class_names).index(key)
    raise UnknownNameError("class", str(key), class_names)


@dataclass(frozen=True)
class ZeroShotHead:
    """CLIP zero-shot classifier.

    weights: (C, D) float32, unit rows (mean of normalised prompt embeddings, renormalised)
    logits(f) = logit_scale * normalize(f) @ weights.T
    """

    weights: torch.Tensor
    logit_scale: float
    class_names: tuple[str, ...]
    templates: tuple[str, ...] = ()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features: (N, D) -> logits (N, C)."""
        w = self.weights.to(features.device, features.dtype)
        return self.logit_scale * torch.nn.functional.normalize(features, dim=-1) @ w.T

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """features: (N, D) -> predicted class (N,) int64. The scale does not change the argmax."""
        w = self.weights.to(features.device, features.dtype)
        return (torch.nn.functional.normalize(features, dim=-1) @ w.T).argmax(dim=-1)


@dataclass(frozen=True)
class ClassVectors:
    """One Class Vector per class: kappa_c = mu_ft^c - mu_pre^c.

    kappa, mu_pre, mu_ft: (C, D) float32; counts: (C,) int64 reference samples per class
    """

    kappa: torch.Tensor
    mu_pre: torch.Tensor
    mu_ft: torch.Tensor
    class_names: tuple[str, ...]
    counts: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def coefficients(self, coefs: Mapping[str | int, float] | torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Normalise coefficients given by class name/index mapping or as a (C,) sequence -> (C,) float32, by the
        one edit rule (``cv_core.editspec.EditSpec.build``: a class given twice or a value out of range is an
        error)."""
        from .editspec import EditSpec

        return torch.tensor(EditSpec.build(self.class_names, coefs).coefficients, dtype=torch.float32)

    def combine(self, coefs) -> torch.Tensor:
        """sum_c a_c kappa_c -> (D,)."""
        return self.coefficients(coefs).to(self.kappa.dtype) @ self.kappa




@runtime_checkable
class Run(Protocol):
    """What a computed run offers the app, the report and the edit functions: ``cv_core.pipeline.RunResult``
    and the app's synthetic run (``app.synthetic.SyntheticRun``) both satisfy it, so callers never probe.

    pre / ft: split -> FeatureSet; store: the sharded feature store of a large run, else None;
    finetune_config: None when no encoder was fine-tuned (synthetic latents); finetune_run: what the
    fine-tuning did (``models.finetune.describe_run``; {} when nothing is known); cache_dir: where derived
    artifacts (forget-strength curves) are cached: a folder, None (the default folder) or False (memory only).
    """

    @property
    def head(self) -> ZeroShotHead: ...
    @property
    def pre(self) -> Mapping[str, FeatureSet]: ...
    @property
    def ft(self) -> Mapping[str, FeatureSet]: ...
    @property
    def class_vectors(self) -> ClassVectors: ...
    @property
    def zero_shot(self) -> Scores: ...
    @property
    def finetuned(self) -> Scores: ...
    @property
    def timings(self) -> dict[str, float]: ...
    @property
    def backbone_name(self) -> str: ...
    @property
    def dataset(self) -> str: ...
    @property
    def class_names(self) -> tuple[str, ...]: ...
    @property
    def zero_shot_accuracy(self) -> float: ...
    @property
    def finetuned_accuracy(self) -> float: ...
    @property
    def store(self) -> FeatureStore | None: ...
    @property
    def finetune_config(self) -> FinetuneConfig | None: ...
    @property
    def finetune_run(self) -> dict: ...
    @property
    def cache_dir(self) -> str | None | Literal[False]: ...
