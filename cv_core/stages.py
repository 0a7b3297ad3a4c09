"""The stages of a run, each cached under a key that names all its inputs: inputs and head, fine-tuned
encoder, latents (one safetensors file per split, or a sharded feature store for large and Ray runs).

``pipeline.run`` and ``pipeline.finetune_encoder`` compose them; nothing here is a use case of its own.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from . import __version__
from .data.datasets import DatasetInfo, fingerprint, get_dataset_info, load_split
from .device import resolve_device
from .errors import CacheError, DatasetError, InvalidInputError
from .features.cache import ArtifactCache, key_digest
from .features.extract import encode_images, encode_pair_to_store, identity, image_source, preprocess_once
from .features.store import FeatureStore, FeatureStoreWriter, store_root
from .models.backbones import Backbone, BackboneSpec, load_backbone, parse_spec, weights_identity
from .models.distributed import World, barrier, broadcast_flag
from .models.finetune import FinetuneConfig, finetune, finetuned_encoder
from .models.zeroshot import build_head
from .progress import Progress, ProgressFn
from .results import FeatureSet, ZeroShotHead

#: Runs with at least this many images (all splits) keep their latents in a sharded feature store.
STORE_MIN_ROWS = 200_000
#: Sidecar fields of a fine-tuned encoder entry.
ENCODER_META = {"kind": "fine-tuned image encoder", "cv_core": __version__, "torch": torch.__version__}


class Prepared:
    """Preprocessed images per split, made on first need and shared by fine-tuning and both encoders."""

    def __init__(self, data: dict, lazy: LazyBackbone):
        self.data, self.lazy, self._done = data, lazy, {}

    def get(self, split: str):
        """-> (dataset, transform) ready for encode_images / finetune."""
        if split not in self._done:
            pre = preprocess_once(self.data[split], self.lazy.get().preprocess)
            self._done[split] = (pre, identity) if pre is not None else (self.data[split], self.lazy.get().preprocess)
        return self._done[split]


class LazyBackbone:
    """Loads the model on first use only: a fully cached run never builds it."""

    def __init__(self, spec: str, device: torch.device, seed: int, progress: ProgressFn = None):
        self.spec, self.device, self.seed, self._backbone, self.progress = spec, device, seed, None, progress

    def get(self) -> Backbone:
        if self._backbone is None:
            _emit(self.progress, "model", f"loading {self.spec}")
            self._backbone = load_backbone(self.spec, self.device, self.seed, self.progress)
        return self._backbone


@dataclass
class RunInputs:
    """What every later stage needs: device, cache, data, the zero-shot head and the fine-tune recipe."""

    device: torch.device
    spec: BackboneSpec
    info: DatasetInfo
    cache: ArtifactCache
    lazy: LazyBackbone
    weights_id: str
    base_key: dict
    data: dict
    class_names: tuple[str, ...]
    prepared: Prepared
    head: ZeroShotHead
    ft_cfg: FinetuneConfig
    ft_val: object = None  # the val split that early stopping scores (None without early stopping)

    @property
    def enc_key(self) -> dict:
        return encoder_key(self.base_key, self.data["train"], self.ft_cfg, self.head, self.ft_val)


def prepare(config, progress: ProgressFn, timings: dict, hits: dict, world: World | None = None,
            device: torch.device | None = None) -> RunInputs:
    """Load the splits and the head (rank 0 first under DDP, so that one process writes the entry)."""
    device = device or resolve_device(config.device)
    spec = parse_spec(config.backbone)
    info = get_dataset_info(config.dataset)
    if info.class_names is not None:  # known before loading (e.g. an image folder): fail in a second
        require_two_classes(info.name, info.class_names)
    cache = ArtifactCache(config.cache_dir)
    lazy = LazyBackbone(config.backbone, device, config.seed, progress)
    weights_id = weights_identity(spec, config.seed)
    base_key = {"backbone": spec.name, "weights": weights_id, "dataset": info.name,
                "max_per_class": config.max_per_class, "data_seed": config.seed}
    t = time.perf_counter()
    data = {s: load_split(config.dataset, s, config.data_root, config.max_per_class, config.seed, config.download)
            for s in config.splits}
    class_names = tuple(data["train"].class_names)
    _check_classes(info.name, data, class_names)
    ft_cfg = config.finetune or FinetuneConfig.recipe_for("auto", device, config.backbone)
    val = None
    if ft_cfg.early_stopping:
        try:
            val = _early_stop_val(config, info.name, data, class_names)
        except InvalidInputError as err:
            if config.finetune is not None:  # asked for: say what to do
                raise
            # the default recipe's early stopping needs a val split this dataset lacks: train the whole budget
            ft_cfg = ft_cfg.without_early_stopping()
            _emit(progress, "finetune", f"no early stopping: {err}; fine-tuning for the whole budget of "
                            f"{ft_cfg.total_steps(len(data['train']))} steps")
    timings["data"] = time.perf_counter() - t
    if world is not None and not world.is_main:
        barrier(world)  # rank 0 builds and caches the head first
    head, hits["head"], timings["head"] = _head(cache, lazy, base_key, class_names, info.templates, device, progress)
    if world is not None and world.is_main:
        barrier(world)
    prepared = Prepared(data if val is None or "val" in data else {**data, "val": val}, lazy)
    return RunInputs(device, spec, info, cache, lazy, weights_id, base_key, data, class_names, prepared,
                     head, ft_cfg, val)


def _early_stop_val(config, name: str, data: dict, class_names: tuple[str, ...]):
    """The val split that early stopping scores: the run's own, else loaded for fine-tuning alone."""
    if "val" in data:
        val = data["val"]
    else:
        try:
            val = load_split(config.dataset, "val", config.data_root, config.max_per_class, config.seed,
                             config.download)
        except DatasetError as err:
            raise InvalidInputError(f"early stopping scores the val split, but {err}. Fine-tune without it (drop "
                                    "--early-stop, or pass --no-early-stop) or give the dataset a val split (an image folder: enough "
                                    "images per class)") from None
    if tuple(val.class_names) != class_names:
        raise DatasetError(f"{name}: split 'val' has different classes than train")
    return val


