"""Data: loading real MNIST into tensors, splits, balanced subsets, class tasks, and the
errors for missing or corrupt files."""

import shutil

import numpy as np
import pytest
import torch

from torchlogreg import ConfigError, DataError, TrainConfig
from torchlogreg.data.inmemory import (
    balanced_quotas,
    balanced_subset,
    load_splits,
    prepare,
    resolve_data_root,
    select_classes,
    split_validation,
)

MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def test_mnist_is_held_as_uint8_tensors(mnist_splits):
    train, test, names = mnist_splits
    assert train.images.shape == (60000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 28, 28) and test.labels.dtype == torch.int64
    assert names == tuple("0123456789")
    assert torch.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_split_sizes(mnist_data, mnist_splits):
    assert (len(mnist_data.train), mnist_data.val, len(mnist_data.test)) == (60000, None, 10000)
    held_out = prepare(TrainConfig(val_size=5000), *mnist_splits)
    assert (len(held_out.train), len(held_out.val), len(held_out.test)) == (55000, 5000, 10000)
    with_patience = prepare(TrainConfig(patience=2), *mnist_splits)  # the rule: a tenth, at most 5,000
    assert (len(with_patience.train), len(with_patience.val)) == (55000, 5000)


def test_validation_split_is_fixed_by_seed(mnist_splits):
    train = mnist_splits[0]
    a = split_validation(train, 1000, seed=3)[1]
    b = split_validation(train, 1000, seed=3)[1]
    c = split_validation(train, 1000, seed=4)[1]
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_validation_and_train_do_not_overlap(tiny_data):
    from torchlogreg.data.inmemory import Split

    numbered = Split(torch.arange(100).view(100, 1, 1), torch.zeros(100, dtype=torch.long))
    rest, val = split_validation(numbered, 30, seed=0)
    ids = torch.cat([rest.images.flatten(), val.images.flatten()])
    assert len(val) == 30 and len(rest) == 70 and len(ids.unique()) == 100


def test_train_size_is_class_balanced(mnist_data):
    subset = balanced_subset(mnist_data.train, 1005, 10, seed=0)
    counts = torch.bincount(subset.labels, minlength=10).tolist()
    assert sum(counts) == 1005 and max(counts) - min(counts) <= 1


def test_balanced_quotas_give_a_short_class_s_share_to_others():
    assert balanced_quotas(10, [5, 5]) == [5, 5]
    assert balanced_quotas(9, [2, 10, 10]) == [2, 4, 3]
    assert sum(balanced_quotas(54_999, [5000, 6000, 44_000])) == 54_999


def test_train_size_of_all_samples_takes_them_all(mnist_data):
    assert len(balanced_subset(mnist_data.train, 60000, 10, seed=0)) == 60000


def test_train_size_larger_than_the_data_is_refused(mnist_data):
    with pytest.raises(ConfigError, match="train_size must be at most the 60000"):
        balanced_subset(mnist_data.train, 60001, 10, seed=0)


def test_classes_are_relabelled_in_order(mnist_splits):
    data = prepare(TrainConfig(classes=(8, 3)), *mnist_splits)
    assert data.binary and data.class_names == ("8", "3")
    assert set(data.test.labels.tolist()) == {0, 1}
    assert len(data.test) == 974 + 1010
    assert (data.test.labels == 0).sum() == 974  # the 8s come first


def test_positive_class_against_the_rest(mnist_splits):
    data = prepare(TrainConfig(positive=0), *mnist_splits)
    assert data.class_names == ("not 0", "0") and len(data.test) == 10000
    assert int(data.test.labels.sum()) == 980


def test_unknown_class_is_refused(mnist_splits):
    with pytest.raises(ConfigError, match="classes names class 12, but mnist has classes 0..9"):
        prepare(TrainConfig(classes=(3, 12)), *mnist_splits)


