"""Out-of-core datasets: uint8 images in .npy files on disk, read a shard at a time.

A dataset folder holds ``meta.json`` (class names, image shape, how pictures become its pixels)
plus ``train-images.npy`` (N x H x W uint8), ``train-labels.npy`` (N int64), ``test-images.npy``
and ``test-labels.npy``. The training rows are shuffled when written, so the validation set (the
last ``val_size`` rows) is a random one.

    torchlogreg data convert --dataset mnist --out data/mnist-disk
    torchlogreg train --dataset data/mnist-disk

Rows are read with plain file reads (not mmap), so what training holds in memory is one shard
of uint8 rows plus the model, whatever N is. Training shuffles runs of CHUNK_ROWS rows rather than
single rows (the file is shuffled already): each rank of a torchrun job then reads only its own
part of every batch, as a few contiguous reads, and the batches are the same at any world size.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..base.datasets import DATASET_META
from ..base.exceptions import DataError, InputError, did_you_mean
from ..base.storage import allocate, atomic_write_json
from .classnames import class_names_problem
from .images import MNIST_STYLE, check_pictures
from .npyfiles import npy_header, read_npy
from .readers import open_regular, read_capped

FORMAT = "torchlogreg-data"
SHARD_ROWS = 65_536  # rows read at once during training: ~51 MB of 28x28 uint8
CHUNK_ROWS = 32  # training shuffles runs of this many rows: each is one file read
SPAN_READ = 4  # `take` reads scattered rows as one span when it holds at most this many times as many
SPAN_BYTES = 16 * 2**20  # ... and at most this many bytes (a torchrun rank's share of a shard: run by run)


class DiskImages:
    """Rows of a uint8 .npy array on disk, read on demand; slicing gives (n, features) tensors."""

    def __init__(self, path: Path, start: int = 0, stop: int | None = None):
        self.path = Path(path)
        with open_regular(self.path, DataError) as handle:  # a FIFO or device is refused, not waited on
            try:
                shape, fortran_order, dtype = npy_header(handle, self.path)  # its length checked first
            except InputError as error:
                reason = str(error).removeprefix(f"{self.path}: ")
                raise DataError(f"{self.path}: not a .npy file ({reason})") from None
            self.offset = handle.tell()
        if dtype != np.uint8 or fortran_order or len(shape) < 2:
            raise DataError(f"{self.path}: expected a C-ordered uint8 array N x H x W, got {dtype} {shape}")
        self.image_shape = tuple(shape[1:])
        self.row_bytes = int(np.prod(self.image_shape))
        expected = self.offset + shape[0] * self.row_bytes
        if self.path.stat().st_size < expected:
            raise DataError(
                f"{self.path}: truncated ({self.path.stat().st_size} bytes, header says {expected})"
            )
        self.start, self.stop = start, shape[0] if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.image_shape)

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of this view, clipped to it, as (n, features) uint8: one file read."""
        start, stop = max(0, start), min(len(self), stop)
        return self.take(torch.arange(start, max(start, stop)))

    def take(self, rows: torch.Tensor, out: np.ndarray | None = None) -> torch.Tensor:
        """The given rows of this view, in that order, as (n, features) uint8: one read per run of
        consecutive rows, or one read of their whole span where it is at most SPAN_READ times as many
        rows and SPAN_BYTES (an even sample of a small set: one read instead of hundreds). With `out`
        (a C-contiguous uint8 array of at least that many rows of this view's features, which the
        caller reuses), the rows are read into its first rows and the result is a view of them."""
        rows = rows.numpy()
        if out is None:
            out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        elif (
            out.dtype != np.uint8 or out.ndim != 2 or out.shape[1] != self.row_bytes
            or len(out) < len(rows) or not out.flags.c_contiguous
        ):  # fmt: skip
            raise ValueError(
                f"take: out must be a C-contiguous uint8 array of at least {len(rows)} rows of "
                f"{self.row_bytes} features, got {out.dtype} {out.shape}"
            )
        else:
            out = out[: len(rows)]
        if not len(rows):
            return torch.from_numpy(out)
        low, high = int(rows.min()), int(rows.max())
        if low < 0 or high >= len(self):
            raise DataError(f"{self.path}: rows {low}..{high} outside 0..{len(self) - 1}")
        span = high - low + 1
        if len(rows) < span <= SPAN_READ * len(rows) and span * self.row_bytes <= SPAN_BYTES:  # few gaps
            np.take(self.take(torch.arange(low, high + 1)).numpy(), rows - low, axis=0, out=out)
            return torch.from_numpy(out)
        starts = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1)
        ends = np.append(starts[1:], len(rows))
        with open_regular(self.path, DataError) as handle:
            for first, last in zip(starts.tolist(), ends.tolist(), strict=True):
                handle.seek(self.offset + (self.start + int(rows[first])) * self.row_bytes)
                if handle.readinto(memoryview(out[first:last]).cast("B")) != (last - first) * self.row_bytes:
                    raise DataError(f"{self.path}: could not read rows (file shrank while training?)")
        return torch.from_numpy(out)

    def __getitem__(self, index) -> torch.Tensor:
        """Images (n, H, W) like an in-memory split's: a slice, or a tensor/list of row numbers."""
        if isinstance(index, slice):
            rows = torch.arange(*index.indices(len(self)))
        else:
            rows = torch.as_tensor(index, dtype=torch.long).reshape(-1)
            rows = torch.where(rows < 0, rows + len(self), rows)
        return self.take(rows).reshape(-1, *self.image_shape)

    def view(self, start: int, stop: int) -> DiskImages:
        return DiskImages(self.path, self.start + start, self.start + stop)


