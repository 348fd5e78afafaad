"""A fresh batch of hostile cases (issue #28, round four) over what changed in round three: the
Python API's inputs (arrays, lists, tensors of every dtype and shape, NaN, inf, huge values) to
predict, predict_proba, top_k and evaluate; TrainConfig and from_dict; every field of a run's
model.json and of a checkpoint's checkpoint.json; the sweep's grid file; the writer's lock and disk
reservation on a full disk. A case is clean when it gives a right result or one of the package's
own errors in one line; never another exception, a warning, NaN in a result, or memory past the cap.

    pytest tests/test_hostile_fresh.py -s            # the fast part
    pytest tests/test_hostile_fresh.py -m hostile -s # also the CLI cases (each a real run)
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import warnings

import numpy as np
import pytest
import torch
from conftest import synthetic_data
from corpus.hostile import memory_cap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchlogreg import Interrupted, TrainConfig, evaluate, top_k, train
from torchlogreg.apps.cli import main
from torchlogreg.base.exceptions import OutputError, TorchLogRegError
from torchlogreg.base.storage import output_lock, reserved_space
from torchlogreg.runfolder.checkpoints import load_run, save_run

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 3-class run on 4x4 synthetic images, saved and loaded back."""
    config = TrainConfig(epochs=1, device="cpu", batch_size=32)
    folder = save_run(train(config, synthetic_data(), verbose=False), tmp_path_factory.mktemp("runs") / "t")
    return folder, load_run(folder)


def _clean(call) -> object:
    """The call's result, or None when it raised one of the package's errors in one line; any other
    exception, or a warning a user would see, fails the case."""
    with memory_cap(), warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return call()
        except TorchLogRegError as error:
            assert len(str(error).splitlines()) == 1, str(error)
            return None


# ---- the Python API's inputs -------------------------------------------------------------------

DTYPES = [np.uint8, np.int8, np.int32, np.int64, np.uint16, np.float16, np.float32, np.float64, np.bool_]
SHAPES = [(3, 16), (3, 4, 4), (16,), (3, 17), (3,), (0, 16), (2, 2, 8), (1, 1, 16), (3, 15), ()]
VALUES = st.one_of(
    st.sampled_from([0.0, 0.5, 1.0, 255.0, -1.0, 256.0, 1e38, 3e38, 1e300, -1e300, math.nan, math.inf]),
    st.floats(allow_nan=True, allow_infinity=True),
)


@st.composite
def hostile_inputs(draw):
    """An input as a user might pass it: an array, a list or a tensor of any dtype and shape."""
    shape = draw(st.sampled_from(SHAPES))
    dtype = draw(st.sampled_from(DTYPES))
    values = np.array(draw(st.lists(VALUES, min_size=1, max_size=4)), dtype=np.float64)
    with np.errstate(all="ignore"):
        array = np.resize(values, shape).astype(dtype)
    container = draw(st.sampled_from(["array", "list", "tensor"]))
    if container == "list":
        return array.tolist()
    if container == "tensor" and dtype not in (np.uint16,):
        return torch.from_numpy(array.copy())
    return array


def _check_probabilities(result, n_classes: int) -> None:
    assert isinstance(result, torch.Tensor) and result.ndim == 2 and result.shape[1] == n_classes
    assert torch.isfinite(result).all(), result
    assert torch.allclose(result.sum(dim=1), torch.ones(len(result)), atol=1e-4)


@FUZZ
@given(x=hostile_inputs())
def test_predict_proba_on_hostile_inputs(tiny_run, x):
    model = tiny_run[1].model
    result = _clean(lambda: model.predict_proba(x))
    if result is not None:
        _check_probabilities(result, 3)


@FUZZ
@given(x=hostile_inputs(), threshold=st.sampled_from([0.5, 0.0, 1.0, -1.0, math.nan, 2.0]))
def test_predict_on_hostile_inputs(tiny_run, x, threshold):
    model = tiny_run[1].model
    result = _clean(lambda: model.predict(x, threshold))
    if result is not None:
        assert result.ndim == 1 and ((result >= 0) & (result < 3)).all()


@FUZZ
@given(
    x=hostile_inputs(),
    k=st.sampled_from([1, 3, 0, -1, 4, 10**30, 2.5, "2", None, True]),
    names=st.sampled_from([("a", "b", "c"), ("a", "b"), (), ("a", "a", "a"), ("", "b", "c"), tuple("abcd")]),
)
def test_top_k_on_hostile_inputs(tiny_run, x, k, names):
    model = tiny_run[1].model
    result = _clean(lambda: top_k(model, x, names, k))
    if result is not None:
        assert isinstance(result, list)
        for row in result:
            json.dumps(row, allow_nan=False)  # what --json prints: never NaN


@FUZZ
@given(
    x=hostile_inputs(),
    labels=st.sampled_from([[0, 1, 2], [0, 1], [5, 0, 1], [-1, 0, 1], [0.5, 1, 2], [math.nan] * 3, "a", 7]),
)
def test_evaluate_on_hostile_inputs(tiny_run, x, labels):
    model = tiny_run[1].model
    result = _clean(lambda: evaluate(model, x, labels))
    if result is not None:
        assert all(math.isfinite(v) for v in result.values() if isinstance(v, float)), result


