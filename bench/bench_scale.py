"""Part 7: past one process - extraction local vs Ray Data (1 and 2 encoder actors), fine-tuning 1 vs 2
gloo processes (DDP with the same global batch).

* Extraction: the built-in model's pretrained and fine-tuned image encoders over the ``digits`` train and
  test splits from PIL images (decode + preprocess once, encode twice), written into a feature store.
  ``local``: ``encode_pair_to_store`` in this process; ``ray``: ``extract_with_ray`` on a local Ray started
  once (``num_cpus`` = cores); each Ray call starts its actor pool, which the figure includes.
* Fine-tuning: ``finetune`` on the digits train split (preprocessed in memory), global batch 64, in 1
  process and in 2 gloo processes (32 images each); steps/s after ``WARMUP`` steps.

``--maps [--quick]``: issue 14's part instead - maps and the live edit at N in {100k, 1M}, D = 512,
C in {10, 1000} (``bench_maps_scale.py``; its entries keyed by N go into ``bench/results/scale.json``
beside these rows, and in full into ``maps_scale.json``; the browser figures come from
``bench_browser.py --n N``).

A 2-core machine cannot show a speed-up from more processes on the same two cores: these figures measure
the engines' overhead here, not their scaling (see docs/scale.md for what was and was not measured).
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.multiprocessing as mp

from _common import machine, print_table, size_entries, write_results

from cv_core.data.datasets import load_split  # noqa: E402
from cv_core.features.extract import encode_pair_to_store, identity, preprocess_once  # noqa: E402
from cv_core.features.store import FeatureStore, FeatureStoreWriter  # noqa: E402
from cv_core.models.backbones import load_backbone  # noqa: E402
from cv_core.models.finetune import FinetuneConfig, finetuned_encoder  # noqa: E402

WARMUP = 5


def _data():
    return {s: load_split("digits", s) for s in ("train", "test")}


def _write(fn, class_names, dim: int) -> float:
    """Seconds to fill and publish a feature store with ``fn(writer)``."""
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        with FeatureStoreWriter(f"{d}/s", {"bench": 1}, class_names, dim) as w:
            fn(w)
        seconds = time.perf_counter() - t
        FeatureStore.open(f"{d}/s")
    return seconds


def extraction(repeat: int) -> list[dict]:
    import ray
    from cv_core.features.ray_extract import extract_with_ray
    torch.manual_seed(0)
    b = load_backbone("builtin", "cpu")
    ft = finetuned_encoder(b.model, {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                                     for k, v in b.model.visual.state_dict().items()}, torch.device("cpu"))
    data = _data()
    n = sum(len(ds) for ds in data.values())

    def local(w):
        for split, ds in data.items():
            encode_pair_to_store(b.model, ft, ds, b.preprocess, torch.device("cpu"), w, split)

    rows = []
    threads = torch.get_num_threads()
    for t in sorted({1, threads}):
        torch.set_num_threads(t)
        runs = [_write(local, data["test"].class_names, b.embed_dim) for _ in range(repeat)]
        rows.append({"engine": "local", "workers": 1, "torch_threads": t, "images": n,
                     "median_s": statistics.median(runs), "images_per_s": n / statistics.median(runs), "runs_s": runs})
    torch.set_num_threads(threads)
    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    try:
        for workers in (1, 2):
            def on_ray(w, workers=workers):
                extract_with_ray(b.model.visual, ft.visual, data, b.preprocess, w, workers=workers)
            runs = [_write(on_ray, data["test"].class_names, b.embed_dim) for _ in range(repeat)]
            rows.append({"engine": "ray", "workers": workers, "torch_threads": "1 per actor", "images": n,
                         "median_s": statistics.median(runs),
                         "images_per_s": n / statistics.median(runs), "runs_s": runs})
    finally:
        ray.shutdown()
    base = rows[0]["images_per_s"]
    for r in rows:
        r["vs_local"] = r["images_per_s"] / base
    rows.append({"engine": "ray.init (once per session, not in the rows above)", "median_s": ray_start})
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, size: int, port: int, steps: int, out: str, threads: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    from cv_core.models.distributed import init_world, shutdown
    from cv_core.models.finetune import finetune
    from cv_core.models.zeroshot import build_head
    from cv_core.data.datasets import get_dataset_info
    world = init_world(torch.device("cpu")) if size > 1 else None
    b = load_backbone("builtin", "cpu")
    train = load_split("digits", "train")
    head = build_head(b, train.class_names, get_dataset_info("digits").templates, torch.device("cpu"))
    data = preprocess_once(train, b.preprocess)
    stamps = []
    finetune(b.model, identity, head, data, FinetuneConfig(steps=steps, batch_size=64, lr=5e-4, warmup=5),
             torch.device("cpu"), progress=lambda p: stamps.append(time.perf_counter()), world=world)
    if rank == 0:
        torch.save(stamps, out)
    shutdown(world)


def finetuning(steps: int) -> list[dict]:
    rows = []
    cores = os.cpu_count() or 2
    for size, threads in ((1, 1), (1, cores), (2, max(1, cores // 2))):
        with tempfile.TemporaryDirectory() as d:
            ctx, port = mp.get_context("spawn"), _free_port()
            procs = [ctx.Process(target=_rank, args=(r, size, port, steps, f"{d}/stamps.pt", threads))
                     for r in range(size)]
            for p in procs:
                p.start()
            for p in procs:
                p.join()
            stamps = torch.load(f"{d}/stamps.pt", weights_only=True)
        rate = (len(stamps) - WARMUP - 1) / (stamps[-1] - stamps[WARMUP])
        rows.append({"processes": size, "torch_threads_each": threads, "backend": "gloo" if size > 1 else "none",
                     "global_batch": 64,
                     "steps": steps, "steps_per_s": rate, "images_per_s": rate * 64})
    for r in rows:
        r["vs_1_process"] = r["steps_per_s"] / rows[0]["steps_per_s"]
    return rows


def _uptime() -> str:
    """The machine's ``uptime`` line (load averages over 1, 5 and 15 min), kept in the results."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: %.2f, %.2f, %.2f" % os.getloadavg()


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if "--maps" in argv:  # issue 14: maps and the live edit at N in {100k, 1M} (bench_maps_scale.py, into scale.json)
        import bench_maps_scale

        code = bench_maps_scale.main([a for a in argv if a != "--maps"])
        if code:
            sys.exit(code)
        return size_entries("scale")
    quick = "--quick" in argv
    load_before = os.getloadavg()[0]
    uptime_before = _uptime()
    try:
        import ray  # noqa: F401
        ext = extraction(1 if quick else 3)
    except ImportError:
        ext = [{"engine": "ray", "skipped": "Ray is not installed: pip install 'class-vector-studio[scale]'"}]
    print_table("extraction: both encoders into a feature store (digits train+test, built-in model, CPU)", ext)
    ft = finetuning(20 if quick else 60)
    print_table("fine-tuning: 1 process vs 2 gloo processes, global batch 64 (built-in model, CPU)", ft)
    notes = {"load_avg_1min_before": load_before, "load_avg_1min_after": os.getloadavg()[0],
             "uptime_before": uptime_before, "uptime_after": _uptime(),
             "gpu_note": "no GPU lent to this work: the CUDA paths (nccl, num_gpus=1 actors, bf16) were not executed"
             if not torch.cuda.is_available() else machine()["gpu"]}
    notes.update(size_entries("scale"))  # issue 14's N-keyed map figures (bench_maps_scale.py) stay in the file
    write_results("scale", ext + ft, notes)
    return {"extraction": ext, "finetuning": ft}


if __name__ == "__main__":
    main()
