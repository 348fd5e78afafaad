"""Datasets as in-memory tensors: load with torchvision once, then split and subset by index.

Each split is held as ONE uint8 tensor (N x 28 x 28) and one int64 label tensor; the trainer
scales batches to [0, 1] as it draws them, so no per-sample Python or PIL work ever runs.

    >>> data = load_data(TrainConfig(dataset="mnist", data_root="../shared/data"))
    >>> data.train.images.shape, data.class_names
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.config import TrainConfig
from ..base.datasets import DATASETS, DatasetSpec, is_dataset_folder
from ..base.exceptions import ConfigError, DataError, did_you_mean, listed
from .idxfiles import read_idx_pair
from .images import MNIST_STYLE
from .ondisk import read_dataset_folder, read_meta
from .rules import validation_rows

DATA_ENV = "TORCHLOGREG_DATA"


@dataclass(frozen=True)
class Split:
    """One set of samples: uint8 images (N, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


FINGERPRINT_ROWS = 1000  # training images a checkpoint's data digest reads


@dataclass(frozen=True)
class Data:
    """Train, validation and test splits with the names of their classes."""

    dataset: str
    train: Split
    val: Split | None
    test: Split
    class_names: tuple[str, ...]
    source_labels: tuple[int, ...]  # dataset label behind each class index
    binary: bool
    pictures: str = MNIST_STYLE  # how a picture file becomes these pixels (images.PICTURE_RULES)
    csv_label: int | None = None  # where its CSV without a header held the label (convert.headerless_label)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])

    def fingerprint(self) -> dict:
        """What identifies these splits, in one pass: each split's rows, the shape, the classes, and a
        digest of every split's labels, of each pixel's sum over its images, and of FINGERPRINT_ROWS
        training images spread over the set (a checkpoint records it: a resume on other data would
        go on silently from the old state; 1,000 sampled images alone missed 59 of 60 rows)."""
        import hashlib

        digest = hashlib.sha256()
        splits = {"train": self.train, "val": self.val, "test": self.test}
        for split in (split for split in splits.values() if split is not None):
            digest.update(split.labels.cpu().numpy().astype("<i8").tobytes())
            digest.update(_pixel_sums(split.images).astype("<f8").tobytes())
        images = self.train.images
        index = torch.linspace(0, len(images) - 1, min(FINGERPRINT_ROWS, len(images))).round().long()
        digest.update(np.ascontiguousarray(torch.as_tensor(images[index]).cpu().numpy()).tobytes())
        rows = {name: len(split) for name, split in splits.items() if split is not None}
        return {**rows, "shape": list(self.image_shape), "classes": list(self.class_names),
                "digest": digest.hexdigest()[:16]}  # fmt: skip


def _pixel_sums(images, chunk: int = 65_536) -> np.ndarray:
    """Each pixel's sum over `images` (a tensor, or images on disk read a chunk at a time), in
    float64 (exact for uint8 pixels). NumPy's: torch's reduction of uint8 columns took 8x as long."""
    total = np.zeros(math.prod(images.shape[1:]), dtype=np.float64)
    for start in range(0, len(images), chunk):
        rows = torch.as_tensor(images[start : start + chunk]).cpu().numpy().reshape(-1, len(total))
        total += rows.sum(0, dtype=np.int64 if rows.dtype == np.uint8 else np.float64)
    return total


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """`data_root`, else $TORCHLOGREG_DATA, else ~/.cache/torchlogreg."""
    if data_root:
        return Path(data_root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path.home() / ".cache" / "torchlogreg"


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise ConfigError(
            f"dataset must be one of {', '.join(DATASETS)}, got {name!r}{did_you_mean(name, DATASETS)}"
        )
    return DATASETS[name]


def _missing_message(name: str, raw: Path, spec: DatasetSpec, reason: str) -> str:
    present = {p.name for p in raw.iterdir()} if raw.is_dir() else set()
    missing = [f for f in spec.files if f not in present]
    return (
        f"{name} data not found in {raw} ({reason}); expected the files "
        f"{', '.join(spec.files)} (missing: {', '.join(missing) or 'none'}). "
        f"Put them there, or point --data-root / ${DATA_ENV} at a folder holding "
        f"{spec.torchvision_class}/raw/"
    )


def _new_paths(raw: Path) -> tuple[list[Path], set[Path]]:
    """(the folders from `raw` up that do not exist yet, deepest first; the files `raw` holds now)."""
    missing = []
    folder = raw
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing, set(raw.iterdir()) if raw.is_dir() else set()


def _remove_new(folders: list[Path], files_before: set[Path], raw: Path) -> None:
    """Undo a failed download: the files it left in `raw`, then the folders it made, if empty."""
    if raw.is_dir():
        for path in set(raw.iterdir()) - files_before:
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only an empty folder: nothing of anyone else's is removed


def _download(name: str, spec: DatasetSpec, root: Path, raw: Path) -> None:
    """Fetch the dataset with torchvision (mirrors, md5 check, extraction); a failed download leaves
    no folders or files behind that were not there before."""
    from torchvision import datasets  # lazy: only needed when files are missing

    cls = getattr(datasets, spec.torchvision_class)
    kwargs = {"split": spec.split} if spec.split else {}
    new_folders, files_before = _new_paths(raw)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for train in (True, False):
                if spec.torchvision_class == "QMNIST":  # takes `what` instead of `train`
                    cls(str(root), what="train" if train else "test", download=True)
                else:
                    cls(str(root), train=train, download=True, **kwargs)
    except BaseException as error:  # torchvision raises RuntimeError, URLError or OSError here; or Ctrl-C
        _remove_new(new_folders, files_before, raw)
        if not isinstance(error, Exception):
            raise
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DataError(_missing_message(name, raw, spec, f"download failed: {reason}")) from error


def load_splits(
    name: str, data_root: str | os.PathLike | None = None, download: bool = True
) -> tuple[Split, Split, tuple[str, ...]]:
    """The full train and test splits of dataset `name` and its class names."""
    spec = _spec(name)
    root = resolve_data_root(data_root)
    raw = root / spec.torchvision_class / "raw"
    if not all((raw / f).is_file() for f in spec.files):
        if not download:
            raise DataError(_missing_message(name, raw, spec, "download disabled"))
        _download(name, spec, root, raw)
    splits = []
    for images_file, labels_file in (spec.files[0:2], spec.files[2:4]):
        images, labels = read_idx_pair(raw / images_file, raw / labels_file)
        labels = labels.astype(np.int64) - spec.label_offset
        if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.class_names)):
            raise DataError(
                f"{raw / labels_file}: labels must lie in {spec.label_offset}.."
                f"{len(spec.class_names) - 1 + spec.label_offset}, found "
                f"{labels.min() + spec.label_offset}..{labels.max() + spec.label_offset}"
            )
        tensor = torch.from_numpy(images)
        if spec.transposed:
            tensor = tensor.transpose(1, 2).contiguous()
        splits.append(Split(tensor, torch.from_numpy(labels)))
    return splits[0], splits[1], spec.class_names


