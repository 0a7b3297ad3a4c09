"""An edit, defined once (docs/DEFINITIONS.md: the CLI, the app, the report and the browser all follow it).

An edit is per-class coefficients a_c, moves (source, target, alpha) and a gate:

- :func:`check_coefficient`: a coefficient or alpha is a finite number with |x| <= :data:`COEF_LIMIT`.
- :func:`forget_set`: the classes an edit forgets: a_c < 0, plus the source of every move with alpha > 0.
  A move onto itself is an error. (Its accuracies: :func:`cv_core.math.metrics.forget_retain`.)
- :func:`parse_gate` / :func:`resolve_gate`: 'auto' | 'own' | 'none' (or None) | a cosine in [-1, 1]
  -> None (no gate) or (C,) thresholds; :data:`GATE_HELP` says what each rule does, for help texts.
- :class:`EditSpec`: the edit as class indices, built from names or indices (a class given twice is an
  error), with the one writer and reader of its JSON (``to_json``/``from_json``: edit.json, the app's
  metrics.json) and of its command-line form (``cli_args`` / :func:`parse_coef_args`,
  :func:`parse_move_args`), so a recipe the app writes is one the CLI reads.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InvalidInputError

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads this module for its help, quickly
    import torch

#: Largest |coefficient| (and |alpha| of a move) an edit accepts. The sliders span [-3, 3] and forget
#: strengths [0, 3]; beyond 100 the edited latent is the class vector alone and float32 overflows near 1e38.
COEF_LIMIT = 100.0


def check_coefficient(value, what: str = "coefficient") -> float:
    """A coefficient or move alpha as a float: finite and |value| <= COEF_LIMIT, else InvalidInputError."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v) or abs(v) > COEF_LIMIT:
        raise InvalidInputError(f"{what} must be a finite number in [-{COEF_LIMIT:g}, {COEF_LIMIT:g}], got {value!r} "
                                "(coefficients of about -3..3 already forget or move a class)")
    return v


def class_index(class_names: Sequence[str], key) -> int:
    from .results import class_index as index

    return index(class_names, key)

__all__ = ["COEF_LIMIT", "GATE_HELP", "GATE_PREDICTED", "GATE_RULES", "EditSpec", "check_coefficient", "forget_set", "parse_coef_args",
           "parse_gate", "parse_move_args", "resolve_gate"]

Move = tuple[int, int, float]

#: The gate rules and what each does (the CLI's and the app's help texts read this). Every rule but 'none'
#: is a cosine threshold per class, and a class's gate also covers every image the unedited model predicts
#: as that class (see the cv_core.math.steering docstring).
GATE_RULES = ("auto", "own", "none")
GATE_PREDICTED = ("a term for class c also edits every image the unedited model predicts as c (the paper's gate "
                  "is the cosine alone)")
GATE_HELP = {
    "auto": "per class, halfway between the lowest 1% of the class's own train latents and the closest "
            "latent of any other class (cosine to the class's fine-tuned centroid), and never below that "
            "closest other latent: on for the class, off for the others, with a margin for unseen images; "
            + GATE_PREDICTED,
    "own": "per class, the cosine that keeps 99% of the class's own train latents inside the gate (no margin "
           "towards other classes); " + GATE_PREDICTED,
    "none": "no gate: every term applies to every image",
    "number": "one cosine threshold in [-1, 1] for every class; " + GATE_PREDICTED,
}


def parse_gate(gate) -> str | float | None:
    """A gate setting in its one normal form: 'auto' | 'own' | None (no gate) | a float in [-1, 1].

    Accepts those, 'none'/'off' (any case) and numbers given as strings."""
    if gate is None:
        return None
    if isinstance(gate, str):
        g = gate.strip().lower()
        if g in ("none", "off"):
            return None
        if g in ("auto", "own"):
            return g
    try:
        v = float(gate)
    except (TypeError, ValueError):
        raise InvalidInputError(f"gate must be 'auto', 'own', 'none' or a cosine in [-1, 1], got {gate!r}") from None
    if not (math.isfinite(v) and -1.0 <= v <= 1.0):
        raise InvalidInputError(f"gate must be a cosine in [-1, 1] (or 'auto', 'own', 'none'), got {gate!r}")
    return v


