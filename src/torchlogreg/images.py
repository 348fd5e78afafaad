"""Inputs for prediction: image files made to look like MNIST digits, and ready-made arrays.

MNIST digits are white ink on black, fitted into a 20x20 box and centred by their centre of
mass in a 28x28 field. `mnist_style` does the same to any picture of a dark-on-light (or
light-on-dark) digit, so a photo of a pen-written digit is classified like a test digit. Runs
trained on other H x W images get the same layout scaled: a box of H*20/28 x W*20/28 in H x W.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .exceptions import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
ARRAY_SUFFIXES = {".npy", ".npz"}
MAX_IMAGE_PIXELS = 50_000_000  # refuse larger images before decoding them (decompression bombs)
FIELD = 28  # MNIST's field size
BOX = 20  # MNIST fits each digit into a box this size
MNIST_SHAPE = (FIELD, FIELD)
WORK_SIZE = 96  # large crops are first reduced to this size before stroke thickening
INK_LEVEL = 0.1  # fraction of the darkest ink below which a pixel counts as paper


def _source_name(source, name: str | None) -> Path:
    """How messages name an input: `name`, the path itself, or a file object's name."""
    if name is not None:
        return Path(name)
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    return Path(getattr(source, "name", None) or "upload")


def read_image(path, max_pixels: int = MAX_IMAGE_PIXELS, name: str | None = None) -> np.ndarray:
    """Grayscale pixels in [0, 1] of an image file (a path, or a binary file object called `name`);
    transparency is composited on white."""
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
            if getattr(image, "n_frames", 1) > 1:
                raise InputError(
                    f"{path}: animated or multi-frame image ({image.n_frames} frames); "
                    "save the frame to classify as a single image"
                )
            image = ImageOps.exif_transpose(image)
            return _to_gray(image)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image Pillow can read (empty, corrupt or another format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise InputError(f"{path}: corrupt or unreadable image ({error})") from None


def _to_gray(image) -> np.ndarray:
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return np.clip(np.asarray(image, dtype=np.float32) / 65535.0, 0.0, 1.0)
    if image.mode == "F":
        return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    gray = Image.alpha_composite(white, rgba).convert("L")
    return np.asarray(gray, dtype=np.float32) / 255.0


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
    peak = float(ink.max()) if ink.size else 0.0
    if peak < 0.05:
        raise InputError("no digit found: the image is blank or has no contrast")
    # Noise level from the median absolute deviation (paper is most of the picture); what is
    # within a few noise widths of the paper, or fainter than INK_LEVEL of the ink, is paper.
    noise = 1.4826 * float(np.median(np.abs(ink - np.median(ink))))
    level = max(INK_LEVEL * peak, 4.0 * noise)
    return (np.clip(ink - level, 0.0, None) / max(peak - level, 1e-6)).astype(np.float32)


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
    centre_y = float((digit.sum(axis=1) * np.arange(height)).sum()) / total
    centre_x = float((digit.sum(axis=0) * np.arange(width)).sum()) / total
    top = int(np.clip(round(field_h / 2 - centre_y), 0, field_h - height))
    left = int(np.clip(round(field_w / 2 - centre_x), 0, field_w - width))
    field = np.zeros(shape, dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return field


def mnist_style(gray: np.ndarray, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """A float image of `shape` (H, W) in MNIST's layout from a grayscale picture of one digit."""
    shape = as_shape(shape)
    ink = _ink(np.asarray(gray, dtype=np.float32))
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


def _array_images(array: np.ndarray, path: Path, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """Rows of `array` as float images in [0, 1], shape (N, H*W), for images of `shape` (H, W)."""
    if array.size == 0:
        raise InputError(f"{path}: the array is empty")
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{path}: arrays must hold numbers (uint8 0..255 or floats 0..1), got {array.dtype}")
    height, width = as_shape(shape)
    n_pixels = height * width
    if array.shape[-2:] == (height, width) or array.shape[-1] == n_pixels and array.ndim <= 2:
        array = array.reshape(-1, n_pixels)
    else:
        raise InputError(
            f"{path}: array of shape {array.shape} does not hold {height}x{width} images "
            f"(expected ({height}, {width}), (N, {height}, {width}), ({n_pixels},) or (N, {n_pixels}))"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{path}: the array holds NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise InputError(
                f"{path}: float arrays must hold values in [0, 1], found {array.min():g}..{array.max():g}"
            )
        return array.astype(np.float32)
    if array.dtype != bool and (array.min() < 0 or array.max() > 255):
        raise InputError(
            f"{path}: integer arrays must hold values in 0..255, found {array.min()}..{array.max()}"
        )
    return array.astype(np.float32) / (1.0 if array.dtype == bool else 255.0)


def read_array(path, image_shape: tuple[int, int] = MNIST_SHAPE, name: str | None = None) -> np.ndarray:
    """Images of `image_shape` (H, W) as rows (N, H*W) from a .npy, or a one-array .npz (or its array
    'images'/'x'); `path` may be a binary file object called `name`."""
    source = path
    path = _source_name(path, name)
    try:
        loaded = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as error:
        raise InputError(f"{path}: not a readable NumPy file without pickles ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = next((k for k in ("images", "x", "X") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None:
                raise InputError(f"{path}: holds arrays {keys}; name the images 'images' or keep one array")
            loaded = loaded[key]
    return _array_images(loaded, path, image_shape)


def load_inputs(
    paths: Sequence[str | os.PathLike], image_shape: tuple[int, int] = MNIST_SHAPE
) -> tuple[torch.Tensor, list[str]]:
    """Float images (N, H, W) in [0, 1] from image and array files, with a name for each; (H, W) is
    `image_shape`, the run's input shape, so pictures are fitted to it and arrays must match it."""
    image_shape = as_shape(image_shape)
    images, names = [], []
    for raw in paths:
        path = Path(raw)
        suffix = path.suffix.lower()
        if suffix in ARRAY_SUFFIXES:
            rows = read_array(path, image_shape)
            images.extend(rows.reshape(-1, *image_shape))
            names.extend([str(path)] if len(rows) == 1 else [f"{path}[{i}]" for i in range(len(rows))])
        elif suffix in IMAGE_SUFFIXES:
            try:
                images.append(mnist_style(read_image(path), image_shape))
            except InputError as error:
                if str(error).startswith(str(path)):
                    raise
                raise InputError(f"{path}: {error}") from None
            names.append(str(path))
        else:
            raise InputError(
                f"{path}: unsupported file type {suffix or '(none)'}; give images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}) or arrays (.npy, .npz)"
            )
    if not images:
        raise InputError("no inputs given")
    return torch.from_numpy(np.stack(images).astype(np.float32)), names