def encoder_key(base_key: dict, train, ft_cfg: FinetuneConfig, head: ZeroShotHead, val=None) -> dict:
    """The cache key of a fine-tuned encoder: the run, the train split, the recipe, the head. The
    sampler names the batch order (DistributedSampler's), which 1 or N processes share. With early
    stopping the val split it scores is part of the key too (only then: the fixed-step keys are unchanged)."""
    key = {**base_key, "train": fingerprint(train), "finetune": ft_cfg.as_dict(), "sampler": "distributed-v1",
           "head": key_digest({"w": head.weights.sum().item(), "t": head.templates})}
    if val is not None:
        key["val"] = fingerprint(val)
    return key


def finetune_stage(inp: RunInputs, progress, cancel, world: World | None = None):
    """The fine-tuned image encoder's state from the cache, or trained (on every rank of ``world``) and
    saved by rank 0 -> (state dict | None on other ranks when cached, cache hit, what the training did: the
    ``finetune`` record kept in the entry's sidecar, {} for entries written before it was)."""
    found = inp.cache.load("encoders", inp.enc_key)
    if broadcast_flag(world, found is not None):
        return (found[0] if found is not None else None), True, dict((found or ({}, {}))[1].get("run", {}))
    train, transform = inp.prepared.get("train")
    val, val_transform = inp.prepared.get("val") if inp.ft_val is not None else (None, None)
    t = time.perf_counter()
    record: dict = {}
    state = finetune(inp.lazy.get().model, transform, inp.head, train, inp.ft_cfg, inp.device, progress, cancel,
                     world, val, val_transform, record)
    record["seconds"] = round(time.perf_counter() - t, 2)
    if world is None or world.is_main:
        try:
            inp.cache.save("encoders", inp.enc_key, state, {**ENCODER_META, "run": record})
        except CacheError as err:  # a full disk: the run cannot go on without the cache, so say what is lost
            raise CacheError(f"{err}. The fine-tuned image encoder ({time.perf_counter() - t:.0f} s of training) "
                             "could not be kept: the next run trains it again") from None
    barrier(world)  # the other ranks return once the entry exists
    return state, False, record


