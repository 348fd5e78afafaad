"""Input files for prediction: arrays (.npy/.npz), CSV rows, and folders of images, read a chunk at a
time (`read_chunks`) or all at once (`load_inputs`) as images of a run's shape. Pictures are made
into pixels by the run's rule (`images.picture_pixels`: as its data was made); arrays and CSV rows are
pixels already.

Memory does not grow with a file: a CSV is parsed CSV_BLOCK_BYTES of whole lines at a time, a .npy
read ARRAY_CHUNK_ROWS rows at a time. Kaggle-style CSVs (integers 0..255) take a vectorised NumPy
parse of the bytes (`_uint8_cells`, about 20x np.loadtxt); other numbers go through np.loadtxt, and
a block that fails is read cell by cell to name its bad rows.

Hostile files are refused before they cost memory: a .npy's (or each .npz member's) header is
checked before its data is read, so a small file that would decode to gigabytes gives one
`InputError` line instead of a full memory.

This is the package's one reader of files it did not write itself (predict, serve, data convert,
dataset folders, run folders): `open_regular` opens regular files only (a FIFO, device or folder is
refused without blocking), `read_capped` reads one whole within a limit, `read_npy` and
`read_npz_arrays` read any .npy/.npz after checking their headers against the file's size and a
budget (`data.read_idx` cuts a gzip stream where its header says the data ends). Each takes the
error class its caller reports (InputError, DataError, CheckpointError).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from tokenize import TokenError

import numpy as np
import torch

from .exceptions import InputError, TorchLogRegError
from .images import (
    IMAGE_SUFFIXES,
    MNIST_SHAPE,
    MNIST_STYLE,
    _size,
    _source_name,
    _why,
    as_shape,
    check_pictures,
    picture_pixels,
    read_image,
)

ARRAY_SUFFIXES = {".npy", ".npz"}
TABLE_SUFFIXES = {".csv"}  # one image per row: pixel columns, optionally a label column
CSV_LABEL_NAMES = ("label", "labels", "class", "target", "y")
PIXEL_RANGE = "0..255 (or fractions in [0, 1])"
CSV_BLOCK_BYTES = 1024 * 1024  # CSV text parsed at a time (whole lines): ~550 rows of 28x28 pixels
CSV_CELL_BYTES = 32  # a CSV row may take this many bytes per cell (or CSV_BLOCK_BYTES) before it is refused
ARRAY_CHUNK_ROWS = 2048  # rows of an array handed on at a time: 1.5 MB of 28x28 uint8, 6 MB as float
MAX_ARRAY_BYTES = 256 * 1024 * 1024  # decoded size of one .npy/.npz: ~340k 28x28 uint8 images
MAX_NPZ_MEMBERS = 32  # arrays in one .npz (np.savez writes one member per array)
NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER_BYTES = 64 * 1024  # a .npy header is ~128 bytes; NumPy itself refuses over 10,000 characters
ZIP_MAGIC = b"PK"
READ_CHUNK = 1024 * 1024  # array data is read in pieces of this size into one preallocated buffer
# The zip "end of central directory" record, and how many bytes a member's directory entry may take
# (46 fixed bytes, its name and extra fields): a directory over the limit is refused before zipfile
# builds an object per entry of it.
_ZIP_END = struct.Struct("<4s4H2LH")
_ZIP_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP_ENTRY_BYTES = 1024


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


# --- the one reader: regular files only, sizes checked before memory is spent -----------------------


def open_regular(
    path: str | os.PathLike,
    error: type[TorchLogRegError] = InputError,
    *,
    follow_links: bool = True,
    missing: str = "no such file",
):
    """`path` opened for binary reading if it is a regular file. A FIFO, device or folder is refused
    with `error` before anything blocks (the file is opened non-blocking, checked with fstat, then
    made blocking); with follow_links=False a symbolic link is refused too (a run folder's files
    must be its own)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as failure:  # ELOOP: a symbolic link; EACCES, ENAMETOOLONG...
        raise error(f"{path}: not a regular file ({failure.strerror or failure})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: not a regular file (a FIFO, device or folder is never read)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_capped(
    path: str | os.PathLike, limit: int, error: type[TorchLogRegError] = InputError, **opening
) -> bytes:
    """The bytes of the regular file `path` when it holds at most `limit` (its size checked before it
    is read, and again while reading: a file that grows is cut)."""
    with open_regular(path, error, **opening) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise error(f"{path} is {size} bytes, over the {limit} bytes allowed for it")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path} grew past the {limit} bytes allowed for it while being read")
    return data


