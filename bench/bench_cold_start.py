"""Part 5: cold start of the product - the built-in model on ``digits``, from an empty cache to class
vectors (what ``python -m cv_core run`` does), and warm (every stage served from the cache).

Each repeat uses a fresh cache folder and fresh processes: the cold process pays the imports, the
zero-shot head, preprocessing, fine-tuning and four encoder passes; the warm one repeats the same
command. Medians over the repeats; the issue's figures: cold <= 60 s, warm <= 3 s (2 CPU cores).
The time to the app's first screen is measured by ``bench_browser`` (part 6), which drives a browser.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import ROOT, print_table, write_results

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
from cv_core.pipeline import RunConfig, run
stages = {{}}
def progress(e):
    now = time.perf_counter()
    key = e.stage.split(":")[0]
    stages.setdefault(key, [now, now])[1] = now
t1 = time.perf_counter()
res = run(RunConfig(cache_dir={cache!r}), progress=progress)
cv = res.class_vectors
t2 = time.perf_counter()
print(json.dumps({{"imports_s": t1 - t0, "pipeline_s": t2 - t1, "zero_shot": res.zero_shot_accuracy,
                  "finetuned": res.finetuned_accuracy, "classes": cv.num_classes,
                  "stages_s": {{k: v[1] - v[0] for k, v in stages.items()}}}}))
"""


def one(cache: str) -> dict:
    env = {**os.environ, "CVS_CACHE_DIR": cache, "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), cache=cache)], env=env,
                         capture_output=True, text=True, check=True, cwd=str(ROOT))
    wall = time.perf_counter() - t
    return {"process_s": wall, **json.loads(out.stdout.strip().splitlines()[-1])}


def main(repeat: int = 3) -> list[dict]:
    runs = {"cold": [], "warm": []}
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            runs["cold"].append(one(tmp))
            runs["warm"].append(one(tmp))
    rows = []
    for kind, target in (("cold", 60.0), ("warm", 3.0)):
        rs = runs[kind]
        med = lambda k: statistics.median(r[k] for r in rs)  # noqa: E731
        rows.append({"start": kind, "pipeline_s": med("pipeline_s"), "imports_s": med("imports_s"),
                     "process_s": med("process_s"), "target_pipeline_s": target,
                     "verdict": "met" if med("pipeline_s") <= target else "missed",
                     "zero_shot": rs[0]["zero_shot"], "finetuned": rs[0]["finetuned"],
                     "runs_pipeline_s": [round(r["pipeline_s"], 2) for r in rs]})
    stages = {k: round(statistics.median(r["stages_s"].get(k, 0.0) for r in runs["cold"]), 2)
              for k in runs["cold"][0]["stages_s"]}
    rows[0]["cold_over_warm"] = rows[0]["pipeline_s"] / rows[1]["pipeline_s"]
    print_table(f"product start: built-in model on digits to class vectors (median of {repeat})", rows)
    print(f"cold stages (s, first to last progress event): {stages}")
    write_results("cold_start", rows, {"repeat": repeat, "cold_stages_s": stages})
    return rows


if __name__ == "__main__":
    main(1 if "--quick" in sys.argv else 3)
