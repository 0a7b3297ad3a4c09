"""Fine-tuning of the image encoder with the zero-shot head frozen (task-arithmetic recipe)."""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields, replace

import torch
from torch.utils.data.distributed import DistributedSampler

from ..device import autocast
from ..errors import InvalidInputError, NumericalError
from ..features.extract import encode_images, index_batches
from ..progress import CancelFn, ProgressFn, StageTimer, check_cancel
from ..results import ZeroShotHead
from .builtin import DEFAULT_VERSION
from .distributed import World, broadcast_flag, collective, mean_across


@dataclass(frozen=True)
class FinetuneConfig:
    """AdamW + cosine schedule with linear warm-up, gradient clipping; only the image encoder trains.

    Length (issue 12): ``steps`` fixed, or with ``epochs`` set the budget ``ceil(epochs *
    steps_per_epoch(len(train)))`` (about ``epochs * len(train) / batch_size``; ``steps`` is then unused);
    early_stop_patience: evaluate zero-shot accuracy on the val split through the frozen head, keep the
    best state (ties: the earlier one) and stop after this many evaluations without improvement;
    eval_every: steps between val evaluations (default: once per epoch, ``steps_per_epoch(len(train))``).
    The built-in model's default sets both (``default_for``); the open_clip recipes are fixed steps.
    ``as_dict`` leaves the three out while unset, so a fixed-step recipe's cache keys are what they were
    before they existed.
    """

    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup: int = 200
    grad_clip: float = 1.0
    seed: int = 0
    epochs: float | None = None
    early_stop_patience: int | None = None
    eval_every: int | None = None
    #: keep the image tower's BatchNorm running statistics as pretrained (their affine weights still train);
    #: False re-estimates them on the fine-tuning images (docs/finetuning.md: on the built-in v3, noise 10% -> 85%)
    freeze_norm_stats: bool = False

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"fine-tune {name} must be at least 1, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInputError(f"fine-tune learning rate must be a positive number, got {self.lr}")
        if self.warmup < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise InvalidInputError("warm-up and weight decay must be >= 0 and the gradient clip > 0")
        if self.epochs is not None and not (isinstance(self.epochs, (int, float)) and math.isfinite(self.epochs)
                                            and self.epochs > 0):
            raise InvalidInputError(f"fine-tune epochs must be a positive number, got {self.epochs}")
        for name in ("early_stop_patience", "eval_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InvalidInputError(f"fine-tune {name} must be a whole number of at least 1, got {value}")
        if not isinstance(self.freeze_norm_stats, bool):
            raise InvalidInputError(f"freeze_norm_stats must be true or false, got {self.freeze_norm_stats!r}")
        if self.eval_every is not None and self.early_stop_patience is None:
            raise InvalidInputError("eval_every only sets how often early stopping evaluates the val split; "
                                    "also set early_stop_patience (CLI: --early-stop)")

    @classmethod
    def default_for(cls, device: torch.device, small_model: bool = False,
                    builtin_version: str = DEFAULT_VERSION) -> FinetuneConfig:
        """The default recipe (docs/finetuning.md has the measurements behind each).

        The built-in model (any device): a length that follows the data, ``BUILTIN_EPOCHS`` epochs of batch
        64 with early stopping on the val split (patience ``BUILTIN_PATIENCE``), at the version's learning
        rate (``BUILTIN_LR``: v1 1e-3, v2 5e-4).
        GPU, an open_clip model: the paper's recipe (2000 steps, batch 128, lr 1e-5, warm-up 200).
        CPU, an open_clip model: 100 steps of batch 32 (CLIP trains at a few images a second on a CPU)."""
        if small_model:
            if builtin_version not in BUILTIN_LR:
                raise InvalidInputError(f"no fine-tune recipe for built-in version {builtin_version!r}; "
                                        f"known: {', '.join(BUILTIN_LR)}")
            return cls(steps=150, batch_size=64, lr=BUILTIN_LR[builtin_version], weight_decay=0.1, warmup=15,
                       epochs=BUILTIN_EPOCHS, early_stop_patience=BUILTIN_PATIENCE)
        if device.type == "cuda":
            return cls()
        return cls(steps=100, batch_size=32, lr=1e-5, weight_decay=0.1, warmup=10)

    @classmethod
    def recipe(cls, name: str, device: torch.device, small_model: bool = False,
               builtin_version: str = DEFAULT_VERSION) -> FinetuneConfig:
        """A named recipe (``RECIPES``): 'auto' is ``default_for``; 'paper' the task-arithmetic paper's
        (2000 steps, batch 128, lr 1e-5, warm-up 200) on any device; 'fixed-150' the built-in model's fixed
        recipe before issue 12 (150 steps, batch 64, lr 5e-4, warm-up 15), which every figure measured
        before 2026-12-03 used."""
        if name == "auto":
            return cls.default_for(device, small_model, builtin_version)
        if name == "paper":
            return cls()
        if name == "fixed-150":
            return cls(steps=150, batch_size=64, lr=5e-4, weight_decay=0.1, warmup=15)
        raise InvalidInputError(f"unknown fine-tune recipe {name!r}; choose one of {', '.join(RECIPES)}")

    @classmethod
    def recipe_for(cls, name: str, device: torch.device, backbone: str) -> FinetuneConfig:
        """``recipe`` for a backbone spec: the built-in versions get their own default (``BUILTIN_LR``), any
        other backbone the open_clip defaults. The CLI, the app, the pipeline and the benches call this."""
        from .backbones import builtin_version

        version = builtin_version(backbone)
        return cls.recipe(name, device, small_model=version is not None, builtin_version=version or DEFAULT_VERSION)

    def describe(self, n_train: int | None = None) -> str:
        """The recipe in words, e.g. '10 epochs (170 steps) of batch 64, lr 0.001, early stopping on the val
        split (patience 3)'; with ``n_train`` the epoch budget is also given in steps."""
        if self.epochs is None:
            length = f"{self.steps} steps"
        else:
            length = f"{self.epochs:g} epochs" + (f" ({self.total_steps(n_train)} steps)" if n_train else "")
        text = f"{length} of batch {self.batch_size}, lr {self.lr:g}"
        if self.early_stopping:
            text += f", early stopping on the val split (patience {self.early_stop_patience})"
        if self.freeze_norm_stats:
            text += ", BatchNorm statistics frozen"
        return text

    def without_early_stopping(self) -> FinetuneConfig:
        return replace(self, early_stop_patience=None, eval_every=None)

    @classmethod
    def from_dict(cls, d: dict) -> FinetuneConfig:
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise InvalidInputError(f"unknown fine-tune settings {unknown}; valid: {sorted(valid)}")
        return cls(**d)

    def as_dict(self) -> dict:
        """The settings (cache keys, summary.json); the opt-in fields appear only when set, so the fixed-step
        recipe's dict, and every cache key made from it, is what it was before they existed."""
        defaults = {f.name: f.default for f in fields(self) if f.name in OPT_IN_FIELDS}
        return {k: v for k, v in asdict(self).items() if k not in defaults or v != defaults[k]}

    @property
    def early_stopping(self) -> bool:
        return self.early_stop_patience is not None

    def steps_per_epoch(self, n_train: int) -> int:
        """Batches in one pass over ``n_train`` images, as ``_forever`` cuts them: a last batch smaller than
        half a batch is skipped (one process's count; under DDP the sampler's drop_last can make a rank's
        epoch a batch shorter, so "epoch" there is this count of steps, the same on every rank)."""
        return max(1, len(_batches(range(n_train), self.batch_size)))

    def total_steps(self, n_train: int) -> int:
        """The step budget for a train split of ``n_train`` images: ``steps``, or
        ``ceil(epochs * steps_per_epoch)``."""
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * self.steps_per_epoch(n_train)))

    def eval_interval(self, n_train: int) -> int:
        """Steps between val evaluations: ``eval_every``, or one epoch."""
        return self.eval_every or self.steps_per_epoch(n_train)


