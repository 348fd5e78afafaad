"""`torchlogreg train`: its options (one per TrainConfig field, shared with `sweep`) and handler.

    torchlogreg train --preset tutorial --out runs/tutorial
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

from ..base.config import DATASET_NAMES, INITS, OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from ..base.exceptions import ConfigError, counted, did_you_mean, listed
from ..data.rules import RULES
from .cli_common import CONFIG_FLAGS, add_data_options, dataset_arg, path_flag

DEFAULT = PRESETS["default"]


def _class_list(text: str) -> tuple[str, ...]:
    """Class numbers or names, split at commas as a CSV line: a name holding a comma is in double
    quotes, "deux, два" (as `listed` shows it); spaces after a comma are dropped."""
    parts = tuple(cell for cell in next(csv.reader([text], skipinitialspace=True), []) if cell.strip())
    if not parts:
        raise argparse.ArgumentTypeError(f"expected class numbers or names like 3,8 or cat,dog, got {text!r}")
    if len(parts) < 2:
        raise argparse.ArgumentTypeError(f"name at least two classes (A,B), got {listed(parts)}")
    return parts


def _one_class(text: str | None) -> tuple[str] | None:
    """--positive's class, a name in double quotes as `listed` shows it taken out of them."""
    if text is None:
        return None
    quoted = len(text) >= 2 and text[0] == text[-1] == '"'
    return (next(csv.reader([text]))[0],) if quoted else (text,)


def _class_numbers(given: tuple[str, ...] | None, flag: str, dataset: str) -> tuple[int, ...] | None:
    """The numbers of the classes `given` in `dataset`: by their names (a dataset folder's classes
    are numbered in their sorted order, which a name spares the user from counting), else, all
    whole numbers, as class numbers, unless the classes are named by other numbers (labels 3, 7,
    10: '0' would be class '3')."""
    if given is None:
        return None
    from ..data.inmemory import class_names_of

    names = class_names_of(dataset)
    given = tuple(part if part in names else part.strip() for part in given)  # ('cat ,dog': cat)
    whole = lambda text: text.isascii() and text.isdigit()  # noqa: E731 (int() takes '²' for no number)
    numbered_otherwise = any(whole(name) and name != str(i) for i, name in enumerate(names))
    if all(whole(part) for part in given) and not numbered_otherwise:
        for part in given:
            if int(part) >= len(names):
                raise ConfigError(
                    f"{flag}: {dataset} has no class {part}: its {len(names)} classes are numbered "
                    f"0..{len(names) - 1} in this order: {listed(names)}"
                )
        return tuple(int(part) for part in given)
    for part in given:
        if part not in names:
            raise ConfigError(
                f"{flag}: {dataset} has no class {part!r}{did_you_mean(part, names)}; its classes: "
                + listed(names)
            )
    return tuple(names.index(part) for part in given)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """Flags that set TrainConfig fields; each defaults to None so the preset's value stays."""
    presets = ", ".join(PRESETS)
    parser.add_argument(
        "--preset", default="default", help=f"starting settings: {presets} (default: default)"
    )
    add_data_options(
        parser,
        f"a dataset folder (torchlogreg data convert writes one), or one of {', '.join(DATASET_NAMES)} "
        f"(default: {DEFAULT.dataset})",
    )
    _add_task_options(parser.add_argument_group("task"))
    _add_optimisation_options(
        parser.add_argument_group(
            "optimisation (the defaults follow the data; a run's model.json records the values used)"
        )
    )


def _add_task_options(task) -> None:
    """What is learned: the classes, the binary threshold, the validation split and training subset."""
    task.add_argument(
        "--classes",
        type=_class_list,
        metavar="A,B,...",
        help="keep only these classes, by number or by name (cat,dog; a name holding a comma in double "
        "quotes, as data convert lists it); two classes A,B train a binary (sigmoid) model of B against A "
        "(--threshold applies to B's probability)",
    )
    task.add_argument(
        "--positive", metavar="CLASS", help="binary model: this class (a number or a name) against all others"
    )
    task.add_argument(
        "--threshold",
        type=float,
        help="binary: predict the positive class where its probability is above this (default: "
        f"{DEFAULT.threshold})",
    )
    task.add_argument(
        "--val-size", type=int, help=f"validation samples taken from train (default: {RULES['val_size']})"
    )
    task.add_argument(
        "--train-size",
        type=int,
        help="use a subset of this many training samples, the classes as equal as the data allows",
    )


