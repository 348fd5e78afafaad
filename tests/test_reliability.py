"""Bad input gets one clear error: each file of tests/corpus/ and each bad option, with the exact
error class and a message naming the file or option; writes are atomic even under kill -9."""

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from torchlogreg import ConfigError, InputError
from torchlogreg.apps.cli import main
from torchlogreg.data.inputs import load_inputs

CORPUS = Path(__file__).resolve().parent / "corpus"

BAD_FILES = [
    ("text_named.png", "not an image Pillow can read"),
    ("empty.png", "not an image Pillow can read"),
    ("corrupt.png", "corrupt or unreadable image|not an image Pillow can read"),
    ("truncated.jpg", "corrupt or unreadable image"),
    ("bomb.png", "image of 9000x9000 pixels is larger than the limit"),
    ("animated.gif", "animated or multi-frame image"),
    ("blank.png", "no digit found"),
    ("nan.npy", "NaN or infinite"),
    ("inf.npy", "NaN or infinite"),
    ("wrong_features.npy", r"array of shape \(5, 10\) does not hold 28x28 images"),
    ("empty.npy", "the array is empty"),
    ("out_of_range.npy", r"float arrays must hold values in \[0, 1\]"),
    ("int_over_255.npy", "integer arrays must hold values in 0..255"),
    ("strings.npy", "arrays must hold numbers"),
    ("object_pickle.npy", "not a readable NumPy file without pickles"),
    ("not_numpy.npy", "not a readable NumPy file"),
]


@pytest.mark.parametrize("name,fragment", BAD_FILES)
def test_each_bad_file_is_refused_naming_it(name, fragment):
    path = CORPUS / name
    with pytest.raises(InputError, match=fragment) as error:
        load_inputs([path])
    assert type(error.value) is InputError and str(error.value).startswith(str(path))


@pytest.mark.parametrize("name", ["rgba_transparent.png", "gray16.png"])
def test_unusual_but_valid_images_are_read(name):
    images, _ = load_inputs([CORPUS / name])
    assert images.shape == (1, 28, 28) and 0.9 < float(images.max()) <= 1.0


