"""Datasets as in-memory tensors: load with torchvision once, then split and subset by index.

Each split is held as ONE uint8 tensor (N x 28 x 28) and one int64 label tensor; the trainer
scales batches to [0, 1] as it draws them, so no per-sample Python or PIL work ever runs.

    >>> data = load_data(TrainConfig(dataset="mnist", data_root="../shared/data"))
    >>> data.train.images.shape, data.class_names
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import TrainConfig
from .datasets import DATASETS, DatasetSpec
from .exceptions import ConfigError, DataError, did_you_mean
from .ondisk import FORMAT, DiskImages

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

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train.images.shape[1:])


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


_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x0C: np.dtype(">i4")}


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (uint8 or int32; gzipped when named .gz), checked against its header.

    Written by hand rather than through torchvision: importing torchvision costs ~2 s (more than
    training takes), and its reader checks the format with bare asserts, which give no message.
    """
    try:
        blob = path.read_bytes()
        if path.suffix == ".gz":
            blob = gzip.decompress(blob)
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    if len(blob) < 4 or blob[0:2] != b"\x00\x00" or blob[2] not in _IDX_TYPES or not 1 <= blob[3] <= 3:
        raise DataError(
            f"{path}: not an IDX file (magic number {blob[:4].hex() or 'missing'}, "
            "expected 0000080N or 00000c0N)"
        )
    dtype, ndim = _IDX_TYPES[blob[2]], blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{path}: IDX header cut short ({len(blob)} bytes)")
    dims = [int.from_bytes(blob[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(blob) - header != expected:
        raise DataError(
            f"{path}: header says {' x '.join(map(str, dims))} values ({expected} bytes) but the file "
            f"holds {len(blob) - header} bytes after the header (truncated or corrupt)"
        )
    return np.frombuffer(blob, dtype=dtype, offset=header).reshape(dims)


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x H x W uint8) and labels (N) from two IDX files, checked to belong together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images N x H x W, got shape {images.shape}")
    if labels.ndim == 2:  # QMNIST: one row of metadata per image, the class first
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected one label per image, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    return images, labels


def _download(name: str, spec: DatasetSpec, root: Path, raw: Path) -> None:
    """Fetch the dataset with torchvision (mirrors, md5 check, extraction)."""
    from torchvision import datasets  # lazy: only needed when files are missing

    cls = getattr(datasets, spec.torchvision_class)
    kwargs = {"split": spec.split} if spec.split else {}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            for train in (True, False):
                if spec.torchvision_class == "QMNIST":  # takes `what` instead of `train`
                    cls(str(root), what="train" if train else "test", download=True)
                else:
                    cls(str(root), train=train, download=True, **kwargs)
    except Exception as error:  # torchvision raises RuntimeError, URLError or OSError here
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
        tensor = torch.from_numpy(images.copy())  # copy: frombuffer arrays are read-only
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
        raise ConfigError(f"val_size must be smaller than the {len(split)} training samples, got {val_size}")
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


def prepare(config: TrainConfig, train: Split, test: Split, names: tuple[str, ...]) -> Data:
    """Apply the task (classes/positive), the validation split and the training subset."""
    class_names, source_labels = _task_classes(config, names)
    train = select_classes(train, config.classes, config.positive)
    test = select_classes(test, config.classes, config.positive)
    train, val = split_validation(train, config.val_size, config.seed)
    if config.train_size is not None:
        train = balanced_subset(train, config.train_size, len(class_names), config.seed)
    return Data(config.dataset, train, val, test, class_names, source_labels, config.binary)


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
        uint8 images (N, H, W) and int64 labels for the train, validation and test splits.

    Examples
    --------
    >>> import torchlogreg as tl
    >>> data = tl.load_data(tl.preset("default"), download=False)  # doctest: +SKIP
    >>> data.train.images.shape, data.class_names[:3]  # doctest: +SKIP
    (torch.Size([55000, 28, 28]), ('0', '1', '2'))
    """
    if config.dataset in DATASETS:
        train, test, names = load_splits(config.dataset, config.data_root, download)
        return prepare(config, train, test, names)
    folder = Path(config.dataset).expanduser()
    if not (folder / "meta.json").is_file():
        what = "is not a folder" if not folder.is_dir() else "holds no meta.json"
        raise DataError(
            f"dataset {config.dataset}: {folder} {what}; write a dataset folder with 'torchlogreg data "
            f"convert', or use a built-in dataset: {', '.join(DATASETS)}"
        )
    return load_disk_data(config)


def load_run_data(
    config: TrainConfig,
    n_classes: int,
    dataset: str | None = None,
    data_root: str | None = None,
    download: bool = True,
) -> Data:
    """The splits a saved run is measured on (its own dataset, or another one with as many classes):
    the same validation split as in training, the whole training set."""
    config = config.replace(
        dataset=dataset or config.dataset, data_root=data_root or config.data_root, train_size=None
    )
    data = load_data(config, download)
    if data.n_classes != n_classes:
        raise ConfigError(
            f"dataset {config.dataset} gives {data.n_classes} classes but the run's model has {n_classes}"
        )
    return data


def read_meta(folder: Path) -> dict:
    """A dataset folder's meta.json, checked: format, class names, image shape."""
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DataError(f"{path}: cannot read it as JSON ({type(error).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a torchlogreg dataset folder (format {FORMAT!r} expected)")
    names, shape = meta.get("class_names"), meta.get("image_shape")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: class_names must list at least two names, got {names!r}")
    if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise DataError(f"{path}: image_shape must be [height, width], got {shape!r}")
    return meta


def _disk_labels(path: Path, count: int, n_classes: int) -> torch.Tensor:
    """A dataset folder's labels: `count` integers in 0..n_classes-1, else a DataError naming the file."""
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: cannot read it as a .npy array ({error})") from None
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected {count} integer labels, got {labels.dtype} {labels.shape}")
    if count and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{path}: labels must lie in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return torch.from_numpy(labels.astype(np.int64))


def load_disk_data(config: TrainConfig) -> Data:
    """Data for `config` from the dataset folder `config.dataset`; train stays on disk."""
    folder = Path(config.dataset).expanduser()
    meta = read_meta(folder)
    if config.classes is not None or config.positive is not None or config.train_size is not None:
        raise ConfigError(
            f"classes, positive and train_size need an in-memory dataset; {folder} is read from disk as it is"
        )
    train_images = DiskImages(folder / "train-images.npy")
    names = tuple(meta["class_names"])
    train_labels = _disk_labels(folder / "train-labels.npy", len(train_images), len(names))
    n_train = len(train_images) - config.val_size
    if n_train <= 0:
        raise ConfigError(f"val_size must be smaller than the {len(train_images)} training samples")
    val = None
    if config.val_size:
        val = Split(
            train_images.read(n_train, len(train_images)).reshape(-1, *train_images.image_shape),
            train_labels[n_train:],
        )
    test_images = DiskImages(folder / "test-images.npy")
    test = Split(
        test_images.read(0, len(test_images)).reshape(-1, *test_images.image_shape),
        _disk_labels(folder / "test-labels.npy", len(test_images), len(names)),
    )
    train = Split(train_images.view(0, n_train), train_labels[:n_train])
    return Data(str(folder), train, val, test, names, tuple(range(len(names))), len(names) == 2)