def _add_optimisation_options(opt) -> None:
    """How it is learned; each help states the rule the default follows (rules.RULES)."""
    opt.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default: {RULES['optimizer']})")
    opt.add_argument("--lr", type=float, help=f"learning rate (default: {RULES['lr']})")
    opt.add_argument(
        "--batch-size",
        type=int,
        help="samples per step; an epoch's shorter last batch is its rows / batch size of a step (in its "
        "move and in what momentum keeps) "
        f"(default: {RULES['batch_size']})",
    )
    opt.add_argument(
        "--epochs", type=int, help=f"most passes over the training set (default: {RULES['epochs']})"
    )
    opt.add_argument("--iters", type=int, help="most optimizer steps in total, instead of --epochs")
    opt.add_argument(
        "--tol", type=float, help=f"convergence tolerance (default: {DEFAULT.tol:g}; {RULES['tol']})"
    )
    opt.add_argument(
        "--weight-decay", type=float, help=f"L2 penalty on the weights (default: {RULES['weight_decay']})"
    )
    opt.add_argument(
        "--l1",
        type=float,
        help=f"L1 penalty on the weights, taken as a proximal step by sgd and by L-BFGS itself (OWL-QN): "
        f"weights it removes end at exactly 0 (adam: a subgradient step) (default: {DEFAULT.l1})",
    )
    opt.add_argument("--momentum", type=float, help=f"SGD momentum (default: {DEFAULT.momentum})")
    opt.add_argument(
        "--nesterov",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"Nesterov momentum for SGD (default: {DEFAULT.nesterov})",
    )
    opt.add_argument(
        "--schedule", help=f"learning-rate schedule: {', '.join(SCHEDULES)} (default: {RULES['schedule']})"
    )
    opt.add_argument(
        "--centred",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="step with the features centred on their mean: the same objective, better conditioned, so one "
        f"step-size rule fits any data (default: {DEFAULT.centred}; the tutorial preset steps plainly)",
    )
    opt.add_argument(
        "--init", help=f"starting weights: {', '.join(INITS)} (nn.Linear's) (default: {DEFAULT.init})"
    )
    opt.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="check every N iterations: print the iteration, the loss (mini-batch: the mean of the "
        "batches' since the last check) and the validation accuracy, or without a validation set the "
        "accuracy on the first tenth of the training rows, 1,000 to 5,000. Default: every epoch, or "
        "every few epochs so that a run makes at most 8 checks; lbfgs: every 10 iterations",
    )
    opt.add_argument("--patience", type=int, help="stop after N checks without a better val loss")
    opt.add_argument(
        "--seed",
        type=int,
        help="seed of the batches' shuffling, --init uniform's start and, for a built-in dataset, of the "
        "validation split and --train-size's subset (a dataset folder's validation rows are its last, "
        f"shuffled once by 'data convert') (default: {DEFAULT.seed})",
    )


def config_from_args(args: argparse.Namespace):
    """The preset named by --preset with every flag the user gave applied; a note on stderr for each
    flag its optimizer will not use (legal, and ignored: the run records what it used)."""
    from ..base.config import preset

    flags = {name: getattr(args, name) for name in CONFIG_FLAGS}
    dataset = dataset_arg(args.dataset)
    named = dataset or PRESETS.get(args.preset, DEFAULT).dataset  # (whose class names --classes means)
    flags["classes"] = _class_numbers(args.classes, "--classes", named)
    positive = _class_numbers(_one_class(args.positive), "--positive", named)
    flags["positive"] = None if positive is None else positive[0]
    config = preset(args.preset, **{**flags, "dataset": dataset})
    for note in unused_flags(args, config):
        print(f"torchlogreg: note: {note}", file=sys.stderr)
    return config


