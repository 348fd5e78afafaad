"""The sources `data convert` reads, each as train and test Splits through its format's one reader:
an .npz of four arrays (npyfiles), a folder of IDX files (idxfiles), CSV files of a label and pixels
per row (csvfiles), and image folders ROOT/{train,test}/<class>/* (images). Labels read from files
are class numbers, 0..readers.MAX_LABEL.

CSV files and image folders stream through scratch files (`RowWriter`), so converting needs memory
for one block of rows, not for the dataset.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from ..base.exceptions import ConfigError, DataError, InputError, listed
from .csvfiles import CsvRows
from .digits import MNIST_SHAPE
from .idxfiles import read_idx_pair
from .images import AS_IS, IMAGE_SUFFIXES, MNIST_STYLE, picture_pixels, read_image
from .inmemory import Split
from .npyfiles import read_npz_arrays
from .readers import labels_problem, open_regular

MAX_SOURCE_BYTES = 4 * 2**30  # an .npz source decoded: read whole (the folder is written from it)


NPZ_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")  # keras.datasets' mnist.npz, in NPZ_KEYS' order


def read_npz(path: str | os.PathLike) -> tuple[Split, Split]:
    """Splits from an .npz holding train_images, train_labels, test_images, test_labels, or the same
    arrays under Keras's names (x_train, y_train, x_test, y_test: keras.datasets' mnist.npz)."""
    with open_regular(path, DataError) as handle:
        if handle.read(2) != b"PK":
            raise DataError(f"npz {path}: not an .npz archive (a zip of .npy arrays)", parameter="npz")
    arrays = read_npz_arrays(path, MAX_SOURCE_BYTES, DataError)  # headers checked before data is read
    keras = set(KERAS_KEYS) & set(arrays) and not set(NPZ_KEYS) & set(arrays)  # the convention it began
    names = KERAS_KEYS if keras else NPZ_KEYS
    missing = [key for key in names if key not in arrays]
    if missing:
        raise DataError(
            f"{path}: needs arrays {', '.join(NPZ_KEYS)} (or Keras's {', '.join(KERAS_KEYS)}); "
            f"missing {', '.join(missing)}, found {', '.join(sorted(arrays)) or 'none'}"
        )
    called = dict(zip(NPZ_KEYS, names, strict=True))  # the file's name for each array
    parts = {key: arrays[name] for key, name in called.items()}
    for key in ("train_images", "test_images"):
        if parts[key].ndim != 3 or parts[key].dtype != np.uint8:
            raise DataError(
                f"{path}: {called[key]} must be uint8 N x H x W, got {parts[key].dtype} {parts[key].shape}"
            )
    for name in ("train", "test"):
        images, labels, key = parts[f"{name}_images"], parts[f"{name}_labels"], called[f"{name}_labels"]
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(images):
            raise DataError(
                f"{path}: {key} must be {len(images)} integers, one per image, got "
                f"{labels.dtype} {labels.shape}"
            )
        if problem := labels_problem(labels):  # 2**63 as uint64 would wrap to a negative int64
            raise DataError(f"{path}: {key}: {problem}")
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
        raise DataError(f"idx {folder}: no such folder", parameter="idx")
    splits = []
    for words in (("train",), ("t10k", "test")):
        images, labels = read_idx_pair(_find_idx(folder, words, "images"), _find_idx(folder, words, "labels"))
        splits.append(Split(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))))
    return tuple(splits)


class RowWriter:
    """Appends uint8 image rows to a scratch file (use in a with block); `finish` maps the file
    back as an N x H x W tensor."""

    def __init__(self, path: Path):
        self.path, self.count, self.shape = path, 0, None
        self.handle = path.open("wb")

    def __enter__(self) -> RowWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()

    def add(self, images: np.ndarray) -> None:
        """Appends `images` (n, H, W) as uint8 rows."""
        self.shape = self.shape or images.shape[1:]
        self.handle.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        self.count += len(images)

    def finish(self) -> torch.Tensor:
        """The rows written so far, mapped back from the scratch file as one (N, H, W) tensor."""
        self.handle.close()  # flushed before mapping
        if not self.count:
            return torch.empty((0, *(self.shape or (0, 0))), dtype=torch.uint8)
        return torch.from_numpy(np.memmap(self.path, np.uint8, "r+", shape=(self.count, *self.shape)))


def _csv_image_size(n_pixels: int, image_size: tuple[int, int] | None, path: Path) -> tuple[int, int]:
    """The image size of a CSV's `n_pixels` columns: `image_size` if it fits, else a square."""
    if image_size is None:
        side = math.isqrt(n_pixels)
        if side * side != n_pixels:
            raise ConfigError(
                f"{path}: {n_pixels} pixel columns do not make a square image; give image_size=HxW",
                parameter="image_size",
            )
        return side, side
    if image_size[0] * image_size[1] != n_pixels:
        raise ConfigError(
            f"image_size {image_size[0]}x{image_size[1]} does not match {n_pixels} pixel columns",
            parameter="image_size",
        )
    return image_size