def test_select_classes_keeps_only_those():
    from torchlogreg.data.inmemory import Split

    split = Split(torch.zeros(6, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 2, 1, 0]))
    assert select_classes(split, (2, 0), None).labels.tolist() == [1, 0, 0, 1]


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHLOGREG_DATA", str(tmp_path))
    assert resolve_data_root("elsewhere").name == "elsewhere"
    assert resolve_data_root(None) == tmp_path
    monkeypatch.delenv("TORCHLOGREG_DATA")
    assert resolve_data_root(None).parts[-2:] == (".cache", "torchlogreg")


def test_missing_files_name_the_folder_and_the_four_files(tmp_path):
    with pytest.raises(DataError) as error:
        load_splits("mnist", tmp_path, download=False)
    message = str(error.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in MNIST_FILES:
        assert name in message


def test_offline_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got: <urlopen error>"
        )

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(
        DataError, match="download failed: Error downloading train-images-idx3-ubyte.gz"
    ) as error:
        load_splits("mnist", tmp_path, download=True)
    assert "\n" not in str(error.value) and "t10k-labels-idx1-ubyte" in str(error.value)


@pytest.fixture
def mnist_copy(tmp_path, data_root):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copy(data_root / "MNIST" / "raw" / name, raw / name)
    return tmp_path, raw


def test_some_files_missing_are_named(mnist_copy):
    root, raw = mnist_copy
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"missing: t10k-labels-idx1-ubyte\)"):
        load_splits("mnist", root, download=False)


def test_truncated_file_is_refused(mnist_copy):
    root, raw = mnist_copy
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: header says 10000 x 28 x 28"):
        load_splits("mnist", root, download=False)


def test_count_mismatch_is_refused(mnist_copy):
    root, raw = mnist_copy
    labels = raw / "t10k-labels-idx1-ubyte"
    payload = labels.read_bytes()[8:-10]
    labels.write_bytes(b"\x00\x00\x08\x01" + len(payload).to_bytes(4, "big") + payload)
    with pytest.raises(DataError, match="holds 10000 images but .* holds 9990 labels"):
        load_splits("mnist", root, download=False)


def test_labels_out_of_range_are_refused(mnist_copy):
    root, raw = mnist_copy
    labels = raw / "train-labels-idx1-ubyte"
    blob = bytearray(labels.read_bytes())
    blob[8] = 11
    labels.write_bytes(bytes(blob))
    with pytest.raises(DataError, match="labels must lie in 0..9, found 0..11"):
        load_splits("mnist", root, download=False)


def test_a_validation_set_too_large_for_a_dataset_folder_says_what_fits(tmp_path):
    from torchlogreg.data.convert import convert
    from torchlogreg.data.inmemory import load_data

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (26, 4, 4), dtype=np.uint8), np.arange(26) % 2
    np.savez(tmp_path / "a.npz", train_images=images[:20], train_labels=labels[:20],
             test_images=images[20:], test_labels=labels[20:])  # fmt: skip
    folder = convert(tmp_path / "small", npz=tmp_path / "a.npz")["out"]
    fits = r"val_size must be at most 19, less than the 20 training samples of .*small, got 5000 \(a fifth"
    with pytest.raises(ConfigError, match=fits):
        load_data(TrainConfig(dataset=str(folder), val_size=5000))
    assert len(load_data(TrainConfig(dataset=str(folder), val_size=4)).val) == 4


def test_a_datas_fingerprint_sees_every_image_and_every_split(tiny_data):
    """A checkpoint's fingerprint: 1,000 sampled images had missed 59 of 60 changed rows, and the
    test split's labels were not in it at all."""
    import dataclasses

    from torchlogreg.data.inmemory import Split

    before = tiny_data.fingerprint()
    images = tiny_data.train.images.clone()
    images[1] = 255 - images[1]
    changed = dataclasses.replace(tiny_data, train=Split(images, tiny_data.train.labels))
    labels = tiny_data.test.labels.clone()
    labels[0] = (labels[0] + 1) % tiny_data.n_classes
    relabelled = dataclasses.replace(tiny_data, test=Split(tiny_data.test.images, labels))
    assert changed.fingerprint()["digest"] != before["digest"] != relabelled.fingerprint()["digest"]
    assert tiny_data.fingerprint() == before
