"""Pretrain the built-in CLIP on the procedural corpus with open_clip's contrastive loss.

    python -m cv_core.models.builtin.pretrain [--seed S] [--out DIR] [--minutes M] [--steps N]

Reproducible: the corpus, the initialisation, the batch order and the augmentation all
follow ``--seed``; the schedule is fixed in steps (``--minutes`` is only a safety cap and
the run says so when it hits it). Writes ``cvs-tiny-clip.safetensors`` (fp16), its
manifest (config, sha256, recipe, timings, hardware, metrics) and ``metrics.json``
(the training curve) to ``--out``. Uses CUDA when present.
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
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from . import (BUILTIN_MODEL_NAME, CONFIG_PATH, MANIFEST_FILE, WEIGHTS_FILE, compare_weights, register_config,
               sha256_file)
from . import corpus as corpus_mod
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


def build_corpus(cfg: PretrainConfig, tokenizer, log) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 32, 32, 3) uint8 and tokens (N, L) int64 of the corpus for ``cfg.seed``."""
    t0 = time.perf_counter()
    images, captions = corpus_mod.generate(cfg.corpus_size, seed=cfg.seed, workers=cfg.threads)
    unique = sorted(set(captions))
    table = tokenizer(unique)
    index = {c: i for i, c in enumerate(unique)}
    tokens = table[torch.as_tensor([index[c] for c in captions])]
    log(f"corpus: {len(captions)} samples, {len(unique)} distinct captions, {time.perf_counter() - t0:.1f}s")
    return torch.from_numpy(images), tokens


def train(model, images, tokens, cfg: PretrainConfig, device, deadline: float, log) -> dict:
    """Contrastive pretraining loop; returns the training curve and how it ended."""
    from open_clip.loss import ClipLoss

    compact = CompactEmbedding(model.token_embedding, torch.unique(tokens)).to(device)
    model.token_embedding = compact
    mean = torch.tensor(model.visual.preprocess_cfg["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.preprocess_cfg["std"], device=device).view(1, 3, 1, 1)
    val_x, val_y = digits_tensors("val", preprocess_for(model))
    loss_fn, g = ClipLoss(), torch.Generator().manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    curve, step, t0 = [], 0, time.perf_counter()
    for step in range(cfg.steps):
        if time.perf_counter() > deadline:
            log(f"time cap reached at step {step}/{cfg.steps}: the run is NOT the full recipe")
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
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            model.eval()
            val = accuracy(encode(model, val_x.to(device)), text_head(model, _tok()), val_y.to(device))
            curve.append({"step": step + 1, "loss": loss.item(), "zero_shot_val": val,
                          "seconds": time.perf_counter() - t0})
            log(f"step {step + 1}: loss {loss.item():.3f} zero-shot val {val:.3f} "
                f"({time.perf_counter() - t0:.0f}s)")
    model.token_embedding = compact.write_back()
    return {"curve": curve, "steps_done": step + 1 if curve else step, "train_seconds": time.perf_counter() - t0}


def _tok():
    import open_clip

    return open_clip.get_tokenizer(BUILTIN_MODEL_NAME)


def save_weights(model, path: Path) -> None:
    """fp16 safetensors of the full CLIP state dict (integer buffers kept as they are)."""
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt", "model": BUILTIN_MODEL_NAME})


def _hardware(device: torch.device, threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")]
        cpu = f"{names[0]} x{len(names)} logical cores" if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "cpu": cpu, "torch_threads": threads, "gpu": gpu}


def run(cfg: PretrainConfig, out: Path, minutes: float, device: torch.device, log=print) -> dict:
    import open_clip

    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    register_config()
    model = open_clip.create_model(BUILTIN_MODEL_NAME).to(device)
    images, tokens = build_corpus(cfg, _tok(), log)
    t_corpus = time.perf_counter() - t_start
    result = train(model, images, tokens, cfg, device, t_start + 60 * minutes, log)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    save_weights(model, weights)
    total = time.perf_counter() - t_start
    log(f"pretraining done in {total:.0f}s; evaluating the saved weights")
    loaded = open_clip.create_model(BUILTIN_MODEL_NAME, pretrained=str(weights))  # the shipped path, on CPU
    metrics = evaluate(loaded, _tok(), seed=cfg.seed)
    manifest = {
        "model": BUILTIN_MODEL_NAME, "weights": WEIGHTS_FILE, "sha256": sha256_file(weights),
        "bytes": weights.stat().st_size, "dtype": "float16",
        "config": json.loads(CONFIG_PATH.read_text()), "preprocess": dict(model.visual.preprocess_cfg),
        "tokenizer": "open_clip SimpleTokenizer (CLIP BPE), context_length 16",
        "recipe": asdict(cfg), "corpus_mix": corpus_mod.MIX, "steps_done": result["steps_done"],
        "timings_s": {"corpus": round(t_corpus, 1), "train": round(result["train_seconds"], 1),
                      "pretrain_total": round(total, 1)},
        "hardware": _hardware(device, cfg.threads),
        "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
        "metrics": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()},
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps({"curve": result["curve"], **manifest["metrics"]}, indent=2) + "\n")
    log(json.dumps(manifest["metrics"], indent=2))
    return manifest


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    d = PretrainConfig()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=Path("out/builtin"), help="output folder (assets/builtin to ship)")
    p.add_argument("--minutes", type=float, default=20.0, help="safety cap on the wall time of pretraining")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--corpus-size", type=int, default=d.corpus_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--compare-to", type=Path, default=None,
                   help="after training, compare the new weights tensor by tensor with this safetensors file "
                        "(e.g. assets/builtin/cvs-tiny-clip.safetensors) and print the result")
    a = p.parse_args(argv)
    if a.compare_to is not None and not a.compare_to.is_file():
        p.error(f"--compare-to: no file at {a.compare_to}")
    if a.steps < 1 or a.batch_size < 2 or a.corpus_size < a.batch_size or a.minutes <= 0:
        p.error("need steps >= 1, batch-size >= 2, corpus-size >= batch-size and minutes > 0")
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          "cpu" if a.device == "auto" else a.device)
    cfg = PretrainConfig(seed=a.seed, steps=a.steps, batch_size=a.batch_size, corpus_size=a.corpus_size,
                         lr=a.lr, threads=a.threads)
    run(cfg, a.out, a.minutes, device)
    if a.compare_to is not None:
        c = compare_weights(a.out / WEIGHTS_FILE, a.compare_to)
        verdict = "bit-for-bit identical" if c["identical"] else (
            f"{len(c['differing'])} differ (max |diff| {c['max_abs_diff']:.3g}), {len(c['missing'])} in one file only")
        print(f"compared with {a.compare_to}: {c['tensors']} tensors, {verdict}")


if __name__ == "__main__":
    main()
