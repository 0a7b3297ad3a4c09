"""CLIP backbones: the only module that creates open_clip models.

Spec forms (one string, as typed in the CLI and the app):
- ``builtin`` (= ``builtin:v1``)   the project's own small CLIP (offline, CPU friendly)
- ``builtin:v2``                   its second version (a wider image tower, pretrained on the v2 corpus)
- ``builtin:v3``                   v2's tower and recipe on the v3 corpus (reads written number words too)
- ``MODEL:TAG``                    open_clip pretrained weights, e.g. ``ViT-B-32:openai``
- ``MODEL:/path/to/file``          a local checkpoint (.safetensors, or .pt/.bin loaded weights_only)
- ``MODEL:random``                 random initialisation (tests, speed benchmarks) — labelled as such
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch

from ..errors import CVError, InvalidInputError, UnknownNameError, WeightsUnavailableError
from .builtin import DEFAULT_VERSION as BUILTIN_VERSION  # 'builtin' names v1 ('builtin:v1'); 'builtin:v2', 'builtin:v3' the others

BUILTIN = "builtin"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
# open_clip tags whose weights come from OpenAI and need QuickGELU.
_HF_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class BackboneSpec:
    model: str
    source: str  # "builtin" | "pretrained" | "file" | "random"
    tag: str = ""  # pretrained tag, or the checkpoint path

    @property
    def name(self) -> str:
        if self.source == "builtin":
            return BUILTIN if self.version == BUILTIN_VERSION else f"{BUILTIN}:{self.version}"
        return f"{self.model}:{self.tag}"

    @property
    def version(self) -> str:
        """The built-in model's version ('v1' for 'builtin'); '' for other backbones."""
        return (self.tag or BUILTIN_VERSION) if self.source == "builtin" else ""


@dataclass(frozen=True)
class Backbone:
    """A loaded CLIP: ``model`` (open_clip CLIP, eval mode), ``preprocess`` (PIL -> (3, H, W) tensor)."""

    spec: BackboneSpec
    model: torch.nn.Module
    preprocess: object
    tokenizer: object
    weights_id: str  # sha256 of the weights (or 'random:<seed>'): part of every cache key
    embed_dim: int
    quick_gelu: bool = False


@dataclass(frozen=True)
class Availability:
    spec: str
    available_offline: bool
    download_mb: float | None
    message: str


def _looks_like_path(tag: str) -> bool:
    return "/" in tag or "\\" in tag or tag.lower().endswith(CHECKPOINT_SUFFIXES) or tag.startswith("~")


def parse_spec(spec: str) -> BackboneSpec:
    """Parse and validate a backbone spec string (no loading): the one parser (docs/DEFINITIONS.md item 6).

    'builtin' in any case, or 'builtin:v1' -> the built-in model; 'builtin:v2', 'builtin:v3' its later versions;
    'MODEL:TAG' (open_clip pretrained), 'MODEL:random', 'MODEL:/path/to/checkpoint'. ``is_builtin`` answers
    from it."""
    spec = (spec or "").strip()
    if spec.lower() == BUILTIN or spec.lower().startswith(f"{BUILTIN}:"):
        from .builtin import VERSIONS, model_name, register_config
        version = spec.partition(":")[2].lower() or BUILTIN_VERSION
        if version not in VERSIONS:
            raise UnknownNameError("built-in model version", version, list(VERSIONS))
        register_config()
        # v1 keeps the empty tag it always had ('builtin'), so its specs and cache keys stay as they were
        return BackboneSpec(model_name(version), "builtin", "" if version == BUILTIN_VERSION else version)
    model, sep, tag = spec.partition(":")
    if not sep or not model or not tag:
        raise InvalidInputError(f"backbone {spec!r} must be 'builtin', MODEL:TAG (e.g. ViT-B-32:openai) or "
                                "MODEL:/path/to/checkpoint.safetensors")
    from .builtin import BUILTIN_MODEL_NAME, register_config
    if model == BUILTIN_MODEL_NAME:
        register_config()  # checkpoints of the built-in architecture, e.g. a weight-mapped edit
    if model not in open_clip.list_models():
        raise UnknownNameError("open_clip model", model, open_clip.list_models())
    if tag == "random":
        return BackboneSpec(model, "random", tag)
    if _looks_like_path(tag):
        return BackboneSpec(model, "file", str(Path(tag).expanduser()))
    tags = open_clip.list_pretrained_tags_by_model(model)
    if tag not in tags:
        raise UnknownNameError(f"pretrained tag for {model}", tag, tags + ["random", "/path/to/file"])
    return BackboneSpec(model, "pretrained", tag)


def is_builtin(spec: str) -> bool:
    """Is ``spec`` the built-in backbone (any spelling ``parse_spec`` accepts)? False for an invalid spec."""
    try:
        return parse_spec(spec).source == "builtin"
    except CVError:
        return False


