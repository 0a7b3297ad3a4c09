"""Issue 14: maps and the live edit at dataset scale, on the synthetic run backed by the feature store.

For each (N, C) (D = 512), in a fresh process (so that its peak RSS is its own):

* **generate**: ``app.synthetic.open_run`` with N test latents: generated block by block into a feature
  store in the cache folder on the first run (``gen_s``), opened on later runs (``cache_hit``);
* **server edit + score** (``server_edit_ms``): ``app.live.LiveEditor.from_store`` (the app's live loop of a
  store run: (N, C) tables built one memory-mapped block at a time), then the median over repeats of one
  slider release of a one-class forget (class 3 at -1, the 'auto' gate): gated rows, their predictions,
  the confusion matrix and per-class accuracies, forget/retain; one torch thread, as the app runs it.
  ``setup_s``: building the tables once per run;
* **map** (C = 10 only): UMAP fitted on a stratified sample of ``DEFAULT_SAMPLE`` of the 2N pretrained and
  fine-tuned latents (as the app's Geometry page) read from the memory-mapped store, the rest placed by
  re-projection (``cv_core.projection.fit_sampled``; approximate neighbours, faiss IVF, from 20k points to
  place: ``place_search``, ``place_recall``): ``fit_s``, ``place_s`` and the neighbourhood ``fidelity`` of placed
  points (with ``fidelity_fitted``, UMAP's own level). UMAP's numba code is compiled (or loaded from its disk
  cache) before the fit is timed: ``warm_up_s``. Side by side on the same 50k fine-tuned rows: exact vs
  approximate placement (``place_check_exact_s`` / ``place_check_approx_s``, the recall, and the median
  distance between the two placements against the map's span);
* **release -> map, server share** (``release_server_ms``, C = 10): the forget edit scored and its moved
  points re-placed on that map (``LiveEditor.positions``, one torch thread), as a slider release does in the
  app: from the map's per-row coordinate table (``cv_core.projection.edited``, built once per map:
  ``coords_s``, ``coords_mb``) with the release epoch budget (``release_epochs``, ``release_placement``);
  side by side, the same release reading the moved latents from the store (``release_from_latents_server_ms``);
* ``peak_rss_mb``: the process's peak resident memory (ru_maxrss), store pages read through the memory
  map included.

The browser figures of issue 14 (slider -> charts, release -> map, frame time while panning) and the
first-map cold/warm times are not measured here: they are copied from ``bench_browser.py --n N`` and
``bench_first_map.py`` when those ran, else written as null with the reason.

``--quick``: N = 100k (C = 10 with the map, C = 1000 edit only). Full: N in {100k, 1M}. Results:
``bench/results/maps_scale.json``, keyed by N as a string (the C = 10 figures at the top, each C's row
under ``classes``), and the same entries keyed by N in ``bench/results/scale.json`` (issue 14's file,
beside part 7's rows). ``--browser-only``: refile the browser figures into both without measuring again.
Also run as ``bench/bench_scale.py --maps [--quick]``.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from _common import ROOT, machine, merge_size_entries

RESULT = ROOT / "bench" / "results" / "maps_scale.json"
D = 512
REPEAT = 9
PLACE_CHECK = 50_000  # rows placed both exactly and approximately, side by side
NOT_MEASURED = {  # null unless the browser bench / part 3 measured them (browser_figures)
    "slider_to_charts_ms": "headless Chromium: bench_browser.py --n N (with the map; no map: slider_to_charts_no_map_ms)",
    "release_to_map_ms": "headless Chromium: bench_browser.py --n N (release_server_ms is the server's share alone; "
                         "release_to_map_redraw_all_ms: the same releases with every point redrawn, as when the moved "
                         "points change)",
    "frame_ms_panning": "headless Chromium (software WebGL): bench_browser.py --n N, median frame interval while "
                        "dragging the map (frame_ms_panning_p95: its 95th percentile; pan_settle_ms: the full "
                        "draw of the points once the drag ends)",
    "first_map_cold_s": "bench/bench_first_map.py (part 3, 10k x 512), copied from first_map.json",
    "first_map_warm_s": "bench/bench_first_map.py (part 3, 10k x 512), copied from first_map.json",
}


def one(n: int, c: int, with_map: bool, cache_dir: str) -> dict:
    """Measure one (N, C) in this process; returns its row."""
    import numpy as np
    import torch

    from app import synthetic
    from app.live import LiveEditor, preset_forget
    from cv_core.editspec import resolve_gate
    from cv_core.features.store import store_root

    row: dict = {"N": n, "C": c, "D": D}
    key = synthetic.store_key(c, D, n, 0)
    row["cache_hit"] = (store_root(cache_dir, key) / "manifest.json").is_file()
    t = time.perf_counter()
    run = synthetic.open_run(cache_dir, num_classes=c, dim=D, test_size=n, seed=0)
    row["gen_s" if not row["cache_hit"] else "open_s"] = time.perf_counter() - t
    row["store_gb"] = sum(p.stat().st_size for p in run.store.root.rglob("*.npy")) / 1e9
    t = time.perf_counter()
    editor = LiveEditor.from_store(run.store, "test", run.head, run.class_vectors)
    row["setup_s"] = time.perf_counter() - t
    gamma = resolve_gate(run, "auto")
    coefs = preset_forget(c, 3)
    res = editor.evaluate(coefs, gamma)  # warm-up
    runs = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        res = editor.evaluate(coefs, gamma)
        runs.append((time.perf_counter() - t) * 1e3)
    row.update(server_edit_ms=statistics.median(runs), server_edit_runs_ms=runs, moved=int(res.moved.sum()),
               forget_after=res.forget, retain_after=res.retain)
    if with_map:
        from cv_core.projection import DEFAULT_SAMPLE, LatentMap, fit_sampled, warm_up
        from cv_core.projection.scale import RowStack

        row["warm_up_s"] = warm_up()
        store = run.store
        parts = [np.load(store.root / s["file"], mmap_mode="r")
                 for enc in ("pre", "ft") for s in store.manifest["splits"]["test"]["encoders"][enc]]
        labels = store.labels("test")
        strata = np.concatenate([labels, labels + c])
        torch.set_num_threads(os.cpu_count() or 1)
        scaled = fit_sampled(RowStack(*parts), strata, DEFAULT_SAMPLE, LatentMap(random_state=0), seed=0)
        lm = scaled.projector
        row.update(map_points=2 * n, sample=scaled.sample_size, fit_s=scaled.fit_s, place_s=scaled.place_s,
                   fidelity=scaled.fidelity.placed, fidelity_fitted=scaled.fidelity.fitted,
                   fidelity_ratio=scaled.fidelity.ratio, fidelity_k=scaled.fidelity.k, map_note=scaled.describe(),
                   place_search="exact" if scaled.search is None else "approximate",
                   place_recall=None if scaled.search is None else scaled.search.recall)
        # the obvious alternative side by side: exact vs approximate placement of the same 50k fine-tuned rows
        ft = RowStack(*parts[len(parts) // 2:])
        block = np.asarray(ft[np.arange(min(PLACE_CHECK, n))], dtype=np.float32)
        t = time.perf_counter()
        exact_xy = lm.reproject(block, search="exact")
        row["place_check_exact_s"] = time.perf_counter() - t
        info: dict = {}
        t = time.perf_counter()
        approx_xy = lm.reproject(block, search="approximate", info=info)
        row.update(place_check_rows=int(block.shape[0]), place_check_approx_s=time.perf_counter() - t,
                   place_check_recall=info["approx"].recall,
                   place_check_shift_median=float(np.median(np.linalg.norm(exact_xy - approx_xy, axis=1))),
                   map_span=float(np.ptp(lm.embedding_, axis=0).max()))
        # release -> map, the server's share: the edit scored and its moved points re-placed, as the app does
        # as the app does (app/services/maps.py): the map's per-row coordinate table, then placement from it
        from app.services.maps import MapPoints
        from cv_core.projection import EditCoordinates, placement_text

        t = time.perf_counter()
        coords = EditCoordinates.build(lm.reduction_, run.class_vectors.kappa, store.iter_blocks("test", "ft"), n)
        row.update(coords_s=time.perf_counter() - t, coords_mb=None if coords is None else coords.nbytes / 1e6)
        points = MapPoints(scaled.embedding[:n], scaled.embedding[n:], None, None, lm, "", True, coords)
        torch.set_num_threads(1)
        for name, place in (("release", None if coords is None else points.place_edit),
                            ("release_from_latents", None)):
            mapped = editor.with_map(points.ft_xy, points.reproject, place)
            runs_ms = []
            for _ in range(3):
                info = {}
                t = time.perf_counter()
                res = mapped.evaluate(coefs, gamma)
                mapped.positions(res, info)
                runs_ms.append((time.perf_counter() - t) * 1e3)
            row.update({f"{name}_server_ms": statistics.median(runs_ms), f"{name}_server_runs_ms": runs_ms,
                        f"{name}_epochs": info.get("epochs"),
                        f"{name}_placement": placement_text(info, lm.refine_epochs())})
        row.update(release_moved=int(res.moved.sum()), release_search=info.get("search"),
                   release_recall=info["approx"].recall if "approx" in info else None)
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def browser_figures(results: dict) -> None:
    """Fill each N's browser figures from ``bench_browser.py --n N`` (bench/results/browser_scale.json at 1M,
    browser_scale_<N>.json at another N; headless Chromium on the app) and the first-map times from part 3 (bench/results/first_map.json, 10k x 512)."""
    for browser in sorted(RESULT.parent.glob("browser_scale*.json")):  # one file per N (bench_browser.py --n N)
        doc = json.loads(browser.read_text())
        entry = results.get(str(doc.get("N")))
        cached = [r for r in doc["rows"] if r["what"].startswith("map from the disk cache")]
        if entry is not None and cached:  # a run whose map came from the cache: only that figure is taken from it
            entry["map_from_cache_in_app_s"] = cached[0]["s"]
            entry["map_from_cache_source"] = f"{browser.name} ({doc['machine'].get('date')})"
        elif entry is not None:
            for r in doc["rows"]:
                w = r["what"]
                if w.startswith("slider") and w.endswith("with map"):
                    entry["slider_to_charts_ms"] = r["median_ms"]
                elif w.startswith("slider"):
                    entry["slider_to_charts_no_map_ms"] = r["median_ms"]
                elif w.startswith("release") and "every point redrawn" in w:
                    entry["release_to_map_redraw_all_ms"] = r["median_ms"]
                elif w.startswith("release"):
                    entry["release_to_map_ms"] = r["median_ms"]
                elif w.startswith("frame interval"):
                    entry["frame_ms_panning"] = r["median_ms"]
                    entry["frame_ms_panning_p95"] = r["p95_ms"]
                    entry["pan_settle_ms"] = r.get("settle_ms")  # the one full draw after the drag
                elif w.startswith("fit the map"):
                    entry["map_in_app_s"] = r["s"]
                elif w.startswith("map from the disk cache"):
                    entry["map_from_cache_in_app_s"] = r["s"]
                elif w.startswith("rest of the Geometry page"):
                    entry["geometry_rest_in_app_s"] = r["s"]
            entry["browser_source"] = (f"bench_browser.py --n {doc.get('N')} ({doc['machine'].get('date')}, load "
                                       f"{doc.get('load_avg_1min_before_after')})")
    first = RESULT.parent / "first_map.json"
    if first.is_file():
        rows = json.loads(first.read_text())["rows"]
        cold = next((r["s"] for r in rows if r["what"].startswith("cold (fresh process, empty numba cache")), None)
        warm = next((r["s"] for r in rows if r["what"].startswith("warm")), None)
        for entry in results.values():
            entry.update(first_map_cold_s=cold, first_map_warm_s=warm, first_map_source="first_map.json (10k x 512)")


def overlap_check(n_fit: int = 20_000, n_place: int = 100_000) -> dict:
    """Exact vs approximate placement side by side on latents whose classes overlap (bench/_common.py's
    ``synth_latents``, where the exact search's cluster index can skip little): one torch / faiss thread."""
    import numpy as np
    import torch

    from _common import synth_latents
    from cv_core.projection import LatentMap

    torch.set_num_threads(1)
    x, _ = synth_latents(n_fit + n_place, D, 10, seed=5)
    x = np.asarray(x, dtype=np.float32)
    lm = LatentMap(random_state=0).fit(x[:n_fit])
    lm.prepare_reprojection()
    lm.reproject(x[n_fit:n_fit + 2000], search="approximate")  # build the IVF index, load the layout code
    out = {"fitted": n_fit, "placed": n_place, "threads": 1}
    positions = {}
    for mode in ("exact", "approximate"):
        info: dict = {}
        t = time.perf_counter()
        positions[mode] = lm.reproject(x[n_fit:], search=mode, info=info)
        out[f"{mode}_s"] = time.perf_counter() - t
        if "approx" in info:
            out["recall"] = info["approx"].recall
    out["shift_median"] = float(np.median(np.linalg.norm(positions["exact"] - positions["approximate"], axis=1)))
    out["map_span"] = float(np.ptp(lm.embedding_, axis=0).max())
    return out


def main(argv: list[str]) -> int:
    if "--overlap" in argv:  # child: the overlap check in its own process
        print(json.dumps(overlap_check(), default=float))
        return 0
    if "--one" in argv:  # child: --one N C MAP CACHE
        i = argv.index("--one")
        n, c, with_map, cache = int(argv[i + 1]), int(argv[i + 2]), argv[i + 3] == "1", argv[i + 4]
        print(json.dumps(one(n, c, with_map, cache), default=float))
        return 0
    if "--browser-only" in argv:  # refile the browser figures (bench_browser.py --n N ran since) into the results
        doc = json.loads(RESULT.read_text())
        browser_figures(doc["results"])
        RESULT.write_text(json.dumps(doc, indent=1, default=float))
        merge_size_entries("scale", doc["results"], f"bench/bench_maps_scale.py ({doc['mode']}, "
                           f"{doc['machine'].get('date')}); browser figures refiled; details in maps_scale.json")
        print(f"refiled the browser figures into {RESULT} and scale.json")
        return 0
    from cv_core.features.cache import default_cache_dir

    quick = "--quick" in argv
    cache = argv[argv.index("--cache-dir") + 1] if "--cache-dir" in argv else str(default_cache_dir())
    sizes = [100_000] if quick else [100_000, 1_000_000]
    configs = [(n, c, c == 10) for n in sizes for c in (10, 1000)]
    start, load_before = time.perf_counter(), os.getloadavg()
    results: dict = {}
    for n, c, with_map in configs:
        print(f"N={n:,} C={c} map={with_map} ...", flush=True)
        out = subprocess.run([sys.executable, __file__, "--one", str(n), str(c), "1" if with_map else "0", cache],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            return out.returncode
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in row.items() if k not in ("server_edit_runs_ms", "map_note",
                                                                    "release_server_runs_ms")), flush=True)
        entry = results.setdefault(str(n), {"C": 10, "classes": {}})
        entry["classes"][str(c)] = row
        if c == 10:
            entry.update({k: row.get(k) for k in ("server_edit_ms", "fit_s", "place_s", "fidelity",
                                                  "fidelity_fitted", "peak_rss_mb", "setup_s", "release_server_ms",
                                                  "release_from_latents_server_ms", "release_epochs", "coords_s",
                                                  "coords_mb", "place_recall")})
            entry.update({k: None for k in NOT_MEASURED})
    print("exact vs approximate placement on overlapping classes ...", flush=True)
    out = subprocess.run([sys.executable, __file__, "--overlap"], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        print(out.stderr[-3000:], file=sys.stderr)
        return out.returncode
    overlap = json.loads(out.stdout.strip().splitlines()[-1])
    print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in overlap.items()))
    wall = time.perf_counter() - start
    previous = json.loads(RESULT.read_text()) if RESULT.is_file() else {}
    browser_figures(results)
    doc = {"name": "maps_scale", "machine": machine(), "mode": "quick" if quick else "full",
           "wall_s": wall, "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
           "not_measured": NOT_MEASURED, "target_server_edit_ms": 50.0, "placement_on_overlap": overlap,
           "results": {**previous.get("results", {}), **results}, "method": __doc__}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(doc, indent=1, default=float))
    # issue 14 names bench/results/scale.json, keyed by N: the same entries go there beside part 7's rows
    scale = merge_size_entries("scale", doc["results"], f"bench/bench_maps_scale.py ({doc['mode']}, "
                               f"{doc['machine'].get('date')}); details in maps_scale.json")
    print(f"wall {wall:.1f} s; wrote {RESULT} and the N-keyed entries of {scale}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
