"""Sweeps: grid parsing and its errors, one results row per run, resuming, summary statistics,
plots, selection by validation accuracy, and reproducibility."""

import csv
import json
import math
import re

import pytest

from torchlogreg import ConfigError, TrainConfig, preset
from torchlogreg.apps.cli import main
from torchlogreg.training.sweep import Grid, parse_grid, parse_value, read_results, run_sweep, summarize


def test_grid_values_take_the_options_types(tmp_path):
    grid = parse_grid(["batch-size=32,100", "lr=0.001,1e-2", "schedule=none,cosine", "train_size=500,none"])
    assert grid.axes == {
        "batch_size": (32, 100),
        "lr": (0.001, 0.01),
        "schedule": ("none", "cosine"),
        "train_size": (500, None),
    }
    assert len(grid.combinations()) == 16
    path = tmp_path / "grid.toml"
    path.write_text("[grid]\nweight_decay = [0, 1e-4]\nnesterov = [true, false]\n")
    assert parse_grid([], path).axes == {"weight_decay": (0, 0.0001), "nesterov": (True, False)}


@pytest.mark.parametrize(
    "option,fragment",
    [
        ("batch_size=32,abc", "grid batch_size: 'abc' is not a valid int"),
        ("batch_size=3.5", "not a valid int"),
        ("learning_rate=0.1", "unknown option 'learning_rate'"),
        ("weight_decy=0.1", "did you mean 'weight_decay'?"),
        ("lr", "expected NAME=VALUE"),
        ("dataset=mnist,kmnist", "cannot sweep dataset"),
        ("lr=0.1,1,1e-1", "grid lr gives 0.1 twice; give each value once"),
    ],
)
def test_bad_grids_name_the_option(option, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("?", r"\?").replace("(", r"\(")) as error:
        parse_grid([option])
    assert error.value.parameter == "grid" and "--" not in str(error.value)


def test_grid_file_errors_name_the_parameter(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text("lr = [0.1]\n")
    with pytest.raises(ConfigError, match=r"^grid_file .*grid.toml: expected a \[grid\] table") as error:
        parse_grid([], path)
    assert error.value.parameter == "grid_file"
    with pytest.raises(ConfigError, match="^give at least one grid=NAME=VALUES") as error:
        parse_grid([])
    assert error.value.parameter == "grid"


@pytest.mark.parametrize(
    "table, fragment",
    [
        ("lr = []", "lr has no values; give at least one"),
        ("batch_size = [true]", "batch_size: True is not a valid int"),  # (a bool is an int to Python)
        ("batch_size = [32, 32.0]", "batch_size gives 32 twice"),
    ],
)
def test_grid_file_values_are_checked_and_the_file_named(tmp_path, table, fragment):
    """An empty list had crashed the plots with a traceback, after writing a summary of no rows."""
    path = tmp_path / "grid.toml"
    path.write_text(f"[grid]\n{table}\n")
    with pytest.raises(ConfigError, match=rf"^grid_file .*grid.toml: {re.escape(fragment)}") as error:
        parse_grid([], path)
    assert error.value.parameter == "grid_file"


def test_a_swept_seed_with_several_seeds_is_refused(tmp_path, capsys):
    """seed=0,1 with --seeds 2 had trained seeds 0, 1, 1, 2 and summed seed 1's two runs as one point."""
    argv = ["sweep", "--grid", "seed=0,1", "--seeds", "2", "--out", str(tmp_path / "s")]
    assert main(argv) == 2
    said = capsys.readouterr().err.strip()
    assert said.endswith("--grid sweeps seed and --seeds 2 adds seeds to each: give the seeds one way")
    assert not (tmp_path / "s").exists()


def test_a_bad_grid_is_echoed_as_given(capsys):
    """The value and the example had been rewritten into flags: "--grid '--lr ': ..., e.g. --lr 0.01"."""
    assert main(["sweep", "--grid", "lr="]) == 2
    assert "--grid 'lr=': expected NAME=VALUE[,VALUE...], e.g. 'lr=0.01,0.1'" in capsys.readouterr().err
    from torchlogreg.apps.cli_common import flags_in

    # a value echoed in either of repr's quotes stays as given; the run's lr= is prose's apostrophe
    said = """grid "lr='a'": give lr=0.1 (lr); the run's lr=2, not 'lr=3'"""
    assert flags_in(said) == """grid "lr='a'": give --lr 0.1 (--lr); the run's --lr 2, not 'lr=3'"""


def test_parse_value_for_optional_fields():
    assert parse_value("patience", "none") is None and parse_value("patience", "3") == 3
    assert parse_value("momentum", "0.5") == 0.5


def _tiny_sweep(tmp_path, data_root, seeds=2):
    base = TrainConfig(
        data_root=str(data_root), device="cpu", train_size=600, val_size=300, epochs=1, batch_size=100
    )
    grid = Grid({"lr": (0.05, 0.5), "weight_decay": (0.0, 0.01)})
    return base, grid, run_sweep(base, grid, seeds, tmp_path, progress=False)


def test_one_row_per_run_and_resume_skips_finished_runs(tmp_path, data_root, monkeypatch):
    base, grid, rows = _tiny_sweep(tmp_path, data_root)
    assert len(rows) == 4 * 2 == len(read_results(tmp_path / "results.csv"))
    header = next(csv.reader((tmp_path / "results.csv").open()))
    assert {
        "lr",
        "weight_decay",
        "seed",
        "batch_size",
        "val_accuracy",
        "test_accuracy",
        "train_loss",
        "train_seconds",
        "epochs",
        "epochs_trained",
    } <= set(header)
    assert len(header) == len(set(header))  # (the budget and the epochs trained were both `epochs`)
    assert {(row["epochs"], row["epochs_trained"]) for row in rows} == {("1", "1.0")}
    # interrupted after 3 runs: keep those rows only, then run the same sweep again
    kept = read_results(tmp_path / "results.csv")[:3]
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
    import torchlogreg.training.sweep

    trained = []
    real_train = torchlogreg.training.sweep.train
    monkeypatch.setattr(
        torchlogreg.training.sweep, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k)
    )
    again = run_sweep(base, grid, 2, tmp_path, progress=False)
    assert len(again) == 8 and len(trained) == 5  # the 3 finished runs were not trained again
    assert again[:3] == kept