def unused_by(optimizer: str | None) -> dict[str, str]:
    """The options `optimizer` does not use, each with why."""
    unused = {"momentum": f"{optimizer} has no momentum", "nesterov": f"{optimizer} has no momentum"}
    if optimizer == "lbfgs":
        return {"batch_size": "lbfgs takes every row", **unused}
    return unused if optimizer == "adam" else {}


def unused_flags(args: argparse.Namespace, config: TrainConfig, chosen: str | None = None) -> list[str]:
    """The flags given that `config`'s optimizer will not use, each in a line that says why; with
    `chosen` ("for 300 training rows"), the optimizer is the one the rules chose so."""
    optimizer = config.optimizer
    given = {"batch_size": args.batch_size is not None, "momentum": args.momentum is not None,
             "nesterov": bool(args.nesterov)}  # fmt: skip
    unused = [(f"--{name.replace('_', '-')}", why) for name, why in unused_by(optimizer).items()
              if given[name]]  # fmt: skip
    if chosen is not None:
        return [f"{flag} was not used: the rules chose {optimizer} {chosen}, and {why} (--optimizer sgd "
                "uses it)" for flag, why in unused]  # fmt: skip
    notes = [f"{flag} is not used: {why} (sgd uses it)" for flag, why in unused]
    if args.nesterov and optimizer not in ("adam", "lbfgs") and config.momentum == 0:
        notes.append("--nesterov is not used: momentum is 0 (give --momentum above 0)")
    return notes


def _given_config(args: argparse.Namespace):
    """With --resume: the settings given that a resume may change (--device, --data-root, --dataset:
    where the same data is now); any other refused by its flag."""
    from ..training.resume import RESUMABLE

    given = [
        f"--{n.replace('_', '-')}"
        for n in CONFIG_FLAGS
        if n not in RESUMABLE and getattr(args, n) is not None
    ]
    if given or args.preset != "default":
        raise ConfigError(
            f"--resume continues with the run's own settings; drop {', '.join(given) or '--preset'}"
        )
    allowed = {name: getattr(args, name) for name in RESUMABLE if getattr(args, name) is not None}
    if "dataset" in allowed:  # (where the run's data is now: the checkpoint checks it is the same)
        allowed["dataset"] = dataset_arg(allowed["dataset"])
    return allowed


def stop_line(metrics: dict, config: TrainConfig) -> str:
    """Why training stopped, in one line; when it had not converged, the flag that trains longer."""
    reason, tol = metrics["stop_reason"], f"tol {config.tol:g}"
    iterations = counted(metrics["iterations"], "iteration")
    if reason == "converged":
        best, last = metrics.get("best_iteration"), metrics["iterations"]
        restored = config.patience is not None and best not in (None, last)  # (only early stopping keeps)
        kept = f"; kept iteration {best}'s weights, the best validation check" if restored else ""
        return f"converged ({tol}) after {iterations}{kept}"
    if reason == "no progress":
        from ..training.trainer import stall_cause

        why = {
            "lr": f"its first trial step is scaled by --lr {config.lr:g}: try --lr 1, the default",
            "weight_decay": f"--weight-decay {config.weight_decay:g} scales the weights far above the bias; "
            "try less",
            None: "it no longer falls measurably in the model's arithmetic",
        }[stall_cause(config.lr, config.weight_decay)]
        return (
            f"stopped after {iterations}, not converged ({tol}): L-BFGS's line search "
            f"found no lower objective ({why})"
        )
    if reason == "early stopping":
        checks = counted(config.patience, "check")
        return f"stopped early: no better validation loss in {checks} (--patience)"
    if not config.tol:
        return f"ran its whole budget of {iterations} (tol 0: no convergence test)"
    longer = " ".join(f"--{name} {value}" for name, value in metrics["train_longer"].items())
    change = metrics.get("objective_change")
    if change is not None and change < -config.tol:  # the last epoch ended above the best: steps too bold
        larger = "" if config.batch_size >= metrics["train"]["n"] else " or raise --batch-size"
        return (
            f"not converged ({tol}): stopped at the step limit; its last epoch's objective was {-change:.2g} "
            f"above its best epoch's: the steps do not settle (lower --lr{larger}), or train longer: {longer}"
        )
    fell = ""
    if change is not None:  # (an epoch just above the best, by float noise, is no sign of bold steps)
        fell = f"; its last epoch lowered the objective by {change:.2g}" if change > 0 else (
            "; its last epoch's objective was within tol of its best")
    gradient = metrics.get("gradient_max")
    measured = "" if gradient is None else f", its largest gradient entry {gradient:.2g} when last measured"
    return (
        f"not converged ({tol} on the objective's largest gradient entry): stopped at the step limit"
        f"{fell}{measured}. To train longer: {longer}"
    )


