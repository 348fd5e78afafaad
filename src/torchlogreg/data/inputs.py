"""Input files for prediction: pictures, arrays (.npy/.npz) and CSV rows, read a chunk at a time
(`read_chunks`) or all at once (`load_inputs`) as images of a run's shape. Pictures are made into
pixels by the run's rule (`images.picture_pixels`: as its data was made); arrays and CSV rows are
pixels already.

Each format has one reader, shared with `data convert` and dataset folders: `npyfiles` (headers
checked before data is read), `csvfiles` (its rules for delimiters, headers, label columns and the
pixel scale), `images` (pictures); all open files through `readers.open_regular`. Memory does not
grow with a file: a CSV is parsed a block of lines at a time, a .npy read ARRAY_CHUNK_ROWS rows at a
time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..base.exceptions import InputError
from .csvfiles import CsvRows
from .csvlayout import label_note
from .csvscale import FRACTIONS
from .digits import MNIST_SHAPE, as_shape
from .images import (
    IMAGE_SUFFIXES,
    MNIST_STYLE,
    check_pictures,
    picture_pixels,
    read_image,
    source_name,
)
from .npyfiles import (
    MAX_ARRAY_BYTES,
    NPY_MAGIC,
    ZIP_MAGIC,
    check_budget,
    check_declared,
    npy_header,
    read_array_data,
    read_npy_images,
    read_npz_images,
)
from .readers import one_line, open_regular

ARRAY_SUFFIXES = {".npy", ".npz"}
TABLE_SUFFIXES = {".csv"}  # one image per row: pixel columns, optionally a label column
ARRAY_CHUNK_ROWS = 2048  # rows of an array handed on at a time: 1.5 MB of 28x28 uint8, 6 MB as float
MAX_INPUT_PIXELS = 2**24  # of image_shape (4096 x 4096): a run's inputs never have more


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Consecutive images of one input file, ready for the model."""

    source: Path  # the file they come from
    rows: np.ndarray  # each image's row in the file, from 0 (a bad row left out leaves a gap)
    images: np.ndarray  # (len(rows), H*W): uint8 pixels 0..255, or float32 in [0, 1]
    end: int  # rows of the file read so far, bad ones included
    nbytes: int = 0  # bytes of the file this chunk took (for progress bars)
    single: bool = False  # the file holds one image, named without a row index

    def names(self) -> list[str]:
        """How outputs name each image: the file, or file[row]."""
        if self.single:
            return [str(self.source)]
        return [f"{self.source}[{row}]" for row in self.rows.tolist()]


def _input_shape(image_shape) -> tuple[int, int]:
    """`image_shape` as (H, W), refused beyond MAX_INPUT_PIXELS before anything of that size is made."""
    height, width = as_shape(image_shape)
    if height * width > MAX_INPUT_PIXELS:
        raise InputError(
            f"image_shape {height}x{width} has {height * width} pixels; "
            f"at most {MAX_INPUT_PIXELS} (4096x4096)"
        )
    return height, width




def _pixels(rows: np.ndarray, label: object) -> np.ndarray:
    """Array rows checked and made ready for the model: uint8 pixels 0..255 as they are (the model
    folds in the 1/255), other integers 0..255 as uint8, floats in [0, 1] and booleans as float32."""
    if np.issubdtype(rows.dtype, np.floating):
        if not np.isfinite(rows).all():
            raise InputError(f"{label}: the array holds NaN or infinite values")
        low, high = rows.min(), rows.max()
        if low < 0 or high > 1:
            raise InputError(f"{label}: float arrays must hold values in [0, 1], found {low:g}..{high:g}")
        return rows.astype(np.float32, copy=False)  # float32 rows as read are used as they are
    if rows.dtype == bool:
        return rows.astype(np.float32)
    if rows.dtype == np.uint8:
        return rows
    low, high = rows.min(), rows.max()
    if low < 0 or high > 255:
        raise InputError(f"{label}: integer arrays must hold values in 0..255, found {low}..{high}")
    return rows.astype(np.uint8)


def _as_float(pixels: np.ndarray) -> np.ndarray:
    """`_pixels`' output as float32 in [0, 1]."""
    if pixels.dtype != np.uint8:
        return pixels
    images = pixels.astype(np.float32)
    images /= 255.0  # in place: a large batch is not copied twice
    return images


