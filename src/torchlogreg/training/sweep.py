"""Sweeps: train every combination of a grid of options (x seeds) in one process.

    torchlogreg sweep --grid batch_size=32,100,1000 --grid lr=0.001,0.01,0.1 --seeds 3 --out sweeps/a

Data is loaded once and reused; each finished run is appended to SWEEP_DIR/results.csv at
once (atomically), so an interrupted sweep loses at most the run in progress and the same
command resumes it. summary.md gives mean +- std over seeds, best validation accuracy first;
the best combination is chosen on validation accuracy, never on test.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import math
import statistics
import tomllib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..base.config import TrainConfig
from ..base.datasets import DATASETS
from ..base.exceptions import ConfigError, DivergenceError, did_you_mean
from ..base.storage import atomic_write_csv, atomic_write_text, output_lock
from ..data.inmemory import load_data, load_splits, prepare
from ..data.readers import read_capped
from ..runfolder.layout import SWEEP_RESULTS, is_run_folder
from .runs import check_writable, train
from .sweep_figures import by_rule, plot_sweep, sort_values
from .tensorboard import log_sweep_run

METRIC_COLUMNS = (
    "val_accuracy",
    "test_accuracy",
    "train_accuracy",
    "train_loss",
    "train_seconds",
    "epochs_trained",
    "iterations",
    "stop_reason",
)
RESULTS_FILE = SWEEP_RESULTS
MAX_GRID_FILE_BYTES = 1 << 20  # a grid of a few options; far more than any real one


@dataclass(frozen=True)
class Grid:
    """The swept options, each with its values, in the order given."""

    axes: dict[str, tuple]

    def combinations(self) -> list[dict]:
        names = list(self.axes)
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*self.axes.values())]


def _field_types(name: str) -> tuple[tuple[type, ...], bool]:
    """The types option `name` takes, and whether it may be None."""
    hint = typing.get_type_hints(TrainConfig)[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return tuple(arg for arg in args if arg is not type(None)), type(None) in args


def parse_value(name: str, text) -> object:
    """`text` (a string from the command line, or a TOML value) as the type of option `name`."""
    allowed, optional = _field_types(name)
    if optional and str not in allowed and isinstance(text, str) and text.strip().lower() == "none":
        return None  # a text option keeps "none" (schedule=none); leave it out of the grid for its rule
    for kind in allowed:
        if isinstance(text, bool) and kind is not bool:
            continue  # (TOML's true is no number: a bool is an int to Python)
        try:
            if kind is bool:
                if isinstance(text, bool):
                    return text
                if str(text).lower() in ("true", "false", "1", "0", "yes", "no"):
                    return str(text).lower() in ("true", "1", "yes")
                continue
            if kind is int:
                value = float(text)
                if value.is_integer():
                    return int(value)
                continue
            if kind is float:
                return float(text)
            if kind is str:
                return str(text)
        except (TypeError, ValueError):
            continue
    kinds = " or ".join(k.__name__ for k in allowed)
    raise ConfigError(f"grid {name}: {text!r} is not a valid {kinds}", parameter="grid")


def _option_name(raw: str) -> str:
    name = raw.strip().replace("-", "_")
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    if name not in fields:
        raise ConfigError(f"grid: unknown option {raw!r}{did_you_mean(name, fields)}", parameter="grid")
    if name in ("classes", "data_root", "dataset", "device"):
        raise ConfigError(f"grid cannot sweep {name}; set it once for the whole sweep", parameter="grid")
    return name


def check_out(out: Path) -> None:
    """The sweep folder: never a training run's folder, and writable before the first run starts."""
    if is_run_folder(out):
        raise ConfigError(
            f"out {out} holds a training run; give out=ANOTHER_FOLDER for the sweep", parameter="out"
        )
    check_writable(out)