def _config_and_out(args: argparse.Namespace) -> tuple[TrainConfig, Path]:
    """The config to train with and the run folder: from the flags, or with --resume the run's own."""
    from ..training.resume import saved_config
    from ..training.runs import default_out

    if not args.resume:
        return config_from_args(args), Path(args.out) if args.out else default_out()
    if args.out is not None:
        raise ConfigError("--resume continues in the run's own folder; drop --out")
    out, allowed = Path(args.resume), _given_config(args)
    return saved_config(out).replace(**allowed), out


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) a run into its folder, and say how it went."""
    from ..runfolder.checkpoints import command_line
    from ..training.runs import train

    config, out = _config_and_out(args)
    result = train(
        config,
        out=out,
        resume=bool(args.resume),
        overwrite=args.overwrite,
        checkpoint_every=args.checkpoint_every,
        verbose=not args.quiet,
        handle_signals=True,
        command=command_line(),
        dist_timeout=args.dist_timeout,
        announce=None if args.quiet else print,
        tensorboard=args.tensorboard,
        download=not args.no_download,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    metrics = result.metrics
    val_text = f" | val {metrics['val']['accuracy']:.4f}" if "val" in metrics else ""
    print(
        f"test accuracy {metrics['test']['accuracy']:.4f} (loss {metrics['test']['loss']:.4f}){val_text} | "
        f"trained in {metrics['train_seconds']:.2f} s ({counted(metrics['epochs'], 'epoch')}, "
        f"{counted(metrics['iterations'], 'iteration')}, {metrics['device']})"
    )
    print(stop_line(metrics, result.config))
    if config.optimizer is None:  # the rules chose it: flags of another optimizer went unused
        for note in unused_flags(args, result.config, chosen=f"for {metrics['train']['n']:,} training rows"):
            print(f"torchlogreg: note: {note}", file=sys.stderr)
    if not args.quiet:
        print(f"saved run to {out}")
    if args.report:
        from .report import report_for_run

        path = report_for_run(out, config.data_root, download=not args.no_download)
        print(f"wrote the report to {path / 'report.html'}")
    return 0


def train_parser(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model and save a run folder",
        description="Train a logistic regression; writes model.safetensors, "
        "model.json, metrics.json and history.csv into --out.",
    )
    add_train_options(train)
    out = train.add_argument_group("output")
    out.add_argument(
        "--out", type=path_flag, metavar="DIR", help="run folder to write (default: runs/<timestamp>)"
    )
    out.add_argument("--overwrite", action="store_true", help="allow replacing a run already in --out")
    out.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoint, with its own settings (--device, "
        "--data-root and --dataset, where its data is now, may be given)",
    )
    out.add_argument(
        "--dist-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="under torchrun: how long a rank waits for the others before failing (default: 60)",
    )
    out.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="N",
        help="also write a resumable checkpoint every N iterations (default: only on interrupt)",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar and no periodic lines")
    out.add_argument(
        "--tensorboard",
        type=path_flag,
        metavar="DIR",
        help="also log the curves and weight templates for TensorBoard into DIR (torchlogreg[tensorboard])",
    )
    out.add_argument(
        "--report", action="store_true", help="also write the figures and report.html (see 'report')"
    )
    train.set_defaults(handler=cmd_train)