# ---- TrainConfig and from_dict -----------------------------------------------------------------

FIELDS = [
    "lr", "batch_size", "epochs", "iters", "weight_decay", "l1", "tol", "momentum", "threshold",
    "val_size", "train_size", "eval_every", "patience", "seed", "optimizer", "schedule", "init", "device",
    "dataset", "classes", "positive", "nesterov", "centred", "data_root",
]  # fmt: skip
ODD = st.one_of(
    st.sampled_from(
        [None, True, False, 0, -1, 2**63, 10**400, -(10**400), 1e-400, 1e308, 3.5e38, math.nan, math.inf, "",
         "0.1", "sgd ", "SGD", "\x00", "é" * 300, [], [1], {}, (), b"x", 1j, 0.5, 1, 2]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
)  # fmt: skip


@FUZZ
@given(field=st.sampled_from(FIELDS), value=ODD)
def test_train_config_field_with_an_odd_value(field, value):
    config = _clean(lambda: TrainConfig(**{field: value}))
    if config is not None:
        assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@FUZZ
@given(extra=st.dictionaries(st.sampled_from([*FIELDS, "lrr", "", "__class__", "epoch"]), ODD, max_size=4))
def test_from_dict_with_odd_keys_and_values(extra):
    data = {**TrainConfig().to_dict(), **extra}
    if any(isinstance(v, (bytes, complex, tuple)) for v in extra.values()):
        data = {k: v for k, v in data.items() if not isinstance(v, (bytes, complex, tuple))}
    _clean(lambda: TrainConfig.from_dict(data))


@pytest.mark.parametrize("value", [math.nan, math.inf, 1e300])
@pytest.mark.parametrize("container", [np.array, list, torch.tensor])
def test_non_finite_features_are_refused_by_name(tiny_run, value, container):
    # NaN, inf and float64 beyond float32 used to give NaN probabilities and class 0, in silence
    model = tiny_run[1].model
    rows = np.full((2, 16), value)
    x = container(rows.tolist()) if container is not np.array else rows
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TorchLogRegError, match="x must hold finite floats"):
            model.predict_proba(x)


# ---- model.json and checkpoint.json fields -----------------------------------------------------

MODEL_KEYS = [
    "format", "format_version", "dataset", "class_names", "source_labels", "binary", "threshold",
    "n_features", "n_classes", "input_shape", "weight_shapes", "weights_sha256", "pictures",
    "preprocessing", "config",
]  # fmt: skip
JSON_ODD = [None, -1, 0, 2**70, 1e308, "x", "", [], {}, True, [None], "NaN", ["a"] * 3, [4, 4, 4]]


@pytest.mark.parametrize("value", JSON_ODD, ids=repr)
@pytest.mark.parametrize("key", [*MODEL_KEYS, "unknown_key"])
def test_a_model_json_field_with_an_odd_value(tiny_run, tmp_path, key, value):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in os.listdir(tiny_run[0]):
        (folder / name).write_bytes((tiny_run[0] / name).read_bytes())
    meta = json.loads((folder / "model.json").read_text())
    meta[key] = value
    (folder / "model.json").write_text(json.dumps(meta))
    run = _clean(lambda: load_run(folder))
    if run is not None:
        _check_probabilities(_clean(lambda: run.model.predict_proba(np.zeros((2, 16), np.uint8))), 3)