def read_npy(
    path: str | os.PathLike, max_bytes: int, error: type[TorchLogRegError] = InputError
) -> np.ndarray:
    """Any numeric .npy (no objects) from a regular file, after its header is checked: the data it
    declares must be in the file and within `max_bytes`."""
    with open_regular(path, error) as handle:
        try:
            shape, fortran_order, dtype = _npy_header(handle, path)
            n_bytes = _check_declared(shape, dtype, path)
            _check_budget(n_bytes, max_bytes, path, f"its array of shape {tuple(shape)} ({dtype}) would")
            found = os.fstat(handle.fileno()).st_size - handle.tell()
            if found < n_bytes:
                raise InputError(
                    f"{path}: truncated (its header promises {n_bytes} bytes of data, found {found})"
                )
            return _read_data(handle, shape, fortran_order, dtype, n_bytes, path)
        except InputError as failure:
            if error is InputError:
                raise
            raise error(str(failure)) from None


# --- arrays: what a header declares is checked before the data is read ----------------------------

MAX_INPUT_PIXELS = 2**24  # of image_shape (4096 x 4096): a run's inputs never have more


def _input_shape(image_shape) -> tuple[int, int]:
    """`image_shape` as (H, W), refused beyond MAX_INPUT_PIXELS before anything of that size is made."""
    height, width = as_shape(image_shape)
    if height * width > MAX_INPUT_PIXELS:
        raise InputError(
            f"image_shape {height}x{width} has {height * width} pixels; "
            f"at most {MAX_INPUT_PIXELS} (4096x4096)"
        )
    return height, width



def _check_layout(shape: tuple[int, ...], label: object, image_shape: tuple[int, int]) -> None:
    """Refuse an array `shape` that does not hold images of `image_shape` (H, W)."""
    height, width = image_shape
    n_pixels = height * width
    if tuple(shape[-2:]) == (height, width) or (len(shape) in (1, 2) and shape[-1] == n_pixels):
        return
    found = "a single value (a 0-d array)" if not shape else f"shape {tuple(shape)}"
    raise InputError(
        f"{label}: array of {found} does not hold {height}x{width} images "
        f"(expected ({height}, {width}), (N, {height}, {width}), ({n_pixels},) or (N, {n_pixels}))"
    )


def _check_declared(
    shape: tuple[int, ...], dtype: np.dtype, label: object, image_shape: tuple[int, int] | None = None
) -> int:
    """The bytes an array of `shape` and `dtype` takes, after refusing one that cannot be images of
    `image_shape` (not checked when None): objects, non-numbers, no values, another layout."""
    if dtype.hasobject:
        raise InputError(f"{label}: not a readable NumPy file without pickles (it holds Python objects)")
    if any(side < 0 for side in shape):
        raise InputError(f"{label}: damaged header (negative size in shape {tuple(shape)})")
    count = math.prod(shape)
    if image_shape is None:
        return count * dtype.itemsize
    if count == 0:
        raise InputError(f"{label}: the array is empty")
    if dtype.kind not in "biuf":  # bool, signed and unsigned integers, floats
        raise InputError(f"{label}: arrays must hold numbers (uint8 0..255 or floats 0..1), got {dtype}")
    _check_layout(shape, label, image_shape)
    return count * dtype.itemsize


def _check_budget(n_bytes: int, max_bytes: int, label: object, what: str) -> None:
    """Refuse a file whose arrays, as its headers declare them, would take more than `max_bytes`."""
    if n_bytes > max_bytes:
        raise InputError(
            f"{label}: {what} decode to {_size(n_bytes)}, over the limit of {_size(max_bytes)} for one file"
        )


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