def builtin_version(spec: str) -> str | None:
    """The built-in version a spec names ('v1' for 'builtin'), or None for any other (or invalid) spec."""
    try:
        s = parse_spec(spec)
    except CVError:
        return None
    return s.version if s.source == "builtin" else None


def _needs_quick_gelu(spec: BackboneSpec) -> bool:
    if spec.model.endswith("-quickgelu"):
        return False  # the config already has it
    if spec.source == "pretrained":
        return bool(open_clip.get_pretrained_cfg(spec.model, spec.tag).get("quick_gelu", False))
    return spec.source == "file" and "openai" in Path(spec.tag).name.lower()


def _hf_cached_file(spec: BackboneSpec) -> str | None:
    cfg = open_clip.get_pretrained_cfg(spec.model, spec.tag)
    repo = cfg.get("hf_hub", "").strip("/")
    if repo:
        from huggingface_hub import try_to_load_from_cache
        for name in _HF_FILES:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str):
                return hit
    url = cfg.get("url", "")
    if url:
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if local.exists():
            return str(local)
    return None


def parameter_count(model_name: str) -> int:
    """Parameters of an open_clip architecture, counted on the meta device (no memory, no download)."""
    with torch.device("meta"), _quiet():
        model = open_clip.create_model(model_name, device="meta")
    return sum(p.numel() for p in model.parameters())


def check_backbone(spec: str) -> Availability:
    """Is the backbone usable without a download? Never downloads, never contacts a network.
    A local checkpoint that cannot be used raises WeightsUnavailableError with the reason."""
    s = parse_spec(spec)
    if s.source == "builtin":
        from .builtin import describe, weights_path
        path = weights_path(s.version)
        return Availability(s.name, path.exists(), None,
                            f"ships with the project — {describe(s.version)}" if path.exists() else f"missing {path}")
    if s.source == "random":
        return Availability(s.name, True, None, "random weights (for tests and speed benchmarks only)")
    if s.source == "file":  # checked like an image folder: exists, readable, weights that fit the model
        from .checkpoints import check_checkpoint
        return Availability(s.name, True, None, f"local file: {check_checkpoint(s.model, s.tag)}")
    cached = _hf_cached_file(s)
    if cached:
        return Availability(s.name, True, None, f"cached at {cached}")
    mb = parameter_count(s.model) * 4 / 2**20
    return Availability(s.name, False, round(mb, 1), f"needs a download of about {mb:.0f} MB")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download(cfg: dict, progress=None) -> str:
    """open_clip hub weights into the Hugging Face cache; with ``progress``, 'download' events in megabytes."""
    repo = cfg.get("hf_hub", "")
    if progress is None or not repo:
        return open_clip.download_pretrained(cfg)
    from huggingface_hub import hf_hub_download

    from ..progress import Progress
    from .checkpoints import mb_progress_class

    def report(done: float, total: float | None) -> None:
        progress(Progress("download", int(done), None if total is None else max(1, int(total)),
                          f"{done:.0f} of {total:.0f} MB" if total else f"{done:.0f} MB"))

    model_id, filename = os.path.split(repo)
    last = None
    for name in ([filename] if filename else list(_HF_FILES)):
        try:
            return hf_hub_download(model_id, name, tqdm_class=mb_progress_class(report))
        except Exception as err:  # the next file name (open_clip tries safetensors, then .bin)
            last = err
    raise last


def _weights_file(s: BackboneSpec, progress=None) -> str:
    """Path of the weights file to load (downloading open_clip weights when needed and possible)."""
    if s.source == "builtin":
        from .builtin import verify_weights, weights_path
        verify_weights(s.version)
        return str(weights_path(s.version))
    if s.source == "file":
        if not Path(s.tag).is_file():
            raise WeightsUnavailableError(f"checkpoint {s.tag} does not exist; check the path")
        return s.tag
    cached = _hf_cached_file(s)
    if cached:
        return cached
    from .checkpoints import network_reachable
    cfg = open_clip.get_pretrained_cfg(s.model, s.tag)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not network_reachable(
            "huggingface.co" if cfg.get("hf_hub") else "openaipublic.azureedge.net"):
        where = f"the Hugging Face cache as {cfg.get('hf_hub', '').strip('/')}/{_HF_FILES[0]}"
        raise WeightsUnavailableError(
            f"weights for {s.name} are not cached and there is no network. Connect to the network once, or put "
            f"the file in {where} (or pass {s.model}:/path/to/file), or choose the built-in backbone ('builtin').")
    try:
        return _download(cfg, progress)
    except Exception as err:  # huggingface_hub / urllib raise many types when offline
        cfg = open_clip.get_pretrained_cfg(s.model, s.tag)
        where = f"the Hugging Face cache as {cfg.get('hf_hub', '').strip('/')}/{_HF_FILES[0]}"
        raise WeightsUnavailableError(
            f"weights for {s.name} are not cached and could not be downloaded ({type(err).__name__}). "
            f"Connect to the network once, or put the file in {where} (or pass {s.model}:/path/to/file), "
            "or choose the built-in backbone ('builtin').") from None


