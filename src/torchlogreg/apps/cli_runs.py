"""The commands that use a saved run: `evaluate`, `predict`, `export` and `report`.

    torchlogreg evaluate runs/tutorial
    torchlogreg predict runs/tutorial digit.png --top-k 3
    torchlogreg export runs/tutorial --out model.onnx

They read the run through checkpoints.load_run alone: none of them loads the training stack.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..base.exceptions import ConfigError, counted
from ..base.storage import refuse_existing
from .cli_common import add_data_options, add_run_dir, dataset_arg, path_flag, print_to_stderr, printable


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..base.devices import resolve_device
    from ..data.images import background_of
    from ..data.inmemory import load_run_data
    from ..runfolder.checkpoints import load_run
    from ..training.evaluation import evaluate

    run = load_run(args.run_dir, device=resolve_device(args.device or "auto"))
    run = _with_threshold(run, args.threshold)
    dataset = dataset_arg(args.dataset)
    data = load_run_data(
        run.config, run.class_names, dataset, args.data_root, not args.no_download, run.image_shape
    )
    split = {"test": data.test, "val": data.val, "train": data.train}[args.split]
    if split is None:
        raise ConfigError(f"--split {args.split}: the run has no validation set (val_size 0)")
    metrics = evaluate(run.model, split.images, split.labels, run.threshold)  # (--threshold's, if given)
    if "background" in run.meta and (seen := background_of(split.images)) != run.background:
        print_to_stderr(  # (a light-on-dark run scored on dark-on-light pictures had looked like a model)
            f"note: the run trained on pictures on a {run.background} background; these are on a {seen} "
            "one, which the model sees inverted"
        )
    threshold = {"threshold": run.threshold} if run.model.binary else {}  # (the run's, or --threshold's)
    if args.json:
        print(json.dumps({"dataset": data.dataset, "split": args.split, **metrics, **threshold}))
    else:
        at = f", threshold {run.threshold:g}" if threshold else ""
        print(
            printable(f"{data.dataset} {args.split}: accuracy {metrics['accuracy']:.4f}, ")
            + f"loss {metrics['loss']:.4f} ({metrics['n']} samples{at})"
        )
    return 0


def _with_threshold(run, threshold: float | None):
    """The run deciding at `threshold` (--threshold) instead of its own (binary runs), else as it is."""
    if threshold is None:
        return run
    if not run.model.binary:
        classes = len(run.class_names)
        raise ConfigError(f"--threshold applies to a binary run; {run.path} has {classes} classes")
    if not 0 < threshold < 1:
        raise ConfigError(f"--threshold must be a probability in (0, 1), got {threshold}")
    run.model.threshold = threshold  # (run.threshold is its model's)
    return run


def _add_threshold(parser) -> None:
    parser.add_argument(
        "--threshold",
        type=float,
        help="binary run: predict the positive class where its probability is above this (default: the "
        "run's own, as trained)",
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from ..base.devices import resolve_device
    from ..base.exceptions import InputError
    from ..base.storage import atomic_output
    from ..data.inputs import expand_inputs
    from ..runfolder.checkpoints import load_run
    from .prediction import predict_files, show_progress, spool_to

    if args.top_k < 1:
        raise ConfigError(f"--top-k must be an integer >= 1, got {args.top_k}")
    output = Path(args.output) if args.output else None
    if output is not None:
        _check_output_file(output, args.overwrite)
    run = load_run(args.run_dir, device=resolve_device(args.device or "auto"))
    run = _with_threshold(run, args.threshold)
    files = expand_inputs(args.files)
    threshold = run.threshold if run.model.binary else 0.5
    fmt = _predict_format(output, args.json, run.class_names, args.top_k, threshold)
    report = print_to_stderr
    try:
        # written as they come to a temporary file: renamed to --output, or copied to stdout, at the end
        with atomic_output(output) if output is not None else spool_to(sys.stdout) as sink:
            tally = predict_files(
                run, files, sink, fmt, skip_bad=args.skip_bad, report=report, progress=show_progress(files),
                label_column=args.label_column,
            )  # fmt: skip
    except InputError as error:
        hint = "" if args.skip_bad else "; nothing written (--skip-bad leaves bad files and rows out)"
        raise InputError(f"{error}{hint}") from None
    if tally.skipped_files or tally.skipped_rows:
        counts = {"file": tally.skipped_files, "row": tally.skipped_rows}
        skipped = " and ".join(counted(n, f"bad {what}") for what, n in counts.items() if n)
        report(f"skipped {skipped}; predicted {tally.predicted}")
    if output is not None:
        print(printable(f"wrote {tally.predicted} predictions to {output}"))
    return 0


def _check_output_file(output: Path, overwrite: bool) -> None:
    if output.suffix.lower() not in (".csv", ".jsonl", ".json"):
        raise ConfigError(
            f"--output {output}: name a .csv (ImageId,Label) or .jsonl (one JSON object per input)"
        )
    refuse_existing(output, "output", overwrite)


def _predict_format(
    output: Path | None, as_json: bool, class_names: tuple[str, ...], top_k: int, threshold: float = 0.5
):
    """The output's format: Kaggle's CSV or JSON lines for --output, JSON lines or text on stdout (a
    binary run's line names its threshold where it makes the label another than the likelier)."""
    from .prediction import Format, json_lines, kaggle_csv

    if output is not None and output.suffix.lower() == ".csv":
        return kaggle_csv(class_names)
    if output is not None or as_json:
        return json_lines(class_names, top_k)

    def render(predicted) -> str:
        text = []
        for name, result in predicted.results(class_names):
            others = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in result["top_k"])
            line = f"{name}: {result['label']} ({result['probability']:.3f})   top: {others}"
            if len(class_names) == 2 and result["label"] != result["top_k"][0]["label"]:
                line += f"   ({class_names[1]} where P({class_names[1]}) > threshold {threshold:g})"
            text.append(printable(line) + "\n")
        return "".join(text)

    return Format("", max(1, min(top_k, len(class_names))), render)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_for_run

    dataset = dataset_arg(args.dataset)
    out = report_for_run(args.run_dir, args.data_root, download=not args.no_download, dataset=dataset)
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


