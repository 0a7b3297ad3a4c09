"""Use cases shared by the CLI and the app: run the pipeline, apply an edit.

run(): backbone -> zero-shot head -> fine-tuned image encoder -> latents of both encoders per split
-> class vectors. Every stage is cached on disk under a key that names all its inputs, so a second
run is served from the cache without loading the model.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .data.datasets import fingerprint, get_dataset_info, load_split
from .device import resolve_device
from .errors import DatasetError, InvalidInputError
from .features.cache import ArtifactCache, key_digest
from .features.extract import encode_images, identity, preprocess_once
from .math.class_vectors import compute_class_vectors
from .math.metrics import Scores, forget_retain, score
from .math.steering import auto_gamma, edit_from_coefficients, move_edit, steer
from .models.backbones import Backbone, load_backbone, parse_spec, weights_identity
from .models.finetune import FinetuneConfig, finetune, finetuned_encoder
from .models.zeroshot import build_head
from .progress import CancelFn, Progress, ProgressFn
from .results import ClassVectors, FeatureSet, ZeroShotHead, class_index

SPLIT_CHOICES = ("train", "val", "test")


@dataclass(frozen=True)
class RunConfig:
    backbone: str = "builtin"
    dataset: str = "digits"
    device: str = "auto"
    data_root: str | None = None
    cache_dir: str | None = None
    finetune: FinetuneConfig | None = None  # None: FinetuneConfig.default_for(device)
    max_per_class: int | None = None
    references_per_class: int | None = None  # None: every train image is a class-vector reference
    splits: tuple[str, ...] = ("train", "test")
    seed: int = 0
    download: bool = True

    def __post_init__(self):
        bad = [s for s in self.splits if s not in SPLIT_CHOICES]
        if bad or "train" not in self.splits or "test" not in self.splits:
            raise InvalidInputError(f"splits must include train and test, from {SPLIT_CHOICES}; got {self.splits}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise InvalidInputError(f"max images per class must be at least 1, got {self.max_per_class}")


class _Prepared:
    """Preprocessed images per split, made on first need and shared by fine-tuning and both encoders."""

    def __init__(self, data: dict, lazy: _LazyBackbone):
        self.data, self.lazy, self._done = data, lazy, {}

    def get(self, split: str):
        """-> (dataset, transform) ready for encode_images / finetune."""
        if split not in self._done:
            pre = preprocess_once(self.data[split], self.lazy.get().preprocess)
            self._done[split] = (pre, identity) if pre is not None else (self.data[split], self.lazy.get().preprocess)
        return self._done[split]


class _LazyBackbone:
    """Loads the model on first use only: a fully cached run never builds it."""

    def __init__(self, spec: str, device: torch.device, seed: int, progress: ProgressFn = None):
        self.spec, self.device, self.seed, self._backbone, self.progress = spec, device, seed, None, progress

    def get(self) -> Backbone:
        if self._backbone is None:
            _emit(self.progress, "model", f"loading {self.spec}")
            self._backbone = load_backbone(self.spec, self.device, self.seed, self.progress)
        return self._backbone


@dataclass(frozen=True)
class RunResult:
    config: RunConfig
    backbone_name: str
    weights_id: str
    dataset: str
    class_names: tuple[str, ...]
    head: ZeroShotHead
    pre: dict[str, FeatureSet]
    ft: dict[str, FeatureSet]
    class_vectors: ClassVectors
    zero_shot: Scores
    finetuned: Scores
    encoder_path: Path
    finetune_config: FinetuneConfig
    device: torch.device
    timings: dict[str, float] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)
    _backbone: _LazyBackbone | None = field(default=None, repr=False, compare=False)

    @property
    def zero_shot_accuracy(self) -> float:
        return self.zero_shot.accuracy

    @property
    def finetuned_accuracy(self) -> float:
        return self.finetuned.accuracy

    def backbone(self) -> Backbone:
        """The pretrained CLIP (loaded on first call)."""
        return self._backbone.get()

    def finetuned_encoder(self):
        """The fine-tuned image encoder (``encode_image``), loaded from the cached safetensors file."""
        from safetensors.torch import load_file
        return finetuned_encoder(self.backbone().model, load_file(self.encoder_path), self.device)

    def images(self, split: str):
        """The ImageDataset of a split, in the order of ``pre[split]`` / ``ft[split]``."""
        c = self.config
        return load_split(c.dataset, split, c.data_root, c.max_per_class, c.seed, c.download)


def _emit(progress: ProgressFn, stage: str, message: str) -> None:
    if progress is not None:
        progress(Progress(stage, 0, None, message))


def run(config: RunConfig = RunConfig(), progress: ProgressFn = None, cancel: CancelFn = None) -> RunResult:
    """Compute (or load from the cache) everything a session needs. See the module docstring."""
    timings: dict[str, float] = {}
    hits: dict[str, bool] = {}
    device = resolve_device(config.device)
    spec = parse_spec(config.backbone)
    info = get_dataset_info(config.dataset)
    cache = ArtifactCache(config.cache_dir)
    lazy = _LazyBackbone(config.backbone, device, config.seed, progress)
    weights_id = weights_identity(spec, config.seed)
    base_key = {"backbone": spec.name, "weights": weights_id, "dataset": info.name,
                "max_per_class": config.max_per_class, "data_seed": config.seed}

    t = time.perf_counter()
    data = {s: load_split(config.dataset, s, config.data_root, config.max_per_class, config.seed, config.download)
            for s in config.splits}
    class_names = tuple(data["train"].class_names)
    _check_classes(info.name, data, class_names)
    timings["data"] = time.perf_counter() - t

    prepared = _Prepared(data, lazy)
    head, hits["head"], timings["head"] = _head(cache, lazy, base_key, class_names, info.templates, device, progress)
    ft_cfg = config.finetune or FinetuneConfig.default_for(device, small_model=spec.source == "builtin")
    enc_key = {**base_key, "train": fingerprint(data["train"]), "finetune": ft_cfg.as_dict(),
               "head": key_digest({"w": head.weights.sum().item(), "t": head.templates})}
    t = time.perf_counter()
    state, hits["finetune"] = cache.get_or_compute(
        "encoders", enc_key,
        lambda: finetune(lazy.get().model, prepared.get("train")[1], head, prepared.get("train")[0], ft_cfg, device,
                         progress, cancel),
        meta={"kind": "fine-tuned image encoder", "cv_core": __version__, "torch": torch.__version__})
    encoder_path = cache.paths("encoders", enc_key)[0]
    timings["finetune"] = time.perf_counter() - t

    pre, ft = {}, {}
    t = time.perf_counter()
    for split, ds in data.items():
        split_key = {**base_key, "split": split, "data": fingerprint(ds)}
        pre[split], hits[f"pre:{split}"] = _features(cache, {**split_key, "encoder": "pretrained"}, split,
                                                     "pretrained", lambda: lazy.get().model, prepared, device,
                                                     progress, cancel)
        ft[split], hits[f"ft:{split}"] = _features(cache, {**split_key, "encoder": key_digest(enc_key)}, split,
                                                   "finetuned", lambda: finetuned_encoder(lazy.get().model, state,
                                                                                          device),
                                                   prepared, device, progress, cancel)
    timings["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    cv = compute_class_vectors(pre["train"], ft["train"], config.references_per_class, config.seed)
    zs = score(head.predict(pre["test"].features), pre["test"].labels, len(class_names))
    fts = score(head.predict(ft["test"].features), ft["test"].labels, len(class_names))
    timings["class_vectors"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    return RunResult(config, spec.name, weights_id, info.name, class_names, head, pre, ft, cv, zs, fts,
                     encoder_path, ft_cfg, device, timings, hits, lazy)


def _check_classes(name: str, data: dict, class_names: tuple[str, ...]) -> None:
    for split, ds in data.items():
        if tuple(ds.class_names) != class_names:
            raise DatasetError(f"{name}: split {split!r} has different classes than train")
    counts = torch.bincount(torch.as_tensor(data["train"].targets), minlength=len(class_names))
    empty = [class_names[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
    if empty:
        raise DatasetError(f"{name}: classes {empty} have no training images; class vectors need at least one")


def _head(cache, lazy, base_key, class_names, templates, device, progress):
    t = time.perf_counter()
    key = {"backbone": base_key["backbone"], "weights": base_key["weights"], "classes": list(class_names),
           "templates": list(templates)}

    def compute():
        _emit(progress, "head", "building the zero-shot head from the prompts")
        h = build_head(lazy.get(), class_names, templates, device)
        return {"weights": h.weights, "logit_scale": torch.tensor(h.logit_scale)}

    tensors, hit = cache.get_or_compute("heads", key, compute)
    head = ZeroShotHead(tensors["weights"].float(), float(tensors["logit_scale"]), class_names, tuple(templates))
    return head, hit, time.perf_counter() - t


def _features(cache, key, split, encoder, make_model, prepared, device, progress, cancel):
    def compute():
        ds, transform = prepared.get(split)
        fs = encode_images(make_model(), ds, transform, device, progress=progress, cancel=cancel,
                           stage=f"extract:{encoder}:{split}", encoder=encoder, split=split)
        return {"features": fs.features, "labels": fs.labels}

    tensors, hit = cache.get_or_compute("features", key, compute)
    names = tuple(prepared.data[split].class_names)
    return FeatureSet(tensors["features"], tensors["labels"], names, split, encoder), hit


@dataclass(frozen=True)
class EditReport:
    """Per-class accuracy before/after a steering edit on one split, with the forget/retain summary."""

    coefficients: dict[str, float]
    gamma: list[float] | None
    split: str
    before: Scores
    after: Scores
    forget_classes: tuple[int, ...]
    forget_accuracy: float
    retain_accuracy: float
    forget_accuracy_before: float
    retain_accuracy_before: float
    moves: tuple[tuple[str, str, float], ...] = ()


def resolve_gamma(result: RunResult, gamma: float | str | None) -> torch.Tensor | None:
    """'auto' -> per-class thresholds from the train latents; None/'none' -> no gate; a number -> that."""
    if gamma is None or (isinstance(gamma, str) and gamma.lower() == "none"):
        return None
    if isinstance(gamma, str) and gamma.lower() == "auto":
        return auto_gamma(result.class_vectors, result.ft["train"])
    try:
        return torch.tensor(float(gamma))
    except (TypeError, ValueError):
        raise InvalidInputError(f"gate must be 'auto', 'none' or a cosine in [-1, 1], got {gamma!r}") from None


def apply_edit(result: RunResult, coefs, gamma: float | str | None = "auto", split: str = "test",
               moves=()) -> EditReport:
    """Steer the fine-tuned latents of ``split`` with sum_c a_c kappa_c (class-gated) and score them.

    coefs: mapping class -> coefficient or (C,) values (may be all zero when ``moves`` is given);
    moves: (source, target, alpha) terms, class names or indices: alpha (kappa_target - kappa_source)
    gated on the source class (move source towards target; the prediction flips near alpha 0.5).
    Every term's gate is read from the unedited latents, as in the app. Forgotten classes: negative
    coefficients and moved sources.
    """
    if split not in result.ft:
        raise InvalidInputError(f"split {split!r} was not computed; available: {sorted(result.ft)}")
    cv = result.class_vectors
    a = cv.coefficients(coefs)
    g = resolve_gamma(result, gamma)
    fs = result.ft[split]
    moves = [(class_index(cv.class_names, s), class_index(cv.class_names, t), float(al)) for s, t, al in moves]
    edited = steer(fs.features, edit_from_coefficients(cv, a, g))
    for s, t, al in moves:
        if not math.isfinite(al):
            raise InvalidInputError(f"move {cv.class_names[s]}->{cv.class_names[t]}: alpha must be a finite number")
        if al:
            edited = edited + (steer(fs.features, move_edit(cv, s, t, al, g)) - fs.features)
    c = cv.num_classes
    before = score(result.head.predict(fs.features), fs.labels, c)
    after = score(result.head.predict(edited), fs.labels, c)
    forget = tuple(sorted(set(torch.nonzero(a < 0).flatten().tolist()) | {s for s, _, al in moves if al}))
    if forget and len(forget) == c:
        raise InvalidInputError("every class is forgotten (negative coefficient or moved away): nothing would be "
                                "retained")
    fa, ra = forget_retain(after.per_class, forget)
    fb, rb = forget_retain(before.per_class, forget)
    named = {cv.class_names[i]: float(v) for i, v in enumerate(a.tolist()) if v != 0.0}
    gam = None if g is None else [float(x) for x in g.expand(c).tolist()]
    named_moves = tuple((cv.class_names[s], cv.class_names[t], al) for s, t, al in moves if al)
    return EditReport(named, gam, split, before, after, forget, fa, ra, fb, rb, named_moves)
