"""--dataset at the CLI (cli.dataset_arg): a folder named like the user typed it is the one meant, a
built-in name that is also a folder here is called out, and a run records its dataset folder as an
absolute path (data.dataset_location), so evaluate and report find it from any working directory and
say so in one line when it has moved."""

import itertools
import json
import os

import numpy as np
import pytest

from torchlogreg.apps.cli import main
from torchlogreg.data.inmemory import dataset_location

TRAIN = ["--val-size", "20", "--epochs", "2", "--batch-size", "16", "--device", "cpu", "--quiet"]


@pytest.fixture
def workdir(tmp_path, monkeypatch, data_root):
    """A working directory holding mine.npz: 100 + 30 images of 4 x 4 pixels, three classes; the
    built-in datasets stay where they were found ($TORCHLOGREG_DATA made absolute)."""
    monkeypatch.setenv("TORCHLOGREG_DATA", str(data_root.resolve()))
    rng = np.random.default_rng(0)
    labels = np.arange(130) % 3
    images = rng.integers(0, 60, (130, 4, 4), dtype=np.uint8)
    images.reshape(130, -1)[np.arange(130), labels] = 250
    np.savez(tmp_path / "mine.npz", train_images=images[:100], train_labels=labels[:100],
             test_images=images[100:], test_labels=labels[100:])  # fmt: skip
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _recorded_dataset(run) -> str:
    return json.loads((run / "model.json").read_text())["config"]["dataset"]


def test_a_folder_name_right_after_convert_is_the_dataset(workdir, capsys):
    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "mine"]) == 0
    assert main(["train", "--dataset", "mine", *TRAIN, "--out", "run"]) == 0
    assert _recorded_dataset(workdir / "run") == str(workdir / "mine")
    assert "warning" not in capsys.readouterr().err


def test_a_run_finds_its_data_from_another_directory(workdir, monkeypatch, capsys):
    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "od"]) == 0
    assert main(["train", "--dataset", "./od", *TRAIN, "--out", "run"]) == 0
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["evaluate", str(workdir / "run"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 30
    assert main(["report", str(workdir / "run")]) == 0


def test_data_that_moved_is_one_line_and_can_be_named(workdir, capsys):
    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "od"]) == 0
    assert main(["train", "--dataset", "od", *TRAIN, "--out", "run"]) == 0
    os.rename(workdir / "od", workdir / "moved")
    capsys.readouterr()
    assert main(["evaluate", "run"]) == 1
    error = capsys.readouterr().err
    assert f"the run's dataset {workdir / 'od'}: " in error and "moved or deleted since training?" in error
    assert "give --dataset DIR (evaluate, report, train --resume)" in error and error.count("\n") == 1
    assert main(["evaluate", "run", "--dataset", "moved", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == str(workdir / "moved")
    assert main(["report", "run"]) == 1  # report takes --dataset too (the line advised one it lacked)
    assert main(["report", "run", "--dataset", "moved"]) == 0


def test_a_resume_finds_moved_data_and_refuses_other_data(workdir, capsys, monkeypatch):
    """A checkpoint records its data's fingerprint: the printed resume on a moved folder says so and
    takes --dataset for where it is now; other rows of the same shape are refused (they had been
    trained on silently from the old state)."""
    from torchlogreg.base.signals import StopFlag

    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "od"]) == 0
    asked = iter(range(10**6))
    with monkeypatch.context() as patched:  # (a Ctrl-C after the first step)
        patched.setattr(StopFlag, "__call__", lambda self: next(asked) >= 1)
        assert main(["train", "--dataset", "od", *TRAIN, "--optimizer", "sgd", "--out", "run"]) == 130
    os.rename(workdir / "od", workdir / "moved")
    capsys.readouterr()
    assert main(["train", "--resume", "run"]) == 1
    assert "moved or deleted since training?" in capsys.readouterr().err
    arrays = dict(np.load("mine.npz"))
    arrays["train_images"] = 255 - arrays["train_images"]
    np.savez("other.npz", **arrays)
    assert main(["data", "convert", "--from-npz", "other.npz", "--out", "other"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", "run", "--dataset", "other"]) == 1
    assert "the data differs from what this run trained on (digest" in capsys.readouterr().err
    assert main(["train", "--resume", "run", "--dataset", "moved", "--quiet"]) == 0
    assert json.loads((workdir / "run" / "model.json").read_text())["dataset"] == str(workdir / "moved")


def test_a_second_ctrl_c_names_the_checkpoint_kept_and_the_resume(workdir, capsys, monkeypatch):
    """A run stopped at once (a second Ctrl-C, here mid-step) ends with a line naming the checkpoint its
    folder keeps and the command that continues it: the line had said only that it was interrupted."""
    from torchlogreg.base.signals import StopFlag

    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "od"]) == 0
    asked = itertools.count()

    def second_ctrl_c(self):
        if next(asked) == 5:
            raise KeyboardInterrupt
        return False

    monkeypatch.setattr(StopFlag, "__call__", second_ctrl_c)
    capsys.readouterr()
    flags = [*TRAIN, "--optimizer", "sgd", "--checkpoint-every", "2", "--out", "run"]
    assert main(["train", "--dataset", "od", *flags]) == 130
    error = capsys.readouterr().err
    assert error == (
        "torchlogreg train: interrupted (SIGINT) at iteration 6 of 10; run keeps the checkpoint of "
        "iteration 6. Continue with: torchlogreg train --resume run\n"
    )


