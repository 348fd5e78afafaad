"""Pictures: the one reader of picture files (`read_image`), and the picture rule that turns a
picture into a dataset's pixels (`picture_pixels`: as it is, or made MNIST-style by `digits`).

Hostile files are refused before they cost memory: an image's size is checked before it is
decoded, so a small file that would decode to gigabytes gives one `InputError` line.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..base.exceptions import InputError
from .digits import as_gray, as_shape, mnist_style, resize
from .readers import one_line

# picture files, for predict and data convert alike (torchvision's ImageFolder list left GIFs out)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
MAX_IMAGE_PIXELS = 50_000_000  # refuse larger images before decoding them (decompression bombs)
FULL_SCALES = (1.0, 255.0, 65535.0, 2.0**31 - 1)  # white of 1-, 8-, 16- and 32-bit (signed) pixels
# How a picture file becomes a dataset's (and so a run's) pixels; decided when the dataset is made,
# recorded in its meta.json and in each run's model.json, applied alike by convert, predict and serve.
AS_IS = "as-is"  # grayscale, resized to the dataset's shape, nothing else (8-bit, as a dataset stores it)
MNIST_STYLE = "mnist-style"  # `mnist_style`: white ink on black, fitted and centred like MNIST
PICTURE_RULES = (AS_IS, MNIST_STYLE)
BACKGROUNDS = ("dark", "light")  # a set's pictures: light ink on dark (MNIST), or dark on light (paper)
PICTURE_SAMPLE = 1000  # images the picture rules look at (layout, background), spread over a set


def source_name(source, name: str | None) -> Path:
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
    path = source_name(path, name)
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
        raise InputError(f"{path}: over the limit of {max_pixels} pixels ({one_line(error)})") from None
    except OSError as error:
        if error.errno is not None:  # the file system's error, not a decoder's
            raise InputError(f"{path}: cannot read it ({error.strerror or error})") from None
        raise InputError(f"{path}: corrupt or unreadable image ({one_line(error)})") from None
    except Exception as error:  # Pillow's decoders raise many types on malformed files (its fuzzers say so)
        raise InputError(f"{path}: corrupt or unreadable image ({one_line(error)})") from None


def _to_gray(image, path: Path) -> np.ndarray:
    """Pixels of a Pillow image in [0, 1]: wide pixels scaled by their depth, opaque grey and RGB
    converted to luminance directly, the rest composited on white through RGBA."""
    from PIL import Image

    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _scaled(np.asarray(image, dtype=np.float32), image.mode, path)
    if image.mode in ("L", "RGB") and "transparency" not in image.info:  # opaque: nothing to composite
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    try:
        rgba = image.convert("RGBA")
    except ValueError as error:  # a mode Pillow cannot convert (LAB, for one)
        raise InputError(f"{path}: image mode {image.mode} is not supported ({one_line(error)})") from None
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


def check_pictures(rule: object, where: str = "pictures", error: type[Exception] = InputError) -> str:
    """`rule` if it is one of PICTURE_RULES; else `error` naming `where` and the valid rules."""
    if not isinstance(rule, str) or rule not in PICTURE_RULES:
        raise error(f"{where} must be one of {', '.join(PICTURE_RULES)}, got {rule!r}")
    return rule


def spread_sample(images):
    """Up to PICTURE_SAMPLE images spread evenly over `images` (anything that slices)."""
    return images[:: max(1, len(images) // PICTURE_SAMPLE)][:PICTURE_SAMPLE]


def background_of(images) -> str:
    """"dark" or "light": the median pixel of up to PICTURE_SAMPLE images spread over `images`
    (N, H, W; uint8, or floats in [0, 1]), below or above mid-grey: a picture of a stroke is mostly
    its background (the border alone took a framed digit for a light one). A drawing pad draws in
    the run's training set's way (an as-is run of light digits on black read a pad's black ink on white
    as nothing it knew)."""
    import torch

    rows = torch.as_tensor(spread_sample(images))
    if not len(rows) or rows.dim() != 3:
        return BACKGROUNDS[0]
    white = 255.0 if rows.dtype == torch.uint8 else 1.0
    return BACKGROUNDS[0] if float(rows.float().median()) < white / 2 else BACKGROUNDS[1]


def picture_pixels(gray: np.ndarray, shape: tuple[int, int], rule: str) -> np.ndarray:
    """A float32 image of `shape` (H, W) in [0, 1] from a grayscale picture, made by `rule`: the one
    place training data (convert) and predictions (predict, serve) turn a picture into pixels.
    AS_IS resizes (Lanczos) when the size differs and rounds to 8 bits, exactly what a dataset
    folder stores; MNIST_STYLE finds the digit (`mnist_style`, "no digit found" when there is none)."""
    shape = as_shape(shape)
    if check_pictures(rule) == MNIST_STYLE:
        return mnist_style(gray, shape)
    gray = as_gray(gray)
    if gray.shape != shape:
        gray = resize(gray, shape[1], shape[0])
    return (np.rint(gray * 255.0) / 255.0).astype(np.float32)