@pytest.mark.parametrize("name,fragment", BAD_FILES[:4] + BAD_FILES[7:9])
def test_predict_command_gives_one_line_and_exit_1(default_run, name, fragment, capsys):
    assert main(["predict", str(default_run), str(CORPUS / name)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--lr", "0"], "--lr must be a number > 0, got 0.0"),
        (["--lr", "-0.5"], "--lr must be a number > 0, got -0.5"),
        (["--batch-size", "0"], "--batch-size must be an integer > 0, got 0"),
        (["--batch-size", "60001"], "--batch-size must be at most the 60000 training samples, got 60001"),
        (
            ["--optimizer", "adamw"],
            "--optimizer must be one of sgd, adam, lbfgs, got 'adamw' (did you mean 'adam'?)",
        ),
        (["--dataset", "fashion"], "(did you mean 'fashion-mnist'?)"),
        (["--classes", "3,12"], "--classes: mnist has no class 12: its 10 classes are numbered 0..9"),
        (["--positive", "10"], "--positive: mnist has no class 10: its 10 classes are numbered 0..9"),
        (
            ["--train-size", "70000"],
            "--train-size must be at most the 60000 training samples available, got 70000",
        ),
        (["--schedule", "linear"], "--schedule must be one of none, cosine, step, got 'linear'"),
        (["--checkpoint-every", "0"], "--checkpoint-every must be an integer >= 1, got 0"),
    ],
)
def test_bad_options_are_one_line_naming_the_option(args, fragment, data_root, tmp_path, capsys):
    """The library names its parameters (lr, batch_size); the CLI shows the flags that set them."""
    code = main(["train", "--data-root", str(data_root), "--out", str(tmp_path / "run"), "--quiet", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert fragment in err and len(err.splitlines()) == 1


def test_config_errors_have_their_own_class():
    from torchlogreg import preset

    with pytest.raises(ConfigError):
        preset("default", lr=-1)


def test_diverging_training_stops_and_says_what_to_lower(data_root, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--data-root",
            str(data_root),
            "--out",
            str(out),
            "--quiet",
            "--optimizer",
            "sgd",
            "--lr",
            "1e12",
            "--iters",
            "50",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and "training diverged" in err and "lower the learning rate" in err
    # it diverged before any check passed: the start is nothing to keep, and the folder made is gone
    assert "last good checkpoint" not in err and not out.exists()


@pytest.mark.parametrize(
    "array,fragment",
    [
        (np.full((3, 784), np.nan), "Input X contains NaN"),
        (np.full((3, 784), np.inf), "Input X contains infinity"),
        (np.zeros((3, 10)), "X has 10 features, but TorchLogisticRegression is expecting 784 features"),
        (np.zeros((0, 784)), "0 sample"),
        (np.array([["a"] * 784] * 3), "could not convert|dtype"),
    ],
)
def test_estimator_refuses_bad_arrays(array, fragment):
    from torchlogreg.sklearn.estimator import TorchLogisticRegression

    rng = np.random.default_rng(0)
    clf = TorchLogisticRegression(max_iter=5).fit(rng.random((40, 784)), np.arange(40) % 2)
    with pytest.raises(ValueError, match=fragment):
        clf.predict(array)


WRITER = """
import sys
from torchlogreg.base.storage import atomic_write_bytes
print("writing", flush=True)
atomic_write_bytes(sys.argv[1], b"B" * 300_000_000)
print("done", flush=True)
"""


def test_kill_during_a_large_write_leaves_the_old_file_whole(tmp_path):
    target = tmp_path / "big.bin"
    old = b"A" * 1000
    from torchlogreg.base.storage import atomic_write_bytes

    atomic_write_bytes(target, old)
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "writing"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    content = target.read_bytes()
    assert content == old or hashlib.sha256(content).digest() == hashlib.sha256(b"B" * 300_000_000).digest()


# --- every front end: one line, nothing lost, nothing silently ignored ---------------------------
def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "torchlogreg", *map(str, args)], capture_output=True, text=True
    )


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["train", "--lrr", "1"], "unrecognized arguments: --lrr 1 (did you mean --lr?)"),
        (["train", "--classes", "a,b"], "--classes: mnist has no class 'a'; its classes: 0, 1, 2"),
        (["train", "--lr", "1e39"], "lr must be at most"),
        (["train", "--threshold", "0.3"], "threshold applies to binary tasks"),
        (["train", "--dataset", "/no/such/dir"], "/no/such/dir is not a folder; write a dataset folder"),
        (["serve", "runs/x", "--port", "99999"], "--port must be in 1..65535"),
        (["sweep", "--grid", "lr=0.1", "--grid", "lr=0.2"], "--grid lr is given twice"),
        (["sweep", "--grid", "lr=0.1", "--val-size", "0", "--select", "val"], "set --val-size > 0"),
    ],
)
def test_bad_options_are_one_line(args, fragment, tmp_path):
    done = _cli(*args, *(["--out", tmp_path / "o"] if args[0] == "sweep" else []))
    lines = done.stderr.strip().splitlines()
    code = 1 if "/no/such/dir" in args else 2  # a missing dataset is a data problem, the others options
    assert done.returncode == code and len(lines) == 1 and fragment in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_fast_help():
    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.startswith("torchlogreg ")


def test_an_unwritable_out_is_found_before_training(tmp_path, data_root):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    done = _cli("train", "--data-root", data_root, "--out", blocker / "run", "--epochs", "1", "--quiet")
    assert done.returncode == 1 and "is a file, not a folder" in done.stderr
    assert "training mnist" not in done.stdout and "Traceback" not in done.stderr


