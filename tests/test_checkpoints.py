"""Run folders: what is written, the round trip, and loading that refuses anything unsafe or
inconsistent."""

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from torchlogreg import CheckpointError, ConfigError
from torchlogreg.runfolder.checkpoints import load_run, save_run
from torchlogreg.training.evaluation import evaluate

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths


def test_run_folder_holds_the_promised_files(default_run):
    names = {p.name for p in default_run.iterdir()}
    assert {"model.safetensors", "model.json", "metrics.json", "history.csv"} <= names
    meta = json.loads((default_run / "model.json").read_text())
    assert meta["dataset"] == "mnist" and meta["class_names"] == list("0123456789")
    assert meta["input_shape"] == [28, 28] and meta["config"]["optimizer"] == "sgd"
    assert {"torch", "torchlogreg", "python"} <= meta["versions"].keys() and len(meta["weights_sha256"]) == 64
    metrics = json.loads((default_run / "metrics.json").read_text())
    assert (
        0 < metrics["test"]["accuracy"] <= 1
        and {"train", "train_seconds", "epochs", "iterations", "stop_reason", "converged"} <= metrics.keys()
    )
    header, first = (default_run / "history.csv").read_text().splitlines()[:2]
    assert header == "iteration,epoch,lr,loss,train_accuracy,val_accuracy,val_loss"
    assert first.startswith("1,")
    assert not list(default_run.glob(".*.tmp"))


def test_round_trip_gives_the_same_metrics_and_predictions(default_run, default_result, mnist_data):
    run = load_run(default_run)
    test = mnist_data.test
    assert evaluate(run.model, test.images, test.labels) == pytest.approx(default_result.metrics["test"])
    assert torch.equal(run.model.predict(test.images), default_result.model.predict(test.images))


def test_existing_run_is_not_overwritten(default_run, default_result):
    with pytest.raises(
        ConfigError, match="already holds a run; give out=ANOTHER_PATH, or overwrite=True to replace it"
    ) as error:
        save_run(default_result, default_run)
    assert error.value.parameter == "out"  # the parameter, for a caller's code (the CLI shows its flag)


@pytest.fixture
def run_copy(default_run, tmp_path):
    copy = tmp_path / "run"
    copy.mkdir()
    for path in default_run.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def test_pickle_posing_as_a_checkpoint_is_refused_without_running_it(run_copy, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (run_copy / "model.safetensors").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="looks like a pickle"):
        load_run(run_copy)
    assert not marker.exists()


@pytest.mark.parametrize("header_bytes", [384, 640, 0x1080])
def test_safetensors_whose_header_length_begins_like_a_pickle_is_read(tmp_path, header_bytes):
    """A safetensors file begins with its header's length: 384 bytes is b"\\x80\\x01...", as a
    binary 28x28 run's checkpoint was, and it had been refused as a pickle (the run lost)."""
    import hashlib

    from safetensors.torch import save

    from torchlogreg.runfolder.checkpoints import read_weights

    tensors = {"linear.weight": torch.arange(6.0).reshape(2, 3), "linear.bias": torch.ones(2)}
    plain = save(tensors)
    header = plain[8 : 8 + int.from_bytes(plain[:8], "little")].rstrip(b" ")
    assert len(header) < header_bytes
    blob = header_bytes.to_bytes(8, "little") + header.ljust(header_bytes, b" ") + _data(plain)
    assert blob[:1] == b"\x80"
    path = tmp_path / "weights.safetensors"
    path.write_bytes(blob)
    read = read_weights(path, hashlib.sha256(blob).hexdigest(), len(blob))
    assert all(torch.equal(read[name], tensors[name]) for name in tensors)


def _data(blob: bytes) -> bytes:
    """The tensor bytes of a safetensors `blob`: what follows its header."""
    return blob[8 + int.from_bytes(blob[:8], "little") :]


def test_torch_save_file_is_refused(run_copy):
    torch.save({"linear.weight": torch.zeros(10, 784)}, run_copy / "model.safetensors")
    with pytest.raises(CheckpointError, match="pickle / torch.save"):
        load_run(run_copy)


