"""Inputs for prediction: image files made to look like MNIST digits, and ready-made arrays.

MNIST digits are white ink on black, fitted into a 20x20 box and centred by their centre of
mass in a 28x28 field. `mnist_style` does the same to any picture of a dark-on-light (or
light-on-dark) digit, so a photo of a pen-written digit is classified like a test digit. Runs
trained on other H x W images get the same layout scaled: a box of H*20/28 x W*20/28 in H x W.

Hostile files are refused before they cost memory: an image's size is checked before it is
decoded, and a .npy's (or each .npz member's) header before its data is read, so a small file
that would decode to gigabytes gives one `InputError` line instead of a full memory.
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

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
ARRAY_SUFFIXES = {".npy", ".npz"}
TABLE_SUFFIXES = {".csv"}  # one image per row: pixel columns, optionally a label column
CSV_LABEL_NAMES = ("label", "labels", "class", "target", "y")
CSV_CHUNK_ROWS = 10_000
MAX_IMAGE_PIXELS = 50_000_000  # refuse larger images before decoding them (decompression bombs)
MAX_ARRAY_BYTES = 256 * 1024 * 1024  # decoded size of one .npy/.npz: ~340k 28x28 uint8 images
MAX_NPZ_MEMBERS = 32  # arrays in one .npz (np.savez writes one member per array)
FIELD = 28  # MNIST's field size
BOX = 20  # MNIST fits each digit into a box this size
MNIST_SHAPE = (FIELD, FIELD)
WORK_SIZE = 96  # large crops are first reduced to this size before stroke thickening
INK_LEVEL = 0.1  # fraction of the darkest ink below which a pixel counts as paper
MIN_INK_CONTRAST = 0.25  # ink must stand this far above the paper, beyond its noise, to be a digit
NOISE_WIDTHS = 5.0  # the brightest of a million paper pixels lies about 5 noise widths above the rest
FULL_SCALES = (1.0, 255.0, 65535.0, 2.0**31 - 1)  # white of 1-, 8-, 16- and 32-bit (signed) pixels
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
NO_DIGIT = "no digit found: the image is blank, noise, or its ink is too faint"


def _why(error: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, cut to `limit` characters (library messages can be long)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _size(n_bytes: int) -> str:
    """`n_bytes` for a message: 1.5 GiB, 78 MiB, 12 KiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes} bytes"


def _source_name(source, name: str | None) -> Path:
    """How messages name an input: `name`, the path itself, or a file object's name."""
    if name is not None:
        return Path(name)
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    return Path(getattr(source, "name", None) or "upload")


def read_image(path, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None) -> np.ndarray:
    """Grayscale pixels in [0, 1] of an image file (a path, or a binary file object called `name`);
    transparency is composited on white, EXIF orientation applied (a phone's rotated photo comes
    upright), and 16-bit, 32-bit and float pixels scaled by their depth."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    source = path
    path = _source_name(path, name)
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise InputError(
                    f"{path}: image of {width}x{height} pixels is larger than the limit of "
                    f"{max_pixels} pixels; refusing to decode it"
                )
            # a phone's JPEG may be an MPO: the photo, then thumbnails or depth maps as more frames
            if image.format != "MPO" and getattr(image, "n_frames", 1) > 1:
                raise InputError(
                    f"{path}: animated or multi-frame image ({image.n_frames} frames); "
                    "save the frame to classify as a single image"
                )
            image = ImageOps.exif_transpose(image)
            return _to_gray(image, path)
    except (InputError, MemoryError):
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read (empty, corrupt or another format)") from None
    except Image.DecompressionBombError as error:
        raise InputError(f"{path}: larger than the limit of {max_pixels} pixels ({_why(error)})") from None
    except OSError as error:
        if error.errno is not None:  # the file system's error, not a decoder's
            raise InputError(f"{path}: cannot read it ({error.strerror or error})") from None
        raise InputError(f"{path}: corrupt or unreadable image ({_why(error)})") from None
    except Exception as error:  # Pillow's decoders raise many types on malformed files (its fuzzers say so)
        raise InputError(f"{path}: corrupt or unreadable image ({_why(error)})") from None


def _to_gray(image, path: Path) -> np.ndarray:
    """Pixels of a Pillow image in [0, 1]: wide pixels scaled by their depth, the rest through RGBA."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _scaled(np.asarray(image, dtype=np.float32), image.mode, path)
    try:
        rgba = image.convert("RGBA")
    except ValueError as error:  # a mode Pillow cannot convert (LAB, for one)
        raise InputError(f"{path}: image mode {image.mode} is not supported ({_why(error)})") from None
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    gray = Image.alpha_composite(white, rgba).convert("L")
    return np.asarray(gray, dtype=np.float32) / 255.0


