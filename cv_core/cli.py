"""Command line: ``python -m cv_core list|run|finetune|edit|report``. Calls the same functions as the app.

``finetune`` runs data-parallel when launched by ``torchrun`` or ``srun`` (see README, "On a cluster")."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .editspec import GATE_HELP
from .errors import CVError, InvalidInputError
from .progress import Progress

EPILOG = ("Errors exit with status 2 and a one-line reason. See README.md for examples. Installed as a package, "
          "the same commands are `cvstudio COMMAND`, and `cvstudio app` starts the app.")


def _progress_printer():
    """A tqdm bar per stage (on stderr), fed by the library's Progress events."""
    from tqdm import tqdm
    bars: dict[str, tqdm] = {}

    def on_progress(p: Progress) -> None:
        if p.total is None:
            if p.message:
                tqdm.write(f"[{p.stage}] {p.message}", file=sys.stderr)
            return
        bar = bars.get(p.stage)
        if bar is None:
            bar = bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit="img" if p.stage.startswith("extract") else "step",
                                       file=sys.stderr, leave=False, dynamic_ncols=True)
        bar.update(p.step - bar.n)
        if "val accuracy" in p.message:  # an early-stopping evaluation (epoch, loss, val accuracy): keep a line
            tqdm.write(f"[{p.stage}] {p.message}", file=sys.stderr)
        if p.loss is not None:
            bar.set_postfix(loss=f"{p.loss:.3f}")
        if p.step >= p.total:
            bar.close()
            bars.pop(p.stage, None)
    return on_progress


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="builtin", help="builtin | builtin:v2 | builtin:v3 | MODEL:TAG | "
                   "MODEL:/path/to/checkpoint (default: builtin, the offline model)")
    p.add_argument("--dataset", default="digits", help="a registered dataset or imagefolder:PATH (default: digits)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default: auto)")
    p.add_argument("--data-root", default=None, help="where torchvision datasets live or are downloaded")
    p.add_argument("--cache-dir", default=None, help="cache folder (default: $CVS_CACHE_DIR or "
                   "~/.cache/class-vector-studio)")
    p.add_argument("--max-per-class", type=int, default=None, help="cap images per class and split")
    p.add_argument("--references", type=int, default=None, help="reference images per class for the class "
                   "vectors (default: all train images)")
    p.add_argument("--recipe", default="auto", metavar="NAME", help="fine-tuning recipe: auto (the built-in "
                   "model: 10 epochs with early stopping on the val split; an open_clip model: the paper's 2000 "
                   "steps on a GPU, 100 steps on a CPU), paper (2000 steps, batch 128, lr 1e-5 on any device), "
                   "fixed-150 (the built-in model's fixed 150 steps before issue 12); --steps, --epochs and "
                   "--early-stop change it")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help="a fixed number of fine-tuning steps (turns off "
                        "the recipe's epochs and early stopping unless --early-stop is given)")
    length.add_argument("--epochs", type=_positive(float), default=None, metavar="X", help="fine-tune for X passes "
                        "over the train split (steps = ceil(X * batches per epoch))")
    stopping = p.add_mutually_exclusive_group()
    stopping.add_argument("--early-stop", type=_positive(int), default=None, metavar="PATIENCE", help="score the "
                          "val split once per epoch, keep the best encoder and stop after PATIENCE evaluations "
                          "without a gain (the step count or --epochs is then the budget); the built-in model's "
                          "default uses 3")
    stopping.add_argument("--no-early-stop", action="store_true", help="train the whole budget and keep the "
                          "last encoder")
    p.add_argument("--freeze-bn-stats", action="store_true", help="fine-tune with the image tower's BatchNorm "
                   "statistics kept as pretrained (a ResNet tower: the built-in models, RN50, ...); by default they "
                   "are re-estimated on the fine-tuning images, which can make the model fragile to shifted images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-download", action="store_true", help="never download datasets")
    p.add_argument("--out", default="out", help="output folder (default: ./out)")
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="extraction engine: local (this "
                   "process) or ray (Ray Data actors; needs the 'scale' extra)")
    p.add_argument("--workers", type=int, default=None, help="ray: encoder actors (default: one per GPU, else 2)")
    p.add_argument("--ray-address", default=None, help="ray: 'auto' or HOST:PORT of a running cluster (default: "
                   "start a local one)")
    p.add_argument("--feature-store", choices=["auto", "on", "off"], default="auto", help="keep latents in a "
                   "sharded feature store (auto: for the ray engine and runs of 200k+ images)")


