"""Use cases shared by the CLI and the app: run the pipeline, apply an edit.

run(): backbone -> zero-shot head -> fine-tuned image encoder -> latents of both encoders per split
-> class vectors. Every stage is cached on disk under a key that names all its inputs, so a second
run is served from the cache without loading the model.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data.datasets import load_split
from .device import resolve_device
from .errors import InvalidInputError
from .features.store import FeatureStore
from .features.stored import StoreSplits, blocks, class_vectors_from_store, scores_from_store
from .math.class_vectors import compute_class_vectors
from .math.metrics import Scores, forget_retain, score
from .editspec import EditSpec, resolve_gate
from .math.steering import edit_from_coefficients, move_edit, steer
from .models.backbones import Backbone
from .models.distributed import init_world, shutdown
from .models.finetune import FinetuneConfig, finetuned_encoder
from .progress import CancelFn, ProgressFn
from .results import ClassVectors, FeatureSet, ZeroShotHead
from .stages import LazyBackbone, file_features, finetune_stage, prepare, store_features, uses_store

SPLIT_CHOICES = ("train", "val", "test")
ENGINES = ("local", "ray")
STORE_CHOICES = ("auto", "on", "off")


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
    engine: str = "local"  # "local": this process; "ray": Ray Data actors (needs the 'scale' extra)
    workers: int | None = None  # ray: encoder actors (default: one per visible GPU, else 2)
    ray_address: str | None = None  # ray: "auto" or HOST:PORT of a running cluster; None starts a local one
    feature_store: str = "auto"  # "on": sharded store; "off": one file per split; auto: on for ray/large runs

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise InvalidInputError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        if self.feature_store not in STORE_CHOICES:
            raise InvalidInputError(f"feature_store must be one of {', '.join(STORE_CHOICES)}, got {self.feature_store!r}")
        if self.engine == "ray" and self.feature_store == "off":
            raise InvalidInputError("the ray engine writes a feature store; use feature_store 'auto' or 'on'")
        if self.workers is not None and self.workers < 1:
            raise InvalidInputError(f"workers must be at least 1, got {self.workers}")
        bad = [s for s in self.splits if s not in SPLIT_CHOICES]
        if bad or "train" not in self.splits or "test" not in self.splits:
            raise InvalidInputError(f"splits must include train and test, from {SPLIT_CHOICES}; got {self.splits}")
        if self.max_per_class is not None and self.max_per_class < 1:
            raise InvalidInputError(f"max images per class must be at least 1, got {self.max_per_class}")


@dataclass(frozen=True)
class RunResult:
    config: RunConfig
    backbone_name: str
    weights_id: str
    dataset: str
    class_names: tuple[str, ...]
    head: ZeroShotHead
    pre: Mapping[str, FeatureSet]  # a dict, or StoreSplits (each split loaded from the store on first use)
    ft: Mapping[str, FeatureSet]
    class_vectors: ClassVectors
    zero_shot: Scores
    finetuned: Scores
    encoder_path: Path
    finetune_config: FinetuneConfig
    device: torch.device
    timings: dict[str, float] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)
    store: FeatureStore | None = None  # the sharded feature store of a large or Ray run, else None
    _backbone: LazyBackbone | None = field(default=None, repr=False, compare=False)
    #: what the fine-tuning did (``models.finetune.finetune``'s record: steps run of the budget, early stop, best
    #: val step and accuracy, seconds), kept with the cached encoder; {} for an encoder cached before it was
    finetune_run: dict = field(default_factory=dict)

    @property
    def zero_shot_accuracy(self) -> float:
        return self.zero_shot.accuracy

    @property
    def finetuned_accuracy(self) -> float:
        return self.finetuned.accuracy

    @property
    def cache_dir(self) -> str | None:
        """Where this run's artifacts are cached (None: the default cache folder)."""
        return self.config.cache_dir

    def num_images(self, split: str) -> int:
        """Images of a split (read from the store's manifest when there is one: no features loaded)."""
        return self.store.num_rows(split) if self.store is not None else len(self.ft[split])

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