def _as_uint8(pixels: np.ndarray) -> np.ndarray:
    """A CSV block's pixels as a dataset stores them: uint8 0..255 (fractions rounded to 1/255)."""
    return pixels if pixels.dtype == np.uint8 else np.rint(pixels * 255.0).astype(np.uint8)


def read_csv(
    path: str | os.PathLike,
    scratch: Path,
    label_column: str | None = None,
    image_size: tuple[int, int] | None = None,
    scale=None,
    names: dict[str, int] | None = None,
    named: bool | None = None,
) -> Split:
    """A split from a CSV with one row per image: a label column and one column per pixel (row
    by row), with or without a header (csvfiles' rules); streamed a block of rows at a time
    through `scratch`. `scale`: the file's pixel scale as `csvfiles.describe_csv` found it (else
    settled as the rows come). `names`, `named`: labels that are class names, numbered in `names`
    (see CsvRows)."""
    path = Path(path)
    reader = CsvRows(
        path, None, label_column=label_column, labels=True, error=DataError, whole=True, names=names,
        named=named,
    )  # fmt: skip
    if scale is not None:
        reader.scale = scale
    labels = []
    with open_regular(path, DataError) as handle, RowWriter(scratch) as writer:
        reader.image_shape = shape = _csv_image_size(reader.read_layout(handle).n_pixels, image_size, path)
        for block in reader.blocks(handle):
            writer.add(_as_uint8(block.pixels).reshape(-1, *shape))
            labels.append(torch.from_numpy(block.labels))
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


def _class_folders(root: Path) -> tuple[dict[str, Path], dict[str, int]]:
    """ROOT's folders of class subfolders by split: train/ and test/, train/ alone, or, with neither,
    ROOT itself as the training set (torchvision's ImageFolder(ROOT)); a test set is then split off
    (convert's test_size). The class index of each subfolder name of train (test's must be among
    them)."""
    from torchvision.datasets.folder import find_classes

    if (root / "train").exists() or (root / "test").exists():
        names = [name for name in ("train", "test") if name == "train" or (root / name).exists()]
        folders = {name: root / name for name in names}
    else:
        folders = {"train": root}
    if folders["train"] != root:
        beside = (p.name for p in root.iterdir() if p.is_dir() and p.name not in ("train", "test"))
        classes_beside = sorted(beside)
        if classes_beside:  # (a class named train, or class folders beside the splits)
            raise DataError(
                f"folder {root}: holds train/ or test/ (read as splits) beside {listed(classes_beside[:5])}; "
                "give DIR/train/<class>/ and DIR/test/<class>/, or DIR/<class>/ alone (no class named "
                "train or test)",
                parameter="folder",
            )
    for folder in folders.values():
        if not folder.is_dir():
            raise DataError(f"folder {root}: needs {folder} with one subfolder per class", parameter="folder")
    try:
        class_names, class_to_index = find_classes(folders["train"])
        extra = sorted(set(find_classes(folders["test"])[0]) - set(class_names)) if "test" in folders else []
    except FileNotFoundError as error:  # a split without class subfolders
        raise DataError(f"folder {root}: {error}", parameter="folder") from None
    if extra:
        raise DataError(f"{folders['test']}: classes {', '.join(extra)} are not in {folders['train']}")
    return folders, class_to_index