def _positive(kind):
    """argparse type: a positive int or float (argparse exits with code 2 and the message otherwise)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive {'whole number' if kind is int else 'number'}, "
                                             f"got {text!r}")
        return value
    return parse


def build_parser(prog: str = "python -m cv_core") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Class Vector Studio", epilog=EPILOG)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="what can be chosen, and whether it works offline")
    ls.add_argument("what", choices=["backbones", "datasets"])
    ls.add_argument("--all", action="store_true", help="backbones: list every open_clip MODEL:TAG pair")
    ls.add_argument("--data-root", default=None)
    _add_run_options(sub.add_parser("run", help="fine-tune, extract latents, compute class vectors"))
    _add_run_options(sub.add_parser("finetune", help="only fine-tune the image encoder (data-parallel under "
                                    "torchrun or srun); 'run' then finds the cached encoder"))
    edit = sub.add_parser("edit", help="apply a class-vector steering edit on the test split")
    _add_run_options(edit)
    edit.add_argument("--coef", action="append", default=[], metavar="CLASS=VALUE",
                      help="coefficient of a class vector (class name as in summary.json, or its index); "
                           "repeat for several")
    edit.add_argument("--move", action="append", default=[], metavar="SOURCE:TARGET=ALPHA",
                      help="move class SOURCE towards TARGET by alpha (kappa_target - kappa_source, gated on "
                           "SOURCE; the prediction flips near 0.5), e.g. --move 3:5=0.6; repeatable")
    edit.add_argument("--forget", action="append", default=[], metavar="CLASS",
                      help="forget CLASS at its forget strength: 1.5 x the smallest lambda in [0, 3] whose edit "
                           "brings the val split's forget accuracy to <= 5%% with retain accuracy within 1 point "
                           "(chosen per class, cached with the run, written to edit.json); repeatable")
    edit.add_argument("--gate", default="auto", help="gate: " + "; ".join(
        f"{k if k != 'number' else 'a number'}: {v}" for k, v in GATE_HELP.items()).replace("%", "%%")
        + " (default: auto)")
    rep = sub.add_parser("report", help="compare editing/unlearning methods; writes report.json and report.md")
    _add_run_options(rep)
    rep.add_argument("--methods", default=None, help="comma-separated method names (default: all fast ones)")
    rep.add_argument("--audits", default=None, help="comma-separated audits among relearning, cka, references, "
                                                     "quantized, or 'none' (default: all)")
    rep.add_argument("--encoder-classes", default="3", help="how many classes (evenly spaced) the methods that "
                     "change the encoder forget in turn, or 'all' (default: 3; latent methods always forget all)")
    return parser


def main(argv: list[str] | None = None, prog: str = "python -m cv_core") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        return {"list": cmd_list, "run": cmd_run, "finetune": cmd_finetune, "edit": cmd_edit,
                "report": cmd_report}[args.command](args)
    except CVError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
    except OSError as err:  # any I/O failure not turned into a CVError where it happened: still exit 2
        if args.debug:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(f"error: cannot read or write{where} ({err.strerror or err}); check the path, its permissions and "
              "the free space on its disk (--out and --cache-dir choose other folders)", file=sys.stderr)
        return 2
    except Exception as err:  # the one place that turns unexpected failures into a one-line reason
        if args.debug:
            raise
        print(f"error: unexpected {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def cmd_list(args) -> int:
    if args.what == "datasets":
        from .data.datasets import get_dataset_info, is_available_offline, list_datasets
        for name in list_datasets():
            info = get_dataset_info(name)
            where = "offline" if is_available_offline(name, args.data_root) else "needs download"
            print(f"{name:<16} {where:<15} {info.description}")
        print(f"{'imagefolder:PATH':<16} {'offline':<15} your own images, one sub-folder per class")
        return 0
    from .models.backbones import check_backbone, list_backbones
    names = list_backbones()
    shown = names if args.all else [n for n in names if n.startswith(("builtin", "ViT-B-32:", "ViT-B-16:",
                                                                                     "ViT-L-14:", "RN50:"))]
    for name in shown:
        a = check_backbone(name)
        state = "offline" if a.available_offline else "download"
        print(f"{name:<44} {state:<9} {a.message}")
    if not args.all:
        print(f"... {len(names) - len(shown)} more with --all; any MODEL:/path/to/checkpoint also works")
    return 0


def config_from_args(args, splits: tuple[str, ...] = ("train", "test")):
    from dataclasses import replace

    from .models.finetune import FinetuneConfig
    from .pipeline import RunConfig
    from .device import resolve_device
    finetune = None
    epochs, patience = getattr(args, "epochs", None), getattr(args, "early_stop", None)
    recipe, no_stop = getattr(args, "recipe", "auto"), getattr(args, "no_early_stop", False)
    frozen = getattr(args, "freeze_bn_stats", False)
    if recipe != "auto" or args.steps is not None or epochs is not None or patience is not None or no_stop or frozen:
        base = FinetuneConfig.recipe_for(recipe, resolve_device(args.device), args.backbone)
        if args.steps is not None:  # a fixed step count
            base = replace(base.without_early_stopping(), epochs=None, steps=args.steps,
                           warmup=min(base.warmup, max(0, args.steps // 10)))
        if epochs is not None:
            base = replace(base, epochs=epochs)
        if patience is not None:
            base = replace(base, early_stop_patience=patience)
        if no_stop:
            base = base.without_early_stopping()
        finetune = replace(base, freeze_norm_stats=frozen)
    return RunConfig(backbone=args.backbone, dataset=args.dataset, device=args.device, data_root=args.data_root,
                     cache_dir=args.cache_dir, finetune=finetune, max_per_class=args.max_per_class,
                     references_per_class=args.references, seed=args.seed, download=not args.no_download,
                     splits=splits, engine=args.engine, workers=args.workers, ray_address=args.ray_address,
                     feature_store=args.feature_store)


def _run(args, splits: tuple[str, ...] = ("train", "test")):
    from .models.distributed import world_from_env
    from .pipeline import run
    world = world_from_env()
    if world is not None and world[1] > 1:
        raise InvalidInputError(f"'{args.command}' runs in one process; under torchrun or srun launch "
                                "'finetune', then run this command once (it finds the fine-tuned encoder)")
    return run(config_from_args(args, splits), progress=_progress_printer())


def _out_dir(args) -> Path:
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidInputError(f"cannot create output folder {out}: {err.strerror}") from None
    return out


def cmd_run(args) -> int:
    from .export import class_vectors_writer, json_writer, summary_dict, write_outputs
    out = _out_dir(args)
    result = _run(args)
    summary = summary_dict(result)
    write_outputs(out, [("class_vectors.safetensors", class_vectors_writer(result.class_vectors)),
                        ("summary.json", json_writer(summary))])  # the summary last: never without the vectors
    print(f"{result.backbone_name} on {result.dataset} ({len(result.class_names)} classes, "
          f"{result.num_images('test')} test images, {summary['device']})")
    print(f"  zero-shot accuracy  {result.zero_shot_accuracy:.3f}")
    from .models.finetune import describe_run
    run_text = describe_run(result.finetune_run)
    print(f"  fine-tuned accuracy {result.finetuned_accuracy:.3f}" + (f" ({run_text})" if run_text else ""))
    cached = "all from cache" if all(result.cache_hits.values()) else "computed"
    print(f"  time {result.timings['total']:.1f} s ({cached}); wrote {out / 'summary.json'} and "
          f"{out / 'class_vectors.safetensors'}")
    return 0


def cmd_finetune(args) -> int:
    from .pipeline import finetune_encoder
    out = finetune_encoder(config_from_args(args), progress=_progress_printer())
    if out.rank == 0:
        where = f"{out.world_size} processes ({out.backend})" if out.world_size > 1 else "1 process"
        state = "already cached" if out.cache_hit else f"trained on {where} in {out.timings['finetune']:.1f} s"
        print(f"fine-tuned image encoder {state}: {out.encoder_path}")
    return 0


def cmd_edit(args) -> int:
    from .editspec import parse_coef_args, parse_gate, parse_move_args
    from .export import edit_dict, write_json
    from .pipeline import apply_edit
    coefs, moves = parse_coef_args(args.coef), parse_move_args(args.move)
    parse_gate(args.gate)  # a bad gate fails before any work
    if not coefs and not moves and not args.forget:
        raise InvalidInputError("give at least one --forget CLASS (forgets it at the strength chosen on val), "
                                "--coef CLASS=VALUE (e.g. --coef 3=-1) or --move SOURCE:TARGET=ALPHA "
                                "(e.g. --move 3:5=0.6)")
    out = _out_dir(args)
    result = _run(args, ("train", "val", "test") if args.forget else ("train", "test"))
    strengths = forget_coefficients(result, args.forget, coefs, args.gate)
    coefs = coefs + [(s.name, -s.lam) for s in strengths]
    report = apply_edit(result, coefs, args.gate, moves=moves)
    write_json(out / "edit.json", edit_dict(result, report, strengths))
    moved = "".join(f", move {s}->{t} by {a:g}" for s, t, a in report.moves)
    coefs_txt = "{" + ", ".join(f"{k!r}: {v:.4g}" for k, v in report.coefficients.items()) + "}"
    print(f"edit {coefs_txt}{moved} (gate {args.gate}) on {result.dataset} test split:")
    for s in strengths:
        print(f"  forget strength of {s.describe()}")
    if report.forget_accuracy is None:
        print("  forget accuracy -  (nothing forgotten)")
    else:
        print(f"  forget accuracy {report.forget_accuracy_before:.3f} -> {report.forget_accuracy:.3f}")
    print(f"  retain accuracy {report.retain_accuracy_before:.3f} -> {report.retain_accuracy:.3f}")
    print(f"  wrote {out / 'edit.json'}")
    return 0


def forget_coefficients(result, classes: list[str], coefs: list[tuple[str, float]], gate) -> list:
    """The ForgetStrength of every --forget class (chosen on val, cached with the run); a class also
    given a --coef is an error, never "last wins"."""
    from .edits.strength import run_forget_strengths
    from .results import class_index
    if not classes:
        return []
    names = result.class_names
    idx = [class_index(names, c) for c in classes]
    given = {class_index(names, c) for c, _ in coefs}
    dup = sorted({names[i] for i in idx if idx.count(i) > 1 or i in given})
    if dup:
        raise InvalidInputError(f"class {', '.join(dup)} is given twice (--forget and --coef, or --forget twice): "
                                "give each class one coefficient")
    chosen = run_forget_strengths(result, gate)
    return [chosen[i] for i in idx]


def _encoder_classes(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"--encoder-classes must be a whole number or 'all', got {value!r}") from None


def cmd_report(args) -> int:
    try:
        from .edits.report import build_report
    except ImportError:
        raise InvalidInputError("the report needs cv_core.edits.report, which is not installed") from None
    import torch
    torch.set_num_threads(1)  # the methods' many small tensor ops are faster single-threaded
    from .edits.report import ReportConfig
    options = {"encoder_classes": _encoder_classes(args.encoder_classes)}
    if args.audits is not None:
        options["audits"] = tuple(a.strip() for a in args.audits.split(",") if a.strip() and a.strip() != "none")
    config = ReportConfig(**options)  # bad audit names or counts fail before any work
    out = _out_dir(args)
    result = _run(args, ("train", "val", "test"))  # lambda and gates are chosen on val, never on test
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    report = build_report(result, methods, out, progress=_progress_printer(), config=config)
    from .edits.report_md import summary_lines
    print("\n".join(summary_lines(report)))
    print(f"  wrote {out / 'report.json'} and {out / 'report.md'}")
    return 0