def shard_batches(
    shard_size: int, batch_size: int, generator: torch.Generator, rank: int = 0, world_size: int = 1
) -> tuple[torch.Tensor, list[int], list[int]]:
    """One epoch's pass over a shard: (this rank's rows in the order used, how many of them each
    batch takes, each batch's global size).

    The shard's CHUNK_ROWS-row runs are permuted and cut into batches of `batch_size`; rank r takes
    the r-th of `world_size` contiguous parts of every batch. The batches do not depend on the
    world size, so N processes do the same math as one.
    """
    # (in NumPy: a few operations on a few thousand numbers, where each torch call costs more than its work)
    order = torch.randperm(-(-shard_size // CHUNK_ROWS), generator=generator).numpy() * CHUNK_ROWS
    sequence = (order[:, None] + np.arange(CHUNK_ROWS)).reshape(-1)
    if shard_size % CHUNK_ROWS:  # the shard's last run is short
        sequence = sequence[sequence < shard_size]
    offsets = np.arange(0, shard_size, batch_size)
    sizes = np.minimum(shard_size - offsets, batch_size)
    firsts, lasts = offsets + rank * sizes // world_size, offsets + (rank + 1) * sizes // world_size
    local = lasts - firsts
    if world_size > 1:  # each batch's part [first, last): positions counted within the parts, then moved
        moved = np.repeat(firsts - (np.cumsum(local) - local), local)
        sequence = sequence[np.arange(len(moved)) + moved]
    return torch.from_numpy(sequence), local.tolist(), sizes.tolist()


MAX_META_BYTES = 4 * 2**20  # a dataset folder's meta.json: a few hundred bytes in practice
MAX_LABELS_BYTES = 2**30  # a dataset folder's labels .npy: 8 bytes a row
# write_dataset's keys
DATASET_META_KEYS = ("format", "class_names", "image_shape", "splits", "pictures", "csv_label")
DATASET_FILES = (  # what write_dataset writes: all a dataset folder holds
    DATASET_META,
    *(f"{split}-{part}.npy" for split in ("train", "test") for part in ("images", "labels")),
)


def read_meta(folder: Path) -> dict:
    """A dataset folder's meta.json, checked: format, class names, image shape."""
    path = folder / DATASET_META
    try:
        meta = json.loads(read_capped(path, MAX_META_BYTES, DataError))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DataError(f"{path}: cannot read it as JSON ({type(error).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a torchlogreg dataset folder (format {FORMAT!r} expected)")
    unknown = [str(key) for key in meta if key not in DATASET_META_KEYS]
    if unknown:
        problems = (f"unknown key {key[:80]!r}{did_you_mean(key, DATASET_META_KEYS)}" for key in unknown[:5])
        raise DataError(f"{path}: {'; '.join(problems)}")
    names, shape = meta.get("class_names"), meta.get("image_shape")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: class_names must list at least two names, got {ascii(names)[:200]}")
    if problem := class_names_problem(names):
        raise DataError(f"{path}: {problem}")
    if not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise DataError(f"{path}: image_shape must be [height, width], got {shape!r}")
    # folders written before the rule was recorded: read as they always were, MNIST-style
    check_pictures(meta.setdefault("pictures", MNIST_STYLE), f"{path}: pictures", DataError)
    if "csv_label" in meta and not is_csv_label(meta["csv_label"]):
        got = ascii(meta["csv_label"])[:40]
        raise DataError(f"{path}: csv_label must be a column index (-1: the last), got {got}")
    return meta


def is_csv_label(value) -> bool:
    """Whether `value` may be a recorded csv_label (convert.headerless_label's): -1, or an index past
    the first column within a row of at most 2**24 pixels and a label."""
    return type(value) is int and (value == -1 or 1 <= value <= 2**24)


def _disk_labels(path: Path, count: int, n_classes: int) -> torch.Tensor:
    """A dataset folder's labels: `count` integers in 0..n_classes-1, else a DataError naming the file."""
    labels = read_npy(path, min(MAX_LABELS_BYTES, max(count, 1) * 8), DataError)
    if labels.shape != (count,) or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: expected {count} integer labels, got {labels.dtype} {labels.shape}")
    if count and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(
            f"{path}: labels must lie in 0..{n_classes - 1}, found {labels.min()}..{labels.max()}"
        )
    return torch.from_numpy(labels.astype(np.int64))


@dataclasses.dataclass(frozen=True)
class DatasetFolder:
    """A dataset folder, read and checked: its meta.json, each split's images (on disk) and labels."""

    meta: dict
    train: tuple[DiskImages, torch.Tensor]
    test: tuple[DiskImages, torch.Tensor]

    @property
    def class_names(self) -> tuple[str, ...]:
        """meta.json's class names, one per label 0..k-1."""
        return tuple(self.meta["class_names"])


def _split_files(folder: Path, name: str, meta: dict) -> tuple[DiskImages, torch.Tensor]:
    """One split's images (of meta's image_shape) and labels (one per image, each a class)."""
    images = DiskImages(folder / f"{name}-images.npy")
    if tuple(meta["image_shape"]) != images.image_shape:
        raise DataError(
            f"{folder / DATASET_META}: image_shape {meta['image_shape']} is not the shape of the images in "
            f"{name}-images.npy, {list(images.image_shape)}"
        )
    labels = _disk_labels(folder / f"{name}-labels.npy", len(images), len(meta["class_names"]))
    return images, labels


def read_dataset_folder(folder: str | os.PathLike) -> DatasetFolder:
    """The dataset folder `folder` (see the module's docstring), every file checked against meta.json."""
    folder = Path(folder)
    meta = read_meta(folder)
    return DatasetFolder(meta, _split_files(folder, "train", meta), _split_files(folder, "test", meta))


def write_dataset(
    out: str | Path,
    train,
    test,
    class_names,
    seed: int = 0,
    chunk: int = SHARD_ROWS,
    pictures: str = MNIST_STYLE,
    csv_label: int | None = None,
) -> Path:
    """Write train/test Splits in the on-disk format; train rows are shuffled (by `seed`).
    `pictures` (images.PICTURE_RULES) records how a picture file becomes this data's pixels, so
    runs trained on it predict pictures the way the data was made; `csv_label`, where the training
    CSV held its label without a header (convert.headerless_label), so predict reads such rows alike."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    for name, split, rows in (("train", train, order), ("test", test, torch.arange(len(test)))):
        shape = (len(split), *split.images.shape[1:])
        images = np.lib.format.open_memmap(
            out / f"{name}-images.npy.tmp", mode="w+", dtype=np.uint8, shape=shape
        )
        allocate(out / f"{name}-images.npy.tmp")  # a full disk is an error here, not a SIGBUS in the copy
        for start in range(0, len(split), chunk):  # chunk by chunk: never two copies in memory
            images[start : start + chunk] = split.images[rows[start : start + chunk]].numpy()
        images.flush()
        del images
        (out / f"{name}-images.npy.tmp").replace(out / f"{name}-images.npy")
        np.save(out / f"{name}-labels.npy", split.labels[rows].numpy().astype(np.int64))
    atomic_write_json(
        out / DATASET_META,
        {
            "format": FORMAT,
            "class_names": list(class_names),
            "image_shape": list(train.images.shape[1:]),
            "pictures": pictures,
            "splits": {"train": len(train), "test": len(test)},
            **({"csv_label": csv_label} if csv_label is not None else {}),
        },
    )
    return out