def parse_grid(grid: Iterable[str], grid_file: str | Path | None = None) -> Grid:
    """A Grid from `grid`'s "name=v1,v2" strings and/or `grid_file`, a TOML file with a [grid] table."""
    axes: dict[str, tuple] = {}
    if grid_file is not None:
        try:
            text = read_capped(grid_file, MAX_GRID_FILE_BYTES, ConfigError)  # never /dev/zero or a FIFO
        except ConfigError as error:
            raise ConfigError(f"grid_file {error}", parameter="grid_file") from None
        try:
            table = tomllib.loads(text.decode("utf-8")).get("grid")
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"grid_file {grid_file}: {error}", parameter="grid_file") from None
        if not isinstance(table, dict):
            raise ConfigError(
                f"grid_file {grid_file}: expected a [grid] table of option = [values]", parameter="grid_file"
            )
        for raw, values in table.items():
            values = values if isinstance(values, list) else [values]
            try:
                name = _option_name(raw)
                axes[name] = _axis(name, [parse_value(name, v) for v in values])
            except ConfigError as error:  # (named by the file, not as grid=)
                said = str(error).removeprefix("grid").removeprefix(":").lstrip()
                raise ConfigError(f"grid_file {grid_file}: {said}", parameter="grid_file") from None
    for option in grid:
        raw, sep, values = option.partition("=")
        if not sep or not values.strip():
            raise ConfigError(
                f"grid {option!r}: expected NAME=VALUE[,VALUE...], e.g. 'lr=0.01,0.1'", parameter="grid"
            )
        name = _option_name(raw)
        if name in axes:
            raise ConfigError(
                f"grid {name} is given twice; give its values once, in (grid) or in the file (grid_file)",
                parameter="grid",
            )
        axes[name] = _axis(name, [parse_value(name, v) for v in values.split(",")])
    if not axes:
        raise ConfigError("give at least one grid=NAME=VALUES (or grid_file=FILE)", parameter="grid")
    return Grid(axes)


def _axis(name: str, values: list) -> tuple:
    """An option's values, checked: at least one, none twice (0.1 and 1e-1 too: the same runs, which
    the summary would have counted as one combination of several seeds)."""
    if not values:
        raise ConfigError(f"grid {name} has no values; give at least one", parameter="grid")
    for i, value in enumerate(values):
        if value in values[:i]:
            raise ConfigError(f"grid {name} gives {value!r} twice; give each value once", parameter="grid")
    return tuple(values)


