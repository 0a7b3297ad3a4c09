"""Markdown for the report's audits: relearning, layer-wise CKA, FUCRT vs removal, WF-Net, representative
references, int8 deployment. Every new metric gets a human name, a direction and a
description in :data:`columns.COLUMNS` (the glossary of report.md and the app read it)."""
from __future__ import annotations

from .columns import Column, register_column

for _c in (
    Column("relearn_acc_f", "Forget accuracy after relearning", "percent", "lower",
           "Test accuracy on the forgotten class after k fine-tuning steps on 5 of its train images per forgotten "
           "class; a method that really removed the class regains it no faster than the retrained model."),
    Column("cka_original", "CKA to the original", "ratio", None,
           "Linear CKA between the edited and the fine-tuned tower's features at one block (1 = the same "
           "representation up to rotation and scale): where a method changed the network."),
    Column("cka_retrained", "CKA to the retrained model", "ratio", "higher",
           "Linear CKA between the edited and the retrained (gold-standard) tower's features at one block."),
    Column("to_target", "Sent to the target class", "percent", None,
           "FUCRT: share of the forgotten class's test images now classified as the retain class it was moved "
           "onto (chosen by the fine-tuned model)."),
    Column("int8_acc_f", "Forget accuracy on int8", "percent", "lower",
           "Forget accuracy of the edit served on the int8 encoder."),
    Column("int8_acc_r", "Retain accuracy on int8", "percent", "higher",
           "Retain accuracy of the edit served on the int8 encoder."),
    Column("worst_retained_drop", "Worst retained-class drop on int8", "percent", "lower",
           "Largest fall of one retained class's accuracy from the float to the int8 model (ClimbQ: "
           "quantization hurts some classes more than others)."),
):
    register_column(_c)