def array_images(array: np.ndarray, path: Path, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """Rows of `array` as float images in [0, 1], shape (N, H*W), for images of `shape` (H, W)."""
    height, width = as_shape(shape)
    check_declared(array.shape, array.dtype, path, (height, width))
    return _as_float(_pixels(array.reshape(-1, height * width), path))


@contextlib.contextmanager
def _opened(source):
    """A binary stream over `source`: a path is opened (and closed after), a file object used as it is."""
    if isinstance(source, (str, os.PathLike)):
        with open_regular(source) as handle:
            yield handle
    else:
        yield source


def read_array(
    path,
    image_shape: tuple[int, int] = MNIST_SHAPE,
    name: str | None = None,
    max_bytes: int = MAX_ARRAY_BYTES,
) -> np.ndarray:
    """Images of `image_shape` (H, W) as rows (N, H*W) from a .npy, or a one-array .npz (or its array
    'images'/'x'); `path` may be a binary file object called `name`. Headers are checked first: a
    file holding objects (pickles), or whose arrays would decode to more than `max_bytes`, is
    refused before its data is read."""
    source = path
    path = source_name(path, name)
    image_shape = _input_shape(image_shape)
    try:
        with _opened(source) as handle:
            magic = handle.read(len(NPY_MAGIC))
            handle.seek(0)
            if magic == NPY_MAGIC:
                array = read_npy_images(handle, path, image_shape, max_bytes)
            elif magic.startswith(ZIP_MAGIC):
                array = read_npz_images(handle, path, image_shape, max_bytes)
            else:
                raise InputError(f"{path}: not a readable NumPy file (no .npy or .npz signature)")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or one_line(error)})") from None
    return array_images(array, path, image_shape)


# --- reading a chunk at a time -----------------------------------------------------------------------