def _row_key(config: TrainConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def read_results(path: Path) -> list[dict]:
    """results.csv's rows. A file written before the epochs trained had a column of their own held two
    `epochs` columns, both the epochs trained: the budget is taken back from the row's key (the run's
    config as asked, blank where a rule chose it)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if "epochs_trained" not in row:
            asked = json.loads(row["key"]).get("epochs")
            row["epochs_trained"], row["epochs"] = row.get("epochs", ""), _csv_value(asked)
    return rows


def _config_columns() -> list[str]:
    return [f.name for f in dataclasses.fields(TrainConfig)]


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return ":".join(map(str, value))
    return str(value)


def run_sweep(
    base: TrainConfig,
    grid: Grid,
    seeds: int,
    out: Path,
    progress: bool | None = None,
    tensorboard: str | Path | None = None,
    report: bool = False,
    hue: str | None = None,
) -> list[dict]:
    """Train every combination x seed not already in out/results.csv; return all rows. With
    `tensorboard`, each run logs its curves and hyperparameters into a subfolder of it; with
    `report`, summary.md and the plots (coloured by option `hue`) follow. `out` is owned by this
    process throughout (`output_lock`): a second sweep into it is refused at once, so two sweeps
    never mix their rows or their summaries."""
    with output_lock(out):
        check_out(out)
        rows = _train_missing(base, grid, seeds, out, progress, tensorboard)
        if report:
            write_outputs(summarize(rows, grid), grid, seeds, out, hue)
    return rows


def sweep_configs(base: TrainConfig, grid: Grid, seeds: int) -> list[TrainConfig]:
    """One config per combination and seed: `seeds` consecutive seeds from the combination's own."""
    if "seed" in grid.axes and seeds > 1:  # (seed=0,1 with 2 seeds: 0, 1, 1, 2, seed 1 twice)
        raise ConfigError(
            f"grid sweeps seed and seeds={seeds} adds seeds to each: give the seeds one way", parameter="grid"
        )
    configs = []
    for combination in grid.combinations():
        for offset in range(seeds):
            seed = combination.get("seed", base.seed) + offset
            configs.append(base.replace(**{**combination, "seed": seed}))
    return configs


def _train_missing(
    base: TrainConfig, grid: Grid, seeds: int, out: Path, progress: bool | None, tensorboard
) -> list[dict]:
    """run_sweep's work, with `out` already owned. A row joins results.csv only once its run has
    finished and the file holding it is written: a failure (a full disk, a run that raises) ends
    the sweep with the rows before it, never a row of a run that was not kept."""
    configs = sweep_configs(base, grid, seeds)
    path = out / RESULTS_FILE
    rows = read_results(path)
    done = {row["key"] for row in rows}
    todo = [config for config in configs if _row_key(config) not in done]
    in_memory = base.dataset in DATASETS  # built-in: loaded once, every run takes its split of it
    splits = load_splits(base.dataset, base.data_root) if todo and in_memory else None
    columns = ["key", *_config_columns(), *METRIC_COLUMNS]
    bar = tqdm(
        total=len(configs),
        initial=len(configs) - len(todo),
        unit="run",
        disable=None if progress is None else not progress,
        dynamic_ncols=True,
    )
    with bar:
        for config in todo:
            data = prepare(config, *splits) if in_memory else load_data(config)
            row = _train_one(config, data, grid, tensorboard)
            atomic_write_csv(path, columns, [*rows, row])  # after every run: an interruption loses one
            rows.append(row)
            bar.update()
    wanted = {_row_key(config) for config in configs}
    return [row for row in rows if row["key"] in wanted]


def _train_one(config: TrainConfig, data, grid: Grid, tensorboard) -> dict:
    """Train one run of the sweep; its results.csv row (strings: the values the run used, then its
    metrics). A run that diverges is a row too, with no metrics and stop_reason "diverged": one bold
    learning rate in a grid does not end the sweep."""
    key = _row_key(config)
    log_dir = None if tensorboard is None else Path(tensorboard) / hashlib.sha1(key.encode()).hexdigest()[:12]
    try:
        result = train(config, data, verbose=False, tensorboard=log_dir)
    except DivergenceError as error:
        tqdm.write(f"{_label(config, grid)}: {str(error).splitlines()[0]}")
        row = {"key": key, **{k: _csv_value(v) for k, v in config.to_dict().items()}}
        return {**row, **dict.fromkeys(METRIC_COLUMNS, ""), "stop_reason": "diverged"}
    metrics = result.metrics
    if log_dir is not None:
        _log_hparams(log_dir, grid, config, result.config, metrics)
    asked = {name: getattr(config, name) for name in (*grid.axes, "seed")}
    # a swept value as given (its text names the grid point); the rule's value where the grid said none
    used = result.config.to_dict() | {name: value for name, value in asked.items() if value is not None}
    if "train_size" in grid.axes and used["train_size"] is None:  # every training row: how many (the
        # learning curve's point for them; the validation rows were taken out before)
        used["train_size"] = metrics["train"]["n"]
    row = {"key": key, **{k: _csv_value(v) for k, v in used.items()}}
    row.update(
        val_accuracy=metrics["val"]["accuracy"] if "val" in metrics else "",
        test_accuracy=metrics["test"]["accuracy"],
        train_accuracy=metrics["train"]["accuracy"],
        train_loss=metrics["train"]["loss"],
        train_seconds=metrics["train_seconds"],
        epochs_trained=metrics["epochs"],
        iterations=metrics["iterations"],
        stop_reason=metrics["stop_reason"],
    )
    return {k: str(v) for k, v in row.items()}


def _label(config: TrainConfig, grid: Grid) -> str:
    """The run's swept options and seed, as `lr=10 seed=0`."""
    return " ".join(f"{name}={getattr(config, name)}" for name in (*grid.axes, "seed"))


def _log_hparams(log_dir: Path, grid: Grid, config: TrainConfig, used: TrainConfig, metrics: dict) -> None:
    """One run's swept options (the value its rule chose where the grid left one to it, as
    results.csv holds) and final metrics in TensorBoard's HParams table."""
    options = {name: getattr(config, name) for name in grid.axes} | {"seed": config.seed}
    options = {name: getattr(used, name) if value is None else value for name, value in options.items()}
    finals = {
        f"{split}_accuracy": metrics[split]["accuracy"]
        for split in ("train", "val", "test")
        if split in metrics
    }
    log_sweep_run(log_dir, options, finals | {"train_loss": metrics["train"]["loss"]})


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def _spread(numbers: list[float]) -> float:
    """The sample standard deviation of `numbers`: 0 for one, NaN where one is NaN (a run with no
    such metric; Python 3.11's statistics.stdev raises AttributeError on a NaN)."""
    if any(math.isnan(number) for number in numbers):
        return math.nan
    return statistics.stdev(numbers) if len(numbers) > 1 else 0.0


def grid_point(row: dict, grid: Grid) -> tuple:
    """The grid point of a results row: each swept option's value as given, None where the grid left
    it to its rule. The row's column holds the value the run used, the rule's there; its key (the
    run's config as asked) holds None."""
    asked = json.loads(row["key"]) if row.get("key") else {}
    return tuple(None if name in asked and asked[name] is None else row[name] for name in grid.axes)


def summarize(rows: list[dict], grid: Grid) -> list[dict]:
    """Per combination (grid point): mean and std over seeds of each metric, best validation accuracy
    first. An entry's "point" holds the grid's values (None: the rule's), "options" how they read
    ("none (rule: 1.76)" for the rule's) and "used" the values its runs used, in order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(grid_point(row, grid), []).append(row)
    summary = []
    for point, members in groups.items():
        used = {name: sort_values(list({m[name] for m in members} - {""})) for name in grid.axes}
        entry = {
            "point": dict(zip(grid.axes, point, strict=True)),
            "options": {
                name: by_rule(used[name], name) if value is None else value
                for name, value in zip(grid.axes, point, strict=True)
            },
            "used": used,
            "runs": len(members),
        }
        for metric in ("val_accuracy", "test_accuracy", "train_accuracy", "train_loss", "train_seconds"):
            numbers = [_number(m[metric]) for m in members]
            entry[metric] = statistics.fmean(numbers)
            entry[f"{metric}_std"] = _spread(numbers)
        entry["converged"] = sum(m.get("stop_reason") == "converged" for m in members)
        entry["diverged"] = sum(m.get("stop_reason") == "diverged" for m in members)
        summary.append(entry)
    key = ranking(summary)
    return sorted(summary, key=lambda e: (math.isnan(e[key]), -e[key] if not math.isnan(e[key]) else 0.0))


def ranking(summary: list[dict]) -> str:
    """The metric a summary is sorted by: validation accuracy where the runs held some out, else
    train accuracy (never test)."""
    return "val_accuracy" if not all(math.isnan(e["val_accuracy"]) for e in summary) else "train_accuracy"


def summary_markdown(summary: list[dict], grid: Grid, seeds: int) -> str:
    names = list(grid.axes)
    by = (
        "validation accuracy" if ranking(summary) == "val_accuracy" else "train accuracy (no validation rows)"
    )
    order = f"sorted by {by} (the selection never looks at test)"
    if all(entry["diverged"] == entry["runs"] for entry in summary):
        order = "every run diverged: nothing to sort or select"
    lines = [
        f"Sweep over {', '.join(names)}: {len(summary)} combinations x {seeds} seed(s); mean ± std over "
        f"seeds, {order}; a run that diverged has no metrics.",
        "",
        "| "
        + " | ".join(
            [*names, "val accuracy", "test accuracy", "train accuracy", "train loss", "train s", "converged"]
        )
        + " |",
        "|" + " --- |" * (len(names) + 6),
    ]
    for entry in summary:
        cells = [entry["options"][n] for n in names]
        for metric, digits in (
            ("val_accuracy", 4),
            ("test_accuracy", 4),
            ("train_accuracy", 4),
            ("train_loss", 4),
            ("train_seconds", 2),
        ):
            mean, spread = entry[metric], entry[metric + "_std"]
            cells.append("–" if math.isnan(mean) else f"{mean:.{digits}f} ± {spread:.{digits}f}")
        diverged = f", {entry['diverged']} diverged" if entry.get("diverged") else ""
        cells.append(f"{entry['converged']}/{entry['runs']}{diverged}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def best_config(base: TrainConfig, summary: list[dict], grid: Grid) -> TrainConfig:
    """The base config with the options of the best combination (by validation accuracy)."""
    best = summary[0]["point"]
    return base.replace(
        **{name: None if best[name] is None else parse_value(name, best[name]) for name in grid.axes}
    )


def write_outputs(summary: list[dict], grid: Grid, seeds: int, out: Path, hue: str | None) -> None:
    atomic_write_text(out / "summary.md", summary_markdown(summary, grid, seeds))
    plot_sweep(summary, grid.axes, out, hue)
