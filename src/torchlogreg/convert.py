"""Datasets in other formats written as out-of-core dataset folders (see ondisk.py).

    torchlogreg data convert --dataset fashion-mnist --out data/fashion
    torchlogreg data convert --from-idx raw/ --out data/mine      # train-*, t10k-* or test-* (.gz too)
    torchlogreg data convert --from-npz arrays.npz --out data/mine
    torchlogreg data convert --from-csv train.csv test.csv --out data/mine   # label + one column per pixel
    torchlogreg data convert --from-folder photos/ --out data/mine  # photos/{train,test}/<class>/*.png
    torchlogreg data convert --from-folder photos/ --pictures mnist-style --out data/mine

Classes are the labels the training data holds, in sorted order: labels {3, 5} make a binary
dataset of classes '3' and '5'. meta.json records how a picture file becomes the dataset's pixels
(images.PICTURE_RULES): an image folder is stored as it is ("as-is": grayscale, one size), or, with
--pictures mnist-style, each picture is fitted like an MNIST digit; the built-in datasets, and
arrays whose images are light strokes on a dark background, are "mnist-style". Runs copy the rule,
and predict and serve apply it to picture files, so a model sees the pixels it was trained on.

CSV files and image folders stream through scratch files in the output folder, so converting
needs memory for one chunk of rows, not for the dataset.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from .classnames import class_names_problem
from .data import Split, load_splits, read_idx_pair
from .exceptions import ConfigError, DataError, InputError
from .images import AS_IS, MNIST_SHAPE, MNIST_STYLE, check_pictures, picture_pixels
from .inputs import open_regular
from .ondisk import is_disk_dataset, write_dataset
from .storage import exists, output_lock

CSV_CHUNK = 10_000  # CSV rows parsed at once
LABEL_NAMES = ("label", "labels", "class", "target", "y")  # a CSV header column taken as the label
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")
MAX_LABEL = 99_999  # labels are class numbers: 0..MAX_LABEL
POLARITY_SAMPLE = 1000  # images whose border pixels tell light strokes on dark from dark on light


def parse_size(text: str | None) -> tuple[int, int] | None:
    """'HxW' -> (height, width); None stays None."""
    if text is None:
        return None
    match = SIZE_PATTERN.match(text.strip())
    if not match or 0 in (int(match[1]), int(match[2])):
        raise ConfigError(f"--image-size must look like 28x28 (height x width), got {text!r}")
    return int(match[1]), int(match[2])


def _check_label_range(labels: list[torch.Tensor], where: str) -> None:
    """Some labels, all integers in 0..MAX_LABEL."""
    if not any(len(t) for t in labels):
        raise DataError(f"{where}: no samples")
    low = min(int(t.min()) for t in labels if len(t))
    high = max(int(t.max()) for t in labels if len(t))
    if low < 0 or high > MAX_LABEL:
        raise DataError(f"{where}: labels must be integers in 0..{MAX_LABEL}, found {low}..{high}")


def _names_for(present: list[int], class_names: list[str] | None, where: str) -> tuple[str, ...]:
    """Names of the labels `present` (sorted): the labels themselves ('3', '5'), or `class_names`,
    which list either one name per label present, in label order, or one per label 0..max."""
    if class_names is None:
        return tuple(str(label) for label in present)
    if len(class_names) == len(present):
        return tuple(class_names)
    if len(class_names) > present[-1]:
        return tuple(class_names[label] for label in present)
    shown = ", ".join(map(str, present[:10])) + (", ..." if len(present) > 10 else "")
    valid = f"{len(present)} names, one per label in that order"
    if present[-1] + 1 != len(present):
        valid += f", or {present[-1] + 1}, one per label 0..{present[-1]}"
    raise ConfigError(
        f"--class-names lists {len(class_names)} names but {where} has {len(present)} labels ({shown}); "
        f"give {valid}"
    )


def present_classes(
    train: Split, test: Split, class_names: list[str] | None, where: str
) -> tuple[Split, Split, tuple[str, ...]]:
    """The splits relabelled 0..k-1 by the k labels the training data holds, in sorted order, and
    their names: labels {3, 5} give a two-class (binary) dataset named '3' and '5', not six classes
    four of which are empty. A test label the training data lacks is refused: no model could learn it."""
    _check_label_range([train.labels, test.labels], where)
    present = torch.unique(train.labels)
    unknown = torch.unique(test.labels[~torch.isin(test.labels, present)])
    if len(unknown):
        listed = ", ".join(str(int(v)) for v in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise DataError(
            f"{where}: test labels {listed} never occur in the training data (labels "
            f"{', '.join(str(int(v)) for v in present[:10])}{', ...' if len(present) > 10 else ''}); "
            "every test class needs training samples"
        )
    names = _names_for(present.tolist(), class_names, where)
    lookup = torch.full((int(present[-1]) + 1,), -1, dtype=torch.int64)
    lookup[present] = torch.arange(len(present))
    return Split(train.images, lookup[train.labels]), Split(test.images, lookup[test.labels]), names


# --- whole-array sources ---------------------------------------------------------------------
MAX_SOURCE_BYTES = 4 * 2**30  # an .npz source decoded: read whole (the folder is written from it)


def read_npz(path: str | os.PathLike) -> tuple[Split, Split]:
    """Splits from an .npz holding train_images, train_labels, test_images, test_labels."""
    from .inputs import read_npz_arrays

    keys = ("train_images", "train_labels", "test_images", "test_labels")
    with open_regular(path, DataError) as handle:
        if handle.read(2) != b"PK":
            raise DataError(f"--from-npz {path}: not an .npz archive (a zip of .npy arrays)")
    arrays = read_npz_arrays(path, MAX_SOURCE_BYTES, DataError)  # headers checked before data is read
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise DataError(f"{path}: needs arrays {', '.join(keys)} (missing {', '.join(missing)})")
    parts = {key: arrays[key] for key in keys}
    for key in ("train_images", "test_images"):
        if parts[key].ndim != 3 or parts[key].dtype != np.uint8:
            raise DataError(
                f"{path}: {key} must be uint8 N x H x W, got {parts[key].dtype} {parts[key].shape}"
            )
    for name in ("train", "test"):
        images, labels = parts[f"{name}_images"], parts[f"{name}_labels"]
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
            raise DataError(
                f"{path}: {name}_labels must be {len(images)} integers, one per image, got "
                f"{labels.dtype} {labels.shape}"
            )
    return tuple(
        Split(torch.from_numpy(parts[f"{name}_images"]), torch.from_numpy(parts[f"{name}_labels"]).long())
        for name in ("train", "test")
    )


def _find_idx(folder: Path, split_words: tuple[str, ...], kind: str) -> Path:
    """The one file in `folder` whose name holds `kind` and one of `split_words`; raw beats .gz."""
    matches = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and kind in p.name and any(w in p.name for w in split_words)
    )
    raw = [p for p in matches if p.suffix != ".gz"]
    matches = raw or matches
    if len(matches) != 1:
        found = ", ".join(p.name for p in matches) or "none"
        raise DataError(
            f"{folder}: expected one {'/'.join(split_words)} {kind} IDX file (e.g. "
            f"{split_words[0]}-{kind}-idx{3 if kind == 'images' else 1}-ubyte), found: {found}"
        )
    return matches[0]


def read_idx_folder(folder: str | os.PathLike) -> tuple[Split, Split]:
    """Splits from the four IDX files of an MNIST-style raw folder (train-*, t10k-* or test-*)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"--from-idx {folder}: no such folder")
    splits = []
    for words in (("train",), ("t10k", "test")):
        images, labels = read_idx_pair(_find_idx(folder, words, "images"), _find_idx(folder, words, "labels"))
        splits.append(Split(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))))
    return tuple(splits)