#: Fields left out of ``FinetuneConfig.as_dict`` while None (added after cache keys were first made).
#: Settings added after cache keys existed: ``as_dict`` leaves each out while it has its default (None, False).
OPT_IN_FIELDS = ("epochs", "early_stop_patience", "eval_every", "freeze_norm_stats")
#: The built-in model's default length: epochs of its train split, and val evaluations without a gain
#: before stopping (measured in docs/finetuning.md).
BUILTIN_EPOCHS = 10
#: The built-in versions' learning rates. v2's wider image tower at 1e-3 stopped early on a noisy val curve
#: (digits, seeds 0/1/2: 0.956/0.982/0.980); at 5e-4: 0.994/0.993/0.993 (docs/finetuning.md).
BUILTIN_LR = {"v1": 1e-3, "v2": 5e-4, "v3": 5e-4}
#: Named recipes (``FinetuneConfig.recipe``; CLI ``--recipe``) and what each is, in words (the app's choice).
RECIPES = ("auto", "paper", "fixed-150")
RECIPE_LABELS = {
    "auto": "default for this backbone (built-in: epochs with early stopping; open_clip: the paper's on a GPU)",
    "paper": "the task-arithmetic paper's (2000 steps, batch 128, lr 1e-5)",
    "fixed-150": "fixed 150 steps (the built-in model's default before 2026-12-03)",
}
BUILTIN_PATIENCE = 3