def _array_images(array: np.ndarray, path: Path, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """Rows of `array` as float images in [0, 1], shape (N, H*W), for images of `shape` (H, W)."""
    height, width = as_shape(shape)
    _check_declared(array.shape, array.dtype, path, (height, width))
    return _as_float(_pixels(array.reshape(-1, height * width), path))


def _npy_header(stream, label: object) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header at the start of a .npy stream. The header's
    length is data like any other: one over MAX_NPY_HEADER_BYTES is refused before it is read (NumPy
    reads the whole declared length, up to 4 GB, before checking it)."""
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise InputError(
                f"{label}: .npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)"
            )
        length_format = "<H" if version == (1, 0) else "<I"
        length_bytes = stream.read(struct.calcsize(length_format))
        (length,) = struct.unpack(length_format, length_bytes)
        if length > MAX_NPY_HEADER_BYTES:
            raise InputError(
                f"{label}: damaged header (it declares {_size(length)} of header; a .npy header "
                f"takes at most {_size(MAX_NPY_HEADER_BYTES)})"
            )
        header = stream.read(length)
        if len(header) < length:
            raise EOFError(f"the header is cut short ({len(header)} of {length} bytes)")
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        return read(io.BytesIO(length_bytes + header))
    except InputError:
        raise
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError, struct.error, TokenError) as error:
        # what NumPy's header parser (ast.literal_eval, tokenize, np.dtype) raises on damaged headers
        raise InputError(f"{label}: not a readable NumPy file ({_why(error)})") from None


def _read_data(stream, shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype, n_bytes: int, label):
    """The array whose header was just read: `n_bytes` read in pieces into one buffer (a short or
    lying stream cannot make it grow), then viewed as `dtype` without a copy."""
    buffer = bytearray(n_bytes)
    view = memoryview(buffer)
    filled = 0
    while filled < n_bytes:
        piece = stream.read(min(READ_CHUNK, n_bytes - filled))
        if not piece:
            raise InputError(
                f"{label}: truncated (its header promises {n_bytes} bytes of data, found {filled})"
            )
        view[filled : filled + len(piece)] = piece
        filled += len(piece)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")


def _read_npy(stream, label, image_shape: tuple[int, int], max_bytes: int) -> np.ndarray:
    shape, fortran_order, dtype = _npy_header(stream, label)
    n_bytes = _check_declared(shape, dtype, label, image_shape)
    _check_budget(n_bytes, max_bytes, label, f"its array of shape {tuple(shape)} ({dtype}) would")
    return _read_data(stream, shape, fortran_order, dtype, n_bytes, label)


def _zip_directory_bytes(handle) -> int | None:
    """The size its end record gives a zip's central directory, found as zipfile finds it (the
    record ends the file, or precedes a comment of up to 64 kB); None without one, -1 when the
    archive uses ZIP64 end records (which a .npz within the limits never needs)."""
    handle.seek(0, os.SEEK_END)
    start = max(handle.tell() - _ZIP_END.size - (1 << 16) - 20, 0)  # 20: a ZIP64 locator before it
    handle.seek(start)
    tail = handle.read()
    at = len(tail) - _ZIP_END.size
    if not (at >= 0 and tail[at : at + 4] == _ZIP_END_SIGNATURE and tail[-2:] == b"\0\0"):
        at = tail.rfind(_ZIP_END_SIGNATURE)
        if at < 0 or len(tail) - at < _ZIP_END.size:
            return None
    if at >= 20 and tail[at - 20 : at - 16] == _ZIP64_LOCATOR_SIGNATURE:
        return -1
    return _ZIP_END.unpack_from(tail, at)[5]


def _member(label, name: str) -> str:
    """How messages name the array `name` in the .npz `label`: on one line, at most 60 characters."""
    shown = name if name.isprintable() else repr(name)
    return f"{label}[{shown if len(shown) <= 60 else shown[:57] + '...'}]"


def _npz_headers(archive, label) -> dict[str, tuple]:
    """{array name: (zip member, shape, fortran_order, dtype)} from every member's .npy header."""
    import zipfile

    members = archive.infolist()
    if not members or len(members) > MAX_NPZ_MEMBERS:
        raise InputError(f"{label}: holds {len(members)} arrays; a .npz may hold 1 to {MAX_NPZ_MEMBERS}")
    headers = {}
    for info in members:
        member = _member(label, info.filename)
        if info.flag_bits & 0x1:
            raise InputError(f"{member}: encrypted; .npz members are not")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(f"{member}: zip compression {info.compress_type}; a .npz uses stored or deflate")
        with archive.open(info) as stream:
            headers[info.filename.removesuffix(".npy")] = (info, *_npy_header(stream, member))
    return headers


