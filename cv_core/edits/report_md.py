"""Render the report dict (see ``report.build_report``) as readable Markdown."""
from __future__ import annotations

COLUMNS = (("acc_f", "ACC_f ↓"), ("acc_r", "ACC_r ↑"), ("ua", "UA"), ("ra", "RA"), ("ta", "TA"), ("mia", "MIA-eff."),
           ("probe_f", "probe ACC_f"), ("pre_block_probe_f", "probe before block"), ("calib_acc_f", "calibrated ACC_f"))


def _pct(s: dict) -> str:
    m, sd = s["mean"], s["std"]
    if m is None or m != m:
        return "–"
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def _classes(report: dict, idx: list[int]) -> str:
    names = report["class_names"]
    return "all" if len(idx) == len(names) else ", ".join(names[i] for i in idx)


def method_table(report: dict) -> list[str]:
    head = ["method", "forgotten (each in turn)"] + [t for _, t in COLUMNS] + ["time (s)", "trainable params",
                                                                              "encoder changed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, entry in report["methods"].items():
        s = entry["summary"]
        changed = entry["per_class"][0]["encoder_changed"] if entry["per_class"] else False
        cells = [f"`{name}`", _classes(report, entry["classes"])] + [_pct(s[k]) for k, _ in COLUMNS]
        cells += [f"{s['seconds']['mean']:.2f}", f"{int(s['trainable_params']['mean']):,}", "yes" if changed else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def method_notes(report: dict) -> list[str]:
    lines = []
    for name, entry in report["methods"].items():
        info = entry["per_class"][0]["info"] if entry["per_class"] else {}
        lams = [a["info"].get("lambda") for a in entry["per_class"] if "lambda" in a["info"]]
        bits = [entry["description"]]
        if lams:
            bits.append(f"lambda chosen on val: {', '.join(f'{v:g}' for v in lams)}")
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
    return [f"- {kind} {r['source']}→{r['target']}: attack success {100 * r['success_rate']:.1f}% of source test "
            f"images (clean accuracy on them {100 * r['clean_source_accuracy']:.1f}%), other classes sent to the "
            f"target {100 * r['other_flip_rate']:.1f}%, latent residual |Δf − z|/|z| {r['shift_residual']:.2f}, "
            f"{r['trainable_params']:,} trainable values, {r['seconds']:.1f} s" for kind, r in trig.items()]


def _shift_lines(sweeps: dict) -> list[str]:
    if "skipped" in sweeps:
        return [f"Skipped: {sweeps['skipped']}."]
    lines = []
    for name, s in sweeps.items():
        if "skipped" in s:
            lines.append(f"- {name}: skipped ({s['skipped']})")
            continue
        curve = ", ".join(f"{r['lambda']:+.2f}: {100 * r['accuracy']:.1f}" for r in s["rows"])
        lines.append(f"- `{name}` ({s['kind']}): unedited {100 * s['acc_unedited']:.1f}%; best λ on this test "
                     f"curve {s['best_lambda']:+.2f} → {100 * s['best_accuracy']:.1f}% (optimistic: read off the "
                     f"curve itself). Curve λ: acc% — {curve}")
    return lines


def render_markdown(report: dict) -> str:
    n = report["samples"]
    lines = [f"# Unlearning report: {report['backbone']} on {report['dataset']}", "",
             f"Device {report['device']}; zero-shot accuracy {100 * report['zero_shot_accuracy']:.1f}%, fine-tuned "
             f"{100 * report['finetuned_accuracy']:.1f}%. Samples: train {n['train']}, val {n['val']} "
             f"({report['val_source']}), test {n['test']}. Accuracies in %, mean ± std over the forgotten "
             f"classes; ACC_f/ACC_r on test. Report built in {report['seconds']:.0f} s.", "",
             "## Unlearning table", ""] + method_table(report)
    lines += ["", "Probe ACC_f: a logistic regression trained on the edited train latents recovers this share of "
              "the forgotten class on test — high means the class is still in the representation. Calibrated "
              "ACC_f: after adding the best constant (chosen on val) to the forgotten logits.", "",
              "## Methods", ""] + method_notes(report)
    lines += ["", "## The issue's figures", ""] + checks(report)
    lines += ["", "## Properties of class vectors", ""] + property_lines(report["properties"])
    return "\n".join(lines) + "\n"