def describe_run(record: dict) -> str:
    """What a fine-tuning did, from its record (``finetune(..., record=)``, summary.json's ``finetune_run``):
    e.g. '153 of 170 steps; stopped early, kept step 102, val accuracy 0.983'; '' for an empty record (an
    encoder cached before records were kept)."""
    if not record:
        return ""
    text = f"{record['steps_run']} of {record['steps_budget']} steps"
    if "best_step" in record:
        text += (f"; {'stopped early, ' if record['stopped_early'] else ''}kept step {record['best_step']}, val "
                 f"accuracy {record['best_val_accuracy']:.3f}")
    return text


class ImageEncoder(torch.nn.Module):
    """Just the image tower, with CLIP's ``encode_image`` interface (no text tower copied)."""

    def __init__(self, visual: torch.nn.Module):
        super().__init__()
        self.visual = visual

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    forward = encode_image


def cosine_with_warmup(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def finetune(model: torch.nn.Module, preprocess, head: ZeroShotHead, dataset, config: FinetuneConfig,
             device: torch.device, progress: ProgressFn = None, cancel: CancelFn = None,
             world: World | None = None, val_dataset=None, val_preprocess=None,
             record: dict | None = None) -> dict[str, torch.Tensor]:
    """Train a copy of ``model.visual`` with cross-entropy through the frozen head.

    world: the data-parallel group (``models.distributed.init_world``) or None. Under DDP each rank
    takes ``batch_size / world_size`` images of the same global batch (DistributedSampler, reshuffled
    per epoch by ``set_epoch``), so N processes follow the single-process run step by step; the reported
    loss is the mean over ranks. Returns the fine-tuned image-encoder state dict (CPU tensors) on every
    rank; ``model`` itself is not changed.

    With ``config.early_stop_patience`` (opt-in) every ``config.eval_interval`` steps, and after the last,
    the encoder (eval mode, no grad) encodes ``val_dataset`` and the frozen head scores it; the state with
    the best val accuracy (ties: the earlier) is returned, and training stops after ``patience``
    evaluations without improvement. Under DDP every rank evaluates the whole val split and rank 0's
    decision is broadcast, so all ranks stop at the same step.

    record: a dict filled with what happened (``steps_run``, ``steps_budget``, ``stopped_early``, and with early
    stopping ``best_step`` and ``best_val_accuracy``): summary.json's ``finetune_run``.
    """
    size = world.world_size if world is not None else 1
    if config.batch_size % size:
        raise InvalidInputError(f"the global batch {config.batch_size} must divide by the {size} processes; "
                                f"choose --nproc_per_node among its divisors")
    if config.early_stopping and (val_dataset is None or len(val_dataset) == 0):
        raise InvalidInputError("early stopping needs a val split to score; this dataset gave none. Fine-tune "
                                "without it (drop --early-stop or pass --no-early-stop; early_stop_patience=None) or use a dataset with a "
                                "val split (an image folder needs enough images per class for one)")
    total = config.total_steps(len(dataset))
    every = config.eval_interval(len(dataset))
    torch.manual_seed(config.seed)
    encoder = train_mode(ImageEncoder(copy.deepcopy(model.visual)).to(device), config.freeze_norm_stats)
    trained = encoder if world is None else torch.nn.parallel.DistributedDataParallel(
        encoder, device_ids=[device.index] if device.type == "cuda" else None)
    weights = head.weights.to(device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_with_warmup(s, config.warmup, total))
    stream = _forever(dataset, preprocess, config.batch_size // size, device, config.seed,
                      world.rank if world else 0, size)
    timer = StageTimer(progress if world is None or world.is_main else None, "finetune", total)
    best = _Best() if config.early_stopping else None
    for step in range(total):
        check_cancel(cancel, "fine-tuning")
        images, labels = next(stream)
        with autocast(device):
            feats = trained(images.to(device, non_blocking=True))
            logits = head.logit_scale * torch.nn.functional.normalize(feats.float(), dim=-1) @ weights.T
            loss = torch.nn.functional.cross_entropy(logits, labels.to(device))
        shown = mean_across(world, loss)
        if not torch.isfinite(shown):
            raise NumericalError(f"fine-tuning diverged at step {step} (loss {shown.item()}); lower the learning "
                                 f"rate (now {config.lr})")
        optimizer.zero_grad(set_to_none=True)
        if world is None:
            loss.backward()
        else:
            with collective(world, f"averaging gradients at step {step}"):
                loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), config.grad_clip)
        optimizer.step()
        schedule.step()
        if best is None:
            timer.update(step + 1, f"step {step + 1}/{total}", shown.item())
            continue
        epoch = (step + 1) / config.steps_per_epoch(len(dataset))
        if (step + 1) % every and step + 1 < total:
            timer.update(step + 1, f"epoch {epoch:.1f} · step {step + 1}/{total} · loss {shown.item():.3f} · "
                         f"best {best.text()}", shown.item())
            continue
        accuracy = val_accuracy(encoder, head, val_dataset, val_preprocess, device)
        improved = broadcast_flag(world, accuracy > best.accuracy, "agreeing on the val accuracy")
        if improved:
            best.keep(accuracy, step + 1, encoder)
        else:
            best.waited += 1
        stop = best.waited >= config.early_stop_patience and step + 1 < total  # at the budget's end: done anyway
        timer.update(total if stop else step + 1,
                     f"epoch {epoch:.1f} · step {step + 1}/{total} · loss {shown.item():.3f} · val accuracy "
                     f"{accuracy:.3f} (best {best.text()})" + (f" · stopped: no gain in {best.waited} evaluations"
                                                               if stop else ""), shown.item())
        if stop:
            break
    if record is not None:
        record.update(steps_run=step + 1, steps_budget=total, stopped_early=best is not None and step + 1 < total)
        if best is not None:
            record.update(best_step=best.step, best_val_accuracy=best.accuracy)
    if best is not None:
        return best.state
    return {k: v.detach().cpu().clone() for k, v in encoder.visual.state_dict().items()}