def test_a_run_is_measured_on_images_of_its_own_shape(workdir, capsys):
    """evaluate and report name both shapes: an 8x8 run on MNIST had said only "expected 64 features
    per sample, got 784", and a run whose model.json says 2x8 (its 16 pixels) scored 4x4 images."""
    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "od"]) == 0
    assert main(["train", "--dataset", "od", *TRAIN, "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "run", "--dataset", "mnist"]) == 2
    assert "holds 28x28 images but the run takes 4x4 ones" in capsys.readouterr().err
    meta = json.loads((workdir / "run" / "model.json").read_text())
    (workdir / "run" / "model.json").write_text(json.dumps({**meta, "input_shape": [2, 8]}))
    for command in (["evaluate", "run"], ["report", "run"]):
        assert main(command) == 2
        assert "holds 4x4 images but the run takes 2x8 ones" in capsys.readouterr().err


def test_evaluate_notes_pictures_of_the_other_polarity(workdir, capsys):
    """A run of light strokes on dark scored on dark-on-light pictures: evaluate says the model sees
    them inverted (the newcomer's 0.9045 was the majority class, with no word)."""
    arrays = dict(np.load("mine.npz"))
    inverted = {k: 255 - v if k.endswith("images") else v for k, v in arrays.items()}
    np.savez("inverted.npz", **inverted)
    for name in ("mine", "inverted"):
        assert main(["data", "convert", "--from-npz", f"{name}.npz", "--out", name]) == 0
    assert main(["train", "--dataset", "mine", *TRAIN, "--out", "run"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "run"]) == 0
    assert "note" not in capsys.readouterr().err
    assert main(["evaluate", "run", "--dataset", "inverted"]) == 0
    said = "on a dark background; these are on a light one, which the model sees inverted"
    assert said in capsys.readouterr().err


def test_a_built_in_name_that_is_also_a_folder_is_called_out(workdir, capsys):
    assert main(["data", "convert", "--from-npz", "mine.npz", "--out", "mnist"]) == 0
    capsys.readouterr()
    flags = ["--train-size", "300", *TRAIN]
    assert main(["train", "--dataset", "mnist", *flags, "--out", "builtin"]) == 0
    assert capsys.readouterr().err == (
        "warning: --dataset mnist is the built-in mnist; for the folder here, give ./mnist\n"
    )
    assert _recorded_dataset(workdir / "builtin") == "mnist"
    assert main(["train", "--dataset", "./mnist", *TRAIN, "--out", "folder"]) == 0
    assert _recorded_dataset(workdir / "folder") == str(workdir / "mnist")
    assert "warning" not in capsys.readouterr().err


def test_a_name_that_is_neither_is_refused_with_a_suggestion(workdir, capsys):
    assert main(["train", "--dataset", "mnsit", *TRAIN, "--out", "run"]) == 2
    error = capsys.readouterr().err
    assert "dataset must be one of mnist" in error and "did you mean 'mnist'" in error


def test_dataset_location_keeps_names_and_makes_folders_absolute(workdir):
    assert dataset_location("fashion-mnist") == "fashion-mnist"
    assert dataset_location("data/mine") == str(workdir / "data" / "mine")
    assert dataset_location(str(workdir / "x")) == str(workdir / "x")
    assert dataset_location("~/mine") == os.path.join(os.path.expanduser("~"), "mine")