def _scaled(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """16-bit pixels over 65535; 32-bit ("I") and float ("F") pixels, whose depth the mode does not
    say, over the white of the smallest usual depth that holds them (1, 255, 65535 or 2**31 - 1),
    or stretched from their minimum when some are negative."""
    if not np.isfinite(values).all():
        raise InputError(f"{path}: the image holds NaN or infinite pixels")
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16"):
        scaled = values / 65535.0
    elif low < 0:
        scaled = (values - low) / max(high - low, 1e-12)
    else:
        scaled = values / next((white for white in FULL_SCALES if high <= white * 1.01), high)  # 1%: rounding
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def _background(gray: np.ndarray, tiles: int = 6) -> np.ndarray:
    """The paper's level at each pixel (ink bright): per-tile low percentiles, interpolated.

    A photo is lit unevenly, so one global level leaves shadows that look like ink; ink is
    brighter than paper and rarely fills a whole tile, so a tile's 10th percentile is its paper.
    """
    from PIL import Image

    height, width = gray.shape
    tile_h, tile_w = max(1, height // tiles), max(1, width // tiles)
    rows, cols = height // tile_h, width // tile_w
    blocks = gray[: rows * tile_h, : cols * tile_w].reshape(rows, tile_h, cols, tile_w).swapaxes(1, 2)
    levels = np.percentile(blocks.reshape(rows, cols, -1), 10, axis=-1).astype(np.float32)
    smooth = Image.fromarray(levels, mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(smooth, dtype=np.float32)


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink as bright-on-black in [0, 1] with the paper removed; light paper is inverted first."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:
        gray = 1.0 - gray
    ink = np.clip(gray - _background(gray), 0.0, None)
    # Noise level from the median absolute deviation (paper is most of the picture). A digit is ink
    # well above the paper (its 10th percentile: a tight crop may be mostly ink) even after the
    # noise's extremes; a blank page, a lighting gradient or random noise leaves residues that are
    # faint or no brighter than the noise.
    median = float(np.median(ink))
    noise = 1.4826 * float(np.median(np.abs(ink - median)))
    peak = float(ink.max())
    contrast = peak - float(np.percentile(ink, 10)) - NOISE_WIDTHS * noise
    if contrast < MIN_INK_CONTRAST:
        raise InputError(f"{NO_DIGIT} (ink contrast {max(contrast, 0.0):.2f}, needs {MIN_INK_CONTRAST})")
    # What is within a few noise widths of the paper, or fainter than INK_LEVEL of the ink, is paper.
    level = max(INK_LEVEL * peak, 4.0 * noise)
    ink = (np.clip(ink - level, 0.0, None) / max(peak - level, 1e-6)).astype(np.float32)
    if not ink.any():
        raise InputError(NO_DIGIT)
    return ink


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Grayscale pixels in [0, 1] resized to width x height (Lanczos)."""
    from PIL import Image

    resized = Image.fromarray(pixels.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized), 0.0, 1.0)


def _thicken(crop: np.ndarray) -> np.ndarray:
    """Widen thin pen strokes to MNIST's stroke width (about 1/8 of the digit's size)."""
    from PIL import Image, ImageFilter

    mask = crop > 0.5
    area = int(mask.sum())
    if area == 0:
        return crop
    interior = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    edge = max(area - int(interior.sum()), 1)
    width = 2.0 * area / edge  # a stroke of width w and length L has area wL and edge ~2L
    target = max(crop.shape) / 8.0
    grow = int(round(target - width))
    if grow < 2:
        return crop
    size = grow + 1 if grow % 2 == 0 else grow  # MaxFilter needs an odd size
    image = Image.fromarray(crop.astype(np.float32), mode="F").filter(ImageFilter.MaxFilter(min(size, 15)))
    return np.asarray(image, dtype=np.float32)


def _mass_span(profile: np.ndarray, tail: float = 0.002) -> tuple[int, int]:
    """Start and end of the ink along one axis, ignoring the outer `tail` of its mass.

    A few stray specks of noise far from the digit would otherwise stretch its box.
    """
    cumulative = np.cumsum(profile) / profile.sum()
    return int(np.searchsorted(cumulative, tail, side="right")), int(
        np.searchsorted(cumulative, 1 - tail)
    ) + 1


def as_shape(shape) -> tuple[int, int]:
    """`shape` as (height, width) of positive integers, the only image shapes a run can have."""
    try:
        height, width = (int(side) for side in shape)
    except (TypeError, ValueError):
        height = width = 0
    if height < 1 or width < 1:
        raise InputError(f"image shape must be (height, width) with two positive integers, got {shape!r}")
    return height, width


def box_for(shape: tuple[int, int]) -> tuple[int, int]:
    """The box (height, width) the ink is fitted into in a field of `shape`: MNIST's 20/28 of it."""
    height, width = as_shape(shape)
    return max(1, round(height * BOX / FIELD)), max(1, round(width * BOX / FIELD))


def _place(digit: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`digit` pasted into a black field of `shape` with its centre of mass at the field's centre."""
    field_h, field_w = shape
    height, width = digit.shape
    total = float(digit.sum())
    if not total > 0:  # resampling can fade a speck of ink to nothing
        raise InputError(NO_DIGIT)
    centre_y = float((digit.sum(axis=1) * np.arange(height)).sum()) / total
    centre_x = float((digit.sum(axis=0) * np.arange(width)).sum()) / total
    top = int(np.clip(round(field_h / 2 - centre_y), 0, field_h - height))
    left = int(np.clip(round(field_w / 2 - centre_x), 0, field_w - width))
    field = np.zeros(shape, dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field


def _as_gray(gray) -> np.ndarray:
    """`gray` as a float32 picture, refused unless it is a non-empty 2-D array of values in [0, 1]."""
    try:
        gray = np.asarray(gray, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError("a grayscale picture must be a 2-D array of numbers in [0, 1]") from None
    if gray.ndim != 2 or gray.size == 0:
        raise InputError(f"a grayscale picture must be a non-empty 2-D array, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise InputError("the picture holds NaN or infinite values")
    if gray.min() < 0 or gray.max() > 1:
        raise InputError(
            f"grayscale values must lie in [0, 1] (uint8 pixels / 255), found {gray.min():g}..{gray.max():g}"
        )
    return gray


def mnist_style(gray: np.ndarray, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """A float image of `shape` (H, W) in MNIST's layout from a grayscale picture of one digit;
    `InputError` "no digit found" when the picture has no ink that stands out from its paper."""
    shape = as_shape(shape)
    ink = _ink(_as_gray(gray))
    row_start, row_end = _mass_span(ink.sum(axis=1))
    col_start, col_end = _mass_span(ink.sum(axis=0))
    crop = ink[row_start:row_end, col_start:col_end]
    if max(crop.shape) > WORK_SIZE:
        factor = WORK_SIZE / max(crop.shape)
        crop = resize(crop, max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
        crop = crop / max(float(crop.max()), 1e-6)
    crop = _thicken(crop)
    box_h, box_w = box_for(shape)
    factor = min(box_h / crop.shape[0], box_w / crop.shape[1])  # the whole digit fits, proportions kept
    height = min(box_h, max(1, round(crop.shape[0] * factor)))
    width = min(box_w, max(1, round(crop.shape[1] * factor)))
    digit = resize(crop, width, height)
    digit = digit / max(float(digit.max()), 1e-6)
    return _place(digit, shape)


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
