"""What each unlearning metric is called, which way is better, its unit and its definition: one table that the
report (Markdown table and glossary), the CLI summary and the app (column names, tooltips, glossary) read, plus
one sentence of interpretation for a weak or surprising result.

A new metric is one :func:`register_column` call next to the code that computes it.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """key: the metric's key in audit rows / summaries; label: human name with direction and unit;
    kind: 'percent' (stored in [0, 1]) | 'seconds' | 'count' | 'ratio' (e.g. CKA, in [0, 1]) | 'bool'; better: 'lower' | 'higher' | None;
    help: one-sentence definition (tooltip and glossary)."""

    key: str
    label: str
    kind: str
    better: str | None
    help: str

    @property
    def arrow(self) -> str:
        return {"lower": " ↓", "higher": " ↑"}.get(self.better or "", "")

    @property
    def heading(self) -> str:
        """'Forget accuracy ↓ (%)'."""
        unit = {"percent": " (%)", "seconds": " (s)"}.get(self.kind, "")
        return f"{self.label}{self.arrow}{unit}"

    def cell(self, value) -> str:
        """A value as the report prints it."""
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "—"
        if self.kind == "percent":
            return f"{100 * value:.1f}"
        if self.kind == "seconds":
            return f"{value:.2f}"
        if self.kind == "count":
            return f"{int(value):,}"
        if self.kind == "ratio":
            return f"{value:.3f}"
        return "yes" if value else "no"


COLUMNS: dict[str, Column] = {}


def register_column(col: Column) -> Column:
    COLUMNS[col.key] = col
    return col


for _c in (
    Column("acc_f", "Forget accuracy", "percent", "lower",
           "ACC_f: test accuracy on the images of the forgotten classes. 0% = the classifier never names them."),
    Column("acc_r", "Retain accuracy", "percent", "higher",
           "ACC_r: test accuracy on the images of every other class; it should stay at the fine-tuned value."),
    Column("ua", "Unlearning accuracy (UA)", "percent", "higher",
           "UA = 1 − accuracy on the forgotten classes' TRAIN images (the SalUn convention)."),
    Column("ra", "Remaining accuracy (RA)", "percent", "higher",
           "RA: accuracy on the retained classes' TRAIN images."),
    Column("ta", "Test accuracy (TA)", "percent", "higher",
           "TA: test accuracy without the forgotten classes (equal to ACC_r here)."),
    Column("mia", "MIA efficacy", "percent", "higher",
           "Share of the forgotten classes' train images that a membership-inference attack (an SVC on the "
           "true-label confidence, trained on retain-train vs test) judges as never seen. Higher = forgotten."),
    Column("probe_f", "Probe recovery of forgotten", "percent", "lower",
           "A logistic-regression probe trained on the edited train latents, scored on the forgotten classes' "
           "test images. High = the class is still in the representation, whatever the output says."),
    Column("pre_block_probe_f", "Probe before the edited block", "percent", "lower",
           "The same probe on the input of the block that weight mapping edited: the layers before it are "
           "unchanged, so high values are expected there."),
    Column("calib_acc_f", "Forget accuracy after calibration", "percent", "lower",
           "ACC_f after adding the best single constant (chosen on val) to the forgotten classes' logits. "
           "A high value means the class was only pushed down at the output."),
    Column("seconds", "Time", "seconds", "lower",
           "Wall-clock time of the method for one forget set, measured in this run (the machine's load "
           "changes it; accuracies do not depend on it)."),
    Column("trainable_params", "Trainable parameters", "count", None,
           "Number of values the method trains (0 for training-free edits)."),
    Column("encoder_changed", "Encoder changed", "bool", None,
           "Whether the image encoder's weights change. Latent edits leave it untouched, so a probe on its "
           "output recovers the class by construction."),
):
    register_column(_c)

#: Columns of the report's table and the app's comparison, in order (a key missing from a row is skipped).
TABLE = ("acc_f", "acc_r", "ua", "ra", "ta", "mia", "probe_f", "pre_block_probe_f", "calib_acc_f", "seconds",
         "trainable_params", "encoder_changed")


def glossary_lines() -> list[str]:
    """Markdown bullets: one definition per registered column."""
    return [f"- **{c.heading}**: {c.help}" for c in COLUMNS.values()]


def interpret(method: str, row: Mapping[str, float], reference: Mapping[str, float] | None = None) -> str | None:
    """One sentence under a weak or surprising result, or None when the row is what its method promises.

    row: the method's metrics (means, accuracies in [0, 1]); reference: the fine-tuned model's row."""
    def get(k):
        v = row.get(k)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    f, r, cal, probe = get("acc_f"), get("acc_r"), get("calib_acc_f"), get("probe_f")
    ref_f = None if reference is None else reference.get("acc_f")
    ref_r = None if reference is None else reference.get("acc_r")
    if method in ("finetuned", "pretrained") or f is None:
        return None
    if method == "random_vector":
        if ref_f is not None and f < ref_f - 0.2:
            return (f"Surprising for a control: a random direction of the same norm lowers forget accuracy to "
                    f"{100 * f:.0f}% (fine-tuned {100 * ref_f:.0f}%), so part of the effect is the step, not κ_c.")
        return None
    if ref_r is not None and r is not None and r < ref_r - 0.10:
        return (f"Retain accuracy falls to {100 * r:.0f}% (fine-tuned {100 * ref_r:.0f}%): the method damages the "
                "other classes, so its low forget accuracy is not selective.")
    if f > 0.20:
        why = (" The zero-shot head still recognises the class from features learnt without it."
               if method == "retrain" else "")
        return f"Forget accuracy stays at {100 * f:.0f}%: on this run the method does not forget the class.{why}"
    if cal is not None and cal - f >= 0.10:
        return (f"Adding one constant to the forgotten logits brings forget accuracy from {100 * f:.0f}% back to "
                f"{100 * cal:.0f}%: the class was pushed down at the output, not removed.")
    if probe is not None and probe >= 0.5 and not row.get("encoder_changed"):
        return (f"A linear probe still finds the class ({100 * probe:.0f}%): the encoder is untouched, so the "
                "representation keeps it by construction.")
    if probe is not None and probe >= 0.5:
        return (f"A linear probe still finds the class ({100 * probe:.0f}%): the output forgets it, the "
                "representation does not.")
    return None