class _Best:
    """The best val accuracy so far, its step and a CPU copy of its state; evaluations since it."""

    def __init__(self):
        self.accuracy, self.step, self.state, self.waited = -1.0, 0, None, 0

    def keep(self, accuracy: float, step: int, encoder: ImageEncoder) -> None:
        self.accuracy, self.step, self.waited = accuracy, step, 0
        self.state = {k: v.detach().cpu().clone() for k, v in encoder.visual.state_dict().items()}

    def text(self) -> str:
        return f"{self.accuracy:.3f} at step {self.step}" if self.state is not None else "not yet measured"


def train_mode(module: torch.nn.Module, freeze_norm_stats: bool = False) -> torch.nn.Module:
    """``module.train()``; with ``freeze_norm_stats`` every BatchNorm layer stays in eval mode, so it normalises
    with its pretrained running statistics and does not update them (its weight and bias still get gradients)."""
    module.train()
    if freeze_norm_stats:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    return module


@torch.no_grad()
def val_accuracy(encoder: ImageEncoder, head: ZeroShotHead, dataset, preprocess, device: torch.device,
                 batch_size: int = 256) -> float:
    """Zero-shot accuracy of ``encoder`` on ``dataset`` through the frozen head (eval mode while it
    encodes; each module is back in the mode it had afterwards, so a frozen BatchNorm stays in eval mode)."""
    modes = [(m, m.training) for m in encoder.modules()]
    encoder.eval()
    try:
        feats = encode_images(encoder, dataset, preprocess, device, batch_size=batch_size, split="val",
                              encoder="finetuning")
    finally:
        for m, training in modes:
            m.training = training
    predicted = head.predict(feats.features)
    return (predicted == feats.labels).float().mean().item()


def _forever(dataset, preprocess, batch_size: int, device: torch.device, seed: int, rank: int = 0,
             world_size: int = 1):
    """Endless shuffled batches of this rank's share; a last batch smaller than half a batch is skipped.

    The order is DistributedSampler's (a permutation seeded by seed + epoch; rank r takes every
    world_size-th index), so the ranks' batches at a step together form the single-process batch.
    """
    sampler = DistributedSampler(_Length(len(dataset)), num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=seed, drop_last=world_size > 1)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from index_batches(dataset, preprocess, _batches(list(sampler), batch_size), device)
        epoch += 1


def _batches(order, batch_size: int) -> list:
    """One epoch's batches of ``order``; a last batch smaller than half a batch is skipped."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [c for c in chunks if len(c) * 2 >= min(batch_size, len(order))]


class _Length:
    """The only thing DistributedSampler reads from a dataset is its length."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def finetuned_encoder(model: torch.nn.Module, state: dict[str, torch.Tensor], device: torch.device) -> ImageEncoder:
    """An eval-mode ImageEncoder with the fine-tuned weights (the pretrained model is untouched)."""
    visual = copy.deepcopy(model.visual)
    visual.load_state_dict(state)
    return ImageEncoder(visual).to(device).eval()