@contextlib.contextmanager
def _npz_checked(handle, label, max_bytes: int):
    """(the open zip archive, its members' headers) of a .npz whose zip directory, member count and
    every member's .npy header (no objects, all within `max_bytes` decoded) were checked; damage
    found on the way is an InputError."""
    import zipfile
    import zlib

    directory = _zip_directory_bytes(handle)
    if directory is None:
        raise InputError(f"{label}: not a readable NumPy file (a damaged .npz: no zip directory)")
    if directory < 0 or directory > MAX_NPZ_MEMBERS * _ZIP_ENTRY_BYTES:
        raise InputError(f"{label}: its zip directory is too large for a .npz of {MAX_NPZ_MEMBERS} arrays")
    handle.seek(0)
    try:
        with zipfile.ZipFile(handle) as archive:
            headers = _npz_headers(archive, label)
            declared = (
                _check_declared(shape, dtype, _member(label, k))
                for k, (_, shape, _, dtype) in headers.items()
            )
            _check_budget(sum(declared), max_bytes, label, "its arrays would")
            yield archive, headers
    except InputError:
        raise
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        ValueError,
        NotImplementedError,
    ) as err:
        raise InputError(f"{label}: not a readable NumPy file (a damaged .npz: {_why(err)})") from None


def _npz_member(archive, headers: dict, key: str, label, image_shape=None) -> np.ndarray:
    """The array `key` of a checked .npz (see _npz_checked)."""
    info, shape, fortran_order, dtype = headers[key]
    member = _member(label, key)
    n_bytes = _check_declared(shape, dtype, member, image_shape)
    with archive.open(info) as stream:
        _npy_header(stream, member)
        return _read_data(stream, shape, fortran_order, dtype, n_bytes, member)


def read_npz_arrays(
    path: str | os.PathLike, max_bytes: int, error: type[TorchLogRegError] = InputError
) -> dict[str, np.ndarray]:
    """Every array of a .npz (a regular file), by name, once the archive and every header are
    checked: no objects, all arrays within `max_bytes` decoded together."""
    try:
        with open_regular(path, error) as handle, _npz_checked(handle, path, max_bytes) as (archive, headers):
            return {key: _npz_member(archive, headers, key, path) for key in headers}
    except InputError as failure:
        if error is InputError:
            raise
        raise error(str(failure)) from None


def _read_npz(handle, label, image_shape: tuple[int, int], max_bytes: int) -> np.ndarray:
    """The images array of a .npz. The zip's directory size, its member count and every member's
    .npy header (no objects, all within `max_bytes` decoded) are checked before data is read."""
    with _npz_checked(handle, label, max_bytes) as (archive, headers):
        keys = list(headers)
        key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise InputError(f"{label}: holds arrays {keys}; name the images 'images' or keep one array")
        return _npz_member(archive, headers, key, label, image_shape)


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
    path = _source_name(path, name)
    image_shape = _input_shape(image_shape)
    try:
        with _opened(source) as handle:
            magic = handle.read(len(NPY_MAGIC))
            handle.seek(0)
            if magic == NPY_MAGIC:
                array = _read_npy(handle, path, image_shape, max_bytes)
            elif magic.startswith(ZIP_MAGIC):
                array = _read_npz(handle, path, image_shape, max_bytes)
            else:
                raise InputError(f"{path}: not a readable NumPy file (no .npy or .npz signature)")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read it ({error.strerror or _why(error)})") from None
    return _array_images(array, path, image_shape)


# --- reading a chunk at a time -----------------------------------------------------------------------