def evaluate_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="measure a saved run on a dataset split",
        description="Accuracy and loss of a saved run on a split of its "
        "dataset (or of another dataset with the same classes).",
    )
    add_run_dir(evaluate)
    add_data_options(evaluate, "dataset to evaluate on (default: the run's)")
    evaluate.add_argument(
        "--split",
        choices=("test", "val", "train"),
        default="test",
        help="which split (default: test); train is the dataset's whole training split, more rows than a "
        "run trained with --train-size saw (its metrics.json scores those)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    _add_threshold(evaluate)
    evaluate.set_defaults(handler=cmd_evaluate)


def predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="classify image, array or CSV files",
        description="Classify images (PNG/JPG/BMP/...: made into pixels as the run's data was, by the "
        "'pictures' rule in its model.json: fitted like MNIST digits, or as they are), arrays (.npy/.npz of "
        "images of the run's shape (28x28 for MNIST): (H, W), (N, H, W), (N, 1, H, W) or flat; uint8 or "
        "floats in [0,1]) or CSV rows (one image per "
        "row, pixels 0..255 or fractions in [0,1]). Inputs of any size are read, predicted and written a "
        "chunk at a time.",
    )
    add_run_dir(predict)
    predict.add_argument(
        "files", metavar="FILE", nargs="+", help="images, .npy/.npz arrays, .csv rows, or folders of them"
    )
    predict.add_argument("--top-k", type=int, default=3, help="how many classes to list (default: 3)")
    _add_threshold(predict)
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
    predict.add_argument(
        "--label-column",
        metavar="NAME",
        help="a CSV input's label column, left out of the pixels: a header name, or an index (-1: the "
        "last); default: one named label/labels/class/target/y, else the one header name unlike the others",
    )
    predict.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    predict.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unreadable files and bad CSV rows (one line each on stderr, a count at the end) "
        "and predict the rest; their ImageIds stay unused. Default: stop at the first, writing nothing",
    )
    predict.set_defaults(handler=cmd_predict)


def report_parser(commands) -> None:
    report = commands.add_parser(
        "report",
        help="write figures and a self-contained HTML report of a run",
        description="Writes RUN_DIR/report/: samples, weights, curves, confusion, mistakes and calibration "
        "figures (plus ROC/PR for binary runs) and report.html; adds per-class metrics and ECE to "
        "metrics.json.",
    )
    add_run_dir(report)
    report.add_argument(
        "--dataset",
        metavar="NAME",
        help="the run's dataset where it is now, if its folder moved (or another with the run's classes); "
        "default: the run's",
    )
    report.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the datasets (default: $TORCHLOGREG_DATA; never the run's)",
    )
    report.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    report.set_defaults(handler=cmd_report)


def export_parser(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write the model as ONNX, for ONNX Runtime (needs torchlogreg[export])",
        description="Writes an ONNX model: input 'images' (N x H x W float32 in [0, 1]; divide uint8 by "
        "255), outputs 'probabilities' and 'label' (the run's threshold for binary runs), with the class "
        "names, input shape and the run's weights SHA-256 as metadata. Checked against ONNX Runtime before "
        "writing.",
    )
    add_run_dir(export)
    export.add_argument("--format", choices=("onnx",), default="onnx", help="the format (default: onnx)")
    export.add_argument(
        "--out", type=path_flag, required=True, metavar="FILE", help="the file to write, e.g. model.onnx"
    )
    export.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    export.set_defaults(handler=cmd_export)
