"""The command line: help, train/evaluate/predict end to end on real MNIST, and errors as one
line with a non-zero exit."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from torchlogreg.apps.cli import build_parser, config_from_args, in_flags, main
from torchlogreg.base.exceptions import CheckpointError, ConfigError, DivergenceError


def run_cli(*args):
    """Run the installed CLI as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "torchlogreg", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"]])
def test_help_is_complete(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    if command == ["train"]:
        for flag in (
            "--dataset",
            "--data-root",
            "--out",
            "--preset",
            "--optimizer",
            "--lr",
            "--batch-size",
            "--epochs",
            "--iters",
            "--weight-decay",
            "--l1",
            "--momentum",
            "--schedule",
            "--val-size",
            "--train-size",
            "--classes",
            "--positive",
            "--threshold",
            "--eval-every",
            "--patience",
            "--seed",
            "--device",
            "--quiet",
        ):
            assert flag in text


def test_train_evaluate_predict(tmp_path, data_root, mnist_splits):
    out = tmp_path / "run"
    trained = run_cli("train", "--data-root", data_root, "--out", out, "--epochs", "1", "--device", "cpu")
    assert trained.returncode == 0, trained.stderr
    assert "iteration     235  mean batch loss" in trained.stdout and "test accuracy 0.9" in trained.stdout
    assert (
        "not converged (tol 0.0001 on the objective's largest gradient entry): stopped at the step "
        "limit" in trained.stdout
    )
    assert "To train longer: --epochs 2" in trained.stdout
    metrics = json.loads((out / "metrics.json").read_text())

    evaluated = run_cli("evaluate", out, "--data-root", data_root, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["accuracy"] == metrics["test"]["accuracy"]
    assert result["loss"] == pytest.approx(metrics["test"]["loss"], rel=1e-6)

    digit = 255 - mnist_splits[1].images[0].numpy()
    Image.fromarray(digit).resize((90, 90)).save(tmp_path / "seven.png")
    np.save(tmp_path / "digits.npy", mnist_splits[1].images[:3].numpy())
    predicted = run_cli(
        "predict", out, tmp_path / "seven.png", tmp_path / "digits.npy", "--json", "--top-k", "2"
    )
    assert predicted.returncode == 0, predicted.stderr
    rows = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [row["label"] for row in rows] == ["7", "7", "2", "1"]
    assert rows[1]["file"].endswith("digits.npy[0]") and len(rows[0]["top_k"]) == 2
    assert rows[0]["top_k"][0]["label"] == "7" and 0.5 < rows[0]["probability"] <= 1


def test_binary_run_from_the_command_line(tmp_path, data_root):
    out = tmp_path / "binary"
    trained = run_cli("train", "--data-root", data_root, "--out", out, "--classes", "3,8", "--quiet")
    assert trained.returncode == 0, trained.stderr
    assert json.loads((out / "model.json").read_text())["binary"] is True
    assert json.loads((out / "metrics.json").read_text())["test"]["accuracy"] >= 0.95
    # a binary run's threshold, changed after training: evaluate and predict take --threshold
    scores = {}
    for threshold in ("0.01", "0.99"):
        done = run_cli("evaluate", out, "--data-root", data_root, "--json", "--threshold", threshold)
        assert done.returncode == 0, done.stderr
        scores[threshold] = json.loads(done.stdout)["accuracy"]
    assert scores["0.01"] != scores["0.99"]
    digits = tmp_path / "digits.npy"
    np.save(digits, np.zeros((3, 28, 28), np.uint8))
    low, high = (run_cli("predict", out, digits, "--json", "--threshold", t) for t in ("1e-6", "0.999999"))
    assert {json.loads(line)["label"] for line in low.stdout.splitlines()} == {"8"}
    assert {json.loads(line)["label"] for line in high.stdout.splitlines()} == {"3"}
    # a line whose label is not the likelier class says why (it had read "8 (0.425)   top: 3 0.575, ...")
    for threshold in ("1e-6", "0.999999"):
        for line in run_cli("predict", out, digits, "--threshold", threshold).stdout.splitlines():
            label, top = line.split(": ")[1].split()[0], line.split("top: ")[1].split()[0]
            assert line.endswith(f"(8 where P(8) > threshold {float(threshold):g})") == (label != top), line


@pytest.mark.parametrize(
    "args,fragment,code",
    [
        (["train", "--lr", "-1"], "error: --lr must be a number > 0, got -1.0", 2),
        (["train", "--optimizer", "adamw"], "did you mean 'adam'?", 2),
        (["train", "--dataset", "mnits"], "did you mean 'mnist'?", 2),
        (["train", "--preset", "tutorail"], "did you mean 'tutorial'?", 2),
        (["evaluate", "no/such/run"], "no/such/run is not a folder", 1),
        (["predict", "no/such/run", "x.png", "--threshold", "2"], "no/such/run is not a folder", 1),
        (["train", "--optimizer", "LBFGS"], "did you mean 'lbfgs'?", 2),
    ],
)
def test_errors_are_one_line_and_non_zero(args, fragment, code, capsys):
    assert main(args) == code
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_lr_help_states_the_step_training_takes_on_mnist(mnist_data, capsys):
    """--lr's help quotes sgd's step on MNIST, at the default batch and at batch 1: the values the
    rule really gives there."""
    from torchlogreg import preset
    from torchlogreg.data.rules import FeatureSample, settle

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    sample = FeatureSample(mnist_data.train.images)
    settled = settle(preset("default", device="cpu"), mnist_data, sample)
    assert settled.optimizer == "sgd" and f"{settled.lr:.1f} on MNIST at batch 256" in text
    one = settle(preset("default", device="cpu", batch_size=1), mnist_data, sample)
    assert f"{one.lr:.2g} at batch 1" in text


@pytest.mark.parametrize(
    "error, shown",
    [
        (ConfigError("lr must be > 0; batch_size must be"), "--lr must be > 0; --batch-size must be"),
        (
            ConfigError("out runs/out holds a run; give out=OTHER, or overwrite=True", parameter="out"),
            "--out runs/out holds a run; give --out OTHER, or --overwrite",
        ),
        (
            ConfigError("out a b holds a run", parameter="out", resume_dir="a b"),
            "--out a b holds a run. Continue with: torchlogreg train --resume 'a b'",
        ),
        (ConfigError("x; resume=True would repeat these"), "x; --resume RUN_DIR would repeat these"),
        (ConfigError("out_path out is taken", parameter="out_path"), "--out out is taken"),
        (DivergenceError("the loss became nan; lower the learning rate (lr)"), "the learning rate (--lr)"),
        (CheckpointError("sweeps/a/lr=0.1_seed=1/model.json: damaged"), "sweeps/a/lr=0.1_seed=1/model.json"),
        (CheckpointError("lr: a folder named like an option"), "lr: a folder named like an option"),
    ],
)
def test_errors_name_flags_where_the_library_names_parameters(error, shown):
    """Library messages name parameters (lr, out=..., overwrite=True); the CLI shows the flags, and
    leaves paths that merely contain such words alone."""
    assert shown in in_flags(error)


def test_missing_data_is_one_clear_line(tmp_path):
    result = run_cli("train", "--data-root", tmp_path, "--out", tmp_path / "run", "--quiet", "--no-download")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "train-images-idx3-ubyte" in result.stderr and str(tmp_path / "MNIST" / "raw") in result.stderr
    assert "(download disabled)" in result.stderr  # --no-download reaches the loader: no download tried
    assert not (tmp_path / "run").exists()  # the run folder made for it is gone again


def test_debug_shows_the_traceback(capsys):
    assert main(["--debug", "evaluate", "no/such/run"]) == 1
    assert "Traceback" in capsys.readouterr().err


# --- every command on an on-disk dataset and on images of another size -------------------------
def _disk_run(tmp_path, side: int):
    """A run trained from an on-disk dataset of side x side synthetic images, via the CLI."""
    from conftest import synthetic_data

    from torchlogreg.data.ondisk import write_dataset

    data = synthetic_data(n_train=300, n_val=0, n_test=60, side=side)
    folder = write_dataset(tmp_path / "disk", data.train, data.test, data.class_names)
    run = tmp_path / "run"
    code = main(
        ["train", "--dataset", str(folder), "--device", "cpu", "--val-size", "60", "--batch-size", "16"]
        + ["--epochs", "2", "--quiet", "--out", str(run)]
    )
    assert code == 0
    return run, data


def test_evaluate_and_report_work_on_a_run_trained_from_disk(tmp_path, capsys):
    run, _ = _disk_run(tmp_path, side=4)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 60 and result["accuracy"] > 0.9
    assert main(["evaluate", str(run), "--split", "val"]) == 0
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "report.html").stat().st_size > 0


def test_evaluate_on_another_dataset_matches_classes_by_name(tmp_path, capsys):
    """`evaluate --dataset` scores a dataset with the run's classes in another order by name (its labels
    renumbered), and refuses other names in one line: a run of digits 0..9 scored 0.098 on folders
    named zero..nine, every label meaning another class."""
    from torchlogreg.data.inmemory import Split
    from torchlogreg.data.ondisk import write_dataset

    run, data = _disk_run(tmp_path, side=4)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    names = list(data.class_names)
    flipped = [Split(split.images, len(names) - 1 - split.labels) for split in (data.train, data.test)]
    reordered = write_dataset(tmp_path / "reordered", *flipped, names[::-1])
    assert main(["evaluate", str(run), "--dataset", str(reordered), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == own["accuracy"]
    renamed = write_dataset(tmp_path / "renamed", data.train, data.test, [f"c{name}" for name in names])
    assert main(["evaluate", str(run), "--dataset", str(renamed)]) == 2
    assert "are not the run's" in capsys.readouterr().err


def test_predict_honours_the_runs_image_size(tmp_path, capsys):
    run, data = _disk_run(tmp_path, side=32)
    assert json.loads((run / "model.json").read_text())["input_shape"] == [32, 32]
    image = tmp_path / "digit.png"
    Image.fromarray(np.pad(np.full((12, 4), 255, np.uint8), 10)).save(image)  # a white bar on black
    array = tmp_path / "rows.npy"
    np.save(array, data.test.images[:3].numpy())
    capsys.readouterr()
    assert main(["predict", str(run), str(image), str(array), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 4 and all(line["label"] in data.class_names for line in lines)
    assert [line["label"] for line in lines[1:]] == [data.class_names[int(c)] for c in data.test.labels[:3]]


def test_train_logs_for_tensorboard_and_export_writes_onnx(tmp_path, data_root, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, logs = tmp_path / "run", tmp_path / "tb"
    args = ["--data-root", str(data_root), "--train-size", "2000", "--epochs", "2", "--device", "cpu"]
    args += ["--val-size", "5000", "--batch-size", "256"]
    assert main(["train", *args, "--quiet", "--out", str(run), "--tensorboard", str(logs)]) == 0
    events = EventAccumulator(str(logs)).Reload()
    assert [e.step for e in events.Scalars("val/accuracy")] == [8, 16]  # ceil(2000 / 256) per epoch
    assert len(events.Images("weights/7")) == 1
    assert main(["export", str(run), "--out", str(tmp_path / "model.onnx")]) == 0
    assert (tmp_path / "model.onnx").stat().st_size > 0
    assert main(["export", str(run), "--out", str(tmp_path / "model.onnx")]) == 2  # no silent overwrite
    err = capsys.readouterr().err  # the library's parameters, in the flags' words
    assert "error: --out " in err and "already exists; give --out ANOTHER_PATH, or --overwrite to" in err


# --- Kaggle's Digit Recognizer workflow: one labelled CSV in, a submission CSV out -------------------
def _kaggle_csvs(folder, splits, n_train=3000, n_test=300):
    train, test = splits
    x, y = train.images[:n_train].reshape(n_train, -1).numpy(), train.labels[:n_train].numpy()
    header = "label," + ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(
        folder / "train.csv", np.column_stack([y, x]), fmt="%d", delimiter=",", header=header, comments=""
    )
    t = test.images[:n_test].reshape(n_test, -1).numpy()
    pixels = ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(folder / "test.csv", t, fmt="%d", delimiter=",", header=pixels, comments="")
    return test.labels[:n_test].numpy()


def test_kaggle_workflow_in_three_commands(tmp_path, mnist_splits, capsys):
    truth = _kaggle_csvs(tmp_path, mnist_splits[:2])
    data = tmp_path / "kaggle"
    assert main(["data", "convert", "--from-csv", str(tmp_path / "train.csv"), "--out", str(data)]) == 0
    labels = np.load(data / "test-labels.npy")
    assert len(labels) == 600 and np.all(
        np.abs(np.bincount(labels) - 0.2 * np.bincount(mnist_splits[0].labels[:3000].numpy())) <= 0.5
    )  # stratified: 20% of each class
    run = tmp_path / "run"
    assert main(["train", "--dataset", str(data), "--val-size", "300", "--quiet", "--out", str(run)]) == 0
    submission = tmp_path / "submission.csv"
    assert main(["predict", str(run), str(tmp_path / "test.csv"), "--output", str(submission)]) == 0
    rows = submission.read_text().splitlines()
    assert rows[0] == "ImageId,Label" and len(rows) == 301 and rows[1].startswith("1,")
    accuracy = np.mean([int(row.split(",")[1]) == label for row, label in zip(rows[1:], truth, strict=True)])
    assert accuracy > 0.85
    assert (
        main(["predict", str(run), str(tmp_path / "test.csv"), "--output", str(submission)]) == 2
    )  # no overwrite
    assert f"error: --output {submission} already exists; give --output ANOTHER_PATH, or --overwrite" in (
        capsys.readouterr().err
    )
    assert (
        main(["predict", str(run), str(tmp_path / "train.csv"), "--output", str(tmp_path / "p.jsonl")]) == 0
    )
    assert "column label taken as the label" in capsys.readouterr().err
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 3000


@pytest.mark.parametrize(
    "row,fragment",
    [
        ("1,2,3", "row 3 has 3 cells, expected 784"),
        (",".join(["7"] * 783 + ["x"]), "row 3: 'x' is not a number"),
    ],
)
def test_bad_csv_rows_name_the_file_and_row(tmp_path, default_run, row, fragment, capsys):
    lines = [",".join(f"pixel{i}" for i in range(784)), ",".join(["0"] * 784), row]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    assert main(["predict", str(default_run), str(tmp_path / "rows.csv")]) == 1
    error = capsys.readouterr().err
    assert "rows.csv" in error and fragment in error and len(error.strip().splitlines()) == 1


def test_skip_bad_predicts_the_rest_and_keeps_stdout_clean(tmp_path, default_run, mnist_splits, capsys):
    # a bad row and a bad file among good inputs: by default nothing is printed but one error line; with
    # --skip-bad each is one stderr line, a count ends them, and stdout holds only the predictions
    pixels = mnist_splits[1].images[:3].reshape(3, -1).numpy()
    rows = [",".join(map(str, row)) for row in pixels]
    rows.insert(1, ",".join(["0"] * 783))
    (tmp_path / "rows.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "cut.npy").write_bytes(b"\x93NUMPY\x01\x00")
    np.save(tmp_path / "digits.npy", mnist_splits[1].images[3:5].numpy())
    files = [str(tmp_path / name) for name in ("rows.csv", "cut.npy", "digits.npy")]
    assert main(["predict", str(default_run), *files, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert "rows.csv: row 2 has 783 cells, expected 784" in captured.err and "--skip-bad" in captured.err

    assert main(["predict", str(default_run), *files, "--json", "--skip-bad"]) == 0
    captured = capsys.readouterr()
    predicted = [json.loads(line) for line in captured.out.splitlines()]
    names = [f"{files[0]}[0]", f"{files[0]}[2]", f"{files[0]}[3]", f"{files[2]}[0]", f"{files[2]}[1]"]
    assert [p["file"] for p in predicted] == names
    truth = mnist_splits[1].labels[:5].tolist()
    assert sum(p["label"] == str(t) for p, t in zip(predicted, truth, strict=True)) >= 4
    err = captured.err.splitlines()
    assert err[0].startswith(f"skipped {files[0]}: row 2 has 783 cells") and err[1].startswith(
        f"skipped {files[1]}:"
    )
    assert err[2] == "skipped 1 bad file and 1 bad row; predicted 5" and len(err) == 3

    submission = tmp_path / "submission.csv"
    assert main(["predict", str(default_run), *files, "--output", str(submission), "--skip-bad"]) == 0
    ids = [line.split(",")[0] for line in submission.read_text().splitlines()]
    assert ids == ["ImageId", "1", "3", "4", "6", "7"]  # a bad row or file keeps its ImageId, unused


def test_predict_prints_text_lines_in_input_order(tmp_path, default_run, mnist_splits, capsys):
    np.save(tmp_path / "digits.npy", mnist_splits[1].images[:3].numpy())
    assert main(["predict", str(default_run), str(tmp_path / "digits.npy"), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and [line.split(": ")[0] for line in lines] == [
        f"{tmp_path / 'digits.npy'}[{i}]" for i in range(3)
    ]
    assert all(line.count("   top: ") == 1 and line.count(", ") == 1 for line in lines)
    assert [line.split(": ")[1].split()[0] for line in lines] == ["7", "2", "1"]


def test_a_reader_that_went_away_ends_the_command_quietly(default_run, tmp_path):
    """`torchlogreg predict ... | head -1`: stdout closed before the output is written; Unix tools then
    end with 128 + SIGPIPE and no traceback."""
    image = tmp_path / "one.png"
    Image.fromarray(np.pad(np.full((20, 4), 255, np.uint8), ((4, 4), (12, 12)))).save(image)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the command's stdout now fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "torchlogreg", "predict", str(default_run), str(image)],
            stdout=write_end,
            stderr=subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (128 + signal.SIGPIPE, b"")


@pytest.mark.parametrize(
    "lr,weight_decay,says",
    [
        (1.0, None, "no longer falls measurably"),
        (1e-3, None, "scaled by --lr 0.001: try --lr 1, the default"),
        (1e23, 1e10, "--weight-decay 1e+10 scales the weights far above the bias; try less"),
    ],
)
def test_an_lbfgs_run_that_stops_without_progress_says_why(tiny_data, tiny_config, lr, weight_decay, says):
    """At the default lr the line speaks of the arithmetic's precision; at a smaller lr, which scales
    every line search's first trial step, it names the flag. A larger lr is no cause (the search cuts
    a step too long): --lr 1e23 under --weight-decay 1e10, whose start is already the optimum as far
    as float32 tells, names the weight decay."""
    from torchlogreg import train
    from torchlogreg.apps.cli_train import stop_line

    config = tiny_config.replace(optimizer="lbfgs", batch_size=None, lr=lr, iters=50, tol=1e-12)
    if weight_decay is not None:
        config = config.replace(weight_decay=weight_decay)
    result = train(config, tiny_data, verbose=False)
    assert result.metrics["stop_reason"] == "no progress" and result.metrics["train_longer"] == {}
    assert says in stop_line(result.metrics, result.config)


def test_lbfgs_at_a_tiny_lr_fails_in_one_line_and_at_a_huge_one_trains(tmp_path, capsys):
    """--lr 1e-30: L-BFGS's first step finds no lower objective, and the run fails as a divergence
    does: one line naming --lr and its default, exit 1, no model saved. --lr 1e23: the line search
    cuts its overflowing steps and the run converges. Both stopped at the untrained start ('no
    progress'), saved it as the model and exited 0 (a newcomer's finding)."""
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    images = rng.integers(0, 60, (300, 4, 4), dtype=np.uint8)
    images.reshape(300, -1)[np.arange(300), labels] = 250
    np.savez(
        tmp_path / "a.npz", train_images=images, train_labels=labels, test_images=images, test_labels=labels
    )
    converted = ["data", "convert", "--from-npz", str(tmp_path / "a.npz"), "--out", str(tmp_path / "ds")]
    assert main(converted) == 0
    capsys.readouterr()
    train = ["train", "--dataset", str(tmp_path / "ds"), "--optimizer", "lbfgs", "--quiet"]
    assert main([*train, "--lr", "1e-30", "--out", str(tmp_path / "tiny")]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("torchlogreg train: error: training made no progress: ") and err.count("\n") == 1
    assert "scaled by --lr 1e-30," in err and err.endswith("; set --lr 1 (the default)\n")
    assert not [path.name for path in (tmp_path / "tiny").glob("*")]  # (no untrained start kept)
    assert main([*train, "--lr", "1e23", "--out", str(tmp_path / "huge")]) == 0
    assert "converged (tol 0.0001)" in capsys.readouterr().out
    assert json.loads((tmp_path / "huge" / "metrics.json").read_text())["test"]["accuracy"] > 0.9


def test_lbfgs_forgets_its_pairs_when_their_direction_fails(tmp_path):
    """--weight-decay 1e6 makes the weights' curvature millions of times the bias's: L-BFGS's
    direction from its first pairs then finds no lower objective, and the driver tries again from the
    gradient (as L-BFGS-B does) instead of stopping; the bias reaches the classes' log-odds."""
    from safetensors.numpy import load_file

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (300, 5, 7), dtype=np.uint8)
    labels = np.where(rng.random(300) < 0.8, 5, 3)
    np.savez(
        tmp_path / "a.npz", train_images=images, train_labels=labels, test_images=images, test_labels=labels
    )
    assert (
        main(["data", "convert", "--from-npz", str(tmp_path / "a.npz"), "--out", str(tmp_path / "ds")]) == 0
    )
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                str(tmp_path / "ds"),
                "--out",
                str(run),
                "--weight-decay",
                "1e6",
                "--quiet",
            ]
        )
        == 0
    )
    fives = int((labels == 5).sum())
    bias = float(load_file(run / "model.safetensors")["linear.bias"][0])
    assert bias == pytest.approx(np.log(fives / (300 - fives)), abs=1e-3)


def test_a_far_name_gets_no_suggestion(capsys):
    """'linear' is no schedule, and 'cosine' is not a near miss of it."""
    assert main(["train", "--schedule", "linear"]) == 2
    err = capsys.readouterr().err
    assert "schedule" in err and "did you mean" not in err


@pytest.mark.parametrize(
    "flags, note",
    [
        (["--preset", "lbfgs", "--batch-size", "64"], "--batch-size is not used: lbfgs takes every row"),
        (["--optimizer", "adam", "--momentum", "0.5"], "--momentum is not used: adam has no momentum"),
        (["--optimizer", "lbfgs", "--nesterov"], "--nesterov is not used: lbfgs has no momentum"),
        (["--preset", "tutorial", "--nesterov"], "--nesterov is not used: momentum is 0"),
        (["--momentum", "0", "--nesterov"], "--nesterov is not used: momentum is 0"),
    ],
)
def test_a_flag_the_optimizer_will_not_use_gets_a_note(flags, note, capsys):
    """Legal but pointless (a playground's "copy as command" may hold one): trained, with a note."""
    config = config_from_args(build_parser().parse_args(["train", *flags]))
    assert f"torchlogreg: note: {note}" in capsys.readouterr().err and config is not None


def test_flags_the_optimizer_uses_get_no_note(capsys):
    for flags in (["--optimizer", "sgd", "--momentum", "0.5", "--nesterov"], ["--batch-size", "64"],
                  ["--optimizer", "adam", "--no-nesterov"]):  # fmt: skip
        config_from_args(build_parser().parse_args(["train", *flags]))
    assert "note" not in capsys.readouterr().err


def test_a_train_size_below_the_classes_is_refused(data_root, capsys):
    """A class with no training row cannot be learned: refused before training, in one line."""
    assert main(["train", "--data-root", str(data_root), "--train-size", "7"]) == 2
    err = capsys.readouterr().err
    assert "error: --train-size must be at least the 10 classes (a row of each), got 7" in err


def test_a_flag_of_another_optimizer_than_the_rules_chose_gets_a_note(data_root, tmp_path, capsys):
    """On 300 rows the rules choose lbfgs: --momentum and --nesterov, meant for sgd, get a note saying so."""
    argv = ["train", "--data-root", str(data_root), "--train-size", "300", "--momentum", "0.5", "--nesterov",
            "--out", str(tmp_path / "run"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    for flag in ("--momentum", "--nesterov"):
        assert f"note: {flag} was not used: the rules chose lbfgs for 300 training rows" in err


def test_a_validation_split_that_takes_a_class_away_is_refused(data_root, capsys):
    """--val-size takes its rows first: 10 rows left over need not hold every class (a hostile helper's
    --train-size 10 --val-size 59990 trained a model with classes it never saw)."""
    for flags in (["--train-size", "10", "--val-size", "59990"], ["--val-size", "59990"]):
        assert main(["train", "--data-root", str(data_root), *flags]) == 2
        err = capsys.readouterr().err
        assert "error: the validation split leaves no training row of class" in err and "(--val-size)" in err


@pytest.mark.parametrize("batch, advice", [(64, "(lower --lr or raise --batch-size)"), (300, "(lower --lr)")])
def test_a_last_epoch_above_the_best_is_not_called_a_fall(batch, advice):
    """An epoch that ended above the best is not 'lowered the objective by -0.065'; a larger batch is
    advised only where there is one."""
    from torchlogreg import TrainConfig
    from torchlogreg.apps.cli_train import stop_line

    metrics = {"stop_reason": "step limit", "objective_change": -0.065, "train_longer": {"epochs": 8},
               "train": {"n": 300}, "iterations": 20}  # fmt: skip
    line = stop_line(metrics, TrainConfig(batch_size=batch, tol=1e-4))
    assert "0.065 above its best epoch's" in line and advice in line and "--epochs 8" in line
    metrics["objective_change"] = 0.01
    assert "lowered the objective by 0.01" in stop_line(metrics, TrainConfig(batch_size=batch, tol=1e-4))
    metrics["objective_change"] = -3.3e-11  # float noise, not steps too bold (it advised lower --lr)
    line = stop_line(metrics, TrainConfig(batch_size=batch, tol=1e-4))
    assert "within tol of its best" in line and "--lr" not in line and "--epochs 8" in line


def test_a_converged_line_says_which_weights_early_stopping_kept():
    """With --patience the kept weights are the best validation check's: a run that converged later
    says so, as its metrics' gradient_max (blank) does."""
    from torchlogreg import TrainConfig
    from torchlogreg.apps.cli_train import stop_line

    metrics = {"stop_reason": "converged", "iterations": 1100, "best_iteration": 800}
    line = stop_line(metrics, TrainConfig(tol=1e-4, patience=5))
    assert line.endswith("kept iteration 800's weights, the best validation check")
    plain = "converged (tol 0.0001) after 1100 iterations"
    assert stop_line(metrics, TrainConfig(tol=1e-4)) == plain  # a validation set alone keeps the last
    metrics["best_iteration"] = 1100
    assert stop_line(metrics, TrainConfig(tol=1e-4, patience=5)) == plain
    for count, said in ((1, "1 iteration"), (1234567, "1234567 iterations")):  # (not 1.23457e+06)
        metrics.update(iterations=count, best_iteration=None)
        assert stop_line(metrics, TrainConfig(tol=1e-4)) == f"converged (tol 0.0001) after {said}"


def test_a_name_the_system_refuses_is_one_line(tmp_path, capsys):
    """A path component over 255 bytes was a traceback (OSError: File name too long) in every
    command; the system's refusal is one line naming the file."""
    assert main(["evaluate", str(tmp_path / ("x" * 300))]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "File name too long" in err and "characters)" in err