def uses_store(config, data: dict) -> bool:
    """feature_store 'on'/'off' as asked; 'auto': the Ray engine or at least STORE_MIN_ROWS images."""
    if config.feature_store != "auto":
        return config.feature_store == "on"
    return config.engine == "ray" or sum(len(ds) for ds in data.values()) >= STORE_MIN_ROWS


def file_features(inp: RunInputs, state, progress, cancel, hits: dict):
    """Today's single-file cache: one safetensors entry per (split, encoder) -> (pre, ft) dicts."""
    pre, ft = {}, {}
    lazy, device = inp.lazy, inp.device
    for split, ds in inp.data.items():
        split_key = {**inp.base_key, "split": split, "data": fingerprint(ds)}
        pre[split], hits[f"pre:{split}"] = _features(inp.cache, {**split_key, "encoder": "pretrained"}, split,
                                                     "pretrained", lambda: lazy.get().model, inp.prepared, device,
                                                     progress, cancel)
        ft[split], hits[f"ft:{split}"] = _features(inp.cache, {**split_key, "encoder": key_digest(inp.enc_key)},
                                                   split, "finetuned",
                                                   lambda: finetuned_encoder(lazy.get().model, state, device),
                                                   inp.prepared, device, progress, cancel)
    return pre, ft


def store_features(config, inp: RunInputs, state, progress, cancel) -> tuple[FeatureStore, bool]:
    """Open the run's feature store, or compute it (local or Ray engine) and publish it -> (store, hit)."""
    key = {**inp.base_key, "kind": "feature-store", "encoder": key_digest(inp.enc_key),
           "splits": {s: fingerprint(ds) for s, ds in inp.data.items()}}
    root = store_root(inp.cache.root, key)
    try:
        return FeatureStore.open(root, key), True
    except CacheError:
        pass
    backbone, device = inp.lazy.get(), inp.device
    ft_model = finetuned_encoder(backbone.model, state, device)
    source = _source_fn(config.dataset, inp.data)
    with FeatureStoreWriter(root, key, inp.class_names, backbone.embed_dim) as writer:
        if config.engine == "ray":
            from .features.ray_extract import extract_with_ray
            workers = config.workers or (torch.cuda.device_count() if device.type == "cuda" else 2)
            extract_with_ray(backbone.model.visual, ft_model.visual, inp.data, backbone.preprocess, writer,
                             workers=workers, address=config.ray_address, device=device, source=source,
                             progress=progress, cancel=cancel)
        else:
            for split in inp.data:
                ds, transform = inp.prepared.get(split)
                encode_pair_to_store(backbone.model, ft_model, ds, transform, device, writer, split,
                                     source=lambda row, s=split: source(s, row), progress=progress, cancel=cancel)
    return FeatureStore.open(root, key), False


def _source_fn(dataset: str, data: dict):
    """split, row -> the image's file when the dataset has files, else DATASET:SPLIT:ROW."""
    def source(split: str, row: int) -> str:
        return image_source(data[split], row) or f"{dataset}:{split}:{row}"
    return source


def _emit(progress: ProgressFn, stage: str, message: str) -> None:
    if progress is not None:
        progress(Progress(stage, 0, None, message))


def require_two_classes(name: str, class_names) -> None:
    """Class vectors, edits (forget one, retain the rest) and the geometry need at least two classes."""
    if len(class_names) < 2:
        raise InvalidInputError(f"{name} has {len(class_names)} class ({', '.join(class_names) or 'none'}); class "
                                "vectors, edits and the geometry need at least 2 classes. Add another class (for an "
                                "image folder, another sub-folder of images)")


def _check_classes(name: str, data: dict, class_names: tuple[str, ...]) -> None:
    require_two_classes(name, class_names)
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


