"""Pretrain the built-in CLIP on the procedural corpus with open_clip's contrastive loss.

    python -m cv_core.models.builtin.pretrain [--version v1|v2] [--seed S] [--out DIR] [--minutes M] [--steps N]

Reproducible: the corpus, the initialisation, the batch order and the augmentation all
follow ``--seed``; the schedule is fixed in steps (``--minutes`` is only a safety cap and
the run says so when it hits it). Writes ``<model>.safetensors`` (fp16), its manifest
(config, sha256, recipe, timings, hardware, metrics) and ``metrics.json`` (the training
curve) to ``--out``. Uses CUDA when present.

Resumable: every ``--checkpoint-every`` steps the model, the optimizer, the batch generator
and the curve go to ``--out/pretrain-checkpoint.pt`` (written to a temporary, then renamed),
and the corpus is kept in ``--out/corpus-*.npz``; started again with the same recipe, the
run continues from the last checkpoint and ends with the same weights as an unbroken run
on the same hardware. ``v1`` is the recipe of the shipped ``cvs-tiny-clip``; ``v2`` is
``cvs-tiny-clip-v2`` (a wider, deeper image tower and the v2 corpus mix).
"""
from __future__ import annotations

import os

# Spinning OpenMP threads collapse throughput on a shared, oversubscribed CPU (measured 5-20x).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from . import compare_weights, config_path, manifest_file, model_name, register_config, sha256_file, weights_file
from . import corpus as corpus_mod
from ...errors import InvalidInputError
from .evaluate import digits_tensors, encode, evaluate, preprocess_for, accuracy, text_head


@dataclass(frozen=True)
class PretrainConfig:
    seed: int = 0
    steps: int = 1000
    batch_size: int = 128
    corpus_size: int = 40_000
    lr: float = 3e-3
    weight_decay: float = 0.1
    warmup: int = 100
    eval_every: int = 100
    threads: int = 2
    version: str = "v1"

    def as_recipe(self) -> dict:
        """The recipe as the manifest records it (v1's manifest predates ``version``: left out for v1)."""
        out = asdict(self)
        if self.version == "v1":
            out.pop("version")
        return out


#: The v2 recipe (the v1 recipe is ``PretrainConfig()``): two thirds of an hour on the 2-core CPU.
V2_RECIPE = PretrainConfig(steps=3000, batch_size=256, corpus_size=100_000, warmup=150, eval_every=250,
                           version="v2")
#: v3: v2's recipe on the v3 corpus (``corpus.MIX_V3``).
V3_RECIPE = replace(V2_RECIPE, version="v3")
RECIPES = {"v1": PretrainConfig(), "v2": V2_RECIPE, "v3": V3_RECIPE}
CHECKPOINT_FILE = "pretrain-checkpoint.pt"


def _lr_factor(step: int, cfg: PretrainConfig) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small random affine jitter (shift <= 2 px, scale 0.9-1.1, rotation <= 6 deg): (B,3,S,S) -> same."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=g) * 2 - 1) * math.radians(6)
    scale = 0.9 + 0.2 * torch.rand(b, generator=g)
    shift = (torch.rand(b, 2, generator=g) * 2 - 1) * (4.0 / x.shape[-1])
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class CompactEmbedding(torch.nn.Module):
    """Trains only the token-embedding rows the corpus uses (a few hundred of 49,408).

    Equivalent to the full table for those ids, but the optimizer and the backward pass no
    longer touch 6M unused parameters. :meth:`write_back` copies the rows into the full table.
    """

    def __init__(self, full: torch.nn.Embedding, used_ids: torch.Tensor):
        super().__init__()
        self._full, self.used = (full,), used_ids  # a tuple: not a submodule
        self.weight = torch.nn.Parameter(full.weight.detach()[used_ids].clone())
        lut = torch.zeros(full.num_embeddings, dtype=torch.long, device=used_ids.device)
        lut[used_ids] = torch.arange(len(used_ids))
        self.register_buffer("lut", lut, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, L, W)
        return F.embedding(self.lut[ids], self.weight)

    @torch.no_grad()
    def write_back(self) -> torch.nn.Embedding:
        full = self._full[0]
        full.weight[self.used.to(full.weight.device)] = self.weight.to(full.weight)
        return full