def weights_identity(s: BackboneSpec, seed: int = 0, path: str | None = None) -> str:
    """What identifies the weights in cache keys, known before loading: the file's sha256 for local
    and built-in weights, the immutable open_clip tag for hub weights, the seed for random ones.
    path: the already resolved weights file, to avoid resolving (and verifying) it again."""
    if s.source == "random":
        return f"random:{seed}"
    if s.source == "pretrained":
        return f"open_clip:{s.model}:{s.tag}"
    return _sha256(path or _weights_file(s))


def load_backbone(spec: str, device: torch.device | str = "cpu", seed: int = 0, progress=None) -> Backbone:
    """Create the model, load its weights safely, and return it in eval mode on ``device``.
    progress: optional callback of Progress events (a download reports megabytes)."""
    s = parse_spec(spec)
    quick = _needs_quick_gelu(s)
    path = None
    if s.source == "random":
        torch.manual_seed(seed)
        model = _create(s.model, quick)
    else:
        path = _weights_file(s, progress)
        model = _create(s.model, quick)
        _load_weights(model, path, s)
    weights_id = weights_identity(s, seed, path)
    model = model.to(device).eval()
    preprocess = _preprocess(model, s)
    tokenizer = open_clip.get_tokenizer(s.model)
    return Backbone(s, model, preprocess, tokenizer, weights_id, _embed_dim(model), quick)


def _preprocess(model: torch.nn.Module, s: BackboneSpec):
    """open_clip's eval transform, with the pretrained tag's mean/std/interpolation when it has them."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
    cfg = dict(model.visual.preprocess_cfg)
    if s.source == "pretrained":
        cfg = merge_preprocess_dict(cfg, open_clip.get_pretrained_cfg(s.model, s.tag))
        model.visual.preprocess_cfg = cfg
    return image_transform_v2(PreprocessCfg(**cfg), is_train=False)


@contextlib.contextmanager
def _quiet():
    """Silence open_clip's root-logger "initialized randomly" note: weights are loaded right after."""
    root = logging.getLogger()
    was, root.disabled = root.disabled, True
    try:
        yield
    finally:
        root.disabled = was


def _create(model_name: str, quick_gelu: bool) -> torch.nn.Module:
    with _quiet():
        return open_clip.create_model(model_name, pretrained=None, force_quick_gelu=quick_gelu)


def _load_weights(model: torch.nn.Module, path: str, s: BackboneSpec) -> None:
    """Our safe loader reads the file (``checkpoints.load_weights``: safetensors or weights-only, never a full
    unpickle); open_clip's conversions then get the state dict, never the path (its loader retries a failed
    safe load without ``weights_only``)."""
    from .checkpoints import load_weights
    state = load_weights(path)
    try:
        _load_state(model, state)
    except RuntimeError as err:
        first = " ".join(str(err).splitlines()[:3])[:400]
        raise WeightsUnavailableError(f"checkpoint {path} does not fit architecture {s.model}: {first}. "
                                      "Is the model name right?") from None
    except Exception as err:  # foreign formats the conversions trip over
        raise WeightsUnavailableError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from None
    if s.source == "builtin" or Path(path).suffix == ".safetensors":
        model.float()  # fp16 storage loads into fp32 parameters already; keep compute in fp32


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """What ``open_clip.load_checkpoint`` does after reading its file (open_clip 3.3), on a state dict we read:
    third-party and old-format conversions, scalar/1-d logit scale and bias, position-embedding resizes."""
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
    state = convert_state_dict(model, dict(state))
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for name in ("logit_scale", "logit_bias"):
        own = getattr(model, name, None)
        if name in state and own is not None and own.ndim != state[name].ndim:
            state[name] = state[name].reshape(own.shape)
    if "logit_bias" not in state and getattr(model, "logit_bias", None) is not None:
        state["logit_bias"] = torch.zeros_like(state["logit_scale"])
    position_ids = "text.transformer.embeddings.position_ids"  # transformers >= 4.31 no longer expects it
    if position_ids in state and not hasattr(model, position_ids):
        del state[position_ids]
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    model.load_state_dict(state, strict=True)


def _embed_dim(model: torch.nn.Module) -> int:
    out = getattr(model.visual, "output_dim", None)
    if out is None:
        out = model.text_projection.shape[1]
    return int(out)


def list_backbones() -> list[str]:
    """The built-in model's versions first, then every open_clip MODEL:TAG pair."""
    from .builtin import VERSIONS
    builtins = [BUILTIN] + [f"{BUILTIN}:{v}" for v in VERSIONS if v != BUILTIN_VERSION]
    return builtins + [f"{m}:{t}" for m, t in open_clip.list_pretrained()]