def test_names_from_strangers_cannot_drive_the_terminal(default_run, tmp_path):
    array = tmp_path / "digit\x1b[2J\nfake line.npy"
    np.save(array, np.zeros((1, 28, 28), np.uint8))
    done = _cli("predict", default_run, array)
    assert done.returncode == 0 and "\x1b" not in done.stdout and len(done.stdout.strip().splitlines()) == 1
    assert "\\x1b[2J\\nfake line.npy" in done.stdout


def test_demo_does_not_overwrite(tmp_path):
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"precious")
    done = _cli("demo", "linear-vs-logistic", "--out", keep)
    assert done.returncode == 2 and "exists" in done.stderr and keep.read_bytes() == b"precious"


def test_sweep_refuses_a_run_folder_and_takes_seed_as_an_axis(default_run, tmp_path, data_root):
    done = _cli("sweep", "--grid", "lr=0.1", "--out", default_run, "--data-root", data_root)
    assert done.returncode == 2 and "holds a training run" in done.stderr
    done = _cli(
        "sweep",
        "--grid",
        "seed=1,2",
        "--train-size",
        "500",
        "--epochs",
        "1",
        "--quiet",
        "--data-root",
        data_root,
        "--out",
        tmp_path / "s",
    )
    assert done.returncode == 0, done.stderr


def test_python_api_misuse_is_one_clear_error(default_run, tmp_path, mnist_data):
    import torchlogreg as tl
    from torchlogreg.runfolder.checkpoints import load_run, save_run

    with pytest.raises(ConfigError, match="train needs a TrainConfig"):
        tl.train(None)
    with pytest.raises(ConfigError, match="the data holds 10 classes but the config asks for 2"):
        tl.train(tl.TrainConfig(classes=(3, 8), device="cpu"), mnist_data, verbose=False)
    (tmp_path / "file").write_text("x")
    run = load_run(default_run)
    result = tl.TrainResult(run.model, run.config, run.class_names, (), run.image_shape)
    with pytest.raises(tl.ConfigError, match="is a file, not a folder"):
        save_run(result, tmp_path / "file")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ConfigError, match="not available here"):
            load_run(default_run, device="cuda")


def test_serve_warns_on_every_interface_and_checks_the_port(default_run):
    import socket

    with socket.create_server(("0.0.0.0", 0)) as taken:
        port = taken.getsockname()[1]
        done = _cli("serve", default_run, "--host", "0.0.0.0", "--port", port)
    assert "warning: --host 0.0.0.0 accepts connections from other machines" in done.stderr
    assert (
        done.returncode == 2
        and f"cannot listen on 0.0.0.0:{port}" in done.stderr
        and "serving" not in done.stdout
    )


def test_resume_with_out_and_a_damaged_history_are_one_line(default_run, tmp_path):
    done = _cli("train", "--resume", tmp_path, "--out", tmp_path / "other")
    assert done.returncode == 2 and "drop --out" in done.stderr
    from torchlogreg import CheckpointError
    from torchlogreg.runfolder.checkpoints import read_history

    (tmp_path / "history.csv").write_text("iteration,loss\nabc,<script>\n")
    with pytest.raises(CheckpointError, match="row 2 is not a history row"):
        read_history(tmp_path / "history.csv")


def test_negative_sample_weights_are_refused():
    from torchlogreg.sklearn.estimator import TorchLogisticRegression

    X, y = np.random.default_rng(0).random((20, 4)), np.arange(20) % 2
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        TorchLogisticRegression(max_iter=2).fit(X, y, sample_weight=np.r_[-1.0, np.ones(19)])


API_MISUSE = {
    "load_data('mnist')": lambda tl: tl.load_data("mnist"),
    "load_data(None)": lambda tl: tl.load_data(None),
    "train(config, data='junk')": lambda tl: tl.train(tl.TrainConfig(), data="junk"),
}


@pytest.mark.parametrize("call", API_MISUSE.values(), ids=API_MISUSE.keys())
def test_api_entries_refuse_what_they_cannot_use_by_name(call):
    import torchlogreg as tl

    with pytest.raises(ConfigError, match="needs a TrainConfig|data must be a Data"):
        call(tl)