def test_changed_weights_fail_the_checksum(run_copy):
    path = run_copy / "model.safetensors"
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256 .* does not match"):
        load_run(run_copy)


def test_shapes_disagreeing_with_metadata_are_refused(run_copy):
    meta_path = run_copy / "model.json"
    meta = json.loads(meta_path.read_text())
    meta.update(n_classes=5, class_names=list("01234"), source_labels=list(range(5)))
    meta["weight_shapes"] = {"linear.weight": [5, 784], "linear.bias": [5]}  # model.json agrees with itself
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=r"tensors .*\(10, 784\).* do not match the shapes .*\(5, 784\)"
    ):
        load_run(run_copy)


@pytest.mark.parametrize(
    "change, said",
    [
        ({"format_version": 2}, "a newer run format than this torchlogreg reads"),
        ({"format_version": 0}, "format_version must be an integer 1..1"),
        ({"binary": True}, "binary must be false for 10 classes"),
        ({"source_labels": [0, 1]}, "source_labels must be 10 integers"),
        ({"weight_shapes": {"linear.weight": [10, 784]}}, "weight_shapes must be"),
        ({"config": {"foo": 1}}, "its config is damaged"),
    ],
)
def test_model_json_fields_that_disagree_with_the_model_are_refused(run_copy, change, said):
    """Each was loaded without a word by predict and export (a newcomer edited them in turn); a
    damaged config only evaluate refused."""
    meta_path = run_copy / "model.json"
    meta = json.loads(meta_path.read_text())
    if "config" in change:
        change = {"config": {**meta["config"], **change["config"]}}
    meta_path.write_text(json.dumps({**meta, **change}))
    with pytest.raises(CheckpointError, match=said):
        load_run(run_copy)