def select_classes(split: Split, classes: tuple[int, ...] | None, positive: int | None) -> Split:
    """Keep `classes` (relabelled 0..k-1 in the given order) or mark `positive` as 1, rest 0."""
    if positive is not None:
        return Split(split.images, (split.labels == positive).long())
    if classes is None:
        return split
    wanted = torch.tensor(classes)
    keep = torch.isin(split.labels, wanted)
    lookup = torch.full((int(split.labels.max()) + 1,), -1, dtype=torch.long)
    lookup[wanted] = torch.arange(len(classes))
    return Split(split.images[keep], lookup[split.labels[keep]])


def split_validation(split: Split, val_size: int, seed: int) -> tuple[Split, Split | None]:
    """Carve `val_size` random samples (fixed by `seed`) out of `split`."""
    if val_size == 0:
        return split, None
    if val_size >= len(split):
        raise ConfigError(
            f"val_size must be smaller than the {len(split)} training samples, got {val_size}; choose "
            f"0..{len(split) - 1} (0: no validation set), or leave it unset to follow the data"
        )
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return split.take(order[val_size:].sort().values), split.take(order[:val_size].sort().values)


def balanced_quotas(size: int, available: list[int]) -> list[int]:
    """Samples to take per class: equal shares, a class short of its share giving the rest to others."""
    quotas = [0] * len(available)
    remaining = size
    open_classes = [c for c, count in enumerate(available) if count > 0]
    while remaining > 0 and open_classes:
        share, extra = divmod(remaining, len(open_classes))
        for rank, c in enumerate(open_classes):
            give = min(share + (1 if rank < extra else 0), available[c] - quotas[c])
            quotas[c] += give
            remaining -= give
        open_classes = [c for c in open_classes if quotas[c] < available[c]]
    return quotas