def build_corpus(cfg: PretrainConfig, tokenizer, log, keep: Path | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 32, 32, 3) uint8 and tokens (N, L) int64 of the corpus for ``cfg.seed``.

    keep: a folder where the corpus is saved once generated and read back by a resumed run."""
    import numpy as np

    t0 = time.perf_counter()
    path = None if keep is None else keep / f"corpus-{cfg.version}-seed{cfg.seed}-{cfg.corpus_size}.npz"
    if path is not None and path.is_file():
        with np.load(path) as z:
            images, tokens = torch.from_numpy(z["images"]), torch.from_numpy(z["tokens"])
        log(f"corpus: {len(images)} samples read from {path} ({time.perf_counter() - t0:.1f}s)")
        return images, tokens
    images, captions = corpus_mod.generate(cfg.corpus_size, seed=cfg.seed, version=cfg.version,
                                           workers=cfg.threads)
    unique = sorted(set(captions))
    table = tokenizer(unique)
    index = {c: i for i, c in enumerate(unique)}
    tokens = table[torch.as_tensor([index[c] for c in captions])]
    log(f"corpus: {len(captions)} samples, {len(unique)} distinct captions, {time.perf_counter() - t0:.1f}s")
    if path is not None:
        keep.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        np.savez(tmp, images=images, tokens=tokens.numpy())
        os.replace(tmp, path)
    return torch.from_numpy(images), tokens


def _typo_val(preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """The val split of ``digits-typo``: images and the class written on each."""
    from ...data.builtin import variant_arrays, written_labels
    from .evaluate import images_tensor

    images, _ = variant_arrays("typo", "val")
    return images_tensor(images, preprocess), torch.as_tensor(written_labels("typo", "val").copy())


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(model, images, tokens, cfg: PretrainConfig, device, deadline: float, log,
          checkpoint: Path | None = None, checkpoint_every: int = 0, stop_at: int | None = None) -> dict:
    """Contrastive pretraining loop; returns the training curve and how it ended.

    checkpoint: file to resume from (when it exists and holds this recipe) and to write every
    ``checkpoint_every`` steps and when the run stops early: at the time cap (``deadline``) or at step
    ``stop_at`` (a run split across sittings)."""
    from open_clip.loss import ClipLoss

    compact = CompactEmbedding(model.token_embedding, torch.unique(tokens)).to(device)
    model.token_embedding = compact
    mean = torch.tensor(model.visual.preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    val_x, val_y = digits_tensors("val", preprocess_for(model))
    typo_x, typo_written = _typo_val(preprocess_for(model))
    loss_fn, g = ClipLoss(), torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    curve, first, before = [], 0, 0.0
    if checkpoint is not None and checkpoint.is_file():
        ck = torch.load(checkpoint, map_location=device, weights_only=True)
        if ck.get("recipe") != cfg.as_recipe():
            raise InvalidInputError(f"{checkpoint} holds another recipe ({ck.get('recipe')}); remove it or pass "
                                    "the same options to resume")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        g.set_state(ck["generator"])
        curve, first, before = list(ck["curve"]), int(ck["step"]), float(ck["seconds"])
        log(f"resumed from {checkpoint} at step {first}/{cfg.steps} ({before:.0f}s of training before)")
    t0 = time.perf_counter() - before

    def save(done: int) -> None:
        if checkpoint is not None:
            _save_checkpoint(checkpoint, {"recipe": cfg.as_recipe(), "step": done, "model": model.state_dict(),
                                          "optimizer": opt.state_dict(), "generator": g.get_state(),
                                          "curve": curve, "seconds": time.perf_counter() - t0})

    step, done = first, first
    for step in range(first, cfg.steps):
        late = time.perf_counter() > deadline
        if late or (stop_at is not None and step >= stop_at):
            why = "time cap reached" if late else "stopped as asked"
            log(f"{why} at step {step}/{cfg.steps}: the run is NOT the full recipe"
                + ("; run again with the same options to resume" if checkpoint is not None else ""))
            save(step)
            break
        model.train()
        for group in opt.param_groups:
            group["lr"] = cfg.lr * _lr_factor(step, cfg)
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        x = augment(images[idx].permute(0, 3, 1, 2).float().div(255), g).to(device)
        img_f, txt_f, scale = model((x - mean) / std, tokens[idx].to(device))
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        done = step + 1
        if done % cfg.eval_every == 0 or done == cfg.steps:
            model.eval()
            head = text_head(model, _tok(cfg.version))
            val = accuracy(encode(model, val_x.to(device)), head, val_y.to(device))
            read = accuracy(encode(model, typo_x.to(device)), head, typo_written.to(device))
            curve.append({"step": done, "loss": loss.item(), "zero_shot_val": val, "typo_read_val": read,
                          "seconds": time.perf_counter() - t0})
            log(f"step {done}: loss {loss.item():.3f} zero-shot val {val:.3f} typo read val {read:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
        if checkpoint_every and done % checkpoint_every == 0 and done < cfg.steps:
            save(done)
    model.token_embedding = compact.write_back()
    return {"curve": curve, "steps_done": done, "train_seconds": time.perf_counter() - t0}


def _tok(version: str = "v1"):
    import open_clip

    return open_clip.get_tokenizer(model_name(version))


def save_weights(model, path: Path, name: str = "cvs-tiny-clip") -> None:
    """fp16 safetensors of the full CLIP state dict (integer buffers kept as they are)."""
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "model": name})


def _hardware(device: torch.device, threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = f"{names[0]} x{len(names)} logical cores" if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "cpu": cpu, "torch_threads": threads, "gpu": gpu}


def _versions() -> dict:
    """What the corpus and the training depend on: Pillow draws the corpus (fonts, resampling), numpy and scipy
    its random draws and warps; another Pillow gives other pixels and so other weights."""
    import numpy
    import open_clip
    import PIL
    import scipy

    return {"torch": torch.__version__, "open_clip": open_clip.__version__, "pillow": PIL.__version__,
            "numpy": numpy.__version__, "scipy": scipy.__version__}


def run(cfg: PretrainConfig, out: Path, minutes: float, device: torch.device, log=print,
        checkpoint_every: int = 0, stop_at: int | None = None, evaluate_weights: bool = True) -> dict | None:
    """Pretrain, save, evaluate; returns the manifest, or None when the time cap or ``stop_at`` stopped a
    resumable run (its checkpoint is in ``out``). evaluate_weights=False leaves the metrics out (tests)."""
    import open_clip

    t_start = time.perf_counter()
    name = model_name(cfg.version)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    register_config()
    model = open_clip.create_model(name).to(device)
    out.mkdir(parents=True, exist_ok=True)
    keep = out if checkpoint_every else None
    images, tokens = build_corpus(cfg, _tok(cfg.version), log, keep=keep)
    t_corpus = time.perf_counter() - t_start
    checkpoint = out / CHECKPOINT_FILE if checkpoint_every else None
    result = train(model, images, tokens, cfg, device, t_start + 60 * minutes, log, checkpoint=checkpoint,
                   checkpoint_every=checkpoint_every, stop_at=stop_at)
    if checkpoint is not None:
        if result["steps_done"] < cfg.steps:
            return None
        checkpoint.unlink(missing_ok=True)  # the run is complete: a new run with these options starts afresh
    weights = out / weights_file(cfg.version)
    save_weights(model, weights, name)
    total = time.perf_counter() - t_start
    log(f"pretraining done in {total:.0f}s; evaluating the saved weights")
    loaded = open_clip.create_model(name, pretrained=str(weights))  # the shipped path, on CPU
    metrics = evaluate(loaded, _tok(cfg.version), seed=cfg.seed) if evaluate_weights else {}
    word_share = corpus_mod.label_word_share(cfg.version)
    manifest = {
        "model": name, "weights": weights.name, "sha256": sha256_file(weights),
        "bytes": weights.stat().st_size, "dtype": "float16",
        "config": json.loads(config_path(cfg.version).read_text()), "preprocess": dict(model.visual.preprocess_cfg),
        "tokenizer": "open_clip SimpleTokenizer (CLIP BPE), context_length 16",
        "recipe": cfg.as_recipe(), "corpus_mix": corpus_mod.MIXES[cfg.version],
        **({} if word_share is None else {"label_word_share": word_share}), "steps_done": result["steps_done"],
        "timings_s": {"corpus": round(t_corpus, 1), "train": round(result["train_seconds"], 1),
                      "pretrain_total": round(total, 1)},
        "hardware": _hardware(device, cfg.threads),
        "versions": _versions(),
        "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    (out / manifest_file(cfg.version)).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps({"curve": result["curve"], **manifest["metrics"]}, indent=2) + "\n")
    log(json.dumps(manifest["metrics"], indent=2))
    return manifest


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", default="v1", choices=tuple(RECIPES),
                   help="which built-in model's recipe (defaults below are v1's; v2's and v3's are in V2_RECIPE and "
                   "V3_RECIPE)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("out/builtin"), help="output folder (assets/builtin to ship)")
    p.add_argument("--minutes", type=float, default=20.0, help="safety cap on the wall time of pretraining")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--corpus-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable checkpoint (and the corpus) in --out every N steps; 0: none")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="with --checkpoint-every: stop after this step (resume later with the same options)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--compare-to", type=Path, default=None,
                   help="after training, compare the new weights tensor by tensor with this safetensors file "
                        "(e.g. assets/builtin/cvs-tiny-clip.safetensors) and print the result")
    a = p.parse_args(argv)
    if a.compare_to is not None and not a.compare_to.is_file():
        p.error(f"--compare-to: no file at {a.compare_to}")
    base = RECIPES[a.version]
    given = {"seed": a.seed, "steps": a.steps, "batch_size": a.batch_size, "corpus_size": a.corpus_size,
             "lr": a.lr, "threads": a.threads}
    cfg = replace(base, **{k: v for k, v in given.items() if v is not None})
    if cfg.steps < 1 or cfg.batch_size < 2 or cfg.corpus_size < cfg.batch_size or a.minutes <= 0 \
            or a.checkpoint_every < 0:
        p.error("need steps >= 1, batch-size >= 2, corpus-size >= batch-size, minutes > 0, checkpoint-every >= 0")
    if a.stop_at_step is not None and (a.checkpoint_every == 0 or a.stop_at_step < 1):
        p.error("--stop-at-step needs --checkpoint-every (or the run could not resume) and a step >= 1")
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          "cpu" if a.device == "auto" else a.device)
    if run(cfg, a.out, a.minutes, device, checkpoint_every=a.checkpoint_every, stop_at=a.stop_at_step) is None:
        raise SystemExit(3)  # stopped early; the checkpoint resumes it
    if a.compare_to is not None:
        c = compare_weights(a.out / weights_file(cfg.version), a.compare_to)
        verdict = "bit-for-bit identical" if c["identical"] else (
            f"{len(c['differing'])} differ (max |diff| {c['max_abs_diff']:.3g}), {len(c['missing'])} in one file only")
        print(f"compared with {a.compare_to}: {c['tensors']} tensors, {verdict}")


if __name__ == "__main__":
    main()