def resolve_gate(run, gate) -> torch.Tensor | None:
    """The thresholds of a gate setting for a run: None (no gate) or (C,) float32 cosines.

    run: anything with ``class_vectors`` and ``ft`` (split -> FeatureSet) and ``store`` (FeatureStore or
    None; a store-backed run is read block by block): a pipeline run, the app's synthetic run, an
    UnlearnContext. 'auto' and 'own' are ``auto_gamma`` on the fine-tuned train latents (see GATE_HELP)."""
    import torch

    from .features.stored import blocks
    from .math.steering import auto_gamma_from_blocks

    g = parse_gate(gate)
    c = run.class_vectors.num_classes
    if g is None:
        return None
    if isinstance(g, float):
        return torch.full((c,), g)
    source = run.store if run.store is not None else run.ft["train"]
    return auto_gamma_from_blocks(run.class_vectors, blocks(source, "train", "ft"), margin=g == "auto")


def forget_set(coefs: Sequence[float] | torch.Tensor, moves: Iterable[Sequence] = ()) -> tuple[int, ...]:
    """Sorted class indices an edit forgets: negative coefficients and sources of moves with alpha > 0.

    coefs: (C,) coefficients; moves: (source, target, alpha) with class indices. A move onto itself is an
    error (it would do nothing yet count the class as forgotten)."""
    import torch

    a = torch.as_tensor(coefs, dtype=torch.float64).flatten()
    out = {int(c) for c in torch.nonzero(a < 0).flatten().tolist()}
    for s, t, alpha in moves:
        if int(s) == int(t):
            raise InvalidInputError(f"move {s}->{t}: a class cannot move onto itself; give a different target")
        if float(alpha) > 0:
            out.add(int(s))
    return tuple(sorted(out))


@dataclass(frozen=True)
class EditSpec:
    """coefficients: (C,) floats; moves: (source, target, alpha) class indices; gate: parse_gate's form."""

    coefficients: tuple[float, ...]
    moves: tuple[Move, ...] = ()
    gate: str | float | None = "auto"

    @classmethod
    def build(cls, class_names: Sequence[str], coefs: Mapping | Sequence[tuple] | Sequence[float] | torch.Tensor = (),
              moves: Iterable[Sequence] = (), gate="auto") -> EditSpec:
        """From class names or indices. coefs: {class: a}, [(class, a), ...] or (C,) values. Errors: a class
        given twice, a move onto itself, a coefficient out of range, an unknown class or gate."""
        n = len(class_names)
        a = [0.0] * n
        pairs = coefs.items() if isinstance(coefs, Mapping) else None
        if pairs is None and not isinstance(coefs, (str, bytes)):
            items = list(coefs)
            if items and all(isinstance(v, (tuple, list)) and len(v) == 2 for v in items):
                pairs = items
            elif items:  # (C,) values: a list, a tensor or an array
                try:
                    values = [float(v) for v in items]
                except (TypeError, ValueError):
                    raise InvalidInputError("coefficients must be {class: value}, [(class, value), ...] or one "
                                            "number per class") from None
                if len(values) != n:
                    raise InvalidInputError(f"expected {n} coefficients (one per class), got {len(values)}")
                a = [check_coefficient(v, f"coefficient of class {class_names[i]!r}") for i, v in enumerate(values)]
        if pairs is not None:
            seen: set[int] = set()
            for key, value in pairs:
                i = class_index(class_names, key)
                if i in seen:
                    raise InvalidInputError(f"class {class_names[i]!r} is given two coefficients: give each class "
                                            "one")
                seen.add(i)
                a[i] = check_coefficient(value, f"coefficient of class {class_names[i]!r}")
        ms = []
        for s, t, alpha in moves:
            si, ti = class_index(class_names, s), class_index(class_names, t)
            ms.append((si, ti, check_coefficient(alpha, f"alpha of move {class_names[si]}->{class_names[ti]}")))
        spec = cls(tuple(a), tuple(ms), parse_gate(gate))
        spec.forget()  # a move onto itself fails here
        return spec

    def forget(self) -> tuple[int, ...]:
        return forget_set(self.coefficients, self.moves)

    def to_json(self, class_names: Sequence[str]) -> dict:
        """The one JSON form: {"coefficients": {name: a}, "moves": [{"from", "to", "alpha"}], "gate"}."""
        return {"coefficients": {class_names[i]: a for i, a in enumerate(self.coefficients) if a},
                "moves": [{"from": class_names[s], "to": class_names[t], "alpha": al} for s, t, al in self.moves],
                "gate": "none" if self.gate is None else self.gate}

    @classmethod
    def from_json(cls, data: Mapping, class_names: Sequence[str]) -> EditSpec:
        """Read what ``to_json`` writes (edit.json, the app's metrics.json "edit")."""
        if not isinstance(data, Mapping):
            raise InvalidInputError("an edit must be a JSON object with 'coefficients', 'moves' and 'gate'")
        try:
            moves = [(m["from"], m["to"], m["alpha"]) for m in data.get("moves", [])]
        except (KeyError, TypeError):
            raise InvalidInputError("each move must be an object with 'from', 'to' and 'alpha'") from None
        return cls.build(class_names, dict(data.get("coefficients", {})), moves, data.get("gate", "auto"))

    def cli_args(self, class_names: Sequence[str]) -> list[str]:
        """``--coef``/``--move``/``--gate`` arguments that :func:`parse_coef_args`/:func:`parse_move_args` and
        the CLI read back to this edit (a class whose name the syntax cannot carry is given by index)."""
        out = []
        for i, a in enumerate(self.coefficients):
            if a:
                out += ["--coef", f"{_cli_class(class_names, i)}={_num(a)}"]
        for s, t, al in self.moves:
            out += ["--move", f"{_cli_class(class_names, s)}:{_cli_class(class_names, t)}={_num(al)}"]
        g = self.gate
        return out + ["--gate", "none" if g is None else g if isinstance(g, str) else _num(g)]