def _row_chunks(rows: np.ndarray, path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """An array's rows (N, H*W), already in memory, as chunks of `chunk_rows`."""
    for start in range(0, len(rows), chunk_rows):
        part = rows[start : start + chunk_rows]
        stop = start + len(part)
        yield Chunk(path, np.arange(start, stop), _pixels(part, path), stop, part.nbytes, len(rows) == 1)


def _npy_chunks(handle, path: Path, image_shape: tuple[int, int], chunk_rows: int) -> Iterator[Chunk]:
    """A .npy's rows, read `chunk_rows` at a time after its header (and the file's size) is checked."""
    shape, fortran_order, dtype = _npy_header(handle, path)
    n_bytes = _check_declared(shape, dtype, path, image_shape)
    _check_budget(n_bytes, MAX_ARRAY_BYTES, path, f"its array of shape {tuple(shape)} ({dtype}) would")
    found = os.fstat(handle.fileno()).st_size - handle.tell()
    if found < n_bytes:  # found before any row is handed on: a cut file is bad as a whole
        raise InputError(f"{path}: truncated (its header promises {n_bytes} bytes of data, found {found})")
    n_pixels = image_shape[0] * image_shape[1]
    if fortran_order:  # column-major: no row is contiguous, so the array is read whole
        array = _read_data(handle, shape, True, dtype, n_bytes, path)
        yield from _row_chunks(array.reshape(-1, n_pixels), path, chunk_rows)
        return
    n_rows, row_bytes = math.prod(shape) // n_pixels, n_pixels * dtype.itemsize
    for start in range(0, n_rows, chunk_rows):
        count = min(chunk_rows, n_rows - start)
        rows = _read_data(handle, (count, n_pixels), False, dtype, count * row_bytes, path)
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
            array = _read_npz(handle, path, image_shape, MAX_ARRAY_BYTES)
            yield from _row_chunks(array.reshape(-1, image_shape[0] * image_shape[1]), path, chunk_rows)
        else:
            raise InputError(f"{path}: not a readable NumPy file (no .npy or .npz signature)")


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
) -> Iterator[Chunk]:
    """The images of one file (picture, .npy/.npz array or CSV rows), a chunk at a time, so memory
    holds one chunk however large the file. A bad file raises `InputError` naming it; a bad CSV row
    too, unless `skip_row` is given: it is then called with the row's one-line message and the row
    left out. `note` is called with what is worth saying (the label column a CSV's rows carry).
    `chunk_rows` (array rows) and `block_bytes` (CSV text) default to ARRAY_CHUNK_ROWS, CSV_BLOCK_BYTES.
    `pictures` is the run's rule for picture files (`Run.pictures`, images.PICTURE_RULES)."""
    path, image_shape, pictures = Path(path), _input_shape(image_shape), check_pictures(pictures)
    chunk_rows, block_bytes = chunk_rows or ARRAY_CHUNK_ROWS, block_bytes or CSV_BLOCK_BYTES
    suffix = path.suffix.lower()
    try:
        if suffix in TABLE_SUFFIXES:
            reader = _CsvReader(path, image_shape, skip_row, note)
            with open_regular(path) as handle:
                yield from reader.chunks(handle, block_bytes)
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
        raise InputError(f"{path}: cannot read it ({error.strerror or _why(error)})") from None


# --- CSV rows: one image per row -----------------------------------------------------------------------


def _uint8_cells(block: bytes, width: int) -> np.ndarray | None:
    """The cells of `block` (whole lines, each ending in a newline) as uint8 rows (N, `width`) when
    every cell is an integer 0..255 of 1 to 3 digits and every row has `width` cells, else None.

    Vectorised over the bytes: a cell ends at each non-digit; the number ending at each byte is that
    digit plus 10x and 100x the digits before it, as far as they are digits. About 20x np.loadtxt."""
    raw = np.frombuffer(block, np.uint8)
    digits = np.empty(len(raw) + 3, np.uint8)
    digits[:3] = 10  # three non-digits in front, so every byte can look back three
    np.subtract(raw, 48, out=digits[3:])  # '0'..'9' -> 0..9; every other byte wraps to >= 10
    is_digit = digits < 10
    ends = np.flatnonzero(~is_digit[3:])  # the byte after each cell
    if len(ends) == 0 or len(ends) % width or ends[-1] != len(raw) - 1:
        return None
    separators = raw[ends].reshape(-1, width)
    if not ((separators[:, :-1] == ord(",")).all() and (separators[:, -1] == ord("\n")).all()):
        return None
    if not (is_digit[2:-1] | is_digit[3:]).all():
        return None  # two separators in a row: an empty cell
    longer = is_digit[:-3] & is_digit[1:-2]
    longer &= is_digit[2:-1]
    longer &= is_digit[3:]
    if longer.any():
        return None  # a number of 4 digits or more: the general parse decides
    digits *= is_digit  # non-digits count as 0 below
    value = digits[3:].astype(np.uint16)
    value += digits[2:-1] * np.uint8(10)
    hundreds = digits[1:-2] * is_digit[2:-1]  # only when the tens are a digit of the same cell
    value += hundreds.astype(np.uint16) * np.uint16(100)
    values = value[ends - 1]
    if values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(-1, width)


