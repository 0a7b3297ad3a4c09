"""Run every benchmark part that this machine can run; print tables, write bench/results/*.json.

    python bench/run_all.py            # all CPU parts (about 8-10 minutes on 2 quiet cores)
    python bench/run_all.py --quick    # smaller sizes and fewer repeats (about 4 minutes)

The GPU half of part 4 runs only when CUDA is available; otherwise it is reported as skipped with the
reason. Part 7 needs Ray (the 'scale' extra). Part 6 needs Chromium at /usr/bin/chromium and is skipped with the reason when it is missing.
Run it on a quiet machine: the parts time each other's neighbours otherwise.
"""
from __future__ import annotations

import sys
import time

import bench_browser
import bench_cold_start
import bench_edit_score
import bench_first_map
import bench_pipeline
import bench_reproject
import bench_maps_scale
import bench_scale


def main() -> None:
    quick = "--quick" in sys.argv
    start = time.perf_counter()
    parts = [
        ("1 edit + score", lambda: bench_edit_score.main([(10_000, 512, 10)] if quick else None)),
        ("2 re-projection", lambda: bench_reproject.main(2_000 if quick else 10_000)),
        ("3 first map", bench_first_map.main),
        ("4 pipeline throughput", lambda: bench_pipeline.main(["--quick"] if quick else [])),
        ("5 cold start", lambda: bench_cold_start.main(1 if quick else 3)),
        ("6 browser (and the app's first screen)", bench_browser.main),
        ("7 past one process (Ray Data extraction, DDP fine-tuning)",
         lambda: bench_scale.main(["--quick"] if quick else [])),
        # the 1M rows take ~11 min here: `python bench/bench_maps_scale.py` alone runs them
        ("8 maps and the live edit at scale (N = 100k)", lambda: bench_maps_scale.main(["--quick"])),
    ]
    took = {}
    for name, fn in parts:
        t = time.perf_counter()
        fn()
        took[name] = time.perf_counter() - t
    print("\n" + "\n".join(f"part {k}: {v:.0f} s" for k, v in took.items()))
    print(f"all parts done in {time.perf_counter() - start:.0f} s; results in bench/results/")


if __name__ == "__main__":
    main()