def _picture_rows(samples: list, writer: RowWriter, image_size, pictures: str, progress: bool) -> None:
    """Each (file, class) of `samples` read as a picture and added to `writer` as a dataset's pixels."""
    from tqdm import tqdm

    for file, _ in tqdm(samples, desc=writer.path.stem, unit="img", disable=not progress, leave=False):
        with open_regular(file, DataError) as handle:  # a FIFO named .png must not hang
            gray = read_image(handle, name=str(file))
        expected = image_size or writer.shape or gray.shape
        if gray.shape != tuple(expected) and image_size is None:
            raise DataError(
                f"{file}: {gray.shape[0]}x{gray.shape[1]} pixels, but {samples[0][0]} is "
                f"{expected[0]}x{expected[1]}; give image_size=HxW to resize them all",
                parameter="image_size",
            )
        writer.add(_stored(gray, tuple(expected), pictures, file)[None])


def read_image_folders(
    root: str | os.PathLike,
    scratch: Path,
    image_size: tuple[int, int] | None = None,
    progress: bool = False,
    pictures: str = AS_IS,
) -> tuple[Split, Split | None, tuple[str, ...]]:
    """Splits from ROOT/train/<class>/* and ROOT/test/<class>/* (torchvision's ImageFolder layout;
    without test/, or with ROOT/<class>/* alone, the test split is None: the caller splits one off),
    each picture made into pixels by the rule `pictures` (images.picture_pixels, as predict does):
    AS_IS keeps them as grayscale, which must share one size unless `image_size` resizes them all;
    MNIST_STYLE fits the digit of each picture, whatever its size, into `image_size` (default 28x28)."""
    from torchvision.datasets.folder import make_dataset

    root = Path(root)
    folders, class_to_index = _class_folders(root)
    if pictures == MNIST_STYLE:
        image_size = image_size or MNIST_SHAPE
    splits, seen = [], {}
    for name, folder in folders.items():
        try:
            suffixes = tuple(sorted(IMAGE_SUFFIXES))  # (a tuple, as make_dataset takes; any case matches)
            samples = make_dataset(folder, class_to_index, suffixes, allow_empty=name == "test")
        except FileNotFoundError as error:
            raise DataError(f"{folder}: {error}") from None
        if not samples:
            raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        _refuse_repeats(samples, seen)
        with RowWriter(scratch / f"{name}.raw") as writer:
            _picture_rows(samples, writer, image_size, pictures, progress)
        labels = torch.tensor([index for _, index in samples], dtype=torch.int64)
        splits.append(Split(writer.finish(), labels))
    if len(splits) == 2 and splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise DataError(
            f"{root}: train and test images differ in size; give image_size=HxW", parameter="image_size"
        )
    return splits[0], splits[1] if len(splits) == 2 else None, tuple(class_to_index)


def _stored(gray: np.ndarray, shape: tuple[int, int], pictures: str, file: str) -> np.ndarray:
    """A picture as the uint8 pixels a dataset stores, made by the rule `pictures`."""
    try:
        pixels = picture_pixels(gray, shape, pictures)
    except InputError as error:  # mnist-style found no digit
        raise DataError(
            f"{file}: {error}; remove it, or convert with pictures={AS_IS} to keep pictures as they are",
            parameter="pictures",
        ) from None
    return np.rint(pixels * 255.0).astype(np.uint8)