def _row_chunks(rows: np.ndarray, path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """An array's rows (N, H*W), already in memory, as chunks of `chunk_rows`."""
    for start in range(0, len(rows), chunk_rows):
        part = rows[start : start + chunk_rows]
        stop = start + len(part)
        yield Chunk(path, np.arange(start, stop), _pixels(part, path), stop, part.nbytes, len(rows) == 1)


def _npy_chunks(handle, path: Path, image_shape: tuple[int, int], chunk_rows: int) -> Iterator[Chunk]:
    """A .npy's rows, read `chunk_rows` at a time after its header (and the file's size) is checked."""
    shape, fortran_order, dtype = npy_header(handle, path)
    n_bytes = check_declared(shape, dtype, path, image_shape)
    check_budget(n_bytes, MAX_ARRAY_BYTES, path, f"its array of shape {tuple(shape)} ({dtype}) would")
    found = os.fstat(handle.fileno()).st_size - handle.tell()
    if found < n_bytes:  # found before any row is handed on: a cut file is bad as a whole
        raise InputError(f"{path}: truncated (its header promises {n_bytes} bytes of data, found {found})")
    n_pixels = image_shape[0] * image_shape[1]
    if fortran_order:  # column-major: no row is contiguous, so the array is read whole
        array = read_array_data(handle, shape, True, dtype, n_bytes, path)
        yield from _row_chunks(array.reshape(-1, n_pixels), path, chunk_rows)
        return
    n_rows, row_bytes = math.prod(shape) // n_pixels, n_pixels * dtype.itemsize
    for start in range(0, n_rows, chunk_rows):
        count = min(chunk_rows, n_rows - start)
        rows = read_array_data(handle, (count, n_pixels), False, dtype, count * row_bytes, path)
        yield Chunk(
            path,
            np.arange(start, start + count),
            _pixels(rows, path),
            start + count,
            rows.nbytes,
            n_rows == 1,
        )


def _array_chunks(path: Path, image_shape: tuple[int, int], chunk_rows: int) -> Iterator[Chunk]:
    """The rows of a .npy (streamed) or of a .npz's images array (read whole, within MAX_ARRAY_BYTES)."""
    with open_regular(path) as handle:
        magic = handle.read(len(NPY_MAGIC))
        handle.seek(0)
        if magic == NPY_MAGIC:
            yield from _npy_chunks(handle, path, image_shape, chunk_rows)
        elif magic.startswith(ZIP_MAGIC):
            array = read_npz_images(handle, path, image_shape, MAX_ARRAY_BYTES)
            yield from _row_chunks(array.reshape(-1, image_shape[0] * image_shape[1]), path, chunk_rows)
        else:
            raise InputError(f"{path}: not a readable NumPy file (no .npy or .npz signature)")


def _csv_chunks(
    path: Path, image_shape: tuple[int, int], skip_row, note, block_bytes: int | None, label_column=None,
    headerless: int = 0,
) -> Iterator[Chunk]:  # fmt: skip
    """A CSV's rows (see csvfiles), a block of lines at a time; `note` hears which column is the label
    and, once read, how its pixels were where that is not plain 0..255 or they stayed near black (one
    stray 2 makes a file of 0s and 1s 0..255)."""
    reader = CsvRows(path, image_shape, skip_row=skip_row, label_column=label_column, headerless=headerless)
    with open_regular(path) as handle:
        layout = reader.read_layout(handle)
        if note is not None and (text := label_note(layout, path)):
            note(text)
        for block in reader.blocks(handle, block_bytes):
            yield Chunk(path, block.rows, block.pixels, block.end, block.nbytes)
    if note is not None and (text := reader.dim_note() or _fractions_note(reader, path)):
        note(text)


def _fractions_note(reader: CsvRows, path: Path) -> str:
    """A line for a CSV whose pixels were read as fractions (of 0s and 1s, or in [0, 1]), else "" (a
    file of zeros alone reads the same either way)."""
    return f"{path}: {reader.scale.describe()}" if reader.scale.scale == FRACTIONS else ""


def _image_chunks(path: Path, image_shape: tuple[int, int], pictures: str) -> Iterator[Chunk]:
    """A picture, made into pixels by the rule `pictures`, as one chunk of one image."""
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            image = picture_pixels(read_image(handle, name=str(path)), image_shape, pictures)
    except InputError as error:
        if str(error).startswith(str(path)):
            raise
        raise InputError(f"{path}: {error}") from None
    pixels = image.reshape(1, -1).astype(np.float32, copy=False)
    yield Chunk(path, np.zeros(1, np.int64), pixels, 1, size, single=True)


def read_chunks(
    path: str | os.PathLike,
    image_shape: tuple[int, int] = MNIST_SHAPE,
    *,
    skip_row: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    chunk_rows: int | None = None,
    block_bytes: int | None = None,
    pictures: str = MNIST_STYLE,
    label_column: str | None = None,
    headerless: int = 0,
) -> Iterator[Chunk]:
    """The images of one file (picture, .npy/.npz array or CSV rows), a chunk at a time, so memory
    holds one chunk however large the file. A bad file raises `InputError` naming it; a bad CSV row
    too, unless `skip_row` is given: it is then called with the row's one-line message and the row
    left out. `note` is called with what is worth saying (the label column a CSV's rows carry).
    `chunk_rows` (array rows) and `block_bytes` (CSV text) default to ARRAY_CHUNK_ROWS, CSV_BLOCK_BYTES.
    `pictures` is the run's rule for picture files (`Run.pictures`, images.PICTURE_RULES); a CSV's
    `label_column` (a header name or an index) is its label column, else found by csvfiles' rules,
    in a file without a header the column `headerless` (the run's `csv_label`: -1, the last)."""
    path, image_shape, pictures = Path(path), _input_shape(image_shape), check_pictures(pictures)
    chunk_rows = chunk_rows or ARRAY_CHUNK_ROWS
    suffix = path.suffix.lower()
    try:
        if suffix in TABLE_SUFFIXES:
            yield from _csv_chunks(path, image_shape, skip_row, note, block_bytes, label_column, headerless)
        elif suffix in ARRAY_SUFFIXES:
            yield from _array_chunks(path, image_shape, chunk_rows)
        elif suffix in IMAGE_SUFFIXES:
            yield from _image_chunks(path, image_shape, pictures)
        else:
            raise InputError(
                f"{path}: unsupported file type {suffix or '(none)'}; give images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}), arrays (.npy, .npz) or CSV rows (.csv)"
            )
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or one_line(error)})") from None