def _csv_blocks(handle, pending: bytes, line: int, block_bytes: int, max_line: int, path: Path):
    """(number of its first line, whole lines ending in a newline) from a binary stream, about
    `block_bytes` at a time; `pending` comes first. A line over `max_line` bytes is refused."""
    while True:
        data = handle.read(block_bytes)
        if not data:
            if pending:  # the last line, without its newline
                yield line, pending if pending.endswith(b"\n") else pending + b"\n"
            return
        data = pending + data if pending else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > max_line:
                raise InputError(f"{path}: row {line} is longer than {_size(max_line)}; is this a CSV?")
            pending = data
            continue
        pending = data[cut:]
        yield line, data[:cut]
        line += data.count(b"\n", 0, cut)


def _csv_header(first: str, n_pixels: int, path: Path) -> tuple[bool, int | None, str]:
    """(has a header, the label column or None, a note) from a CSV's first line."""
    fields = [f.strip().strip('"') for f in first.rstrip("\r\n").split(",")]
    header = not all(_is_number(f) for f in fields)
    names = [f.lower() for f in fields]
    label = next((names.index(n) for n in CSV_LABEL_NAMES if header and n in names), None)
    if label is None and len(fields) == n_pixels + 1:
        label = 0  # one column more than pixels and none named: the first, as Kaggle writes it
    if len(fields) - (label is not None) != n_pixels:
        raise InputError(
            f"{path}: {len(fields)} columns, expected {n_pixels} pixel columns (and optionally a label)"
        )
    note = (
        f"{path}: column {fields[label] if header else label} taken as the label, not used"
        if label is not None
        else ""
    )
    return header, label, note


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _CsvReader:
    """One CSV's rows as chunks: block by block, the fast integer parse or np.loadtxt, and cell by
    cell only where a block holds bad rows. Pixels are 0..255 or, when the first rows hold
    fractions in [0, 1], fractions throughout; a row outside that is bad."""

    def __init__(self, path: Path, image_shape: tuple[int, int], skip_row, note):
        self.path, self.image_shape = path, image_shape
        self.n_pixels = image_shape[0] * image_shape[1]
        self.skip_row, self.note = skip_row, note
        self.label: int | None = None  # the label column, left out
        self.width = self.n_pixels  # cells per row, with the label
        self.fractions: bool | None = None  # decided by the first good rows
        self.rows = 0  # data rows read so far
        self.max_line = max(CSV_BLOCK_BYTES, CSV_CELL_BYTES * (self.n_pixels + 1))

    def chunks(self, handle, block_bytes: int) -> Iterator[Chunk]:
        pending, line = self._header(handle)
        for first_line, block in _csv_blocks(handle, pending, line, block_bytes, self.max_line, self.path):
            yield self._chunk(block, first_line)
        if self.rows == 0:
            raise InputError(f"{self.path}: no data rows")

    def _header(self, handle) -> tuple[bytes, int]:
        """Reads the first line: (the bytes still to parse as rows, their first line number)."""
        first = handle.readline(self.max_line + 1).removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
        if not first.strip():
            raise InputError(f"{self.path}: no data rows" + (" (the first line is empty)" if first else ""))
        if len(first) > self.max_line:
            raise InputError(f"{self.path}: row 1 is longer than {_size(self.max_line)}; is this a CSV?")
        try:
            header, self.label, note = _csv_header(first.decode("utf-8"), self.n_pixels, self.path)
        except UnicodeDecodeError as error:
            raise InputError(f"{self.path}: cannot read it as a text CSV ({_why(error)})") from None
        self.width = self.n_pixels + (self.label is not None)
        if note and self.note is not None:
            self.note(note)
        return (b"", 2) if header else (first, 1)

    def _chunk(self, block: bytes, line: int) -> Chunk:
        """The good rows of `block` (whole lines from `line`), bad ones raised or skipped."""
        size = len(block)
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        bad: list[tuple[int, str]] = []
        cells = _uint8_cells(block, self.width)
        if cells is not None:
            lines, parsed = np.arange(line, line + len(cells)), np.ones(len(cells), bool)
        else:
            lines, parsed, cells = self._parse(block, line, bad)
        pixels = np.delete(cells, self.label, axis=1) if self.label is not None else cells
        kept, pixels = self._ready(pixels, lines[parsed], bad)
        for number, message in sorted(bad):
            if self.skip_row is None:
                raise InputError(f"{self.path}: row {number}{message}")
            self.skip_row(f"{self.path}: row {number}{message}")
        rows = self.rows + np.flatnonzero(parsed)[kept]
        self.rows += len(lines)
        return Chunk(self.path, rows, pixels, self.rows, size)

    def _parse(self, block: bytes, line: int, bad: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(line numbers of the data lines, which of them parsed, their cells as float64) for a block
        the fast parse refused; blank lines are not rows."""
        data = [(n, raw) for n, raw in enumerate(block.split(b"\n")[:-1], start=line) if raw.strip()]
        lines = np.array([n for n, _ in data], dtype=np.int64)
        if not data:
            return lines, np.zeros(0, bool), np.zeros((0, self.width))
        try:
            texts = [raw.decode("utf-8") for _, raw in data]
            cells = np.loadtxt(texts, delimiter=",", dtype=np.float64, ndmin=2, comments=None)
            if cells.shape == (len(data), self.width):
                return lines, np.ones(len(data), bool), cells
        except (ValueError, UnicodeDecodeError):
            pass
        parsed, rows = np.zeros(len(data), bool), []
        for i, (number, raw) in enumerate(data):
            problem, values = self._cells(raw)
            if problem:
                bad.append((number, problem))
            else:
                parsed[i] = True
                rows.append(values)
        return lines, parsed, np.array(rows, dtype=np.float64).reshape(-1, self.width)

    def _cells(self, raw: bytes) -> tuple[str, list[float]]:
        """What is wrong with one row (or "") and its values."""
        try:
            cells = raw.decode("utf-8").split(",")
        except UnicodeDecodeError:
            return " is not UTF-8 text", []
        if len(cells) != self.width:
            label = "a label and " if self.label is not None else ""
            height, width = self.image_shape
            return (
                f" has {len(cells)} cells, expected {self.width} ({label}{self.n_pixels} pixels of "
                f"{height}x{width} images)",
                [],
            )
        try:
            return "", [float(cell) for cell in cells]
        except ValueError:
            cell = next(c for c in cells if not _is_number(c))
            return f": {cell[:20]!r} is not a number", []

    def _ready(self, pixels: np.ndarray, lines: np.ndarray, bad: list) -> tuple[np.ndarray, np.ndarray]:
        """(which rows are kept, their pixels for the model): uint8 0..255, or float32 in [0, 1]."""
        if pixels.dtype == np.uint8 and self.fractions is not True:
            if len(pixels):
                self.fractions = False
            return np.ones(len(pixels), bool), pixels
        pixels = pixels.astype(np.float64, copy=False)
        valid = (pixels >= 0).all(axis=1) & np.isfinite(pixels).all(axis=1)  # NaN >= 0 is False
        if self.fractions is None and valid.any():
            good = pixels[valid]
            self.fractions = bool(good.max() <= 1 and not np.array_equal(good, np.rint(good)))
        limit = 1 if self.fractions else 255
        kept = valid & (pixels <= limit).all(axis=1)
        for i in np.flatnonzero(~kept):
            column = int(np.flatnonzero(~((pixels[i] >= 0) & (pixels[i] <= limit)))[0])
            expected = "a fraction in [0, 1] as in the first rows" if self.fractions else PIXEL_RANGE
            bad.append((int(lines[i]), f": pixel {column} is {pixels[i, column]:g}, expected {expected}"))
        scaled = pixels[kept] if self.fractions else pixels[kept] / 255.0
        return kept, scaled.astype(np.float32)


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
            reason = error.strerror or _why(error)
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


def read_csv_rows(path: Path, image_shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Images (N, H, W) in [0, 1] from a CSV of one image per row (pixels 0..255, or fractions in
    [0, 1]); and a note naming the label column when there is one."""
    notes: list[str] = []
    chunks = list(read_chunks(path, image_shape, note=notes.append))
    return _stack(chunks, as_shape(image_shape)), " ".join(notes)


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