def _num(x: float) -> str:
    """The shortest text that reads back to the same float ('-1', '0.6', '1e-05')."""
    r = repr(float(x))
    return r[:-2] if r.endswith(".0") else r


def _cli_class(class_names: Sequence[str], i: int) -> str:
    """How the CLI names class i: its name when the --coef/--move syntax carries it, else its index."""
    name = class_names[i]
    if ":" not in name and name.strip() == name and name and class_index(class_names, name) == i:
        return name
    if class_index(class_names, str(i)) == i:
        return str(i)
    raise InvalidInputError(f"class {name!r} cannot be written on the command line (its name has ':' and its "
                            f"index {i} is another class's name): rename the class folder")


def parse_coef_args(items: Sequence[str]) -> list[tuple[str, float]]:
    """--coef CLASS=VALUE items -> [(class, value)] (names or indices; resolved by EditSpec.build)."""
    out = []
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise InvalidInputError(f"--coef {item!r} must look like CLASS=VALUE, e.g. --coef 3=-1")
        if any(name == n for n, _ in out):
            raise InvalidInputError(f"--coef {name} is given twice: give each class one coefficient")
        out.append((name, _number("--coef", item, value, "the coefficient")))
    return out


def parse_move_args(items: Sequence[str]) -> list[tuple[str, str, float]]:
    """--move SOURCE:TARGET=ALPHA items -> [(source, target, alpha)] (a SOURCE never contains ':'; give such a
    class by index)."""
    moves = []
    for item in items:
        pair, sep, value = item.rpartition("=")
        source, colon, target = pair.partition(":")
        if not sep or not colon or not source or not target:
            raise InvalidInputError(f"--move {item!r} must look like SOURCE:TARGET=ALPHA, e.g. --move 3:5=0.6")
        if source == target:
            raise InvalidInputError(f"--move {item!r}: a class cannot move onto itself; give a different target")
        moves.append((source, target, _number("--move", item, value, "alpha")))
    return moves


def _number(option: str, item: str, value: str, what: str) -> float:
    try:
        v = float(value)
    except ValueError:
        raise InvalidInputError(f"{option} {item!r}: {value!r} is not a number") from None
    return check_coefficient(v, f"{option} {item!r}: {what}")
