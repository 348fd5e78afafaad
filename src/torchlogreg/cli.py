"""The `torchlogreg` command: a thin shell over the Python API.

    torchlogreg train --data-root ../shared/data            # default preset, ~1 s on a laptop CPU
    torchlogreg train --preset tutorial --out runs/tutorial
    torchlogreg evaluate runs/tutorial
    torchlogreg predict runs/tutorial digit.png --top-k 3

argparse (standard library) rather than typer/click: no extra dependency and no start-up cost;
heavy modules (torch, torchvision) are imported only inside the command that needs them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from . import signals
from .config import DATASET_NAMES, INITS, OPTIMIZERS, PRESETS, SCHEDULES, TrainConfig
from .exceptions import ConfigError, TorchLogRegError
from .rules import RULES

DEFAULT = PRESETS["default"]


def printable(text) -> str:
    """`text` safe for a terminal: control characters (newlines, ESC sequences that could rewrite the
    screen or fake lines) shown as escapes. File and class names may come from strangers."""
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in str(text)
    )


def path_flag(text: str) -> str:
    """An output or data path given as a flag: an empty one would mean the current folder (or, for
    --output, standard output) without saying so, and is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("give a path (it is empty)")
    return text


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), and "did you mean" for unknown options."""

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            import difflib

            known = {o for action in _all_actions(self) for o in action.option_strings}
            guesses = [difflib.get_close_matches(w, known, n=1) for w in message.split(":", 1)[1].split()]
            hints = [g[0] for g in guesses if g]
            message += f" (did you mean {', '.join(hints)}?)" if hints else ""
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's actions and those of all its subcommands."""
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions.extend(_all_actions(sub))
    return actions


def _class_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class numbers like 3,8, got {text!r}") from None


def _add_data_options(parser: argparse.ArgumentParser, dataset_help: str) -> None:
    parser.add_argument("--dataset", help=dataset_help, metavar="NAME")
    parser.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the datasets (default: $TORCHLOGREG_DATA, else ~/.cache/torchlogreg)",
    )
    parser.add_argument(
        "--no-download",
        action="store_true",
        help="fail instead of downloading when the dataset files are missing",
    )
    parser.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps (default: auto)")


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    """Flags that set TrainConfig fields; each defaults to None so the preset's value stays."""
    presets = ", ".join(PRESETS)
    parser.add_argument(
        "--preset", default="default", help=f"starting settings: {presets} (default: default)"
    )
    _add_data_options(parser, f"one of {', '.join(DATASET_NAMES)} (default: {DEFAULT.dataset})")
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
        help="keep only these classes; two classes train a binary (sigmoid) model",
    )
    task.add_argument(
        "--positive", type=int, metavar="CLASS", help="binary model: this class against all others"
    )
    task.add_argument(
        "--threshold", type=float, help=f"binary decision threshold (default: {DEFAULT.threshold})"
    )
    task.add_argument(
        "--val-size", type=int, help=f"validation samples taken from train (default: {RULES['val_size']})"
    )
    task.add_argument(
        "--train-size", type=int, help="use a class-balanced subset of this many training samples"
    )


def _add_optimisation_options(opt) -> None:
    """How it is learned; each help states the rule the default follows (rules.RULES)."""
    opt.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default: {RULES['optimizer']})")
    opt.add_argument("--lr", type=float, help=f"learning rate (default: {RULES['lr']})")
    opt.add_argument("--batch-size", type=int, help=f"samples per step (default: {RULES['batch_size']})")
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
    opt.add_argument("--l1", type=float, help=f"L1 penalty on the weights (default: {DEFAULT.l1})")
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
        help="print iteration, loss and val accuracy every N iterations (default: every epoch, or every few "
        "epochs so that a run makes at most 8 checks; lbfgs: every 10 iterations)",
    )
    opt.add_argument("--patience", type=int, help="stop after N checks without a better val loss")
    opt.add_argument(
        "--seed", type=int, help=f"seed of the split and the shuffling (default: {DEFAULT.seed})"
    )


CONFIG_FLAGS = tuple(field.name for field in dataclasses.fields(TrainConfig))  # one flag each
RESUMABLE = ("device", "data_root")  # the flags --resume accepts


