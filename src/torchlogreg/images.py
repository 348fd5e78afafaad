"""Pictures of digits made to look like MNIST digits (file reading for arrays and CSVs: inputs.py).

MNIST digits are white ink on black, fitted into a 20x20 box and centred by their centre of
mass in a 28x28 field. `mnist_style` does the same to any picture of a dark-on-light (or
light-on-dark) digit, so a photo of a pen-written digit is classified like a test digit. Runs
trained on other H x W images get the same layout scaled: a box of H*20/28 x W*20/28 in H x W.

Hostile files are refused before they cost memory: an image's size is checked before it is
decoded, so a small file that would decode to gigabytes gives one `InputError` line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .exceptions import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 50_000_000  # refuse larger images before decoding them (decompression bombs)
FIELD = 28  # MNIST's field size
BOX = 20  # MNIST fits each digit into a box this size
MNIST_SHAPE = (FIELD, FIELD)
WORK_SIZE = 96  # large crops are first reduced to this size before stroke thickening
INK_LEVEL = 0.1  # fraction of the darkest ink below which a pixel counts as paper
MIN_INK_CONTRAST = 0.25  # ink must stand this far above the paper, beyond its noise, to be a digit
NOISE_WIDTHS = 5.0  # the brightest of a million paper pixels lies about 5 noise widths above the rest
FULL_SCALES = (1.0, 255.0, 65535.0, 2.0**31 - 1)  # white of 1-, 8-, 16- and 32-bit (signed) pixels
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
