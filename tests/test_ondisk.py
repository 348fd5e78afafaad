"""Out-of-core data: the on-disk format round trip, training from disk to the in-memory accuracy,
and clear errors for what it does not support."""

import json

import numpy as np
import pytest
import torch

from torchlogreg import ConfigError, DataError, preset, train
from torchlogreg.cli import main
from torchlogreg.data import Split, load_data
from torchlogreg.ondisk import DiskImages, write_dataset


@pytest.fixture(scope="module")
def mnist_on_disk(tmp_path_factory, mnist_splits):
    return write_dataset(tmp_path_factory.mktemp("disk") / "mnist", *mnist_splits)


def test_format_round_trip(mnist_on_disk, mnist_splits):
    train, test, names = mnist_splits
    meta = json.loads((mnist_on_disk / "meta.json").read_text())
    assert meta["splits"] == {"train": 60000, "test": 10000} and meta["class_names"] == list(names)
    images = DiskImages(mnist_on_disk / "train-images.npy")
    assert images.shape == (60000, 28, 28)
    labels = np.load(mnist_on_disk / "train-labels.npy")
    # rows are shuffled, but the multiset of (image, label) pairs is the same
    assert sorted(np.bincount(labels).tolist()) == sorted(torch.bincount(train.labels).tolist())
    test_images = DiskImages(mnist_on_disk / "test-images.npy")
    assert torch.equal(test_images[0:10], test.images[:10].reshape(10, -1))
    assert torch.equal(images.view(100, 200)[0:5], images[100:105])


def test_training_from_disk_matches_in_memory_accuracy(mnist_on_disk, default_result):
    config = preset("default", dataset=str(mnist_on_disk), device="cpu")
    data = load_data(config)
    assert isinstance(data.train.images, DiskImages) and len(data.train) == 55000 and len(data.val) == 5000
    result = train(config, data, verbose=False)
    ours, memory = result.metrics["test"]["accuracy"], default_result.metrics["test"]["accuracy"]
    assert ours >= 0.92 and abs(ours - memory) <= 0.005
    assert result.metrics["train"]["n"] == 55000


def test_cli_convert_and_train(tmp_path, data_root, capsys):
    folder = tmp_path / "data"
    npz = tmp_path / "tiny.npz"
    rng = np.random.default_rng(0)
    np.savez(
        npz,
        train_images=rng.integers(0, 255, (300, 28, 28), dtype=np.uint8),
        train_labels=np.arange(300) % 3,
        test_images=rng.integers(0, 255, (30, 28, 28), dtype=np.uint8),
        test_labels=np.arange(30) % 3,
    )
    assert main(["data", "convert", "--from-npz", str(npz), "--out", str(folder)]) == 0
    assert (
        main(
            [
                "train",
                "--dataset",
                str(folder),
                "--val-size",
                "50",
                "--batch-size",
                "50",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["n"] == 30


def test_unsupported_options_and_broken_files_are_refused(mnist_on_disk, tmp_path):
    with pytest.raises(ConfigError, match="need an in-memory dataset"):
        load_data(preset("default", dataset=str(mnist_on_disk), train_size=100))
    (tmp_path / "bad.npy").write_bytes(b"nonsense")
    with pytest.raises(DataError, match="not a .npy file"):
        DiskImages(tmp_path / "bad.npy")
    np.save(tmp_path / "floats.npy", np.zeros((3, 28, 28), np.float32))
    with pytest.raises(DataError, match="expected a C-ordered uint8 array"):
        DiskImages(tmp_path / "floats.npy")
    assert Split  # the in-memory container the test split still uses
