"""Part 1: edit and score on cached latents (steering + per-class accuracy + confusion matrix).

Methods: cv_core full (steer every row), cv_core gated rows (steer and re-classify only the rows the
gate lets through, as the app's live loop does), a straightforward NumPy version, and re-encoding
the images with a model (estimated from a measured images/s, see bench_pipeline).
"gated+cos" = the gate read from (N, C) centroid cosines computed once per run (``centroid_cosines``),
``steer_rows`` on the gated rows, re-classification and scoring, on one torch thread (the app's path
until 2026-12). "live" = the app's server path now (app/live.py): ``cv_core.math.factored`` — the edit's
logits from (N, C) and (C, C) tables built once per run, no (N, D) work per edit — and scoring, on one
torch thread. The browser runs the same factored arithmetic in JavaScript (timed by bench_browser).
Target: <= 5 ms at N=10k, D=512, C=10 with the live path.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch

from _common import RESULTS, median_time, print_table, synth_latents, write_results

from cv_core.math.factored import FactoredScores  # noqa: E402
from cv_core.math.metrics import score  # noqa: E402
from cv_core.math.steering import auto_gamma, centroid_cosines, edit_from_coefficients, gate_mask, steer, steer_rows  # noqa: E402
from cv_core.results import FeatureSet  # noqa: E402
from cv_core.results import ClassVectors  # noqa: E402

CLIP_CPU_IMAGES_PER_S = 7.0  # ViT-B/32 on these 2 cores (CONTEXT.md); replaced by bench_pipeline's figure if present


def setup(n: int, d: int, c: int):
    pre, y = synth_latents(n, d, c, seed=1)
    rng = np.random.default_rng(2)
    kappa = (rng.normal(size=(c, d)) / np.sqrt(d)).astype(np.float32) * 2.0
    ft = pre + kappa[y]
    names = tuple(str(i) for i in range(c))
    mu_pre = np.stack([pre[y == k].mean(0) for k in range(c)])
    mu_ft = np.stack([ft[y == k].mean(0) for k in range(c)])
    cv = ClassVectors(torch.from_numpy(kappa), torch.from_numpy(mu_pre), torch.from_numpy(mu_ft), names,
                      torch.from_numpy(np.bincount(y, minlength=c)))
    w = torch.nn.functional.normalize(torch.from_numpy(mu_ft), dim=1)  # head rows (C, D)
    return torch.from_numpy(ft), torch.from_numpy(y), cv, w


def cv_core_full(lat, unit, y, cv, w, coefs, gamma):
    edit = edit_from_coefficients(cv, coefs, gamma)
    before = (unit @ w.T).argmax(1)  # the gate's prediction term reads the unedited predictions
    preds = torch.nn.functional.normalize(steer(lat, edit, before, unit), dim=1) @ w.T
    return score(preds.argmax(1), y, cv.num_classes)


def cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base_preds, cos=None):
    edit = edit_from_coefficients(cv, coefs, gamma)
    rows, sub = steer_rows(lat, edit, base_preds, unit, cos)
    preds = base_preds.clone()
    preds[rows] = (torch.nn.functional.normalize(sub, dim=1) @ w.T).argmax(1)
    return score(preds, y, cv.num_classes)


def factored_live(f, y, coefs, gamma, c, base_preds):
    rows, weights = f.edit_rows(coefs, gamma)
    preds = base_preds.clone()
    preds[rows] = f.predict_rows(rows, weights)
    return score(preds, y, c)


def numpy_plain(lat, y, kappa, mu_ft, w, coefs, gamma):
    c = w.shape[0]
    u = lat / np.linalg.norm(lat, axis=1, keepdims=True)
    g = mu_ft / np.linalg.norm(mu_ft, axis=1, keepdims=True)
    before = (u @ w.T).argmax(1)
    gate = ((u @ g.T > gamma[None, :]) | (before[:, None] == np.arange(c)[None, :])).astype(np.float32)  # (N, C)
    edited = lat + (gate * coefs) @ kappa
    preds = (edited / np.linalg.norm(edited, axis=1, keepdims=True) @ w.T).argmax(1)
    conf = np.bincount(y * c + preds, minlength=c * c).reshape(c, c)
    return np.diag(conf) / np.maximum(conf.sum(1), 1), conf


def images_per_s() -> tuple[float, str]:
    path = RESULTS / "pipeline_throughput.json"
    try:
        rows = json.loads(path.read_text())["rows"]
        r = next(r for r in rows if r.get("what") == "extraction" and r.get("method") == "cv_core")
        return float(r["images_per_s"]), f"built-in model, measured ({path.name})"
    except Exception:  # noqa: BLE001 - no measurement yet
        return CLIP_CPU_IMAGES_PER_S, "ViT-B/32 on 2 CPU cores, CONTEXT.md figure"


def main(sizes=None) -> list[dict]:
    torch.set_num_threads(2)
    sizes = sizes or [(n, d, c) for n in (1_000, 10_000, 100_000) for d in (512, 768) for c in (10, 100)]
    ips, ips_src = images_per_s()
    rows = []
    for n, d, c in sizes:
        lat, y, cv, w = setup(n, d, c)
        unit = torch.nn.functional.normalize(lat, dim=1)
        coefs = torch.zeros(c)
        coefs[3] = -1.0  # forget class 3
        # the app's default gate: per-class thresholds that keep 99% of each class's own latents inside
        gamma = auto_gamma(cv, FeatureSet(lat, y, cv.class_names, encoder="finetuned"))
        base = (unit @ w.T).argmax(1)
        moved = float((gate_mask(lat, edit_from_coefficients(cv, coefs, gamma), base, unit).sum(1) > 0).float().mean())
        full, _ = median_time(lambda: cv_core_full(lat, unit, y, cv, w, coefs, gamma), repeat=9 if n < 100_000 else 3)
        gated, _ = median_time(lambda: cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base),
                               repeat=9 if n < 100_000 else 3)
        cos = centroid_cosines(lat, cv)
        # on one torch thread, as the app's live loop runs (app/live.py): on a 2-core machine shared with
        # the server and the browser, a thread pool waits for a descheduled worker on every product
        torch.set_num_threads(1)
        gated_cos, _ = median_time(lambda: cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base, cos),
                                   repeat=15 if n < 100_000 else 5)
        setup_s, _ = median_time(lambda: FactoredScores.from_latents(lat, w, cv), repeat=3)
        f = FactoredScores.from_latents(lat, w, cv)
        coef_list = coefs.tolist()
        live, _ = median_time(lambda: factored_live(f, y, coef_list, gamma, c, base), repeat=15 if n < 100_000 else 5)
        torch.set_num_threads(2)
        args = (lat.numpy(), y.numpy(), cv.kappa.numpy(), cv.mu_ft.numpy(), w.numpy(), coefs.numpy(), gamma.numpy())
        plain, _ = median_time(lambda: numpy_plain(*args), repeat=5 if n < 100_000 else 2)
        a = cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base).per_class.numpy()
        b = numpy_plain(*args)[0]
        assert np.allclose(a, b, atol=1e-3), "methods disagree"
        assert torch.equal(cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base, cos).confusion,
                           cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base).confusion), "cached gate differs"
        assert torch.equal(factored_live(f, y, coef_list, gamma, c, base).confusion,
                           cv_core_gated(lat, unit, y, cv, w, coefs, gamma, base).confusion), "factored path differs"
        rows.append({"N": n, "D": d, "C": c, "gated_share": moved,
                     "live_ms": live * 1e3, "live_setup_ms": setup_s * 1e3, "gated_cos_ms": gated_cos * 1e3,
                     "cv_core_gated_ms": gated * 1e3, "cv_core_full_ms": full * 1e3,
                     "numpy_ms": plain * 1e3, "numpy/live": plain / live,
                     "reencode_s_est": n / ips, "reencode/live": n / ips / live})
    print_table("edit + score (median ms)", rows)
    print(f"re-encoding estimate: {ips:.1f} images/s ({ips_src})")
    target = next((r for r in rows if (r["N"], r["D"], r["C"]) == (10_000, 512, 10)), None)
    verdict = None
    if target:
        verdict = "met" if target["live_ms"] <= 5.0 else "missed"
        print(f"target <= 5 ms at N=10k, D=512, C=10: {target['live_ms']:.2f} ms per release -> {verdict} "
              f"(+{target['live_setup_ms']:.1f} ms once per run for the factored tables)")
    write_results("edit_score", rows, {"reencode_images_per_s": ips, "reencode_source": ips_src,
                                       "target_5ms": verdict})
    return rows


if __name__ == "__main__":
    main([(10_000, 512, 10)] if "--quick" in sys.argv else None)
