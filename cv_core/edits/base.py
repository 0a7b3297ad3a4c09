"""The contract every unlearning / editing method follows.

A method is a function ``fn(ctx, forget, seed, options) -> MethodOutput``:

* ``ctx`` (:class:`UnlearnContext`) holds what the pipeline produced: the zero-shot head, the
  pretrained and fine-tuned latents of the train/val/test splits, the class vectors and, for
  methods that touch the image encoder, an :class:`EncoderInputs` (model, weights, images).
* ``forget`` is a tuple of class indices to forget (validated by :func:`check_forget`).
* ``seed`` makes the method deterministic; ``options`` is a mapping of method settings.

The output gives, per split, the edited classifier's logits and the edited representation (what a
linear probe would see), plus the wall time and the number of trainable parameters. Methods never
mutate their inputs: encoder methods work on a deep copy of the model.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from ..errors import InvalidInputError
from ..registry import Registry
from ..results import ClassVectors, FeatureSet, ZeroShotHead, class_index

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class EncoderInputs:
    """What encoder-touching methods need.

    model:     open_clip CLIP (``encode_image``); never mutated, methods copy it
    pre_state / ft_state: ``model.visual`` state dicts of the pretrained / fine-tuned encoder
    images:    split -> (N, 3, H, W) float32 preprocessed images
    labels:    split -> (N,) int64
    """

    model: torch.nn.Module
    pre_state: Mapping[str, torch.Tensor]
    ft_state: Mapping[str, torch.Tensor]
    images: Mapping[str, torch.Tensor]
    labels: Mapping[str, torch.Tensor]
    device: torch.device = torch.device("cpu")


@dataclass(frozen=True)
class UnlearnContext:
    """Inputs shared by all methods. ``pre[split]`` / ``ft[split]``: FeatureSet (N, D)."""

    head: ZeroShotHead
    pre: Mapping[str, FeatureSet]
    ft: Mapping[str, FeatureSet]
    class_vectors: ClassVectors
    encoder: EncoderInputs | None = None

    def __post_init__(self):
        missing = [s for s in SPLITS if s not in self.pre or s not in self.ft]
        if missing:
            raise InvalidInputError(f"the unlearning context needs pre and ft latents for splits "
                                    f"{SPLITS}; missing: {missing}")
        for s in SPLITS:
            if not torch.equal(self.pre[s].labels, self.ft[s].labels):
                raise InvalidInputError(f"pre and ft latents of split {s!r} are not the same samples")

    @property
    def num_classes(self) -> int:
        return len(self.head.class_names)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.head.class_names)

    @property
    def store(self) -> None:
        """No feature store: the latents are in memory (``cv_core.editspec.resolve_gate`` reads ``ft``)."""
        return None

    def labels(self, split: str) -> torch.Tensor:
        return self.ft[split].labels


@dataclass(frozen=True)
class MethodOutput:
    """Result of one method forgetting one class set.

    logits:  split -> (N, C) outputs of the edited classifier
    latents: split -> (N, D) the edited representation a probe is trained on
    pre_block_latents: split -> (N, W) input of the edited block (weight mapping only)
    visual: the edited image tower (methods that change the encoder), for the audits that fine-tune or
            probe it further (relearning, layer-wise CKA, int8 deployment); never the caller's model
    """

    method: str
    forget: tuple[int, ...]
    logits: Mapping[str, torch.Tensor]
    latents: Mapping[str, torch.Tensor]
    seconds: float
    trainable_params: int
    encoder_changed: bool
    info: Mapping[str, float | str] = field(default_factory=dict)
    pre_block_latents: Mapping[str, torch.Tensor] | None = None
    visual: torch.nn.Module | None = None

    def predictions(self, split: str) -> torch.Tensor:
        return self.logits[split].argmax(dim=-1)


MethodFn = Callable[[UnlearnContext, tuple[int, ...], int, Mapping], MethodOutput]


@dataclass(frozen=True)
class UnlearningMethod:
    """A registered method. ``needs_encoder``: requires ``ctx.encoder``."""

    name: str
    fn: MethodFn
    description: str
    needs_encoder: bool = False
    encoder_changed: bool = False


UNLEARNING_METHODS: Registry[UnlearningMethod] = Registry("unlearning method")


def list_methods(*, changes_encoder: bool | None = None, needs_encoder: bool | None = None) -> list[str]:
    """Registered method names, filtered by what they do (None = either): ``changes_encoder=True`` are the
    methods whose edited image encoder differs from the fine-tuned one (the ones the relearning, CKA and
    int8 audits examine); ``needs_encoder=True`` the ones that need the model and images."""
    return [n for n, m in UNLEARNING_METHODS.items()
            if (changes_encoder is None or m.encoder_changed == changes_encoder)
            and (needs_encoder is None or m.needs_encoder == needs_encoder)]


def register_method(name: str, description: str, *, needs_encoder: bool = False,
                    encoder_changed: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn`` under ``name`` in :data:`UNLEARNING_METHODS`."""
    def wrap(fn: MethodFn) -> MethodFn:
        UNLEARNING_METHODS.register(name, UnlearningMethod(name, fn, description, needs_encoder,
                                                           encoder_changed))
        return fn
    return wrap


def check_forget(class_names: Sequence[str], forget: Sequence[str | int] | str | int) -> tuple[int, ...]:
    """Resolve the forget set to sorted unique indices; reject empty, unknown or all classes."""
    if isinstance(forget, (str, int)):
        forget = [forget]
    idx = tuple(sorted({class_index(class_names, k) for k in forget}))
    if not idx:
        raise InvalidInputError("the forget set is empty: name at least one class to forget")
    if len(idx) >= len(class_names):
        raise InvalidInputError(f"cannot forget every class ({len(class_names)} of {len(class_names)}): "
                                "nothing would be left to retain; forget fewer classes")
    return idx


def run_method(name: str, ctx: UnlearnContext, forget: Sequence[str | int] | str | int,
               seed: int = 0, options: Mapping | None = None) -> MethodOutput:
    """Validate inputs, run a registered method and time it (wall clock, seconds)."""
    method = UNLEARNING_METHODS.get(name)
    idx = check_forget(ctx.class_names, forget)
    if method.needs_encoder and ctx.encoder is None:
        raise InvalidInputError(f"method {name!r} changes the image encoder and needs the model and images; "
                                "build the context with encoder inputs (see cv_core.edits.context)")
    options = dict(options or {})
    start = time.perf_counter()
    out = method.fn(ctx, idx, int(seed), options)
    elapsed = time.perf_counter() - start
    return replace(out, method=name, forget=idx, seconds=out.seconds if out.seconds > 0 else elapsed,
                   info=dict(out.info))


def output(ctx: UnlearnContext, latents: Mapping[str, torch.Tensor], *, head_logits=None,
           trainable_params: int = 0, encoder_changed: bool = False, seconds: float = 0.0,
           info: Mapping | None = None, pre_block=None, visual: torch.nn.Module | None = None) -> MethodOutput:
    """Build a MethodOutput; logits default to the zero-shot head applied to the latents."""
    logit_fn = head_logits or ctx.head.logits
    logits = {s: logit_fn(z) for s, z in latents.items()}
    return MethodOutput("", (), logits, dict(latents), seconds, int(trainable_params), encoder_changed,
                        dict(info or {}), pre_block, visual)