def _p(x) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def _mean(vals) -> float:
    vals = [v for v in vals if v is not None and v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def relearning_lines(report: dict) -> list[str]:
    rel = report["audits"].get("relearning")
    if rel is None:
        return ["Not run (audit not selected)."]
    steps = rel["steps"]
    lines = [f"Forget accuracy (%) on test after k AdamW steps (lr {rel.get('lr', 1e-5):g}, BatchNorm statistics fixed) on "
             f"{rel['shots']} train images per forgotten class; mean over the forgotten classes. `retrain` is "
             "the reference: a model that never learnt the class.", "",
             "| method | " + " | ".join(f"ACC_f after {k} ↓" for k in steps) + " | ACC_r after "
             f"{steps[-1]} ↑ |", "|---|" + "---|" * (len(steps) + 1)]
    notes = []
    for name, rows in rel["methods"].items():
        if isinstance(rows, dict):
            notes.append(f"- `{name}`: {rows['by_construction']}")
            continue
        cells = [_p(_mean(r["acc_f"][i] for r in rows)) for i in range(len(steps))]
        lines.append(f"| `{name}` | " + " | ".join(cells) + f" | {_p(_mean(r['acc_r'][-1] for r in rows))} |")
    return lines + ([""] + notes if notes else [])


def cka_lines(report: dict) -> list[str]:
    cka = report["audits"].get("cka")
    if cka is None:
        return ["Not run (audit not selected)."]
    if not cka:
        return ["No encoder-changing method was run."]
    blocks = next(iter(cka.values()))[0]["blocks"]
    lines = ["Linear CKA per block of the image tower (mean over the forgotten classes), on the forgotten "
             "classes' test images (F) and on 200 retained-class test images (R), against the fine-tuned "
             "original (orig) and the retrained model (retr).", "",
             "| method | vs | " + " | ".join(blocks) + " |", "|---|---|" + "---|" * len(blocks)]
    for name, entries in cka.items():
        for part in ("forget", "retain"):
            for ref in ("original", "retrained"):
                if ref not in entries[0][part]:
                    continue
                vals = [_mean(e[part][ref][i] for e in entries) for i in range(len(blocks))]
                lines.append(f"| `{name}` | {part[0].upper()} {ref[:4]} | " +
                             " | ".join(f"{v:.3f}" for v in vals) + " |")
    return lines


def fucrt_lines(report: dict) -> list[str]:
    m = report["methods"]
    pairs = [("fucrt_latent", "cv_steer"), ("fucrt_transform", "cv_weight_map")]
    rows = [p for p in pairs if p[0] in m]
    if not rows:
        return ["Not run (`fucrt_latent`, `fucrt_transform` not selected)."]
    lines = ["Transformation onto the nearest retain class (chosen by the fine-tuned model) against removal.", "",
             "| transform | ACC_f ↓ | ACC_r ↑ | sent to target | probe ACC_f | vs removal | ACC_f ↓ | ACC_r ↑ | probe ACC_f |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t, r in rows:
        e = m[t]
        s = e["summary"]
        to_t = _mean(a["info"].get("to_target") for a in e["per_class"])
        targets = ", ".join(f"{report['class_names'][a['forget'][0]]}→{a['info'].get('target')}" for a in e["per_class"])
        cells = [f"`{t}` ({targets})", _p(s["acc_f"]["mean"]), _p(s["acc_r"]["mean"]), _p(to_t), _p(s["probe_f"]["mean"])]
        if r in m:
            rs = m[r]["summary"]
            cells += [f"`{r}`", _p(rs["acc_f"]["mean"]), _p(rs["acc_r"]["mean"]), _p(rs["probe_f"]["mean"])]
        else:
            cells += [f"`{r}` not run", "–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def wf_net_lines(report: dict) -> list[str]:
    e = report["methods"].get("wf_net")
    if e is None:
        return ["Not run."]
    info = e["per_class"][0]["info"]
    per = ", ".join(f"{report['class_names'][a['forget'][0]]}: {_p(a['acc_f'])}/{_p(a['acc_r'])}" for a in e["per_class"])
    return [f"One filter set ({info['filter_params']:,} values over {info['channels']} channels of {info['blocks']}) "
            f"trained once in {info['train_seconds']:.1f} s ({info['steps']} steps); then each class forgotten by "
            f"switching its filter on (ACC_f/ACC_r %): {per}."]


def reference_lines(report: dict) -> list[str]:
    ref = report["audits"].get("references")
    if ref is None:
        return ["Not run (audit not selected)."]
    lines = ["Class vectors, gates and gate thresholds from k train references per class; steering forgets each "
             "class in turn (λ chosen on val). Mean over the classes, %.", "",
             "| rule | k | ACC_f ↓ | ACC_r ↑ |", "|---|---|---|---|"]
    lines += [f"| {r['rule']} | {r['k']} | {_p(r['acc_f'])} ± {_p(r['acc_f_std'])} | {_p(r['acc_r'])} |"
              for r in ref["rows"]]
    return lines


def quantized_lines(report: dict) -> list[str]:
    q = report["audits"].get("quantized")
    if q is None:
        return ["Not run (audit not selected)."]
    if "skipped" in q:
        return [f"Skipped: {q['skipped']}."]
    lines = []
    names = report["class_names"]
    for scheme, r in q.items():
        if "skipped" in r:
            lines += [f"- `{scheme}`: not applicable — {r['skipped']}."]
            continue
        uf, uq = _mean(r["unedited_float"]), _mean(r["unedited_int8"])
        lines += ["", f"**{scheme}** ({r['note']}): unedited accuracy {_p(uf)}% float → {_p(uq)}% int8.", "",
                  "| edit | forgotten | ACC_f float → int8 | ACC_r float → int8 | worst retained-class drop |",
                  "|---|---|---|---|---|"]
        for row in r["rows"]:
            lines.append(f"| `{row['edit']}` | {', '.join(names[c] for c in row['forget'])} | "
                         f"{_p(row['float_acc_f'])} → {_p(row['int8_acc_f'])} | {_p(row['float_acc_r'])} → "
                         f"{_p(row['int8_acc_r'])} | {_p(row['worst_retained_drop'])} ({names[row['worst_retained_class']]}) |")
    return lines


def audit_sections(report: dict) -> list[str]:
    lines = []
    for title, fn in (("WF-Net: one trained filter set", wf_net_lines),
                      ("Forgetting by transformation (FUCRT) vs by removal", fucrt_lines),
                      ("Relearning audit", relearning_lines), ("Layer-wise CKA", cka_lines),
                      ("Representative references", reference_lines), ("Int8 deployment", quantized_lines)):
        lines += ["", f"## {title}", ""] + fn(report)
    return lines
