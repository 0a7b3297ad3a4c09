"""Render the report dict (see ``report.build_report``) as readable Markdown."""
from __future__ import annotations

from .columns import COLUMNS, TABLE, glossary_lines, interpret
from .report_md_audits import audit_sections


def _stat(col, s: dict | None) -> str:
    """'mean ± std' of a summary entry in the column's unit."""
    if s is None or s["mean"] is None or s["mean"] != s["mean"]:
        return "—"
    if col.kind == "percent":
        return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"
    return col.cell(s["mean"])


def _means(entry: dict) -> dict:
    out = {k: v["mean"] for k, v in entry["summary"].items()}
    out["encoder_changed"] = entry["per_class"][0]["encoder_changed"] if entry["per_class"] else False
    return out


def _classes(report: dict, idx: list[int]) -> str:
    names = report["class_names"]
    return "all" if len(idx) == len(names) else ", ".join(names[i] for i in idx)


def method_table(report: dict) -> list[str]:
    cols = [COLUMNS[k] for k in TABLE if k in COLUMNS]
    head = ["method", "forgotten (each in turn)"] + [c.heading for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["methods"].items():
        means = _means(entry)
        cells = [f"`{name}`", _classes(report, entry["classes"])]
        for c in cols:
            cells.append(c.cell(means.get(c.key)) if c.kind in ("bool", "count") else _stat(c, entry["summary"].get(c.key)))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def interpretations(report: dict) -> list[str]:
    """One sentence under each weak or surprising row (cv_core.edits.columns.interpret)."""
    ref = _means(report["methods"]["finetuned"]) if "finetuned" in report["methods"] else None
    lines = []
    for name, entry in report["methods"].items():
        text = interpret(name, _means(entry), ref)
        if text:
            lines.append(f"- `{name}`: {text}")
    return lines


def findings_lines(report: dict) -> list[str]:
    """The run's explanatory sentences, each with the paper's value as a reference."""
    found = report["properties"].get("findings", {})
    return [f"- **{k}**: {f['text']} *(Reference — {f['reference']}.)*" for k, f in found.items()]


def summary_lines(report: dict) -> list[str]:
    """A short plain-text summary for the terminal (the `report` command prints it)."""
    out = [f"{report['backbone']} on {report['dataset']}: zero-shot {100 * report['zero_shot_accuracy']:.1f}%, "
           f"fine-tuned {100 * report['finetuned_accuracy']:.1f}%; {len(report['methods'])} methods in "
           f"{report['seconds']:.0f} s"]
    f, r, t = COLUMNS["acc_f"], COLUMNS["acc_r"], COLUMNS["seconds"]
    out.append(f"  {'method':<16} {f.heading:>22} {r.heading:>22} {t.heading:>10}")
    for name, entry in report["methods"].items():
        m = _means(entry)
        out.append(f"  {name:<16} {f.cell(m.get('acc_f')):>22} {r.cell(m.get('acc_r')):>22} "
                   f"{t.cell(m.get('seconds')):>10}")
    for c in report.get("checks", []):
        met = "n/a" if c["met"] is None else ("met" if c["met"] else "NOT met")
        out.append(f"  check {c['method']}: {c['figure']}: {met} ({c['measured']})")
    for k, fd in report["properties"].get("findings", {}).items():
        out.append(f"  {k}: {fd['text']}")
    return out


def method_notes(report: dict) -> list[str]:
    lines = []
    for name, entry in report["methods"].items():
        info = entry["per_class"][0]["info"] if entry["per_class"] else {}
        lams = [a["info"].get("lambda") for a in entry["per_class"] if "lambda" in a["info"]]
        bits = [entry["description"]]
        if lams:
            bits.append(f"lambda chosen on val: {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in lams)}")
        if "probe_note" in info:
            bits.append(f"**{info['probe_note']}**")
        lines.append(f"- `{name}`: " + "; ".join(bits))
    return lines


def checks(report: dict) -> list[str]:
    lines = ["| method | figure | measured | met |", "|---|---|---|---|"]
    for c in report["checks"]:
        met = "n/a" if c["met"] is None else ("yes" if c["met"] else "**no**")
        lines.append(f"| `{c['method']}` | {c['figure']} | {c['measured']} | {met} |")
    return lines


def property_lines(p: dict) -> list[str]:
    ind = p["independence"]
    lines = ["### Independence", f"cos(κ_c, μ_ft^c'): diagonal mean {ind['diag_mean']:.3f}; off-diagonal mean "
             f"{ind['offdiag_mean']:.3f}, mean |·| {ind['offdiag_abs_mean']:.3f}, max |·| {ind['offdiag_abs_max']:.3f}.",
             "", "### Scaling sweep (edit a·κ_t, mean over targets t)", "| a | target acc | non-target acc |",
             "|---|---|---|"]
    lines += [f"| {r['coef']:+.2f} | {100 * r['target_acc']:.1f} | {100 * r['nontarget_acc']:.1f} |" for r in p["scaling"]]
    for key, lam in (("addition", 1), ("addition_strong", 2)):
        rows = p[key]
        f = sum(r["forget_acc"] for r in rows) / len(rows)
        r_ = sum(r["retain_acc"] for r in rows) / len(rows)
        lines += ["", f"### Addition (forget pairs (c, c+1) with −{lam}·(κ_c + κ_c+1))",
                  f"mean over {len(rows)} pairs: forget acc {100 * f:.1f}%, retain acc {100 * r_:.1f}%."]
    sw = p["interpolation_switch_mean"]
    lines += ["", "### Interpolation c → c+1 (z = α(κ_c+1 − κ_c))",
              f"mean switch point α = {sw:.2f}" if sw is not None else "no pair switched within α ≤ 1",
              f"({p['interpolation_no_switch']} pair(s) never switched); per pair: " +
              ", ".join(f"{r['source']}→{r['target']}: {r['switch_alpha']:.2f}" if r["switch_alpha"] is not None
                        else f"{r['source']}→{r['target']}: none" for r in p["interpolation"])]
    seq = p["sequential_shift"]
    lines += ["", "### Sequential shift " + " → ".join(seq["order"] + seq["order"][:1]),
              f"share landing on the successor: mean {100 * seq['mean_p_target']:.1f}%; " +
              ", ".join(f"{r['source']}→{r['target']} {100 * r['p_target']:.0f}%" for r in seq["rows"])]
    lines += ["", "### Environment / typography removal (λ sweeps)"] + _shift_lines(p["shift_removal"])
    lines += ["", "### Pixel-space trigger (latent shift κ_target − κ_source)"] + _trigger_lines(p["trigger"])
    return lines


def _trigger_lines(trig: dict) -> list[str]:
    if "skipped" in trig:
        return [f"Skipped: {trig['skipped']}."]
    def what(kind: str, r: dict) -> str:
        if kind == "patch" and "size_px" in r:
            return f"patch {r['size_px']}×{r['size_px']} px ({100 * r['area_share']:.1f}% of the image)"
        return kind

    return [f"- {what(kind, r)} {r['source']}→{r['target']}: attack success {100 * r['success_rate']:.1f}% of source test "
            f"images (clean accuracy on them {100 * r['clean_source_accuracy']:.1f}%), other classes sent to the "
            f"target {100 * r['other_flip_rate']:.1f}%, latent residual |Δf − z|/|z| {r['shift_residual']:.2f}, "
            f"{r['trainable_params']:,} trainable values, {r['seconds']:.1f} s" for kind, r in trig.items()]


def _shift_lines(sweeps: dict) -> list[str]:
    if "skipped" in sweeps:
        return [f"Skipped: {sweeps['skipped']}."]
    lines = ["λ is chosen on each variant's val split and scored on its test split; \"recovered\" is the share of "
             "the points the shift took from the clean fine-tuned accuracy that the edit gives back.", ""]
    for name, s in sweeps.items():
        if "skipped" in s:
            lines.append(f"- {name}: skipped ({s['skipped']})")
            continue
        curve = ", ".join(f"{r['lambda']:+.2f}: {100 * r['accuracy']:.1f}" for r in s["rows"])
        if s.get("val_lambda") is None:
            chosen = "no val split to choose λ on"
        else:
            share = s["recovered_share"]
            chosen = (f"λ {s['val_lambda']:+.2f} (chosen on val) → {100 * s['accuracy_at_val_lambda']:.1f}%, "
                      + (f"recovered {100 * share:.0f}% of the lost points" if share is not None
                         else "the shift cost nothing to recover"))
        read = ""
        if "read" in s:
            r = s["read"]
            read = (f" Zero-shot reads the written class on {100 * r['read_share']:.1f}% of the test images "
                    f"(chance {100 * r['chance']:.0f}%; fine-tuned {100 * r['read_share_finetuned']:.1f}%); zero-shot "
                    f"accuracy with the text {100 * r['zero_shot_accuracy']:.1f}%.")
        lines.append(f"- `{name}` ({s['kind']}): clean fine-tuned {100 * s['acc_clean']:.1f}%, on this variant "
                     f"unedited {100 * s['acc_unedited']:.1f}%; {chosen}. Best λ read off the test curve itself "
                     f"{s['best_lambda']:+.2f} → {100 * s['best_accuracy']:.1f}% (optimistic).{read} "
                     f"Curve λ: acc% — {curve}")
    return lines


def render_markdown(report: dict) -> str:
    n = report["samples"]
    lines = [f"# Unlearning report: {report['backbone']} on {report['dataset']}", "",
             f"Device {report['device']}; zero-shot accuracy {100 * report['zero_shot_accuracy']:.1f}%, fine-tuned "
             f"{100 * report['finetuned_accuracy']:.1f}%. Samples: train {n['train']}, val {n['val']} "
             f"({report['val_source']}), test {n['test']}. Accuracies in %, mean ± std over the forgotten "
             f"classes; ACC_f/ACC_r on test. Report built in {report['seconds']:.0f} s.", ""]
    if report.get("finetune"):  # reports written before the fine-tune was recorded have none
        ft = report["finetune"]
        lines += [f"Fine-tuned with {ft['recipe']}" + (f" ({ft['what_it_did']})." if ft["what_it_did"] else "."), ""]
    lines += ["## Unlearning table", ""] + method_table(report)
    notes = interpretations(report)
    if notes:
        lines += ["", "What the weak or surprising rows mean:", ""] + notes
    lines += ["", "## Glossary", ""] + glossary_lines()
    lines += ["", "## What this run shows (each sentence computed from this run; the paper's value as reference)",
              ""] + findings_lines(report)
    lines += ["", "## Methods", ""] + method_notes(report)
    lines += ["", "## The issue's figures", ""] + checks(report)
    if "audits" in report:
        lines += audit_sections(report)
    lines += ["", "## Properties of class vectors", ""] + property_lines(report["properties"])
    return "\n".join(lines) + "\n"