def config_from_args(args: argparse.Namespace):
    """The preset named by --preset with every flag the user gave applied."""
    from .config import preset

    flags = {name: getattr(args, name) for name in CONFIG_FLAGS}
    return preset(args.preset, **{**flags, "dataset": dataset_arg(args.dataset)})


def dataset_arg(name: str | None) -> str | None:
    """--dataset as the user means it: a built-in name (with a warning when a dataset folder of that
    name is here too, saying how to pick it), else an existing folder or a path, made absolute so the
    run finds its data from any working directory. Anything else stays for the config to refuse."""
    if name is None:
        return None
    from .datasets import is_dataset_folder, looks_like_folder

    if name in DATASET_NAMES:
        if is_dataset_folder(name) and int(os.environ.get("RANK", "0")) == 0:
            line = f"warning: --dataset {name} is the built-in {name}; for the folder here, give ./{name}"
            print(printable(line), file=sys.stderr)
        return name
    if Path(name).expanduser().is_dir() or looks_like_folder(name):
        from .data import dataset_location

        return dataset_location(name)
    return name


def _given_config(args: argparse.Namespace):
    """With --resume: None, or the run's own settings with --device/--data-root (others refused)."""
    given = [
        f"--{n.replace('_', '-')}"
        for n in CONFIG_FLAGS
        if n not in RESUMABLE and getattr(args, n) is not None
    ]
    if given or args.preset != "default":
        raise ConfigError(
            f"--resume continues with the run's own settings; drop {', '.join(given) or '--preset'}"
        )
    return {name: getattr(args, name) for name in RESUMABLE if getattr(args, name) is not None}