def test_sweeps_are_reproducible(tmp_path, data_root):
    first = _tiny_sweep(tmp_path / "a", data_root, seeds=1)[2]
    second = _tiny_sweep(tmp_path / "b", data_root, seeds=1)[2]
    assert [r["test_accuracy"] for r in first] == [r["test_accuracy"] for r in second]


def test_summary_statistics_on_a_tiny_grid():
    grid = Grid({"lr": (0.1, 0.2)})
    rows = [
        {
            "lr": "0.1",
            "val_accuracy": "0.5",
            "test_accuracy": "0.4",
            "train_accuracy": "0.6",
            "train_loss": "1",
            "train_seconds": "1",
        },
        {
            "lr": "0.1",
            "val_accuracy": "0.7",
            "test_accuracy": "0.6",
            "train_accuracy": "0.8",
            "train_loss": "2",
            "train_seconds": "3",
        },
        {
            "lr": "0.2",
            "val_accuracy": "0.9",
            "test_accuracy": "0.1",
            "train_accuracy": "0.9",
            "train_loss": "1",
            "train_seconds": "1",
        },
    ]
    summary = summarize(rows, grid)
    assert summary[0]["options"] == {"lr": "0.2"}  # best by validation, although its test is worst
    low = summary[1]
    assert low["val_accuracy"] == pytest.approx(0.6) and low["val_accuracy_std"] == pytest.approx(
        math.sqrt(0.02)
    )
    assert low["runs"] == 2 and summary[0]["val_accuracy_std"] == 0.0