# --- streamed sources ------------------------------------------------------------------------
class _RowWriter:
    """Appends uint8 image rows to a scratch file (use in a with block); `finish` maps the file
    back as an N x H x W tensor."""

    def __init__(self, path: Path):
        self.path, self.count, self.shape = path, 0, None
        self.handle = path.open("wb")

    def __enter__(self) -> _RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()

    def add(self, images: np.ndarray) -> None:
        self.shape = self.shape or images.shape[1:]
        self.handle.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        self.count += len(images)

    def finish(self) -> torch.Tensor:
        self.handle.close()  # flushed before mapping
        if not self.count:
            return torch.empty((0, *(self.shape or (0, 0))), dtype=torch.uint8)
        return torch.from_numpy(np.memmap(self.path, np.uint8, "r+", shape=(self.count, *self.shape)))


def _csv_lines(handle: TextIO, path: Path) -> tuple[Iterator[str], list[str], str, bool]:
    """The data lines, the first row's fields, the delimiter and whether that row is a header."""
    first = handle.readline()
    delimiter = max((",", ";", "\t"), key=first.count)
    fields = [f.strip().strip('"') for f in first.rstrip("\r\n").split(delimiter)]
    if len(fields) < 2:
        raise DataError(f"{path}: expected a label column and pixel columns, got one column")
    header = not all(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", f) for f in fields)
    lines = handle if header else itertools.chain([first], handle)
    return lines, fields, delimiter, header


def _label_index(fields: list[str], header: bool, label_column: str | None, path: Path) -> int:
    if label_column is None:
        names = [f.lower() for f in fields] if header else []
        return next((names.index(n) for n in LABEL_NAMES if n in names), 0)
    if re.fullmatch(r"-?\d+", label_column):
        index = int(label_column)
        if not -len(fields) <= index < len(fields):
            raise ConfigError(f"--label-column {index}: {path} has {len(fields)} columns")
        return index % len(fields)
    if header and label_column in fields:
        return fields.index(label_column)
    columns = ", ".join(fields[:5]) + (", ..." if len(fields) > 5 else "") if header else "none (no header)"
    raise ConfigError(f"--label-column {label_column!r} is not a column of {path}; columns: {columns}")


def _pixels_to_uint8(values: np.ndarray, unit_scale: bool, path: Path, line: int) -> np.ndarray:
    """CSV pixel values as uint8: integers 0..255, or floats in [0, 1] when `unit_scale`."""
    low, high = float(values.min(initial=0)), float(values.max(initial=0))
    if unit_scale:
        if low < 0 or high > 1:
            raise DataError(
                f"{path}: pixel values from line {line} lie in {low:g}..{high:g}, but earlier rows were "
                "fractions in [0, 1]; use one scale for the whole file"
            )
        return np.rint(values * 255).astype(np.uint8)
    if low < 0 or high > 255 or not np.array_equal(values, np.rint(values)):
        raise DataError(
            f"{path}: pixel values from line {line} must be integers in 0..255 (or fractions in [0, 1] "
            f"throughout), found {low:g}..{high:g}"
        )
    return values.astype(np.uint8)


def read_csv(
    path: str | os.PathLike,
    scratch: Path,
    label_column: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> Split:
    """A split from a CSV with one row per image: a label column and one column per pixel (row
    by row), with or without a header; streamed CSV_CHUNK rows at a time through `scratch`."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is not data
            return _read_csv_rows(handle, path, scratch, label_column, image_size)
    except FileNotFoundError:
        raise DataError(f"--from-csv {path}: no such file") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a text file ({error})") from None


def _read_csv_rows(
    handle: TextIO, path: Path, scratch: Path, label_column: str | None, image_size: tuple[int, int] | None
) -> Split:
    lines, fields, delimiter, header = _csv_lines(handle, path)
    label_index = _label_index(fields, header, label_column, path)
    n_pixels = len(fields) - 1
    if image_size is None:
        side = math.isqrt(n_pixels)
        if side * side != n_pixels:
            raise ConfigError(
                f"{path}: {n_pixels} pixel columns do not make a square image; pass --image-size HxW"
            )
        image_size = (side, side)
    if image_size[0] * image_size[1] != n_pixels:
        raise ConfigError(
            f"--image-size {image_size[0]}x{image_size[1]} does not match {n_pixels} pixel columns"
        )
    labels, unit_scale = [], None
    line = 1 + header
    with _RowWriter(scratch) as writer:
        while chunk := list(itertools.islice(lines, CSV_CHUNK)):
            try:
                values = np.loadtxt(chunk, delimiter=delimiter, dtype=np.float64, ndmin=2)
            except ValueError as error:
                raise DataError(f"{path}: in the {len(chunk)} lines from line {line}: {error}") from None
            if values.shape[1] != n_pixels + 1:
                raise DataError(
                    f"{path}: lines from {line} have {values.shape[1]} columns, expected {n_pixels + 1}"
                )
            if not np.isfinite(values).all():
                bad = line + int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
                raise DataError(
                    f"{path}: line {bad} holds NaN or infinite values; every cell must be a number"
                )
            label_values = values[:, label_index]
            if (
                not np.array_equal(label_values, np.rint(label_values))
                or np.abs(label_values).max() > MAX_LABEL
            ):
                raise DataError(
                    f"{path}: labels (column {label_index}) must be integers in 0..{MAX_LABEL}, "
                    f"from line {line}"
                )
            pixels = np.delete(values, label_index, axis=1)
            if unit_scale is None:  # decided by the first chunk, then held to
                unit_scale = not np.array_equal(pixels, np.rint(pixels))
            writer.add(_pixels_to_uint8(pixels, unit_scale, path, line).reshape(-1, *image_size))
            labels.append(torch.from_numpy(label_values.astype(np.int64)))
            line += len(chunk)
    if not writer.count:
        raise DataError(f"{path}: no data rows")
    return Split(writer.finish(), torch.cat(labels))


def _refuse_repeats(samples: list[tuple[str, int]], seen: dict[str, str]) -> None:
    """Each image file once: a symlink loop (or a link between splits) would copy it many times."""
    for file, _ in samples:
        real = os.path.realpath(file)
        if real in seen:
            raise DataError(
                f"{file} is the same image as {seen[real]} (a symlink loop, or a link between folders?); "
                "each image must appear once"
            )
        seen[real] = file


def read_image_folders(
    root: str | os.PathLike,
    scratch: Path,
    image_size: tuple[int, int] | None = None,
    progress: bool = False,
    pictures: str = AS_IS,
) -> tuple[Split, Split, tuple[str, ...]]:
    """Splits from ROOT/train/<class>/* and ROOT/test/<class>/* (torchvision's ImageFolder layout),
    each picture made into pixels by the rule `pictures` (images.picture_pixels, as predict does):
    AS_IS keeps them as grayscale, which must share one size unless `image_size` resizes them all;
    MNIST_STYLE fits the digit of each picture, whatever its size, into `image_size` (default 28x28)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset
    from tqdm import tqdm

    from .images import read_image

    root = Path(root)
    folders = {name: root / name for name in ("train", "test")}
    for folder in folders.values():
        if not folder.is_dir():
            raise DataError(f"--from-folder {root}: needs {folder} with one subfolder per class")
    try:
        class_names, class_to_index = find_classes(folders["train"])
        extra = sorted(set(find_classes(folders["test"])[0]) - set(class_names))
    except FileNotFoundError as error:  # a split without class subfolders
        raise DataError(f"--from-folder {root}: {error}") from None
    if extra:
        raise DataError(f"{folders['test']}: classes {', '.join(extra)} are not in {folders['train']}")
    if pictures == MNIST_STYLE:
        image_size = image_size or MNIST_SHAPE
    splits, seen = [], {}
    for name, folder in folders.items():
        try:
            samples = make_dataset(folder, class_to_index, IMG_EXTENSIONS, allow_empty=name == "test")
        except FileNotFoundError as error:
            raise DataError(f"{folder}: {error}") from None
        if not samples:
            raise DataError(f"{folder}: no images ({', '.join(IMG_EXTENSIONS)})")
        _refuse_repeats(samples, seen)
        with _RowWriter(scratch / f"{name}.raw") as writer:
            for file, _ in tqdm(samples, desc=name, unit="img", disable=not progress, leave=False):
                with open_regular(file, DataError) as handle:  # a FIFO named .png must not hang
                    gray = read_image(handle, name=str(file))
                expected = image_size or writer.shape or gray.shape
                if gray.shape != tuple(expected) and image_size is None:
                    raise DataError(
                        f"{file}: {gray.shape[0]}x{gray.shape[1]} pixels, but {samples[0][0]} is "
                        f"{expected[0]}x{expected[1]}; pass --image-size HxW to resize them all"
                    )
                writer.add(_stored(gray, tuple(expected), pictures, file)[None])
        labels = torch.tensor([index for _, index in samples], dtype=torch.int64)
        splits.append(Split(writer.finish(), labels))
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise DataError(f"{root}: train and test images differ in size; pass --image-size HxW")
    return splits[0], splits[1], tuple(class_names)


def _stored(gray: np.ndarray, shape: tuple[int, int], pictures: str, file: str) -> np.ndarray:
    """A picture as the uint8 pixels a dataset stores, made by the rule `pictures`."""
    try:
        pixels = picture_pixels(gray, shape, pictures)
    except InputError as error:  # mnist-style found no digit
        raise DataError(
            f"{file}: {error}; remove it, or convert with --pictures {AS_IS} to keep pictures as they are"
        ) from None
    return np.rint(pixels * 255.0).astype(np.uint8)


def _light_strokes_on_dark(images: torch.Tensor) -> bool:
    """Whether images look like MNIST's, light strokes on a dark background: the median of the
    border pixels of up to POLARITY_SAMPLE evenly spaced images is below mid-grey."""
    rows = images[:: max(1, len(images) // POLARITY_SAMPLE)][:POLARITY_SAMPLE]
    if not len(rows) or min(rows.shape[1:]) < 3:
        return True
    border = torch.cat([rows[:, 0], rows[:, -1], rows[:, 1:-1, 0], rows[:, 1:-1, -1]], dim=1)
    return float(border.float().median()) < 128


def _pictures_rule(train_images: torch.Tensor, options: dict) -> str:
    """How picture files become this dataset's pixels (see the module's docstring): the rule given,
    else as-is for an image folder, mnist-style for a built-in dataset, and for arrays mnist-style
    when their images are light strokes on dark, else as-is."""
    if options["pictures"] is not None:
        return options["pictures"]
    if options["folder"] is not None:
        return AS_IS
    if all(options[key] is None for key in ("npz", "idx", "csv")):
        return MNIST_STYLE
    return MNIST_STYLE if _light_strokes_on_dark(train_images) else AS_IS


# --- the conversion --------------------------------------------------------------------------
def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace anything but an earlier dataset folder, and that only when overwriting."""
    if exists(out) and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder to create")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not is_disk_dataset(str(out)):
        raise ConfigError(f"--out {out} holds other files; give a new or empty folder")
    if not overwrite:
        raise ConfigError(f"--out {out} already holds a dataset; pass --overwrite to replace it")


def stratified_split(split: Split, test_size: float, seed: int) -> tuple[Split, Split]:
    """(train, test): round(test_size x count) rows of each class go to test, chosen by `seed`."""
    if not 0 < test_size < 1:
        raise ConfigError(f"--test-size must be a fraction in (0, 1), got {test_size}")
    generator = torch.Generator().manual_seed(seed)
    test_rows = []
    for label in torch.unique(split.labels):
        members = torch.nonzero(split.labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        test_rows.append(members[: round(test_size * len(members))])
    test_index = torch.cat(test_rows).sort().values
    if not len(test_index) or len(test_index) == len(split):
        largest = int(torch.unique(split.labels, return_counts=True)[1].max())
        if largest < 2:
            raise ConfigError(
                f"--test-size cannot split {len(split)} rows of one per class; give a TEST_CSV as well"
            )
        raise ConfigError(
            f"--test-size {test_size} leaves {len(test_index)} of {len(split)} rows for test; rounded per "
            f"class, a fraction strictly between {0.5 / largest:.3g} and {1 - 0.5 / largest:.3g} leaves "
            "rows for both train and test"
        )
    keep = torch.ones(len(split), dtype=torch.bool)
    keep[test_index] = False
    return split.take(torch.nonzero(keep).flatten()), split.take(test_index)


def _read_source(scratch: Path, options: dict) -> tuple[Split, Split, tuple[str, ...] | None]:
    """(train, test, class names or None) from the one source `options` name (convert's keyword
    arguments), else the built-in dataset."""
    folder, npz, idx, csv = (options[k] for k in ("folder", "npz", "idx", "csv"))
    label_column, size = options["label_column"], parse_size(options["image_size"])
    if folder is not None:
        rule = options["pictures"] or AS_IS
        return read_image_folders(folder, scratch, size, options["progress"], rule)
    if npz is not None:
        return (*read_npz(npz), None)
    if idx is not None:
        return (*read_idx_folder(idx), None)
    if csv is not None:
        train = read_csv(csv[0], scratch / "train.raw", label_column, size)
        if len(csv) == 1:  # one labelled CSV (Kaggle's train.csv): split off a test set
            return (*stratified_split(train, options["test_size"], options["seed"]), None)
        return train, read_csv(csv[1], scratch / "test.raw", label_column, size), None
    return load_splits(options["dataset"], options["data_root"], download=options["download"])


def _check_splits(train: Split, test: Split, names: tuple[str, ...]) -> None:
    """At least two classes to learn, and one image size in both splits."""
    present = torch.unique(train.labels)
    if len(present) < 2:
        raise DataError(
            f"the training data holds only class {names[int(present[0])] if len(present) else 'none'}; "
            "a classifier needs at least two"
        )
    if train.images.shape[1:] != test.images.shape[1:]:
        raise DataError(
            f"train images are {tuple(train.images.shape[1:])} but test images "
            f"{tuple(test.images.shape[1:])}; they must match"
        )


def convert(
    out: str | os.PathLike,
    *,
    dataset: str = "mnist",
    data_root: str | None = None,
    download: bool = True,
    npz: str | os.PathLike | None = None,
    idx: str | os.PathLike | None = None,
    csv: tuple[str | os.PathLike, ...] | None = None,
    folder: str | os.PathLike | None = None,
    label_column: str | None = None,
    image_size: str | None = None,
    class_names: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
    test_size: float = 0.2,
    seed: int = 0,
    pictures: str | None = None,
) -> dict:
    """Write one source (npz, idx, csv = (train, test), folder, else the built-in `dataset`) to `out`.
    A single CSV, csv = (train,), gives a stratified test split of `test_size`, chosen by `seed`.
    Classes are the labels present in the training data, sorted; `class_names` name them (one name
    per label present, or one per label 0..max). `pictures` (images.PICTURE_RULES) is how picture
    files become the dataset's pixels; None: the source's own (see `_pictures_rule`).

    Returns {"out", "train", "test", "class_names", "image_shape", "pictures"} of what was written.
    """
    options = dict(locals())  # the keyword arguments, as _read_source reads them
    out = Path(out)
    if sum(source is not None for source in (npz, idx, csv, folder)) > 1:
        raise ConfigError("give one source: --from-npz, --from-idx, --from-csv or --from-folder")
    if folder is not None and class_names is not None:
        raise ConfigError("--class-names: an image folder's class names are its subfolders' names")
    if pictures is not None:
        check_pictures(pictures, "--pictures", ConfigError)
    parse_size(image_size)  # a bad size is refused before anything is written
    if class_names is not None and (problem := class_names_problem(class_names)):
        raise ConfigError(f"--class-names: {problem}")
    with output_lock(out):  # one process writes `out` (and its staging folder) at a time
        check_output(out, overwrite)
        # Written beside `out` and renamed into place: a failed conversion leaves `out` as it was.
        staging = out.parent / f".{out.name}.converting"
        shutil.rmtree(staging, ignore_errors=True)
        scratch = staging / "scratch"
        scratch.mkdir(parents=True)
        try:
            train, test, names = _read_source(scratch, options)
            if names is None or class_names is not None:
                source = npz or idx or (csv and " and ".join(map(str, csv))) or dataset
                train, test, names = present_classes(train, test, class_names, str(source))
            if problem := class_names_problem(list(names)):  # a folder's subfolder names, say
                raise DataError(f"{folder or npz or idx or dataset}: {problem}")
            _check_splits(train, test, names)
            rule = _pictures_rule(train.images, options)
            write_dataset(staging, train, test, names, pictures=rule)
            del train, test  # unmaps the scratch files
            shutil.rmtree(scratch)
            if out.exists():
                shutil.rmtree(out)
            staging.rename(out)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    meta = json.loads((out / "meta.json").read_text())
    return {
        "out": out,
        "train": meta["splits"]["train"],
        "test": meta["splits"]["test"],
        "class_names": tuple(meta["class_names"]),
        "image_shape": tuple(meta["image_shape"]),
        "pictures": meta["pictures"],
    }