def _shown_path(path: Path) -> str:
    """`path` for a message: at most 200 characters of it (a name of thousands is cut in the middle)."""
    text = str(path)
    return text if len(text) <= 200 else text[:100] + "..." + text[-97:]


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The files named: folders give every image and array inside them (recursively, sorted);
    '-' and shell patterns that matched nothing are named as what they are."""
    files = []
    for raw in paths:
        path = Path(raw)
        if str(raw) == "-":
            raise InputError("-: reading from standard input is not supported; give files or a folder")
        try:
            path.is_dir()
        except OSError as error:  # a name too long, a folder that cannot be searched
            reason = error.strerror or one_line(error)
            raise InputError(f"{_shown_path(path)}: cannot read it ({reason})") from None
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES | ARRAY_SUFFIXES
            )
            if not found:
                raise InputError(f"{path}: the folder holds no images or arrays")
            files.extend(found)
        elif not path.exists() and any(c in str(raw) for c in "*?["):
            raise InputError(f"{raw}: no file matches this pattern")
        else:
            files.append(path)
    return files


def _stack(chunks: list[Chunk], image_shape: tuple[int, int]) -> np.ndarray:
    """The chunks' images as one float32 array (N, H, W) in [0, 1], filled in place."""
    images = np.empty((sum(len(chunk.rows) for chunk in chunks), image_shape[0] * image_shape[1]), np.float32)
    at = 0
    for chunk in chunks:
        part = images[at : at + len(chunk.rows)]
        part[...] = chunk.images
        if chunk.images.dtype == np.uint8:
            part /= 255.0
        at += len(chunk.rows)
    return images.reshape(-1, *image_shape)


def load_inputs(
    paths: Sequence[str | os.PathLike],
    image_shape: tuple[int, int] = MNIST_SHAPE,
    notes: list[str] | None = None,
    pictures: str = MNIST_STYLE,
) -> tuple[torch.Tensor, list[str]]:
    """Images ready for a model, from picture, array and CSV files, with a name for each.

    Pictures (PNG, JPEG, BMP, GIF, TIFF, WebP) are made into pixels by the run's rule `pictures`
    (``Run.pictures``): ``"mnist-style"`` is MNIST's preprocessing (grayscale, light paper turned
    dark, noise and uneven light removed, cropped to the ink, fitted into 20 × 20 and centred by mass
    in 28 × 28, scaled to `image_shape`); ``"as-is"`` is grayscale resized to `image_shape`, the
    pixels a dataset converted from a picture folder holds. ``.npy``/``.npz`` arrays and CSV rows
    (one image per row, 0..255 or fractions in [0, 1]) must already have the run's shape. Folders
    are read recursively, sorted. Everything is loaded at once; ``torchlogreg predict`` streams files of any
    size a chunk at a time instead.

    Parameters
    ----------
    paths : sequence of str or path
        Files and folders.
    image_shape : (int, int), default=(28, 28)
        The run's input shape (``run.image_shape``).
    notes : list, optional
        Gets notes worth showing a user (e.g. which CSV column was read as labels).
    pictures : {"mnist-style", "as-is"}, default="mnist-style"
        How picture files become pixels: the run's rule.

    Returns
    -------
    images : torch.Tensor
        (N, H, W) float32 in [0, 1].
    names : list of str
        One per image: the file, with ``[row]`` for arrays and CSV rows.

    Raises
    ------
    InputError
        For an unreadable, damaged, oversized or wrongly shaped input (one line naming it).

    Examples
    --------
    >>> import torchlogreg as tl
    >>> images, names = tl.load_inputs(["seven.png", "digits.npy"])  # doctest: +SKIP
    >>> images.shape, names  # doctest: +SKIP
    (torch.Size([4, 28, 28]), ['seven.png', 'digits.npy[0]', 'digits.npy[1]', 'digits.npy[2]'])
    """
    image_shape = _input_shape(image_shape)
    note = notes.append if notes is not None else None
    chunks = [
        chunk
        for path in expand_inputs(paths)
        for chunk in read_chunks(path, image_shape, note=note, pictures=pictures)
    ]
    if not chunks:
        raise InputError("no inputs given")
    names = [name for chunk in chunks for name in chunk.names()]
    return torch.from_numpy(_stack(chunks, image_shape)), names
