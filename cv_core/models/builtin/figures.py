"""The issue's figures for the built-in model, measured through the product's own pipeline.

    python -m cv_core.models.builtin.figures [--cache-dir DIR] [--dataset digits] [--coef -1 ...]

Cold start (empty cache) -> class vectors, warm start (same cache), zero-shot and fine-tuned
test accuracy, and forgetting each class in turn by steering (coefficient per ``--coef``,
auto gate), averaged over the classes. Prints JSON; timings are wall-clock on this machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np


def forget_sweep(result, coef: float, gamma="auto") -> dict:
    """Forget each class with ``coef * kappa_c``: mean forget / retain accuracy over the classes."""
    from ...pipeline import apply_edit

    names = result.class_vectors.class_names
    rows = [apply_edit(result, {c: coef}, gamma) for c in range(len(names))]
    forget = np.array([r.forget_accuracy for r in rows])
    retain = np.array([r.retain_accuracy for r in rows])
    return {"coef": coef, "forget_mean": round(float(forget.mean()), 4),
            "retain_mean": round(float(retain.mean()), 4),
            "retain_drop_vs_finetuned": round(float(rows[0].before.accuracy - retain.mean()), 4),
            "forget_per_class": forget.round(3).tolist()}


def measure(dataset: str, cache_dir: str, coefs: list[float]) -> dict:
    from ...pipeline import RunConfig, run

    cfg = RunConfig(backbone="builtin", dataset=dataset, device="cpu", cache_dir=cache_dir)
    t0 = time.perf_counter()
    cold = run(cfg)
    cold_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = run(cfg)
    warm_s = time.perf_counter() - t0
    return {
        "dataset": dataset, "cold_start_s": round(cold_s, 1), "warm_start_s": round(warm_s, 2),
        "zero_shot_accuracy": round(float(warm.zero_shot_accuracy), 4),
        "finetuned_accuracy": round(float(warm.finetuned_accuracy), 4),
        "timings": {k: round(float(v), 2) for k, v in dict(cold.timings).items()},
        "forget": [forget_sweep(warm, c) for c in coefs],
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Measure the built-in model's figures through cv_core.pipeline.")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--cache-dir", default=None, help="default: a fresh temporary folder (true cold start)")
    p.add_argument("--coef", type=float, action="append", help="forgetting coefficient(s); default -1")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(measure(a.dataset, a.cache_dir or tmp, a.coef or [-1.0]), indent=2))


if __name__ == "__main__":
    main()