def balanced_subset(split: Split, size: int, n_classes: int, seed: int) -> Split:
    """`size` samples with the classes as equal as the data allows, chosen at random by `seed`."""
    if size > len(split):
        raise ConfigError(
            f"train_size must be at most the {len(split)} training samples available, got {size}"
        )
    if size < n_classes:  # a class with no training row cannot be learned (its bias only falls)
        raise ConfigError(f"train_size must be at least the {n_classes} classes (a row of each), got {size}")
    generator = torch.Generator().manual_seed(seed + 1)
    by_class = [torch.nonzero(split.labels == c).flatten() for c in range(n_classes)]
    quotas = balanced_quotas(size, [len(members) for members in by_class])
    picked = [
        members[torch.randperm(len(members), generator=generator)[:quota]]
        for members, quota in zip(by_class, quotas, strict=True)
    ]
    return split.take(torch.cat(picked).sort().values)


def _task_classes(config: TrainConfig, names: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Class names and dataset labels of the task `config` describes; checks they exist."""
    requested = (
        config.classes
        if config.classes is not None
        else ((config.positive,) if config.positive is not None else ())
    )
    bad = [c for c in requested if not 0 <= c < len(names)]
    if bad:
        option = "classes" if config.classes is not None else "positive"
        raise ConfigError(
            f"{option} names class {bad[0]}, but {config.dataset} has classes 0..{len(names) - 1}"
        )
    if config.positive is not None:
        return (f"not {names[config.positive]}", names[config.positive]), (-1, config.positive)
    if config.classes is not None:
        return tuple(names[c] for c in config.classes), tuple(config.classes)
    return names, tuple(range(len(names)))


def _val_size(config: TrainConfig, rows: int) -> int:
    """config.val_size, or its rule for `rows` training rows when None."""
    return config.val_size if config.val_size is not None else validation_rows(rows, config.patience)


def _check_every_class_left(train: Split, class_names: tuple[str, ...]) -> None:
    """A class with no training row cannot be learned (its bias only falls): refused where the
    validation split took a class's every row."""
    present = set(train.labels.unique().tolist())
    missing = [name for label, name in enumerate(class_names) if label not in present]
    if missing:
        raise ConfigError(
            f"the validation split leaves no training row of class {', '.join(missing[:10])} "
            f"({len(missing)} of {len(class_names)}); lower the validation rows (val_size)"
        )


def prepare(config: TrainConfig, train: Split, test: Split, names: tuple[str, ...]) -> Data:
    """Apply the task (classes/positive), the validation split and the training subset."""
    class_names, source_labels = _task_classes(config, names)
    train = select_classes(train, config.classes, config.positive)
    test = select_classes(test, config.classes, config.positive)
    train, val = split_validation(train, _val_size(config, len(train)), config.seed)
    _check_every_class_left(train, class_names)
    if config.train_size is not None:
        train = balanced_subset(train, config.train_size, len(class_names), config.seed)
    binary = len(class_names) == 2  # (a dataset of two classes too: with train_size it had been softmax)
    return Data(config.dataset, train, val, test, class_names, source_labels, binary)


def dataset_location(dataset: str) -> str:
    """`dataset` as a run should record it: a built-in name as it is, a dataset folder as an
    absolute path, so the run finds its data again from any working directory (evaluate, report)."""
    if dataset in DATASETS:
        return dataset
    return os.path.abspath(Path(dataset).expanduser())


def load_data(config: TrainConfig, download: bool = True) -> Data:
    """Load the dataset a configuration names, split and prepared for its task.

    Parameters
    ----------
    config : TrainConfig
        Its ``dataset`` (a built-in name such as ``"mnist"``, or a dataset folder written by
        ``torchlogreg data convert``), ``data_root``, and the task: ``classes``/``positive``,
        ``val_size``, ``train_size`` and ``seed``.
    download : bool, default=True
        Download a missing built-in dataset (through torchvision). With False a missing dataset is
        a :class:`DataError` that names the folder and the files expected there.

    Returns
    -------
    Data
        uint8 images (N, H, W) and int64 labels for the train, validation and test splits (``val``
        is None unless ``val_size`` or ``patience`` asks for a validation set).

    Examples
    --------
    >>> import torchlogreg as tl
    >>> data = tl.load_data(tl.preset("default"), download=False)  # doctest: +SKIP
    >>> data.train.images.shape, data.class_names[:3]  # doctest: +SKIP
    (torch.Size([60000, 28, 28]), ('0', '1', '2'))
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"load_data needs a TrainConfig, e.g. TrainConfig(dataset='mnist'), got {ascii(config)[:60]}"
        )
    if config.dataset in DATASETS:
        train, test, names = load_splits(config.dataset, config.data_root, download)
        return prepare(config, train, test, names)
    _check_folder(config.dataset)
    return load_disk_data(config)


def class_names_of(dataset: str) -> tuple[str, ...]:
    """The class names of `dataset` (a built-in name, or a dataset folder), without reading its data."""
    if dataset in DATASETS:
        return DATASETS[dataset].class_names
    _check_folder(dataset)
    return tuple(read_meta(Path(dataset).expanduser())["class_names"])


def check_dataset(dataset: str, of_run: bool = False) -> None:
    """A DataError where `dataset` names no built-in dataset and no dataset folder (`of_run`: a
    run's own, and the line says it moved and how to name where it is now)."""
    if dataset not in DATASETS:
        _check_folder(dataset, of_run)


def _check_folder(dataset: str, of_run: bool = False) -> None:
    """A DataError unless `dataset` is a folder holding a meta.json; for a run's own dataset
    (`of_run`) the line says the data has moved and how to name where it is now."""
    folder = Path(dataset).expanduser()
    if is_dataset_folder(folder):
        return
    what = "is not a folder" if not folder.is_dir() else "holds no meta.json"
    if of_run:
        raise DataError(
            f"the run's dataset {dataset}: {folder} {what} (moved or deleted since training?); "
            "give --dataset DIR (evaluate, report, train --resume) to use it where it is now"
        )
    raise DataError(
        f"dataset {dataset}: {folder} {what}; write a dataset folder with 'torchlogreg data "
        f"convert', or use a built-in dataset: {', '.join(DATASETS)}"
    )


def load_run_data(
    config: TrainConfig,
    class_names: tuple[str, ...],
    dataset: str | None = None,
    data_root: str | None = None,
    download: bool = True,
    image_shape: tuple[int, ...] | None = None,
) -> Data:
    """The splits a saved run is measured on (its own dataset, or another one with the same classes): the
    same validation split as in training, the whole training set. The dataset's classes must be the run's
    `class_names` (in any order: its labels are put in the run's); scored against other names, every label
    would mean something else. Its images must be of the run's `image_shape` (when given): as many pixels
    in another layout would be scored as pictures they are not. The data root is the caller's
    (`data_root`, else $TORCHLOGREG_DATA, else the default), never the one the run recorded: a run folder
    may come from a stranger, and reading it must not choose where files are written."""
    config = config.replace(dataset=dataset or config.dataset, data_root=data_root, train_size=None)
    if dataset is None:
        check_dataset(config.dataset, of_run=True)
    data = load_data(config, download)
    if image_shape is not None and tuple(data.image_shape) != tuple(image_shape):
        raise ConfigError(
            f"dataset {config.dataset} holds {_sides(data.image_shape)} images but the run takes "
            f"{_sides(image_shape)} ones; give a dataset of {_sides(image_shape)} images"
        )
    if data.n_classes != len(class_names):
        raise ConfigError(
            f"dataset {config.dataset} gives {data.n_classes} classes but the run's model has "
            f"{len(class_names)}"
        )
    if tuple(data.class_names) == tuple(class_names):
        return data
    if sorted(data.class_names) != sorted(class_names):
        raise ConfigError(
            f"dataset {config.dataset}'s classes ({listed(data.class_names)}) are not the run's "
            f"({listed(class_names)}); give a dataset with the run's class names"
        )
    return _in_order_of(data, tuple(class_names))


def _sides(shape: tuple[int, ...]) -> str:
    return "x".join(str(side) for side in shape)


def _in_order_of(data: Data, class_names: tuple[str, ...]) -> Data:
    """`data` with its labels renumbered so that label i is class_names[i] (the same names, reordered)."""
    order = torch.tensor([class_names.index(name) for name in data.class_names])
    relabel = lambda split: None if split is None else Split(split.images, order[split.labels])  # noqa: E731
    source = dict(zip(data.class_names, data.source_labels, strict=True))
    return dataclasses.replace(
        data, train=relabel(data.train), val=relabel(data.val), test=relabel(data.test),
        class_names=class_names, source_labels=tuple(source[name] for name in class_names),
    )  # fmt: skip


def _read_rows(rows: Split | None, images) -> Split | None:
    """`rows` (a split whose images are row numbers of the dataset folder's `images`) with those rows
    read into memory."""
    if rows is None:
        return None
    return Split(images.take(rows.images).reshape(len(rows), *images.image_shape), rows.labels)


def load_disk_data(config: TrainConfig) -> Data:
    """Data for `config` from the dataset folder `config.dataset`; train stays on disk, unless the
    task takes some of its rows (classes, positive, train_size): then those rows are read into
    memory and prepared as a built-in dataset's."""
    folder = Path(config.dataset).expanduser()
    read_meta(folder)
    found = read_dataset_folder(folder)
    if config.classes is not None or config.positive is not None or config.train_size is not None:
        # the task prepared on the rows' numbers (it reads labels alone), then only its rows read
        train, test = (Split(torch.arange(len(labels)), labels) for _, labels in (found.train, found.test))
        data = prepare(config, train, test, found.class_names)
        return dataclasses.replace(
            data, train=_read_rows(data.train, found.train[0]), val=_read_rows(data.val, found.train[0]),
            test=_read_rows(data.test, found.test[0]), dataset=str(folder), pictures=found.meta["pictures"],
            csv_label=found.meta.get("csv_label"),
        )  # fmt: skip
    train_images, train_labels = found.train
    val_size = _val_size(config, len(train_images))
    n_train = len(train_images) - val_size
    if n_train <= 0:
        raise ConfigError(
            f"val_size must be at most {len(train_images) - 1}, less than the {len(train_images)} training "
            f"samples of {folder}, got {config.val_size} (a fifth of them: {len(train_images) // 5})"
        )
    val = None
    if val_size:
        val = Split(train_images[n_train : len(train_images)], train_labels[n_train:])
    test_images, test_labels = found.test
    test = Split(test_images[0 : len(test_images)], test_labels)
    train = Split(train_images.view(0, n_train), train_labels[:n_train])
    names = found.class_names
    classes = tuple(range(len(names)))
    pictures, csv_label = found.meta["pictures"], found.meta.get("csv_label")
    return Data(str(folder), train, val, test, names, classes, len(names) == 2, pictures, csv_label)