def stop_line(metrics: dict, config: TrainConfig) -> str:
    """Why training stopped, in one line; when it had not converged, the flag that trains longer."""
    reason, tol = metrics["stop_reason"], f"tol {config.tol:g}"
    if reason == "converged":
        return f"converged ({tol}) after {metrics['iterations']} iterations"
    if reason == "early stopping":
        return f"stopped early: no better validation loss in {config.patience} checks (--patience)"
    if not config.tol:
        return f"ran its whole budget of {metrics['iterations']} iterations (tol 0: no convergence test)"
    longer = " ".join(f"--{name} {value}" for name, value in metrics["train_longer"].items())
    change = metrics.get("objective_change")
    fell = f"; its last epoch lowered the objective by {change:.2g}" if change is not None else ""
    return f"not converged ({tol}): stopped at the step limit{fell}. To train longer: {longer}"


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoints import command_line
    from .runs import default_out, resumed_config, train

    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be an integer >= 1, got {args.checkpoint_every}")
    if args.resume:
        if args.out is not None:
            raise ConfigError("--resume continues in the run's own folder; drop --out")
        out, allowed = Path(args.resume), _given_config(args)
        config = resumed_config(out, None)[0].replace(**allowed)
    else:
        config, out = config_from_args(args), Path(args.out) if args.out else default_out()
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
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return 0
    metrics = result.metrics
    val_text = f" | val {metrics['val']['accuracy']:.4f}" if "val" in metrics else ""
    print(
        f"test accuracy {metrics['test']['accuracy']:.4f} (loss {metrics['test']['loss']:.4f}){val_text} | "
        f"trained in {metrics['train_seconds']:.2f} s ({metrics['epochs']:g} epochs, "
        f"{metrics['iterations']} iterations, {metrics['device']})"
    )
    print(stop_line(metrics, result.config))
    if not args.quiet:
        print(f"saved run to {out}")
    if args.report:
        from .report import report_for_run

        path = report_for_run(out, config.data_root, download=not args.no_download)
        print(f"wrote the report to {path / 'report.html'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .checkpoints import load_run
    from .data import load_run_data
    from .devices import resolve_device
    from .evaluation import evaluate

    run = load_run(args.run_dir, device=resolve_device(args.device or "auto"))
    dataset = dataset_arg(args.dataset)
    data = load_run_data(run.config, run.model.n_classes, dataset, args.data_root, not args.no_download)
    split = {"test": data.test, "val": data.val, "train": data.train}[args.split]
    if split is None:
        raise ConfigError(f"--split {args.split}: the run has no validation set (val_size 0)")
    metrics = evaluate(run.model, split.images, split.labels, run.threshold)
    if args.json:
        print(json.dumps({"dataset": data.dataset, "split": args.split, **metrics}))
    else:
        print(
            printable(f"{data.dataset} {args.split}: accuracy {metrics['accuracy']:.4f}, ")
            + f"loss {metrics['loss']:.4f} ({metrics['n']} samples)"
        )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .checkpoints import load_run
    from .devices import resolve_device
    from .exceptions import InputError
    from .inputs import expand_inputs
    from .prediction import predict_files, show_progress, spool_to
    from .storage import atomic_output

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be an integer >= 1, got {args.top_k}")
    output = Path(args.output) if args.output else None
    if output is not None:
        _check_output_file(output, args.overwrite)
    run = load_run(args.run_dir, device=resolve_device(args.device or "auto"))
    files = expand_inputs(args.files)
    fmt = _predict_format(output, args.json, run.class_names, args.top_k)
    report = _print_to_stderr
    try:
        # written as they come to a temporary file: renamed to --output, or copied to stdout, at the end
        with atomic_output(output) if output is not None else spool_to(sys.stdout) as sink:
            tally = predict_files(
                run, files, sink, fmt, skip_bad=args.skip_bad, report=report, progress=show_progress(files)
            )
    except InputError as error:
        hint = "" if args.skip_bad else "; nothing written (--skip-bad leaves bad files and rows out)"
        raise InputError(f"{error}{hint}") from None
    if tally.skipped_files or tally.skipped_rows:
        counts = {"file": tally.skipped_files, "row": tally.skipped_rows}
        skipped = " and ".join(f"{n} bad {what}{'s' * (n > 1)}" for what, n in counts.items() if n)
        report(f"skipped {skipped}; predicted {tally.predicted}")
    if output is not None:
        print(printable(f"wrote {tally.predicted} predictions to {output}"))
    return 0


def _print_to_stderr(message: str) -> None:
    print(printable(message), file=sys.stderr)


def _check_output_file(output: Path, overwrite: bool) -> None:
    if output.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise ConfigError(
            f"--output {output}: name a .csv (ImageId,Label) or .jsonl (one JSON object per input)"
        )
    from .storage import exists

    if exists(output) and not overwrite:
        raise ConfigError(f"--output {output} exists; choose another file or pass --overwrite")


def _predict_format(output: Path | None, as_json: bool, class_names: tuple[str, ...], top_k: int):
    """The output's format: Kaggle's CSV or JSON lines for --output, JSON lines or text on stdout."""
    from .prediction import Format, json_lines, kaggle_csv

    if output is not None and output.suffix.lower() == ".csv":
        return kaggle_csv(class_names)
    if output is not None or as_json:
        return json_lines(class_names, top_k)

    def render(batch) -> str:
        text = []
        for name, result in batch.results(class_names):
            others = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top_k"])
            line = f"{name}: {result['label']} ({result['probability']:.3f})   top: {others}"
            text.append(printable(line) + "\n")
        return "".join(text)

    return Format("", max(1, min(top_k, len(class_names))), render)


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep
    from .runs import default_out

    base = config_from_args(args)
    grid = sweep.parse_grid(args.grid or [], args.grid_file)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be an integer >= 1, got {args.seeds}")
    if args.hue is not None and args.hue.replace("-", "_") not in grid.axes:
        raise ConfigError(f"--hue {args.hue} is not swept; swept: {', '.join(grid.axes)}")
    out = Path(args.out) if args.out else default_out("sweeps")
    holds_out = base.val_size if base.val_size is not None else base.patience is not None  # rules.py
    if (args.select or args.retrain) and not holds_out:
        raise ConfigError(
            "--select val and --retrain choose by validation accuracy: set --val-size > 0 (the default "
            "holds none out)"
        )
    sweep.check_out(out)
    runs = len(grid.combinations()) * args.seeds
    if not args.quiet:
        print(f"sweeping {', '.join(grid.axes)}: {runs} runs into {out}")
    progress = False if args.quiet else None
    rows = sweep.run_sweep(base, grid, args.seeds, out, progress, tensorboard=args.tensorboard)
    summary = sweep.summarize(rows, grid)
    sweep.write_outputs(summary, grid, args.seeds, out, args.hue.replace("-", "_") if args.hue else None)
    seconds = sum(float(row["train_seconds"]) for row in rows)
    print(f"{len(rows)} runs ({seconds:.1f} s of training); results.csv, summary.md and plots in {out}")
    best = summary[0]
    if args.select or args.retrain:
        options = ", ".join(f"{k}={v}" for k, v in best["options"].items())
        print(
            f"best by validation accuracy: {options} (val {best['val_accuracy']:.4f}, "
            f"test {best['test_accuracy']:.4f})"
        )
    if args.retrain:
        from .checkpoints import command_line
        from .runs import train

        config = sweep.best_config(base, summary, grid).replace(val_size=0, train_size=None, patience=None)
        result = train(config, out=out / "best", overwrite=True, verbose=False, command=command_line())
        print(
            f"retrained on the full training set: test accuracy {result.metrics['test']['accuracy']:.4f} "
            f"-> {out / 'best'}"
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .checkpoints import load_run
    from .serving import serve

    _check_port_number(args.port)
    if args.workers < 1:
        raise ConfigError(f"--workers must be an integer >= 1, got {args.workers}")
    load_run(args.run_dir)  # a broken run folder fails here, before anything is announced
    _claim_address(args.host, args.port)
    print(printable(f"serving {args.run_dir} on http://{args.host}:{args.port}/ (Ctrl-C to stop)"))
    serve(args.run_dir, args.host, args.port, args.workers)
    return 0


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _check_port_number(port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {port}")


def _claim_address(host: str, port: int) -> None:
    """Before a server starts: the warning for a public --host, and a port already taken as one line."""
    _warn_if_public(host)
    _check_port_free(host, port)


def _add_address_options(parser: argparse.ArgumentParser) -> None:
    """--host and --port of a web server (serve, playground): loopback unless asked otherwise."""
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")


def _warn_if_public(host: str) -> None:
    if host not in LOCAL_HOSTS:
        print(
            f"warning: --host {printable(host)} accepts connections from other machines; the API has "
            "no authentication: put it behind a reverse proxy (README: Security)",
            file=sys.stderr,
        )


def cmd_playground(args: argparse.Namespace) -> int:
    from .playground import create_app, serve_playground

    _check_port_number(args.port)
    if args.max_trainings < 1:
        raise ConfigError(f"--max-trainings must be an integer >= 1, got {args.max_trainings}")
    local = args.host in LOCAL_HOSTS
    app = create_app(args.data_root, tuple(args.dataset_folder), args.runs, args.max_trainings, local)
    _claim_address(args.host, args.port)
    print(printable(f"playground on http://{args.host}:{args.port}/ (Ctrl-C to stop)"))
    serve_playground(app, args.host, args.port)
    return 0


def _check_port_free(host: str, port: int) -> None:
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None


def cmd_data_convert(args: argparse.Namespace) -> int:
    """Write a dataset in the on-disk (out-of-core) format."""
    from .convert import convert

    if args.from_csv is not None and len(args.from_csv) > 2:
        raise ConfigError(f"--from-csv takes TRAIN_CSV [TEST_CSV], got {len(args.from_csv)} files")
    written = convert(
        args.out,
        dataset=args.dataset,
        data_root=args.data_root,
        download=not args.no_download,
        npz=args.from_npz,
        idx=args.from_idx,
        csv=args.from_csv,
        test_size=args.test_size,
        seed=args.seed,
        folder=args.from_folder,
        label_column=args.label_column,
        image_size=args.image_size,
        class_names=args.class_names.split(",") if args.class_names else None,
        overwrite=args.overwrite,
        progress=sys.stderr.isatty(),
        pictures=args.pictures,
    )
    height, width = written["image_shape"]
    names = written["class_names"]
    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    print(
        printable(
            f"wrote {written['train']} train and {written['test']} test images ({height}x{width}, "
            f"{len(names)} classes: {listed}; pictures {written['pictures']}) to {written['out']}"
        )
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_for_run

    out = report_for_run(args.run_dir, args.data_root, download=not args.no_download)
    print(f"wrote {out / 'report.html'} and its figures")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    path = export_onnx(args.run_dir, args.out, overwrite=args.overwrite)
    print(
        printable(
            f"wrote {path}: input 'images' (N x H x W float32 in [0, 1]), outputs 'probabilities', 'label'"
        )
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demos

    if args.name == "cross-entropy":
        print(demos.format_cross_entropy(demos.cross_entropy_cases()))
    else:
        if Path(args.out).exists() and not args.overwrite:
            raise ConfigError(f"{args.out} exists; choose another --out or pass --overwrite")
        print(printable(f"wrote {demos.linear_vs_logistic(args.out)}"))
    return 0


def _train_parser(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train a model and save a run folder",
        description="Train a logistic regression; writes model.safetensors, "
        "model.json, metrics.json and history.csv into --out.",
    )
    _add_train_options(train)
    out = train.add_argument_group("output")
    out.add_argument(
        "--out", type=path_flag, metavar="DIR", help="run folder to write (default: runs/<timestamp>)"
    )
    out.add_argument("--overwrite", action="store_true", help="allow replacing a run already in --out")
    out.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its checkpoint, with its own settings",
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


def _evaluate_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="measure a saved run on a dataset split",
        description="Accuracy and loss of a saved run on a split of its "
        "dataset (or of another dataset with the same classes).",
    )
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train'")
    _add_data_options(evaluate, "dataset to evaluate on (default: the run's)")
    evaluate.add_argument(
        "--split", choices=("test", "val", "train"), default="test", help="which split (default: test)"
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=cmd_evaluate)


def _predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="classify image, array or CSV files",
        description="Classify images (PNG/JPG/BMP/...: made into pixels as the run's data was, by the "
        "'pictures' rule in its model.json: fitted like MNIST digits, or as they are), arrays (.npy/.npz of "
        "28x28 images, uint8 or floats in [0,1]) or CSV rows (one image per row, pixels 0..255 or "
        "fractions in [0,1]). Inputs of any size are read, predicted and written a chunk at a time.",
    )
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train'")
    predict.add_argument(
        "files", metavar="FILE", nargs="+", help="images, .npy/.npz arrays, .csv rows, or folders of them"
    )
    predict.add_argument("--top-k", type=int, default=3, help="how many classes to list (default: 3)")
    predict.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per input per line: file, label, probability, top_k",
    )
    predict.add_argument("--device", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    predict.add_argument(
        "--output",
        type=path_flag,
        metavar="FILE",
        help="write the predictions to FILE instead: .csv as ImageId,Label (Kaggle's submission form, "
        "ImageId from 1 in input order) or .jsonl, one JSON object per input; written atomically",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    predict.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unreadable files and bad CSV rows (one line each on stderr, a count at the end) "
        "and predict the rest; their ImageIds stay unused. Default: stop at the first, writing nothing",
    )
    predict.set_defaults(handler=cmd_predict)


def _sweep_parser(commands) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train every combination of a grid of options",
        description="Train every combination of --grid values (x --seeds) in one process, reusing the data. "
        "Writes results.csv (one row per run; the same command resumes an interrupted sweep), summary.md "
        "(mean ± std over seeds, best validation accuracy first) and accuracy plots. Other flags set the "
        "base configuration.",
    )
    _add_train_options(sweep)
    grid = sweep.add_argument_group("sweep")
    grid.add_argument(
        "--grid",
        action="append",
        metavar="NAME=V1,V2",
        help="an option and its values, e.g. lr=0.001,0.01,0.1 (repeat for more options)",
    )
    grid.add_argument("--grid-file", metavar="TOML", help="a TOML file with a [grid] table: name = [values]")
    grid.add_argument("--seeds", type=int, default=1, help="seeds per combination (default: 1)")
    grid.add_argument("--hue", metavar="NAME", help="in the plots, one line per value of this swept option")
    grid.add_argument("--select", choices=("val",), help="print the best combination by validation accuracy")
    grid.add_argument(
        "--retrain",
        action="store_true",
        help="retrain the best combination on the full training set into SWEEP_DIR/best",
    )
    grid.add_argument(
        "--out", type=path_flag, metavar="DIR", help="sweep folder (default: sweeps/<timestamp>)"
    )
    grid.add_argument("--quiet", action="store_true", help="no progress bar")
    grid.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="log each run's curves and hyperparameters for TensorBoard into DIR",
    )
    sweep.set_defaults(handler=cmd_sweep)


def _serve_parser(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="a web page to draw digits on, and an HTTP API (needs torchlogreg[serve])",
        description="Serve the run: / is a drawing page, POST /api/predict takes an image upload (field "
        "'file') or JSON {'pixels': 28x28}, GET /api/model, GET /healthz, docs at /docs.",
    )
    serve.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train'")
    _add_address_options(serve)
    serve.add_argument(
        "--workers", type=int, default=1, help="server processes, e.g. one per core (default: 1)"
    )
    serve.set_defaults(handler=cmd_serve)


def _playground_parser(commands) -> None:
    playground = commands.add_parser(
        "playground",
        help="train in the browser and watch the model learn, live (needs torchlogreg[serve])",
        description="A page to set up runs, watch curves, templates and mistakes change as it trains, "
        "change settings on the fly, compare runs and save them as run folders.",
    )
    playground.add_argument("--data-root", metavar="DIR", help="folder holding the built-in datasets")
    playground.add_argument(
        "--dataset-folder", action="append", default=[], metavar="DIR", help="also offer this dataset folder"
    )
    playground.add_argument(
        "--runs", default="runs", metavar="DIR", help="where 'save run' writes (default: runs)"
    )
    playground.add_argument(
        "--max-trainings", type=int, default=2, metavar="N", help="trainings at once, all pages (default: 2)"
    )
    _add_address_options(playground)
    playground.set_defaults(handler=cmd_playground)


def _report_parser(commands) -> None:
    report = commands.add_parser(
        "report",
        help="write figures and a self-contained HTML report of a run",
        description="Writes RUN_DIR/report/: samples, weights, curves, confusion, mistakes and calibration "
        "figures (plus ROC/PR for binary runs) and report.html; adds per-class metrics and ECE to "
        "metrics.json.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train'")
    report.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the datasets (default: $TORCHLOGREG_DATA; never the run's)",
    )
    report.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    report.set_defaults(handler=cmd_report)


def _data_parser(commands) -> None:
    data = commands.add_parser("data", help="dataset tools: convert to the out-of-core format")
    data_commands = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    convert = data_commands.add_parser(
        "convert",
        help="write a dataset as .npy files that training reads from disk a shard at a time",
        description="Reads a built-in dataset (--dataset), an .npz, a folder of IDX files, two CSV files "
        "or a train/test image folder tree, and writes OUT/meta.json, train-images.npy (N x H x W uint8, "
        "rows shuffled), train-labels.npy, test-images.npy and test-labels.npy. Train on it with "
        "--dataset OUT, in one process or under torchrun.",
    )
    convert.add_argument(
        "--dataset", default="mnist", help=f"one of {', '.join(DATASET_NAMES)} (default: mnist)"
    )
    source = convert.add_mutually_exclusive_group()
    source.add_argument(
        "--from-npz",
        metavar="FILE",
        help="instead: an .npz with uint8 train_images, test_images (N x H x W), train_labels, test_labels",
    )
    source.add_argument(
        "--from-idx",
        metavar="DIR",
        help="instead: a folder of MNIST-style IDX files (train-images-..., t10k-/test-labels-..., or .gz)",
    )
    source.add_argument(
        "--from-csv",
        nargs="+",
        metavar="CSV",
        help="instead: TRAIN_CSV [TEST_CSV], a label column and one column per pixel (0..255, or 0..1 "
        "fractions), header optional; streamed, so larger than memory is fine. One CSV (Kaggle's "
        "train.csv): a stratified test split of --test-size",
    )
    source.add_argument(
        "--from-folder",
        metavar="DIR",
        help="instead: DIR/train/<class>/*.png and DIR/test/<class>/*.png (any image format), read as "
        "grayscale; the class names are the subfolders' names",
    )
    convert.add_argument(
        "--label-column",
        metavar="COL",
        help="CSV: the label column, by name or index (-1 = last); default: a column named "
        "label/class/target/y, else the first",
    )
    convert.add_argument(
        "--image-size",
        metavar="HxW",
        help="CSV: the image shape when the pixels do not make a square; folders: resize every image to it "
        "(--pictures mnist-style: the field each digit is fitted into, default 28x28)",
    )
    convert.add_argument(
        "--class-names",
        metavar="A,B,...",
        help="names of the labels present, in label order, or of labels 0, 1, ... (default: the numbers)",
    )
    convert.add_argument(
        "--pictures",
        metavar="RULE",
        help="how picture files become this dataset's pixels, in training and in predict/serve: as-is "
        "(grayscale, resized) or mnist-style (each digit fitted and centred like MNIST's). Default: as-is "
        "for --from-folder; mnist-style for built-in datasets and for arrays of light strokes on dark",
    )
    convert.add_argument("--data-root", metavar="DIR", help="folder holding the datasets")
    convert.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    convert.add_argument(
        "--test-size", type=float, default=0.2, help="one CSV: the fraction held out for test (default: 0.2)"
    )
    convert.add_argument("--seed", type=int, default=0, help="one CSV: seed of the test split (default: 0)")
    convert.add_argument(
        "--out", type=path_flag, required=True, metavar="DIR", help="dataset folder to write"
    )
    convert.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    convert.set_defaults(handler=cmd_data_convert)


def _export_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write the model as ONNX, for ONNX Runtime (needs torchlogreg[export])",
        description="Writes an ONNX model: input 'images' (N x H x W float32 in [0, 1]; divide uint8 by "
        "255), outputs 'probabilities' and 'label' (the run's threshold for binary runs), with the class "
        "names, input shape and the run's weights SHA-256 as metadata. Checked against ONNX Runtime before "
        "writing.",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by 'train'")
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the format (default: onnx)")
    export.add_argument(
        "--out", type=path_flag, required=True, metavar="FILE", help="the file to write, e.g. model.onnx"
    )
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.set_defaults(handler=cmd_export)


def _demo_parser(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="the tutorials' teaching demos",
        description="linear-vs-logistic: the fever example as a figure; "
        "cross-entropy: the loss of confident right and wrong answers.",
    )
    demo.add_argument("name", choices=("linear-vs-logistic", "cross-entropy"), help="which demo")
    demo.add_argument(
        "--out", type=path_flag, default="linear_vs_logistic.png", help="figure file (linear-vs-logistic)"
    )
    demo.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    demo.set_defaults(handler=cmd_demo)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torchlogreg")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="torchlogreg",
        description="Logistic regression on MNIST-style data with PyTorch: train, evaluate, predict.",
        epilog="Run 'torchlogreg COMMAND --help' for a command's options.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"torchlogreg {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _train_parser(commands)
    _evaluate_parser(commands)
    _predict_parser(commands)
    _sweep_parser(commands)
    _serve_parser(commands)
    _playground_parser(commands)
    _report_parser(commands)
    _data_parser(commands)
    _export_parser(commands)
    _demo_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    command, debug = "start-up", False
    with signals.interruptible():
        try:
            args = build_parser().parse_args(argv)
            command, debug = args.command, args.debug
            code = args.handler(args)
            if signals.received() is not None:  # a library caught the interruption: it still was one
                raise KeyboardInterrupt
            return code
        except BaseException as error:
            signum = signals.received() or (signal.SIGINT if isinstance(error, KeyboardInterrupt) else None)
            if signum is not None:  # whatever the interruption became on its way up, it is one
                if debug:
                    traceback.print_exc()
                hint = (
                    "finished runs are in results.csv: run the same command to resume"
                    if command == "sweep"
                    else "no file was left half-written"
                )
                print(f"torchlogreg {command}: interrupted ({signals.name(signum)}); {hint}", file=sys.stderr)
                return signals.exit_code(signum)
            if not isinstance(error, TorchLogRegError):
                raise
            if debug:
                traceback.print_exc()
            print(f"torchlogreg {command}: error: {printable(error)}", file=sys.stderr)
            return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
