"""`torchlogreg sweep`: its options (train's, and the grid's) and handler.

    torchlogreg sweep --grid lr=0.01,0.1 --seeds 3 --out sweeps/a
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..base.config import TrainConfig
from ..base.exceptions import ConfigError, DivergenceError, counted
from .cli_common import path_flag
from .cli_train import add_train_options, config_from_args, unused_by, unused_flags


def unused_in_sweep(args: argparse.Namespace, axes: list[str], rows: list[dict]) -> list[str]:
    """A line for each swept option that an optimizer of the sweep's runs does not use (its values
    gave those runs alike) and, where the rules chose one optimizer for every run, for each flag
    given that it does not use."""
    used = sorted({row["optimizer"] for row in rows if row.get("optimizer")})
    notes = []
    for optimizer in used:
        for name, why in unused_by(optimizer).items():
            if name not in axes:
                continue
            if len(used) == 1:
                notes.append(f"--grid {name}: every run used {optimizer}, and {why}: its values gave the "
                             "same runs (--optimizer sgd sweeps it)")  # fmt: skip
            else:
                notes.append(f"--grid {name}: {why}: its values gave the {optimizer} runs alike")
    if len(used) == 1 and args.optimizer is None:
        notes += unused_flags(args, TrainConfig(optimizer=used[0]), chosen="for every run")
    return notes


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..training import sweep
    from ..training.runs import default_out

    base = config_from_args(args)
    grid = sweep.parse_grid(args.grid or [], args.grid_file)
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be an integer >= 1, got {args.seeds}")
    if args.hue is not None and args.hue.replace("-", "_") not in grid.axes:
        raise ConfigError(f"--hue {args.hue} is not swept; swept: {', '.join(grid.axes)}")
    out = Path(args.out) if args.out else default_out("sweeps")
    holds_out = base.val_size if base.val_size is not None else base.patience is not None  # data/rules.py
    if (args.select or args.retrain) and not holds_out:
        raise ConfigError(
            "--select val and --retrain choose by validation accuracy: set --val-size > 0 (the default "
            "holds none out)"
        )
    runs = len(sweep.sweep_configs(base, grid, args.seeds))  # (checks seed and --seeds)
    sweep.check_out(out)
    if not args.quiet:
        print(f"sweeping {', '.join(grid.axes)}: {runs} runs into {out}")
    progress = False if args.quiet else None
    hue = args.hue.replace("-", "_") if args.hue else None
    before = {row["key"] for row in sweep.read_results(out / sweep.RESULTS_FILE)}
    rows = sweep.run_sweep(base, grid, args.seeds, out, progress, args.tensorboard, report=True, hue=hue)
    summary = sweep.summarize(rows, grid)
    trained = [row for row in rows if row["key"] not in before]
    seconds = sum(float(row["train_seconds"] or 0) for row in trained)
    kept = f", {len(rows) - len(trained)} kept from before" if len(trained) < len(rows) else ""
    print(
        f"{counted(len(trained), 'run')} trained ({seconds:.1f} s of training){kept}; results.csv, "
        f"summary.md and plots in {out}"
    )
    others = len(before - {row["key"] for row in rows})
    if others:  # (a folder swept before with another grid: its rows stay, out of this summary)
        print(
            f"torchlogreg: note: results.csv also holds {counted(others, 'run')} of another grid or "
            "seeds; summary.md and the plots are this sweep's",
            file=sys.stderr,
        )
    for note in unused_in_sweep(args, list(grid.axes), rows):
        print(f"torchlogreg: note: {note}", file=sys.stderr)
    best = summary[0]
    if (args.select or args.retrain) and math.isnan(best["val_accuracy"]):
        raise DivergenceError(
            f"every run of the sweep diverged ({len(rows)} runs): nothing to select or retrain; lower the "
            "learning rate (see summary.md)"
        )
    if args.select or args.retrain:
        options = ", ".join(f"{k}={v}" for k, v in best["options"].items())
        print(
            f"best by validation accuracy: {options} (val {best['val_accuracy']:.4f}, "
            f"test {best['test_accuracy']:.4f})"
        )
    if args.retrain:
        from ..runfolder.checkpoints import command_line
        from ..training.runs import train

        config = sweep.best_config(base, summary, grid).replace(val_size=0, train_size=None, patience=None)
        result = train(config, out=out / "best", overwrite=True, verbose=False, command=command_line())
        print(
            f"retrained on the full training set: test accuracy {result.metrics['test']['accuracy']:.4f} "
            f"-> {out / 'best'}"
        )
    return 0


def sweep_parser(commands) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="train every combination of a grid of options",
        description="Train every combination of --grid values (x --seeds) in one process, reusing the data. "
        "Writes results.csv (one row per run; the same command resumes an interrupted sweep), summary.md "
        "(mean ± std over seeds, best validation accuracy first) and accuracy plots. Other flags set the "
        "base configuration.",
    )
    add_train_options(sweep)
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
