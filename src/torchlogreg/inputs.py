"""Input files for prediction: arrays (.npy/.npz), CSV rows, and folders of images, read into
float images of a run's shape. Pictures go through `images.mnist_style`.

Hostile files are refused before they cost memory: a .npy's (or each .npz member's) header is
checked before its data is read, so a small file that would decode to gigabytes gives one
`InputError` line instead of a full memory.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from tokenize import TokenError

import numpy as np
import torch

from .exceptions import InputError
from .images import IMAGE_SUFFIXES, MNIST_SHAPE, _size, _source_name, _why, as_shape, mnist_style, read_image

ARRAY_SUFFIXES = {".npy", ".npz"}
TABLE_SUFFIXES = {".csv"}  # one image per row: pixel columns, optionally a label column
CSV_LABEL_NAMES = ("label", "labels", "class", "target", "y")
CSV_CHUNK_ROWS = 10_000
MAX_ARRAY_BYTES = 256 * 1024 * 1024  # decoded size of one .npy/.npz: ~340k 28x28 uint8 images
MAX_NPZ_MEMBERS = 32  # arrays in one .npz (np.savez writes one member per array)
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK"
READ_CHUNK = 1024 * 1024  # array data is read in pieces of this size into one preallocated buffer
# The zip "end of central directory" record, and how many bytes a member's directory entry may take
# (46 fixed bytes, its name and extra fields): a directory over the limit is refused before zipfile
# builds an object per entry of it.
_ZIP_END = struct.Struct("<4s4H2LH")
_ZIP_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR_SIGNATURE = b"PK\x06\x07"
_ZIP_ENTRY_BYTES = 1024


# --- arrays: what a header declares is checked before the data is read ----------------------------


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


def _array_images(array: np.ndarray, path: Path, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """Rows of `array` as float images in [0, 1], shape (N, H*W), for images of `shape` (H, W)."""
    height, width = as_shape(shape)
    _check_declared(array.shape, array.dtype, path, (height, width))
    rows = array.reshape(-1, height * width)
    if np.issubdtype(rows.dtype, np.floating):
        if not np.isfinite(rows).all():
            raise InputError(f"{path}: the array holds NaN or infinite values")
        low, high = rows.min(), rows.max()
        if low < 0 or high > 1:
            raise InputError(f"{path}: float arrays must hold values in [0, 1], found {low:g}..{high:g}")
        return rows.astype(np.float32, copy=False)  # float32 rows as read are used as they are
    if rows.dtype == bool:
        return rows.astype(np.float32)
    low, high = rows.min(), rows.max()
    if low < 0 or high > 255:
        raise InputError(f"{path}: integer arrays must hold values in 0..255, found {low}..{high}")
    images = rows.astype(np.float32)
    images /= 255.0  # in place: a large batch is not copied twice
    return images


def _npy_header(stream, label: object) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header at the start of a .npy stream."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(stream)
        if version == (2, 0):
            return np.lib.format.read_array_header_2_0(stream)
    except (ValueError, TypeError, SyntaxError, EOFError, OverflowError, struct.error, TokenError) as error:
        # what NumPy's header parser (ast.literal_eval, tokenize, np.dtype) raises on damaged headers
        raise InputError(f"{label}: not a readable NumPy file ({_why(error)})") from None
    raise InputError(f"{label}: .npy format version {version[0]}.{version[1]} is not supported (1.0 or 2.0)")


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


def _read_npz(handle, label, image_shape: tuple[int, int], max_bytes: int) -> np.ndarray:
    """The images array of a .npz. The zip's directory size, its member count and every member's
    .npy header (no objects, all within `max_bytes` decoded) are checked before data is read."""
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
            keys = list(headers)
            key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"{label}: holds arrays {keys}; name the images 'images' or keep one array")
            info, shape, fortran_order, dtype = headers[key]
            member = _member(label, key)
            n_bytes = _check_declared(shape, dtype, member, image_shape)
            with archive.open(info) as stream:
                _npy_header(stream, member)
                return _read_data(stream, shape, fortran_order, dtype, n_bytes, member)
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


@contextlib.contextmanager
def _opened(source):
    """A binary stream over `source`: a path is opened (and closed after), a file object used as it is."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as handle:
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
    image_shape = as_shape(image_shape)
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


def expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The files named: folders give every image and array inside them (recursively, sorted);
    '-' and shell patterns that matched nothing are named as what they are."""
    files = []
    for raw in paths:
        path = Path(raw)
        if str(raw) == "-":
            raise InputError("-: reading from standard input is not supported; give files or a folder")
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


def read_csv_rows(path: Path, image_shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """Images (N, H, W) in [0, 1] from a CSV of one image per row (pixels 0..255, or fractions in
    [0, 1]), read CSV_CHUNK_ROWS rows at a time; and a note naming the label column when there is one."""
    n_pixels = image_shape[0] * image_shape[1]
    parts = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
            header, label, note = _csv_header(first, n_pixels, path)
            line = 1 if header else 0
            rows = handle if header else itertools.chain([first], handle)
            while chunk := list(itertools.islice(rows, CSV_CHUNK_ROWS)):
                parts.append(_csv_chunk(chunk, line + 1, label, n_pixels, path))
                line += len(chunk)
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read it as a text CSV ({_why(error)})") from None
    if not parts:
        raise InputError(f"{path}: no data rows")
    pixels = np.concatenate(parts)
    scale = 1.0 if pixels.max(initial=0) <= 1 and not np.array_equal(pixels, np.rint(pixels)) else 255.0
    if scale == 255.0 and pixels.max(initial=0) > 255:
        raise InputError(
            f"{path}: pixel values must be 0..255 (or fractions in [0, 1]), found up to {pixels.max():g}"
        )
    return (pixels / scale).astype(np.float32).reshape(-1, *image_shape), note


def _csv_chunk(chunk: list[str], first_line: int, label: int | None, n_pixels: int, path: Path) -> np.ndarray:
    """One chunk of CSV rows as float pixels, checked row by row only when the fast parse fails."""
    width = n_pixels + (label is not None)
    try:
        values = np.loadtxt(chunk, delimiter=",", dtype=np.float64, ndmin=2)
        if values.shape[1] != width:
            raise ValueError
    except ValueError:
        for offset, row in enumerate(chunk):
            cells = row.rstrip("\r\n").split(",")
            where = f"{path}: row {first_line + offset}"
            if len(cells) != width:
                raise InputError(f"{where} has {len(cells)} cells, expected {width}") from None
            bad = next((c for c in cells if not _is_number(c)), None)
            if bad is not None:
                raise InputError(f"{where}: {bad[:20]!r} is not a number") from None
        raise InputError(
            f"{path}: rows {first_line}..{first_line + len(chunk) - 1} cannot be parsed"
        ) from None
    if not np.isfinite(values).all() or values.min(initial=0) < 0:
        raise InputError(f"{path}: rows from {first_line} hold NaN, infinite or negative values")
    return np.delete(values, label, axis=1) if label is not None else values


def load_inputs(
    paths: Sequence[str | os.PathLike],
    image_shape: tuple[int, int] = MNIST_SHAPE,
    notes: list[str] | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Float images (N, H, W) in [0, 1] from image and array files, with a name for each; (H, W) is
    `image_shape`, the run's input shape, so pictures are fitted to it and arrays must match it.
    Each array file may decode to at most MAX_ARRAY_BYTES, each picture hold MAX_IMAGE_PIXELS."""
    image_shape = as_shape(image_shape)
    parts, names = [], []
    for path in expand_inputs(paths):
        suffix = path.suffix.lower()
        if suffix in TABLE_SUFFIXES:
            rows, note = read_csv_rows(path, image_shape)
            parts.append(rows)
            names.extend(f"{path}[{i}]" for i in range(len(rows)))
            if note and notes is not None:
                notes.append(note)
        elif suffix in ARRAY_SUFFIXES:
            rows = read_array(path, image_shape)
            parts.append(rows.reshape(-1, *image_shape))
            names.extend([str(path)] if len(rows) == 1 else [f"{path}[{i}]" for i in range(len(rows))])
        elif suffix in IMAGE_SUFFIXES:
            try:
                parts.append(mnist_style(read_image(path), image_shape)[None])
            except InputError as error:
                if str(error).startswith(str(path)):
                    raise
                raise InputError(f"{path}: {error}") from None
            names.append(str(path))
        else:
            raise InputError(
                f"{path}: unsupported file type {suffix or '(none)'}; give images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}), arrays (.npy, .npz) or CSV rows (.csv)"
            )
    if not parts:
        raise InputError("no inputs given")
    images = parts[0] if len(parts) == 1 else np.concatenate(parts)  # one file: no copy
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)), names
