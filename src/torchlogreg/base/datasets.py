"""The one registry of built-in datasets (their names, files and class names), and the one test of
what makes a folder a dataset folder (`is_dataset_folder`; data/ondisk.py reads and writes them).

The lowest layer: it imports nothing from the package, so the config's pure validation, the CLI's
--dataset and the data loaders all read the same names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DATASET_META = "meta.json"  # the file that makes a folder a dataset folder

_DIGITS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class DatasetSpec:
    """Where one MNIST-family dataset lives and how to read it."""

    torchvision_class: str  # class in torchvision.datasets that downloads it (also its folder)
    files: tuple[str, ...]  # train images, train labels, test images, test labels in <class>/raw
    class_names: tuple[str, ...]
    split: str | None = None  # EMNIST split
    transposed: bool = False  # EMNIST images are stored transposed
    label_offset: int = 0  # EMNIST letters are labelled 1..26


def _idx_files(train_prefix: str, test_prefix: str, labels: str = "labels-idx1-ubyte") -> tuple[str, ...]:
    return tuple(
        f"{prefix}-{kind}" for prefix in (train_prefix, test_prefix) for kind in ("images-idx3-ubyte", labels)
    )


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", _idx_files("train", "t10k"), _DIGITS),
    "fashion-mnist": DatasetSpec(
        "FashionMNIST",
        _idx_files("train", "t10k"),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "kmnist": DatasetSpec(
        "KMNIST", _idx_files("train", "t10k"), ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    ),
    "qmnist": DatasetSpec("QMNIST", _idx_files("qmnist-train", "qmnist-test", "labels-idx2-int"), _DIGITS),
    "emnist-digits": DatasetSpec(
        "EMNIST", _idx_files("emnist-digits-train", "emnist-digits-test"), _DIGITS, "digits", transposed=True
    ),
    "emnist-letters": DatasetSpec(
        "EMNIST",
        _idx_files("emnist-letters-train", "emnist-letters-test"),
        tuple("abcdefghijklmnopqrstuvwxyz"),
        "letters",
        transposed=True,
        label_offset=1,
    ),
}

DATASET_NAMES = tuple(DATASETS)


def is_dataset_folder(name: str | os.PathLike) -> bool:
    """Whether `name` is a dataset folder: it holds a meta.json (checked when read: ondisk.read_meta)."""
    return (Path(name).expanduser() / DATASET_META).is_file()


def looks_like_folder(name: str) -> bool:
    """Whether `name` is written as a path (data/mine, ./mine, ~/mine, /abs): no disk access."""
    return "/" in name or "\\" in name or name.startswith((".", "~"))