def run(config: RunConfig = RunConfig(), progress: ProgressFn = None, cancel: CancelFn = None) -> RunResult:
    """Compute (or load from the cache) everything a session needs. See the module docstring."""
    timings: dict[str, float] = {}
    hits: dict[str, bool] = {}
    if config.engine == "ray":  # fail in seconds, not after the fine-tuning
        from .features.ray_extract import preflight
        preflight(config.ray_address)
    inp = prepare(config, progress, timings, hits)
    t = time.perf_counter()
    state, hits["finetune"], finetune_run = finetune_stage(inp, progress, cancel)
    timings["finetune"] = time.perf_counter() - t

    t = time.perf_counter()
    store = None
    if uses_store(config, inp.data):
        store, hits["features"] = store_features(config, inp, state, progress, cancel)
        pre, ft = StoreSplits(store, "pre"), StoreSplits(store, "ft")
    else:
        pre, ft = file_features(inp, state, progress, cancel, hits)
    timings["extract"] = time.perf_counter() - t

    t = time.perf_counter()
    head, c = inp.head, len(inp.class_names)
    if store is not None:  # block by block: never all rows in memory
        cv = class_vectors_from_store(store, config.references_per_class, config.seed)
        zs, fts = scores_from_store(head, store, "test", "pre"), scores_from_store(head, store, "test", "ft")
    else:
        cv = compute_class_vectors(pre["train"], ft["train"], config.references_per_class, config.seed)
        zs = score(head.predict(pre["test"].features), pre["test"].labels, c)
        fts = score(head.predict(ft["test"].features), ft["test"].labels, c)
    timings["class_vectors"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    return RunResult(config, inp.spec.name, inp.weights_id, inp.info.name, inp.class_names, head, pre, ft, cv, zs, fts,
                     inp.cache.paths("encoders", inp.enc_key)[0], inp.ft_cfg, inp.device, timings, hits, store,
                     inp.lazy, finetune_run)


@dataclass(frozen=True)
class FinetuneOutcome:
    """What ``finetune_encoder`` did: where the entry is, whether it was already cached, on how many ranks."""

    encoder_path: Path
    cache_hit: bool
    rank: int
    world_size: int
    backend: str | None
    timings: dict[str, float]


def finetune_encoder(config: RunConfig = RunConfig(), progress: ProgressFn = None,
                     cancel: CancelFn = None) -> FinetuneOutcome:
    """Only the fine-tuning stage, data-parallel when torchrun or srun launched several processes: every
    rank trains its share of each global batch; rank 0 writes the same cache entry that ``run`` reads."""
    device = resolve_device(config.device)
    world = init_world(device)
    timings: dict[str, float] = {}
    done = False
    try:
        main = world is None or world.is_main
        inp = prepare(config, progress if main else None, timings, {}, world, world.device if world else device)
        t = time.perf_counter()
        _, hit, _ = finetune_stage(inp, progress if main else None, cancel, world)
        timings["finetune"] = time.perf_counter() - t
        done = True
    finally:
        shutdown(world, clean=done)
    return FinetuneOutcome(inp.cache.paths("encoders", inp.enc_key)[0], hit, world.rank if world else 0,
                           world.world_size if world else 1, world.backend if world else None, timings)


@dataclass(frozen=True)
class EditReport:
    """Per-class accuracy before/after a steering edit on one split, with the forget/retain summary."""

    coefficients: dict[str, float]
    gamma: list[float] | None
    split: str
    before: Scores
    after: Scores
    forget_classes: tuple[int, ...]
    forget_accuracy: float | None  # None: nothing forgotten (then retain = overall accuracy)
    retain_accuracy: float
    forget_accuracy_before: float | None
    retain_accuracy_before: float
    moves: tuple[tuple[str, str, float], ...] = ()
    spec: EditSpec | None = None  # the edit as given (its gate setting, for edit.json)


def _ft_blocks(result: RunResult, split: str):
    """(features, labels) blocks of the fine-tuned latents: from the store, or the whole split at once."""
    return blocks(result.store if result.store is not None else result.ft[split], split, "ft")


def apply_edit(result: RunResult, coefs, gamma: float | str | None = "auto", split: str = "test",
               moves=()) -> EditReport:
    """Steer the fine-tuned latents of ``split`` with sum_c a_c kappa_c (class-gated) and score them.

    coefs: mapping class -> coefficient or (C,) values (may be all zero when ``moves`` is given);
    moves: (source, target, alpha) terms, class names or indices: alpha (kappa_target - kappa_source)
    gated on the source class (move source towards target; where the prediction flips is measured per pair by
    ``cv_core.edits.properties.interpolation``, not assumed at the paper's 0.5).
    Every term's gate is read from the unedited latents, as in the app. The forget set and its accuracies are
    ``cv_core.editspec.forget_set`` and ``cv_core.math.metrics.forget_retain`` (sample-weighted; nothing
    forgotten -> forget None, retain = overall). A store-backed run is edited block by block.
    """
    if split not in result.ft:
        raise InvalidInputError(f"split {split!r} was not computed; available: {sorted(result.ft)}")
    cv = result.class_vectors
    spec = EditSpec.build(cv.class_names, coefs, moves, gamma)
    forget = spec.forget()
    if forget and len(forget) == cv.num_classes:  # before any latents are read
        raise InvalidInputError("every class is forgotten (negative coefficient or moved away): nothing would be "
                                "retained")
    a = torch.tensor(spec.coefficients, dtype=torch.float32)
    g = resolve_gate(result, spec.gate)
    edit = edit_from_coefficients(cv, a, g)
    move_edits = [move_edit(cv, s, t, al, g) for s, t, al in spec.moves if al]
    preds_before, preds_after, labels = [], [], []
    for feats, y in _ft_blocks(result, split):
        before = result.head.predict(feats)
        edited = steer(feats, edit, before)
        for m in move_edits:
            edited = edited + (steer(feats, m, before) - feats)
        preds_before.append(before)
        preds_after.append(result.head.predict(edited))
        labels.append(y)
    c = cv.num_classes
    labels = torch.cat(labels)
    before = score(torch.cat(preds_before), labels, c)
    after = score(torch.cat(preds_after), labels, c)
    fa, ra = forget_retain(after, forget)
    fb, rb = forget_retain(before, forget)
    named = {cv.class_names[i]: float(v) for i, v in enumerate(spec.coefficients) if v != 0.0}
    gam = None if g is None else [float(x) for x in g.tolist()]
    named_moves = tuple((cv.class_names[s], cv.class_names[t], al) for s, t, al in spec.moves if al)
    return EditReport(named, gam, split, before, after, forget, fa, ra, fb, rb, named_moves, spec)
