"""Shared helpers of the benchmarks: synthetic latents, timing, machine info, result files."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def synth_latents(n: int, d: int, c: int, seed: int = 0, intrinsic: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """CLIP-like latents (n, d) float32 and labels (n,).

    A large shared offset (norm 3), well-separated class means (norm 1), and inside each class a
    low-dimensional spread (``intrinsic`` directions, as image latents vary along few factors) plus a
    little isotropic noise, so that nearest neighbours inside a class are meaningful.
    """
    rng = np.random.default_rng(seed)
    offset = rng.normal(size=d)
    offset *= 3.0 / np.linalg.norm(offset)
    means = rng.normal(size=(c, d))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    factors = rng.normal(size=(c, intrinsic, d)) * (0.5 / np.sqrt(d))  # (C, k, D), per-class directions
    labels = rng.integers(0, c, n)
    z = rng.normal(size=(n, intrinsic))
    x = offset + means[labels] + np.einsum("nk,nkd->nd", z, factors[labels])
    x += 0.1 * rng.normal(size=(n, d)) / np.sqrt(d)
    return x.astype(np.float32), labels.astype(np.int64)


def median_time(fn, repeat: int = 7, warmup: int = 1) -> tuple[float, list[float]]:
    """Median seconds of fn() over `repeat` runs after `warmup` runs, and all the runs."""
    for _ in range(warmup):
        fn()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs), runs


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    try:
        import torch
        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - info only
        pass
    versions = {}
    for pkg in ("torch", "numpy", "umap-learn", "numba", "pynndescent", "scikit-learn", "open_clip_torch", "streamlit",
                "ray"):
        try:
            versions[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            versions[pkg] = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "versions": versions, "load_avg_1min": load,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_results(name: str, rows: list[dict], notes: dict | None = None) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"name": name, "machine": machine(), "rows": rows, **(notes or {})}, indent=1,
                               default=float))
    return path


def size_entries(name: str) -> dict:
    """The entries of bench/results/<name>.json keyed by a point count ("100000", "1000000"): issue 14's map
    figures, which bench_maps_scale.py files into scale.json beside part 7's rows (see merge_size_entries)."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if k.isdigit()}


def merge_size_entries(name: str, entries: dict, source: str) -> Path:
    """Put ``entries`` ({"100000": {...}, ...}) into bench/results/<name>.json, keeping everything else in it;
    ``source`` names the bench that measured them (key ``sizes_source``)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = json.loads(path.read_text()) if path.is_file() else {"name": name}
    doc.update({str(k): v for k, v in entries.items()}, sizes_source=source)
    path.write_text(json.dumps(doc, indent=1, default=float))
    return path


def print_table(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}")
    if not rows:
        print("(no rows)")
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print(" | ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("-|-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


def skip(name: str, reason: str) -> None:
    print(f"\n## {name}: SKIPPED - {reason}")
    write_results(name, [], {"skipped": reason})