CHECKPOINT_ODD = [None, -1, 0, 2**70, 1e308, "7", "", [], {}, True, 0.5, [0.0, 1.0]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A run folder holding a checkpoint: training stopped at its second call of the fused steps."""
    folder = tmp_path_factory.mktemp("ckpt") / "run"
    steps = itertools.count(1)
    config = TrainConfig(batch_size=16, epochs=3, device="cpu", val_size=60)
    with pytest.raises(Interrupted):
        train(config, synthetic_data(), out=folder, verbose=False, should_stop=lambda: next(steps) == 2)
    return folder


def _checkpoint_keys() -> list[str]:
    folder_meta = {
        "iteration", "start_loss", "train_seconds", "best_loss", "history_rows", "checks_without_progress",
        "convergence", "best_iteration", "unknown_key",
    }  # fmt: skip
    return sorted(folder_meta)


@pytest.mark.parametrize("value", CHECKPOINT_ODD, ids=repr)
@pytest.mark.parametrize("key", _checkpoint_keys())
def test_a_checkpoint_json_field_with_an_odd_value(checkpoint, tmp_path, key, value):
    folder = tmp_path / "run"
    folder.mkdir()
    for name in os.listdir(checkpoint):
        if (checkpoint / name).is_file():
            (folder / name).write_bytes((checkpoint / name).read_bytes())
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta[key] = value
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    result = _clean(lambda: train(data=synthetic_data(), out=folder, resume=True, verbose=False))
    if result is not None:
        assert all(math.isfinite(row["loss"]) for row in result.history)


# ---- the writer on a full disk, the sweep's grid file ------------------------------------------


def test_a_lock_on_a_full_disk_is_one_line(tmp_path, monkeypatch):
    # the lock's pid written on a full disk escaped as an OSError traceback from `train`
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(OutputError, match="disk is full"), output_lock(tmp_path / "run"):
        pass
    assert not list(tmp_path.iterdir())


def test_a_reservation_past_any_file_size_is_one_line(tmp_path):
    # --epochs 10**26 asked posix_fallocate for more than a C long: an OverflowError traceback
    with pytest.raises(OutputError, match="needs about"), reserved_space(tmp_path, 10**30):
        pass
    assert not list(tmp_path.iterdir())


def _grid_files(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("[grid]\nlr = [" + ", ".join(["0.1"] * 400_000) + "]\n")
    junk = tmp_path / "junk.toml"
    junk.write_bytes(b"\x93NUMPY\x00\xff")
    return {"/dev/zero": "/dev/zero", "fifo": str(fifo), "folder": str(tmp_path), "big": str(big),
            "junk": str(junk), "missing": str(tmp_path / "nope.toml")}  # fmt: skip


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "folder", "big", "junk", "missing"])
def test_a_hostile_grid_file_is_one_line(tmp_path, capsys, kind):
    # --grid-file /dev/zero read without end: 24 GB, then the kernel's OOM killer
    path = _grid_files(tmp_path)[kind]
    with memory_cap():
        code = main(["sweep", "--grid-file", path, "--out", str(tmp_path / "sweep")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and "--grid-file" in err, err


# ---- the CLI's flags with odd values (each a real command: behind the marker) ------------------

ODD_TEXT = ["", " 5", "nan", "-inf", "1e999", "-0", "0x10", "1_000", "٣", "99999999999999999999999", "1e-400",
            "\x7f", "-1", "a,b,,c"]  # fmt: skip
TRAIN_FLAGS = ["--lr", "--batch-size", "--epochs", "--iters", "--val-size", "--train-size", "--tol",
               "--weight-decay", "--momentum", "--threshold", "--seed", "--eval-every", "--patience",
               "--classes", "--positive", "--optimizer", "--schedule", "--init", "--device",
               "--checkpoint-every", "--dist-timeout", "--preset"]  # fmt: skip
PREDICT_FLAGS = ["--top-k", "--device", "--output"]


def _cli_is_clean(argv: list[str], capsys, folder) -> None:
    """The command ended in exit 0, or in one `error:` line with exit 1 or 2; no traceback, no
    warning, no temporary or lock file left in `folder`, memory within the cap."""
    with memory_cap(), warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 1, 2), (code, err[-400:])
    if code:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and ": error: " in lines[0], err
    assert not [p.name for p in folder.rglob(".*") if p.name.endswith((".tmp", ".lock", ".converting"))]


@pytest.mark.hostile
@pytest.mark.parametrize("value", ODD_TEXT, ids=repr)
@pytest.mark.parametrize("flag", TRAIN_FLAGS)
def test_a_train_flag_with_an_odd_value(tmp_path, capsys, data_root, flag, value):
    small = ["--train-size", "64", "--val-size", "16", "--iters", "2", "--quiet", "--device", "cpu"]
    argv = ["train", "--data-root", str(data_root), "--out", str(tmp_path / "run"), *small, f"{flag}={value}"]
    _cli_is_clean(argv, capsys, tmp_path)


@pytest.mark.hostile
@pytest.mark.parametrize("value", ODD_TEXT, ids=repr)
@pytest.mark.parametrize("flag", PREDICT_FLAGS)
def test_a_predict_flag_with_an_odd_value(tmp_path, capsys, tiny_run, flag, value):
    images = tmp_path / "x.npy"
    np.save(images, np.zeros((2, 4, 4), np.uint8))
    _cli_is_clean(["predict", str(tiny_run[0]), str(images), f"{flag}={value}"], capsys, tmp_path)


@pytest.mark.hostile
@pytest.mark.parametrize(
    "grid",
    ["lr=", "lr=nan", "lr=1e999,0.1", "nope=1", "lr=0.1,0.1", "batch_size=0", "epochs=-1", "=1", "lr",
     "optimizer=sgd,adamw", "seed=99999999999999999999999", "lr=0x10", "classes=a,,b"],
    ids=repr,
)  # fmt: skip
def test_a_sweep_grid_with_an_odd_value(tmp_path, capsys, data_root, grid):
    small = ["--train-size", "64", "--val-size", "16", "--iters", "2", "--quiet", "--device", "cpu"]
    argv = ["sweep", "--data-root", str(data_root), "--out", str(tmp_path / "sweep"), *small, "--grid", grid]
    _cli_is_clean(argv, capsys, tmp_path)


@pytest.mark.parametrize("argv", [["report", "RUN", "--out", "x"], ["train", "--dataset-folder", "d"]])
def test_a_flag_of_another_command_is_not_offered_as_its_own_correction(capsys, argv):
    # `report RUN --out x` said "unrecognized arguments: --out x (did you mean --out?)"
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "did you mean" not in err and "an option of other commands" in err, err