def test_cli_sweep_writes_results_summary_plots_and_retrains(tmp_path, data_root, capsys):
    out = tmp_path / "sweep"
    grid = ["--grid", "train_size=300,1000", "--grid", "weight_decay=0,0.01", "--hue", "weight_decay"]
    chosen = ["--select", "val", "--retrain", "--quiet"]
    options = ["--epochs", "1", "--val-size", "500", "--out", str(out)]
    code = main(["sweep", "--data-root", str(data_root), "--device", "cpu", *options, *grid, *chosen])
    assert code == 0
    printed = capsys.readouterr().out
    assert (
        "best by validation accuracy: train_size=" in printed
        and "retrained on the full training set" in printed
    )
    assert len(read_results(out / "results.csv")) == 4
    summary = (out / "summary.md").read_text()
    assert summary.count("\n| ") == 6 and "±" in summary  # header, rule, 4 combinations
    for name in ("accuracy_vs_train_size.png", "accuracy_vs_weight_decay.png", "learning_curve.png"):
        assert (out / name).stat().st_size > 10_000
    assert (out / "best" / "model.safetensors").exists()


def test_cli_sweep_rejects_a_bad_grid(capsys):
    assert main(["sweep", "--grid", "lr=fast"]) == 2
    assert "--grid lr: 'fast' is not a valid float" in capsys.readouterr().err


