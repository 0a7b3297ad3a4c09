"""The issue's figures, checked against what the report measured (never asserted, only stated)."""
from __future__ import annotations

import math


def _mean_over(report: dict, method: str, metric: str, classes: list[int]) -> float:
    entry = report["methods"].get(method)
    if entry is None:
        return math.nan
    vals = [a[metric] for a in entry["per_class"] if a["forget"][0] in classes]
    vals = [v for v in vals if v == v]
    return sum(vals) / len(vals) if vals else math.nan


def _check(report: dict, method: str, figure: str, test) -> dict:
    entry = report["methods"].get(method)
    if entry is None or "finetuned" not in report["methods"]:
        return {"method": method, "figure": figure, "met": None, "measured": "not run"}
    classes = entry["classes"]
    m = {k: _mean_over(report, method, k, classes) for k in ("acc_f", "acc_r")}
    ft = {k: _mean_over(report, "finetuned", k, classes) for k in ("acc_f", "acc_r")}
    met, text = test(m, ft)
    return {"method": method, "figure": figure, "met": bool(met), "measured": text, "classes": classes}


def figure_checks(report: dict) -> list[dict]:
    """One row per figure of the issue: {method, figure, met (True/False/None), measured}."""
    return [
        _check(report, "cv_steer", "ACC_f <= 0.05 and ACC_r within 0.02 of fine-tuned",
               lambda m, ft: (m["acc_f"] <= 0.05 and abs(m["acc_r"] - ft["acc_r"]) <= 0.02,
                              f"ACC_f {m['acc_f']:.3f}, ACC_r {m['acc_r']:.3f} vs fine-tuned {ft['acc_r']:.3f}")),
        _check(report, "cv_weight_map", "ACC_f <= 0.10 and ACC_r within 0.05 of fine-tuned",
               lambda m, ft: (m["acc_f"] <= 0.10 and abs(m["acc_r"] - ft["acc_r"]) <= 0.05,
                              f"ACC_f {m['acc_f']:.3f}, ACC_r {m['acc_r']:.3f} vs fine-tuned {ft['acc_r']:.3f}")),
        every_class_check(report, "wf_net", "one trained filter set, every forgotten class: ACC_f <= 0.10 and "
                                            "ACC_r within 0.05 of fine-tuned"),
        _check(report, "neggrad", "destroys retain accuracy (ACC_r at least 0.20 below fine-tuned)",
               lambda m, ft: (m["acc_r"] <= ft["acc_r"] - 0.20,
                              f"ACC_r {m['acc_r']:.3f} vs fine-tuned {ft['acc_r']:.3f}")),
        _check(report, "random_vector", "forgets nothing (ACC_f within 0.05 of fine-tuned)",
               lambda m, ft: (abs(m["acc_f"] - ft["acc_f"]) <= 0.05,
                              f"ACC_f {m['acc_f']:.3f} vs fine-tuned {ft['acc_f']:.3f}")),
        relearning_check(report),
    ]


def every_class_check(report: dict, method: str, figure: str) -> dict:
    """ACC_f <= 0.10 and ACC_r no more than 0.05 below fine-tuned for EACH forgotten class (not the mean)."""
    entry, ref = report["methods"].get(method), report["methods"].get("finetuned")
    if entry is None or ref is None:
        return {"method": method, "figure": figure, "met": None, "measured": "not run"}
    ft_r = {a["forget"][0]: a["acc_r"] for a in ref["per_class"]}
    rows = [(a["forget"][0], a["acc_f"], a["acc_r"], ft_r.get(a["forget"][0], math.nan)) for a in entry["per_class"]]
    misses = [c for c, f, r, fr in rows if not (f <= 0.10 and r >= fr - 0.05)]
    names = report["class_names"]
    worst_f = max(rows, key=lambda t: t[1])
    worst_r = min(rows, key=lambda t: t[2] - t[3])
    text = (f"{len(rows)} classes; worst ACC_f {worst_f[1]:.3f} ({names[worst_f[0]]}); worst ACC_r "
            f"{worst_r[2]:.3f} vs fine-tuned {worst_r[3]:.3f} ({names[worst_r[0]]})" +
            (f"; missed for {', '.join(names[c] for c in misses)}" if misses else ""))
    return {"method": method, "figure": figure, "met": not misses, "measured": text, "classes": entry["classes"]}


def relearning_check(report: dict) -> dict:
    """The seed paper's finding: some method that forgot at the output regains >= 50% ACC_f after relearning."""
    figure = "relearning: at least one encoder-changing method regains >= 0.50 ACC_f after the last step count"
    rel = report.get("audits", {}).get("relearning")
    rows = {n: r for n, r in (rel or {}).get("methods", {}).items() if isinstance(r, list) and n != "retrain"}
    if not rows:
        return {"method": "relearning", "figure": figure, "met": None, "measured": "not run"}
    last = {n: sum(e["acc_f"][-1] for e in r) / len(r) for n, r in rows.items()}
    ref = (rel["methods"].get("retrain") or [])
    ref_text = (f"; retrained reference {sum(e['acc_f'][-1] for e in ref) / len(ref):.3f}"
                if isinstance(ref, list) and ref else "")
    best = max(last, key=last.get)
    return {"method": "relearning", "figure": figure, "met": last[best] >= 0.5,
            "measured": f"after {rel['steps'][-1]} steps: " + ", ".join(f"{n} {v:.3f}" for n, v in last.items()) +
                        ref_text}
