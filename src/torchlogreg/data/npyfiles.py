"""NumPy files (.npy, .npz): the one reader of them, for predict and serve (images), `data convert
--from-npz` (a dataset's splits) and dataset folders (their labels; their images through
ondisk.DiskImages, which reads this module's header check).

Hostile files are refused before they cost memory: a .npy's (or each .npz member's) header is
checked before its data is read (no pickled objects; the data it declares must be in the file and
within a budget), so a small file that would decode to gigabytes gives one line instead of a full
memory; a .npz's zip directory and member count are checked before zipfile reads them.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
from tokenize import TokenError

import numpy as np

from ..base.exceptions import InputError, TorchLogRegError
from .readers import byte_size, one_line, open_regular, raised_as

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


def read_npy(
    path: str | os.PathLike, max_bytes: int, error: type[TorchLogRegError] = InputError
) -> np.ndarray:
    """Any numeric .npy (no objects) from a regular file, after its header is checked: the data it
    declares must be in the file and within `max_bytes`."""
    with open_regular(path, error) as handle, raised_as(error):
        shape, fortran_order, dtype = npy_header(handle, path)
        n_bytes = check_declared(shape, dtype, path)
        check_budget(n_bytes, max_bytes, path, f"its array of shape {tuple(shape)} ({dtype}) would")
        found = os.fstat(handle.fileno()).st_size - handle.tell()
        if found < n_bytes:
            raise InputError(
                f"{path}: truncated (its header promises {n_bytes} bytes of data, found {found})"
            )
        return read_array_data(handle, shape, fortran_order, dtype, n_bytes, path)


def _check_layout(shape: tuple[int, ...], label: object, image_shape: tuple[int, int]) -> None:
    """Refuse an array `shape` that does not hold images of `image_shape` (H, W): one image, N images,
    flat or not, or N images of one channel (torchvision's (N, 1, H, W)); an RGB (N, 3, H, W) had been
    read as three images."""
    height, width = image_shape
    n_pixels = height * width
    shape = tuple(shape)
    pictures = shape[-2:] == (height, width) and (len(shape) in (2, 3) or (len(shape) == 4 and shape[1] == 1))
    if pictures or (len(shape) in (1, 2) and shape[-1] == n_pixels):
        return
    found = "a single value (a 0-d array)" if not shape else f"shape {shape}"
    raise InputError(
        f"{label}: array of {found} does not hold {height}x{width} images (expected ({height}, {width}), "
        f"(N, {height}, {width}), (N, 1, {height}, {width}), ({n_pixels},) or (N, {n_pixels}))"
    )


def check_declared(
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


def check_budget(n_bytes: int, max_bytes: int, label: object, what: str) -> None:
    """Refuse a file whose arrays, as its headers declare them, would take more than `max_bytes`."""
    if n_bytes > max_bytes:
        raise InputError(
            f"{label}: {what} decode to {byte_size(n_bytes)}, "
            f"over the limit of {byte_size(max_bytes)} for one file"
        )


def npy_header(stream, label: object) -> tuple[tuple[int, ...], bool, np.dtype]:
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
                f"{label}: damaged header (it declares {byte_size(length)} of header; a .npy header "
                f"takes at most {byte_size(MAX_NPY_HEADER_BYTES)})"
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
        raise InputError(f"{label}: not a readable NumPy file ({one_line(error)})") from None


def read_array_data(
    stream, shape: tuple[int, ...], fortran_order: bool, dtype: np.dtype, n_bytes: int, label
) -> np.ndarray:
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


def read_npy_images(stream, label, image_shape: tuple[int, int], max_bytes: int) -> np.ndarray:
    """The array of a .npy stream, refused unless its header declares images of `image_shape`
    within `max_bytes`."""
    shape, fortran_order, dtype = npy_header(stream, label)
    n_bytes = check_declared(shape, dtype, label, image_shape)
    check_budget(n_bytes, max_bytes, label, f"its array of shape {tuple(shape)} ({dtype}) would")
    return read_array_data(stream, shape, fortran_order, dtype, n_bytes, label)



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
            headers[info.filename.removesuffix(".npy")] = (info, *npy_header(stream, member))
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
                check_declared(shape, dtype, _member(label, k))
                for k, (_, shape, _, dtype) in headers.items()
            )
            check_budget(sum(declared), max_bytes, label, "its arrays would")
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
        raise InputError(f"{label}: not a readable NumPy file (a damaged .npz: {one_line(err)})") from None


def _npz_member(archive, headers: dict, key: str, label, image_shape=None) -> np.ndarray:
    """The array `key` of a checked .npz (see _npz_checked)."""
    info, shape, fortran_order, dtype = headers[key]
    member = _member(label, key)
    n_bytes = check_declared(shape, dtype, member, image_shape)
    with archive.open(info) as stream:
        npy_header(stream, member)
        return read_array_data(stream, shape, fortran_order, dtype, n_bytes, member)


def read_npz_arrays(
    path: str | os.PathLike, max_bytes: int, error: type[TorchLogRegError] = InputError
) -> dict[str, np.ndarray]:
    """Every array of a .npz (a regular file), by name, once the archive and every header are
    checked: no objects, all arrays within `max_bytes` decoded together."""
    with (
        raised_as(error),
        open_regular(path, error) as handle,
        _npz_checked(handle, path, max_bytes) as (archive, headers),
    ):
        return {key: _npz_member(archive, headers, key, path) for key in headers}


def read_npz_images(handle, label, image_shape: tuple[int, int], max_bytes: int) -> np.ndarray:
    """The images array of a .npz. The zip's directory size, its member count and every member's
    .npy header (no objects, all within `max_bytes` decoded) are checked before data is read."""
    with _npz_checked(handle, label, max_bytes) as (archive, headers):
        keys = list(headers)
        key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if len(keys) == 1 else None)
        if key is None:
            raise InputError(f"{label}: holds arrays {keys}; name the images 'images' or keep one array")
        return _npz_member(archive, headers, key, label, image_shape)