def test_sweep_logs_each_run_for_tensorboards_hparams_table(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = preset("default", data_root=str(data_root), device="cpu", train_size=500, val_size=500, epochs=1)
    grid = parse_grid(["lr=0.1,0.5"])
    run_sweep(base, grid, 1, tmp_path / "sweep", progress=False, tensorboard=tmp_path / "tb")
    runs = sorted((tmp_path / "tb").iterdir())
    assert len(runs) == 2
    for folder in runs:
        events = EventAccumulator(str(folder)).Reload()
        assert events.PluginTagToContent("hparams")  # TensorBoard's HParams plugin data
        assert events.Scalars("val/accuracy")  # the run's curve beside its hparams row


def test_a_grid_point_left_to_the_rule_logs_the_rules_value_to_hparams(tmp_path, data_root, monkeypatch):
    """TensorBoard's HParams table gets the value the run used where the grid said none (it got
    None), as results.csv holds it."""
    import torchlogreg.training.sweep as sweep

    logged = []
    monkeypatch.setattr(sweep, "log_sweep_run", lambda folder, options, finals: logged.append(options))
    base = preset("default", data_root=str(data_root), device="cpu", train_size=300, val_size=0)
    rows = run_sweep(base, parse_grid(["lr=none,0.5"]), 1, tmp_path / "s", progress=False,
                     tensorboard=tmp_path / "tb")  # fmt: skip
    assert sorted(options["lr"] for options in logged) == sorted(float(row["lr"]) for row in rows)
    assert None not in [options["lr"] for options in logged]


def test_a_second_sweep_into_the_same_folder_is_refused_and_touches_nothing(tmp_path, data_root):
    from torchlogreg.base.exceptions import OutputError
    from torchlogreg.base.storage import output_lock

    out = tmp_path / "sweep"
    base = TrainConfig(data_root=str(data_root), device="cpu", train_size=300, val_size=200, epochs=1)
    refused = pytest.raises(OutputError, match="being written by another torchlogreg process")
    with output_lock(out), refused:  # another sweep (or train) owns the folder
        run_sweep(base, Grid({"lr": (0.1,)}), 1, out, progress=False)
    assert not (out / "results.csv").exists()


def _full_disk_at(monkeypatch, name: str, nth: int) -> None:
    """The disk fills up while the `nth` file called `name` is written (ENOSPC from fsync)."""
    import errno
    import os

    import torchlogreg.base.storage

    real_fsync, seen = os.fsync, []

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[-1].startswith(f".{name}."):
            seen.append(fd)
            if len(seen) == nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(torchlogreg.base.storage.os, "fsync", fsync)


SWEEP_ARGS = ["sweep", "--device", "cpu", "--epochs", "1", "--train-size", "300", "--val-size", "200"]


def test_a_full_disk_keeps_only_the_runs_written(tmp_path, data_root, monkeypatch, capsys):
    out = tmp_path / "sweep"
    _full_disk_at(monkeypatch, "results.csv", 2)
    grid = ["--grid", "lr=0.05,0.5", "--seeds", "2", "--out", str(out), "--quiet"]
    assert main([*SWEEP_ARGS, "--data-root", str(data_root), *grid]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the disk is full" in err and "results.csv" in err
    assert len(read_results(out / "results.csv")) == 1  # the second run's row never reached the disk
    assert not (out / "summary.md").exists() and not list(out.glob("*.png"))
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_failed_run_ends_the_sweep_with_the_rows_before_it(tmp_path, data_root, monkeypatch):
    import torchlogreg.training.sweep
    from torchlogreg.base.exceptions import OutputError

    real_train, trained = torchlogreg.training.sweep.train, []

    def train(config, *args, **kwargs):
        trained.append(config.lr)
        if len(trained) == 2:
            raise OutputError("cannot write the run's TensorBoard log: the disk is full")
        return real_train(config, *args, **kwargs)

    monkeypatch.setattr(torchlogreg.training.sweep, "train", train)
    base = TrainConfig(data_root=str(data_root), device="cpu", train_size=300, val_size=200, epochs=1)
    with pytest.raises(OutputError):
        run_sweep(base, Grid({"lr": (0.05, 0.5, 0.1)}), 1, tmp_path, progress=False, report=True)
    assert [row["lr"] for row in read_results(tmp_path / "results.csv")] == ["0.05"]
    assert not (tmp_path / "summary.md").exists()


def test_the_plots_say_what_each_point_is():
    from torchlogreg.training.sweep_figures import _at_each

    def entry(lr, decay, val, runs=3):
        return {
            "options": {"lr": lr, "weight_decay": decay},
            "runs": runs,
            "val_accuracy": val,
            "test_accuracy": val - 0.01,
            "train_accuracy": val + 0.01,
        }

    entries = [entry("0.1", "0", 0.90), entry("0.1", "0.01", 0.92)]
    entries += [entry("1", "0", 0.80), entry("1", "0.01", 0.85)]
    points, meaning = _at_each(entries, "lr", ["0.1", "1"])
    assert [p["val_accuracy"] for p in points] == [0.92, 0.85]  # the best, not the mean (0.91, 0.825)
    assert meaning == "mean over 3 seeds; the best of 2 settings of the other options, by val accuracy"
    no_val = [{**e, "val_accuracy": math.nan, "runs": 1} for e in entries]
    points, meaning = _at_each(no_val, "lr", ["0.1", "1"])
    assert points[0]["test_accuracy"] == pytest.approx(0.90) and meaning.startswith("one run, then the mean")
    assert _at_each(entries[:1], "lr", ["0.1"])[1] == "mean over 3 seeds"


def test_a_diverging_point_is_a_row_and_the_sweep_goes_on(tmp_path, data_root, capsys):
    """The tutorials' learning-rate experiment: lr 1e6 diverges; its row says so, the other points
    train, the summary ranks it last with no metrics, and each row records the values the run used
    (the settled batch size and epochs, not blanks)."""
    base = TrainConfig(
        data_root=str(data_root), device="cpu", train_size=600, val_size=100, epochs=1, optimizer="sgd"
    )
    rows = run_sweep(base, Grid({"lr": (0.1, 1e6)}), 1, tmp_path, progress=False, report=True)
    assert [(row["lr"], row["stop_reason"]) for row in rows] == [
        ("0.1", "step limit"),
        ("1000000.0", "diverged"),
    ]
    assert rows[1]["test_accuracy"] == "" and float(rows[0]["test_accuracy"]) > 0.7
    assert rows[0]["batch_size"] == "256" and rows[0]["optimizer"] == "sgd"
    assert "lr=1000000.0 seed=0: training diverged" in capsys.readouterr().out
    summary = (tmp_path / "summary.md").read_text()
    assert "sorted by validation accuracy" in summary
    lines = [line for line in summary.splitlines() if line.startswith("| 1")]
    assert lines[-1].startswith("| 1000000.0 | – |") and "0/1, 1 diverged" in lines[-1]


def test_cli_sweep_notes_options_its_optimizer_does_not_use(tmp_path, data_root, capsys):
    """A batch size swept for lbfgs gave the same runs (and the lbfgs runs of a sweep of both
    optimizers); on 300 rows the rules choose lbfgs for every run, and --momentum went unused: each
    gets a note (before, the sweep said nothing)."""
    common = ["sweep", "--data-root", str(data_root), "--device", "cpu", "--train-size", "300", "--quiet"]
    argv = [*common, "--optimizer", "lbfgs", "--grid", "batch_size=16,64", "--out", str(tmp_path / "a")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: --grid batch_size: every run used lbfgs, and lbfgs takes every row" in err
    rows = read_results(tmp_path / "a" / "results.csv")
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]
    argv = [*common, "--momentum", "0.5", "--grid", "weight_decay=0.01,0.1", "--out", str(tmp_path / "b")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: --momentum was not used: the rules chose lbfgs for every run, and lbfgs has no" in err
    assert "--grid" not in err
    mixed = ["--grid", "optimizer=sgd,lbfgs", "--grid", "batch_size=16,64"]
    argv = [*common, *mixed, "--out", str(tmp_path / "c")]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "note: --grid batch_size: lbfgs takes every row: its values gave the lbfgs runs alike" in err
    assert "sgd runs" not in err


def test_cli_sweep_with_a_diverging_point_prints_its_summary(tmp_path, data_root, capsys):
    """A diverged row has no train_seconds: the closing line sums the others (it raised ValueError)."""
    argv = ["sweep", "--data-root", str(data_root), "--device", "cpu", "--train-size", "600", "--epochs",
            "1", "--optimizer", "sgd", "--grid", "lr=0.1,1e6", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    assert "2 runs trained (" in capsys.readouterr().out
    assert main(argv) == 0  # again: nothing to train, and it says so
    assert "0 runs trained (0.0 s of training), 2 kept from before" in capsys.readouterr().out


def test_a_second_grid_in_a_sweeps_folder_says_the_first_ones_rows_stay(tmp_path, data_root, capsys):
    """Its summary.md and plots are its own; the other grid's rows, kept in results.csv, had left them
    with no word."""
    argv = ["sweep", "--data-root", str(data_root), "--device", "cpu", "--train-size", "600", "--epochs",
            "1", "--optimizer", "sgd", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main([*argv, "--grid", "lr=0.1"]) == 0
    assert "also holds" not in capsys.readouterr().err
    assert main([*argv, "--grid", "lr=0.05"]) == 0
    said = capsys.readouterr()
    assert "1 run trained (" in said.out
    assert "results.csv also holds 1 run of another grid or seeds; summary.md and the plots are" in said.err
    assert len(read_results(tmp_path / "results.csv")) == 2
    assert "| 0.05 |" in (tmp_path / "summary.md").read_text()


def test_select_refuses_when_every_run_diverged(tmp_path, data_root, capsys):
    """It had named a diverged point "best" (val nan) and retrained it, which diverged again."""
    argv = ["sweep", "--data-root", str(data_root), "--device", "cpu", "--train-size", "600", "--val-size",
            "100", "--epochs", "1", "--optimizer", "sgd", "--grid", "lr=1e6,1e7", "--select", "val",
            "--retrain", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 1
    said = capsys.readouterr()
    assert "every run of the sweep diverged (2 runs): nothing to select or retrain" in said.err
    assert "best" not in said.out and not (tmp_path / "best").exists()
    assert "every run diverged: nothing to sort or select" in (tmp_path / "summary.md").read_text()


def test_the_learning_curve_places_all_the_rows_at_their_count(tmp_path, data_root):
    """train_size=none (every training row) had no place on the curve's size axis and was left out;
    its count is the training rows', the validation rows taken out before."""
    base = TrainConfig(
        data_root=str(data_root), device="cpu", epochs=1, optimizer="sgd", batch_size=500, val_size=5000
    )
    rows = run_sweep(base, Grid({"train_size": (600, None)}), 1, tmp_path, progress=False, report=True)
    assert [row["train_size"] for row in rows] == ["600", "55000"]
    summary = summarize(rows, Grid({"train_size": (600, None)}))
    assert {entry["options"]["train_size"] for entry in summary} == {"600", "none (all: 55000)"}
    assert (tmp_path / "learning_curve.png").exists()


def test_a_plot_whose_runs_all_diverged_draws_no_empty_legend(tmp_path, data_root):
    """lr 1e6 diverges at both momenta: the momentum plot's lr=1e6 points are absent, and matplotlib
    warned of a legend with no labelled artists (in the user's sweep output)."""
    import warnings

    base = TrainConfig(data_root=str(data_root), device="cpu", train_size=600, epochs=1, optimizer="sgd")
    grid = Grid({"lr": (1e6,), "momentum": (0.0, 0.9)})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        rows = run_sweep(base, grid, 1, tmp_path, progress=False, report=True)
    assert [row["stop_reason"] for row in rows] == ["diverged", "diverged"]


def test_results_written_with_two_epochs_columns_read_the_budget_from_the_key(tmp_path):
    """A results.csv from before `epochs_trained` had two `epochs` columns, both the epochs trained:
    read back, the budget comes from the run's key, and a sweep rewrites the file with both."""
    key = json.dumps({"epochs": 8, "lr": 0.1}, sort_keys=True)
    with (tmp_path / "results.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["key", "lr", "epochs", "test_accuracy", "epochs"],
                                      [key, "0.1", "3.5", "0.9", "3.5"]])  # fmt: skip
    (row,) = read_results(tmp_path / "results.csv")
    assert (row["epochs"], row["epochs_trained"], row["test_accuracy"]) == ("8", "3.5", "0.9")


def _rows(grid_values: dict, seeds: int, **metrics) -> list[dict]:
    """results.csv rows for every combination of `grid_values` x `seeds` seeds, with `metrics`. An
    option the grid left to its rule (None) is None in the key and the rule's value in its column:
    1.5, 1.6, ... by seed."""
    rows = []
    for values in Grid(grid_values).combinations():
        for seed in range(seeds):
            key = json.dumps({**values, "seed": seed}, sort_keys=True)
            used = {name: str(1.5 + seed / 10 if v is None else v) for name, v in values.items()}
            rows.append({"key": key, **used, "seed": str(seed), "stop_reason": "", **metrics})
    return rows


def test_a_sweep_without_validation_rows_or_with_a_diverged_seed_summarizes():
    """A grid point's std over seeds where a metric is missing (no validation rows, or a seed that
    diverged) is NaN: statistics.stdev raised AttributeError on NaN (Python 3.11), ending the
    sweep's first example, `--train-size 600 --grid lr=0.05,0.5 --seeds 2`, before its summary."""
    metrics = {"test_accuracy": "0.8", "train_accuracy": "0.9", "train_loss": "0.3", "train_seconds": "1"}
    rows = _rows({"lr": (0.05, 0.5)}, 2, val_accuracy="", **metrics)
    rows[-1].update(dict.fromkeys(metrics, ""), stop_reason="diverged")
    summary = summarize(rows, Grid({"lr": (0.05, 0.5)}))
    assert [entry["options"]["lr"] for entry in summary] == ["0.05", "0.5"]  # by train accuracy
    assert math.isnan(summary[0]["val_accuracy_std"]) and summary[0]["test_accuracy_std"] == 0.0
    assert math.isnan(summary[1]["test_accuracy"]) and math.isnan(summary[1]["test_accuracy_std"])


def _texts_outside(figure) -> list[str]:
    """The titles, axis labels and drawn tick labels of `figure` that are not wholly inside it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer, box = canvas.get_renderer(), figure.bbox.padded(0.5)
    texts = []
    for ax in figure.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis, (low, high) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            shown = zip(axis.get_majorticklocs(), axis.get_majorticklabels(), strict=True)
            texts += [label for at, label in shown if min(low, high) <= at <= max(low, high)]

    def inside(text) -> bool:
        extent = text.get_window_extent(renderer)
        return box.contains(extent.x0, extent.y0) and box.contains(extent.x1, extent.y1)

    return [text.get_text() for text in texts if text.get_text() and not inside(text)]


def test_every_label_of_the_sweep_plots_fits_in_its_figure(tmp_path, monkeypatch):
    """The y label said what a point is on one line, longer than the figure is tall: it read
    "ccuracy (mean over 2 seeds; ... by val accura". Four options and 2 or 3 seeds give the longest."""
    from torchlogreg.training import sweep_figures

    figures = []
    monkeypatch.setattr(sweep_figures, "_save", lambda figure, path: figures.append(figure))
    grid = Grid(
        {
            "train_size": (300, 3000),
            "lr": (0.001, 0.1, None),
            "batch_size": (32, 256),
            "weight_decay": (0, 0.01),
        }
    )
    metrics = {"val_accuracy": "0.8", "test_accuracy": "0.8", "train_accuracy": "0.9", "train_loss": "0.3"}
    rows = _rows(grid.axes, 3, train_seconds="1", **metrics)[:-1]  # (a combination one seed short)
    sweep_figures.plot_sweep(summarize(rows, grid), grid.axes, tmp_path, hue="weight_decay")
    assert len(figures) == 5
    assert "val accuracy" in figures[0].axes[0].get_ylabel()
    for figure in figures:
        assert _texts_outside(figure) == []


def test_a_grid_point_left_to_the_rule_is_one_point_that_shows_the_rules_values():
    """lr=none,0.05: each row holds the lr its run used (the rule's, which differs by seed), and
    the summary still has one entry per grid point, reading "none (rule: ...)"; choosing it leaves lr
    to the rule again."""
    from torchlogreg.training.sweep import best_config

    grid = Grid({"lr": (None, 0.05)})
    metrics = {"test_accuracy": "0.8", "train_accuracy": "0.9", "train_loss": "0.3", "train_seconds": "1"}
    rows = _rows(grid.axes, 2, val_accuracy="0.8", **metrics)
    rows[0]["val_accuracy"] = rows[1]["val_accuracy"] = "0.9"
    summary = summarize(rows, grid)
    assert [(e["options"]["lr"], e["runs"]) for e in summary] == [("none (rule: 1.5 to 1.6)", 2), ("0.05", 2)]
    assert summary[0]["val_accuracy"] == pytest.approx(0.9)
    assert best_config(TrainConfig(lr=0.3), summary, grid).lr is None


def test_cli_sweep_rows_hold_the_rules_value_and_resume(tmp_path, data_root, capsys, monkeypatch):
    """`--grid lr=none,0.05` left lr blank in results.csv and summary.md and printed "best ...: lr=,"
    while the runs used the rule's value: the row holds that value, the key (the run's identity,
    which resuming matches) still None."""
    argv = ["sweep", "--data-root", str(data_root), "--device", "cpu", "--train-size", "600", "--val-size",
            "100", "--optimizer", "sgd", "--epochs", "1", "--grid", "lr=none,0.05", "--seeds", "2",
            "--select", "val", "--quiet", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    best = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("best"))
    assert "lr=none (rule: " in best or "lr=0.05 " in best
    rows = read_results(tmp_path / "results.csv")
    by_rule = [row for row in rows if json.loads(row["key"])["lr"] is None]
    assert len(by_rule) == 2 and all(float(row["lr"]) > 0 for row in by_rule)
    assert "| none (rule: " in (tmp_path / "summary.md").read_text()
    import torchlogreg.training.sweep

    monkeypatch.setattr(torchlogreg.training.sweep, "train", lambda *a, **k: pytest.fail("trained again"))
    assert main(argv) == 0 and read_results(tmp_path / "results.csv") == rows


def test_a_run_is_not_written_into_a_sweeps_folder(tmp_path, capsys):
    """It had been: the sweep then refused to go on in a folder holding a run, its results mixed in."""
    (tmp_path / "results.csv").write_text("key\n")
    assert main(["train", "--train-size", "600", "--out", str(tmp_path)]) == 2
    said = capsys.readouterr().err.strip()
    assert said.endswith(f"--out {tmp_path} holds a sweep (results.csv); give --out ANOTHER_PATH for the run")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]
    (tmp_path / "checkpoint.json").write_text("{}")  # (left by an older version): no advice to resume
    assert main(["train", "--train-size", "600", "--out", str(tmp_path)]) == 2
    assert "Continue with" not in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("holds a sweep; a run is not written among its files")