def test_missing_or_broken_metadata(run_copy, tmp_path):
    with pytest.raises(CheckpointError, match="is not a folder"):
        load_run(tmp_path / "nowhere")
    (run_copy / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json is not valid JSON"):
        load_run(run_copy)
    (run_copy / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json: is missing"):
        load_run(run_copy)


# --- run folders from strangers ------------------------------------------------------------------
import os  # noqa: E402
import shutil  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from torchlogreg import TorchLogRegError  # noqa: E402


def _copy(run, tmp_path, name="copy"):
    folder = tmp_path / name
    shutil.copytree(run, folder)
    return folder


@pytest.mark.parametrize("name", ["model.json", "model.safetensors", "metrics.json"])
def test_links_fifos_and_devices_are_refused_unread(default_run, tmp_path, name):
    for kind in ("symlink", "fifo", "folder"):
        folder = _copy(default_run, tmp_path, f"{name}-{kind}")
        (folder / name).unlink()
        if kind == "symlink":
            os.symlink("/dev/zero", folder / name)
        elif kind == "fifo":
            os.mkfifo(folder / name)  # opening it for reading would block forever
        else:
            (folder / name).mkdir()
        with pytest.raises(CheckpointError, match="not a regular file"):
            load_run(folder)


def test_an_empty_hash_does_not_turn_the_check_off(default_run, tmp_path):
    folder = _copy(default_run, tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["weights_sha256"] = ""
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="weights_sha256"):
        load_run(folder)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = [
    "n_features",
    "n_classes",
    "class_names",
    "threshold",
    "input_shape",
    "config",
    "weights_sha256",
    "format",
    "binary",
    "dataset",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, min_size=1, max_size=3))
def test_damaged_model_json_is_one_clear_error(default_run, tmp_path_factory, memory_cap, changes):
    """Any damage to model.json's fields: a CheckpointError, or a run that still loads; never another
    exception, and never memory without bound (the fixture caps the heap)."""
    folder = _copy(default_run, tmp_path_factory.mktemp("damaged"))
    meta = json.loads((folder / "model.json").read_text())
    meta.update(changes)
    (folder / "model.json").write_text(json.dumps(meta))
    try:
        run = load_run(folder)
        run.config, run.class_names, run.threshold, run.image_shape  # noqa: B018 - each must work
    except TorchLogRegError:
        pass


def test_reading_a_run_uses_the_users_data_root_not_the_runs(default_run, tmp_path, data_root, monkeypatch):
    # a run whose model.json names another data_root used to create <it>/MNIST/raw and download into it
    folder = _copy(default_run, tmp_path)
    theirs = tmp_path / "theirs"
    meta = json.loads((folder / "model.json").read_text())
    meta["config"]["data_root"] = str(theirs)
    (folder / "model.json").write_text(json.dumps(meta))
    from torchlogreg.apps.cli import main

    monkeypatch.setenv("TORCHLOGREG_DATA", str(data_root))
    assert main(["evaluate", str(folder), "--no-download"]) == 0
    assert not theirs.exists()


def test_a_failed_download_leaves_no_folders_behind(tmp_path, monkeypatch):
    import torchvision.datasets

    from torchlogreg import DataError
    from torchlogreg.data.inmemory import load_splits

    class FailingMNIST:  # what torchvision does offline: make the folders, start a file, fail
        def __init__(self, root, train=True, download=False):
            raw = os.path.join(root, "MNIST", "raw")
            os.makedirs(raw, exist_ok=True)
            with open(os.path.join(raw, "train-images-idx3-ubyte.gz"), "wb") as partial:
                partial.write(b"\x1f\x8b")
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nno network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", FailingMNIST)
    mine = tmp_path / "mine"
    with pytest.raises(DataError, match="download failed: Error downloading") as error:
        load_splits("mnist", mine)
    assert "\n" not in str(error.value)
    assert not mine.exists()
    (mine / "MNIST").mkdir(parents=True)
    (mine / "MNIST" / "keep.txt").write_text("the user's")
    with pytest.raises(DataError):
        load_splits("mnist", mine)
    assert [p.name for p in (mine / "MNIST").iterdir()] == ["keep.txt"]


def _tiny_result():
    from conftest import synthetic_data

    from torchlogreg import TrainConfig, train

    return train(TrainConfig(batch_size=16, epochs=1, device="cpu", val_size=60), synthetic_data(side=28))


def test_a_full_disk_is_found_before_training(tmp_path, data_root, capsys):
    # train on a disk that filled printed its test accuracy, then lost the model in an OSError traceback
    from corpus.hostile import fill, small_disk

    from torchlogreg.apps.cli import main

    with small_disk(tmp_path / "disk"):
        fill(tmp_path / "disk", leave=16 * 1024)
        out = tmp_path / "disk" / "run"
        code = main(["train", "--data-root", str(data_root), "--out", str(out), "--epochs", "1", "--quiet"])
        captured = capsys.readouterr()
    assert code == 1, captured.err
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and "the disk is full" in err and "the run needs about" in err
    assert "test accuracy" not in captured.out


def test_a_save_that_fails_keeps_the_model_where_it_says(tmp_path, monkeypatch):
    import re
    import tempfile

    from corpus.hostile import fill, small_disk

    from torchlogreg import OutputError

    result = _tiny_result()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with small_disk(tmp_path / "disk"):
        (tmp_path / "disk" / "run").mkdir()
        fill(tmp_path / "disk", leave=4 * 1024)
        with pytest.raises(OutputError, match="the disk is full") as error:
            save_run(result, tmp_path / "disk" / "run")
        assert list((tmp_path / "disk" / "run").iterdir()) == []  # nothing half-saved passes for a run
    kept = Path(re.search(r"kept in (\S+):", str(error.value)).group(1))
    assert kept.parent == tmp_path
    run = load_run(kept)
    assert torch.equal(run.model.linear.weight, result.model.linear.weight.float())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_on_load(default_run, tmp_path, value):
    # NaN weights gave "probability": NaN in --json output (not JSON) and an evaluate of 9.8%
    import hashlib

    from safetensors.torch import load_file, save_file

    folder = _copy(default_run, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    tensors["linear.weight"][3, 100] = value
    save_file(tensors, folder / "model.safetensors")
    meta = json.loads((folder / "model.json").read_text())
    meta["weights_sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="linear.weight hold NaN or infinite values"):
        load_run(folder)


def test_a_device_that_holds_no_data_is_refused(default_run):
    from torchlogreg import ConfigError

    for device in (torch.device("meta"), 3):
        with pytest.raises(ConfigError, match="device must"):
            load_run(default_run, device=device)


def test_unknown_keys_in_model_json_are_refused(default_run, tmp_path):
    folder = _copy(default_run, tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta["class_namez"] = ["a", "b"]
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"unknown key 'class_namez' \(did you mean 'class_names'\?\)"):
        load_run(folder)


def test_a_model_json_declaring_huge_weights_is_refused_before_reading_them(default_run, tmp_path):
    folder = _copy(default_run, tmp_path)
    meta = json.loads((folder / "model.json").read_text())
    meta.update(
        n_features=4096 * 4096,
        input_shape=[4096, 4096],
        n_classes=100,
        class_names=[str(i) for i in range(100)],
    )
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="over the 2147483648 a run may hold"):
        load_run(folder)


TRAINING_MODULES = (
    "torchlogreg.training.trainer",
    "torchlogreg.training.engine",
    "torchlogreg.core.optimizers",
    "torchlogreg.training.runs",
)


def test_reading_a_run_loads_no_training_module(default_run, tmp_path):
    """predict, serve and export need the model and the run format, not the training stack."""
    digits = tmp_path / "digits.npy"
    np.save(digits, np.zeros((2, 28, 28), np.uint8))
    code = (
        "import sys; from torchlogreg.apps.cli import main; "
        "import torchlogreg.apps.export, torchlogreg.apps.serving; "
        f"from torchlogreg.runfolder.checkpoints import load_run; load_run({str(default_run)!r}); "
        f"code = main(['predict', {str(default_run)!r}, {str(digits)!r}, '--device', 'cpu']); "
        f"print(code, [m for m in {TRAINING_MODULES!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr


@pytest.mark.parametrize(
    "change, named",
    [({"test": {"accuracy": "high"}}, "test.accuracy must be a number in [0, 1]"),
     ({"test": {"accuracy": 1.5}}, "test.accuracy"), ({"train": {"loss": float("inf")}}, "train.loss"),
     ({"val": {"n": -1}}, "val.n must be an integer"), ({"test": [0.9]}, "test must be an object"),
     ({"train_seconds": "fast"}, "train_seconds must be a finite number")],
)  # fmt: skip
def test_a_damaged_metrics_file_is_refused_by_name(run_copy, change, named):
    """metrics.json from a stranger: "test high" and "training time fast s" had reached the report
    and serve's /api/model."""
    path = run_copy / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(CheckpointError, match=f"metrics.json: .*{re.escape(named)}"):
        load_run(run_copy)


def test_a_loaded_binary_run_decides_at_its_threshold(tmp_path):
    """tl.evaluate(run.model, ...) and tl.top_k gave 0.5's answers for a run trained at 0.3."""
    from conftest import synthetic_data

    from torchlogreg import TrainConfig, top_k, train

    data = synthetic_data(side=4, n_classes=2, n_val=0)
    config = TrainConfig(
        device="cpu", val_size=0, classes=(0, 1), threshold=0.45, epochs=1, batch_size=16, optimizer="sgd",
        lr=0.01,
    )  # (a short, timid run: probabilities near 0.5, some between the threshold and 0.5)
    result = train(config, data, out=tmp_path / "run", verbose=False)
    run = load_run(tmp_path / "run")
    assert run.model.threshold == 0.45 and result.model.threshold == 0.45
    probability = run.model.predict_proba(data.test.images)[:, 1]
    assert ((probability > 0.45) & (probability <= 0.5)).any()  # where 0.5 would decide otherwise
    assert evaluate(run.model, data.test.images, data.test.labels) == result.metrics["test"]
    assert evaluate(run.model, data.test.images, data.test.labels, 0.5) != result.metrics["test"]
    ranked = [row["index"] for row in top_k(run.model, data.test.images, run.class_names)]
    assert ranked == (probability > 0.45).long().tolist()
