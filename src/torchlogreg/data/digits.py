"""Digits made to look like MNIST digits, from any picture of one digit (`mnist_style`).

MNIST digits are white ink on black, fitted into a 20x20 box and centred by their centre of
mass in a 28x28 field. `mnist_style` does the same to any picture of a dark-on-light (or
light-on-dark) digit, so a photo of a pen-written digit is classified like a test digit. Runs
trained on other H x W images get the same layout scaled: a box of H*20/28 x W*20/28 in H x W.
It holds up on real pictures: sensor noise, blur, JPEG, shadows and uneven light, ruled or
squared paper, coloured ink and paper, fine pens and markers, small digits in large photos;
`python -m benchmarks.robustness` measures each against the raw test digits.
"""

from __future__ import annotations

import numpy as np

from ..base.exceptions import InputError

FIELD = 28  # MNIST's field size
BOX = 20  # MNIST fits each digit into a box this size
MNIST_SHAPE = (FIELD, FIELD)
WORK_SIDE = 400  # larger pictures are first averaged over blocks down to at most this long side
ZOOM_BELOW = 64  # a digit fewer pixels tall or wide than this after the reduction is looked at again
ZOOM_MARGIN = 0.5  # ... in the full-size pixels around it, as far out as this share of its size
COARSE_SIDE = 96  # the long side of the coarse copy that tells light paper from dark
DARK_PAPER_SKEW = 0.5  # light ink on dark paper skews departures at least this far (MNIST: 1 or more)
DENOISED_NOISE = 0.03  # Gaussian smoothing brings the pixel noise down to about this (white = 1)
DARKEST_PAPER = 0.1  # ink is measured against the paper's level, but never a darker one than this
PAPER_WINDOW = 0.3  # the paper's level comes from windows this fraction of the picture's short side
MIN_INK_CONTRAST = 0.25  # the ink must take this share of its paper's light away to be a digit
INK_OVER_NOISE = 4.0  # ... stand this many times the paper's noise clear (noise alone: about 2) ...
MIN_INK_DEPTH = 0.08  # ... and lie this far below its paper (white = 1), about 20 levels of 255
LINE_LEVEL = 0.1  # a row (column) taking this share of the paper's light, at both ends too, is a line
LINE_END = 0.05  # the share of a row, at each end, where a ruled line must be seen as well
LINE_WIDEST = 0.04  # a ruled line is at most this share of the picture wide; a pen's stroke is wider
MIN_LINE_SPAN = 16  # pictures narrower than this many pixels have no ruled lines to find
SPECK = 0.02  # ink pieces smaller than this share of the largest piece are noise
NEAR = 0.25  # pieces within this share of the largest piece's size of it belong to the digit
FAINTEST = 0.01  # the crop ends where the digit's soft edge fades below this
STROKE_SIDE = 96  # the digit's pen width is measured and changed at this size
MNIST_STROKES = (0.1, 0.2)  # MNIST's usual pen widths over digit size: about its 5th to 95th percentiles
BLOB_DEPTH = 0.3  # ink this share of its size deep is a blob (a bright spot), not a pen's stroke
NO_DIGIT = "no digit found: the image is blank, noise, or its ink is too faint"


# --- finding the digit in a picture ---------------------------------------------------------------
# The steps, each undoing one way a user's picture differs from MNIST: average a large photo down
# (`_reduced`); tell light paper from dark (`_light_paper`); smooth sensor noise (`_denoised`);
# divide by the paper's own level so shadows and uneven light vanish (`_paper`, `_ink`); take out
# ruled and squared paper's lines (`_without_ruled_lines`); keep the digit's connected pieces and
# drop specks and strays (`_digit_mask`); look again, up close, at a digit that came out small
# (`_digit_in`); bring a fine pen or a marker to MNIST's pen width (`_mnist_strokes`); fit into
# the 20x20 box and centre by mass (`_fitted`, `_place`).
# SciPy's ndimage does the pixel work: Gaussian filter, grey closing, connected-component labels
# and distance transforms, each one pass in C where NumPy would need Python loops or a copy of the
# picture per window position; Pillow averages and resizes. Otsu or Sauvola thresholds
# (scikit-image) were not needed: dividing by the closing's paper level leaves ink at a known
# level, which a fixed share of it separates from paper.


def _reduction(shape: tuple[int, ...]) -> int:
    """The block size that brings a picture of `shape` to at most WORK_SIDE on its long side."""
    return max(1, -(-max(shape) // WORK_SIDE))  # ceiling division


def _reduced(gray: np.ndarray) -> np.ndarray:
    """`gray` averaged over square blocks (Pillow's `reduce`, fast in C) until its long side is at
    most WORK_SIDE: a photo of millions of pixels holds no more of a 20x20 digit than this, the
    averaging lowers its noise, and every later step is faster."""
    from PIL import Image

    factor = _reduction(gray.shape)
    return gray if factor == 1 else np.asarray(Image.fromarray(gray).reduce(factor), dtype=np.float32)


def _median(values: np.ndarray, most: int = 20_000) -> float:
    """The median of `values`, from an even sample of at most about `most` of them (exact enough for
    levels and noise widths, and several times faster on a photo's hundred thousand pixels)."""
    flat = values.ravel()
    return float(np.median(flat[:: max(1, flat.size // most)]))


def _noise_level(gray: np.ndarray) -> float:
    """Standard deviation of the pixel noise, from the median step between neighbours: strokes'
    edges are too few of the steps to move the median, so the digit does not count as noise."""
    steps = np.abs(np.diff(gray, axis=1)) if gray.shape[1] > 1 else np.abs(np.diff(gray, axis=0))
    return 1.4826 * _median(steps) / np.sqrt(2.0) if steps.size else 0.0


def _light_paper(gray: np.ndarray) -> bool:
    """Whether the paper is lighter than the ink. Ink is thin, so it stands out from a blurred copy
    as a strong narrow core with a faint wide halo of the other sign: the departures are skewed
    towards the ink's side. A shadow's edge departs as much each way, and a slope not at all, so
    a page without ink counts as light paper, as most photos are."""
    from PIL import Image
    from scipy import ndimage

    height, width = gray.shape
    factor = min(1.0, COARSE_SIDE / max(height, width))
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    coarse = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX), dtype=np.float64)
    blurred = ndimage.gaussian_filter(coarse, max(1.0, min(coarse.shape) / 6), mode="nearest", truncate=3.0)
    departure = coarse - blurred
    spread = max(float((departure**2).mean()) ** 1.5, 1e-12)
    return float((departure**3).mean()) / spread < DARK_PAPER_SKEW


def _denoised(gray: np.ndarray, noise: float) -> tuple[np.ndarray, float]:
    """`gray` smoothed (Gaussian) just enough to bring its noise near DENOISED_NOISE, and the noise
    left; the blur is at most 1/50 of the picture's short side, under the strokes' width of any
    digit that fills a fair part of it (a digit that does not is looked at again, up close)."""
    from scipy import ndimage

    sigma = min(noise / (2 * np.sqrt(np.pi) * DENOISED_NOISE), min(gray.shape) / 50)
    if sigma < 0.5:  # not worth a pass: the noise is already low
        return gray, noise
    return ndimage.gaussian_filter(gray, sigma, mode="nearest"), noise / (2 * np.sqrt(np.pi) * sigma)


def _paper(gray: np.ndarray) -> np.ndarray:
    """The paper's level at each pixel of a light-paper picture: a grey closing (maximum, then
    minimum, over windows wider than any stroke) fills in the dark ink and keeps the steps of
    shadows and the slopes of uneven light, which tiles or a blur would smear into false ink."""
    from scipy import ndimage

    window = max(3, round(PAPER_WINDOW * min(gray.shape)))
    return _edges_extended(ndimage.grey_closing(gray, size=(window, window), mode="nearest"), window // 2)


def _edges_extended(closed: np.ndarray, band: int) -> np.ndarray:
    """`closed` with its outer `band` of pixels continued in a straight line from the inside where
    that is darker: a window cut off by the picture's edge sees only the light side of paper that
    darkens towards the edge (vignetting), and would take its brightest paper for the edge's."""
    paper = closed.copy()
    steps = np.arange(band, 0, -1, dtype=np.float32)  # distances from the band's inner end
    for axis in (0, 1):
        if band < 1 or paper.shape[axis] < 4 * band:
            continue
        view = np.moveaxis(paper, axis, 0)  # writes go to `paper`
        for inner, further, edge in (
            (band, 2 * band, slice(0, band)),
            (-band - 1, -2 * band - 1, slice(-band, None)),
        ):
            slope = (view[further] - view[inner]) / band  # change per pixel, going inwards
            line = view[inner][None] - slope[None] * (steps if inner > 0 else steps[::-1])[:, None]
            view[edge] = np.minimum(view[edge], line)
    return paper


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink as bright-on-black, about 1 in strokes and 0 on paper, whatever the light, paper, ruling
    or polarity; `InputError` (no digit) when nothing stands far enough above the paper's noise."""
    noise = _noise_level(gray)
    if not _light_paper(gray):
        gray = 1.0 - gray
    smooth, noise = _denoised(gray, noise)
    paper = _paper(smooth)
    depth = paper - smooth  # how much darker than its paper each pixel is
    ink = depth / np.maximum(paper, DARKEST_PAPER)  # as a share of the paper's light: shadows divide out
    faint = ink < 0.5 * float(ink.max())
    if faint.all() or not faint.any():  # a flat picture
        raise InputError(f"{NO_DIGIT} (ink contrast 0.00, needs {MIN_INK_CONTRAST})")
    depth -= _median(depth[faint])  # the closing rides on the noise's peaks
    ink = _without_ruled_lines(ink - _median(ink[faint]))
    faint = ink < 0.5 * float(ink.max())
    if faint.all() or not faint.any():  # nothing but ruled lines
        raise InputError(f"{NO_DIGIT} (ink contrast 0.00, needs {MIN_INK_CONTRAST})")
    noise = max(noise / max(_median(paper), DARKEST_PAPER), 1.4826 * _median(np.abs(ink[faint])))
    level = _median(ink[~faint])  # the ink's own level: strokes are set to 1
    if level < MIN_INK_CONTRAST or level < INK_OVER_NOISE * noise or _median(depth[~faint]) < MIN_INK_DEPTH:
        raise InputError(f"{NO_DIGIT} (ink contrast {level:.2f} over paper noise {noise:.2f})")
    return np.clip(ink / level, 0.0, 2.0).astype(np.float32)


def _without_ruled_lines(ink: np.ndarray) -> np.ndarray:
    """`ink` (a share of the paper's light) without the lines of ruled or squared paper. A line runs
    along a whole row or column: ink across most of it, so its median, and at both of its ends;
    and it is thin, where a digit's stroke running edge to edge in a tight crop is not. Where a
    line crosses the digit, the pen's ink is kept as its share of the light the line left."""
    for axis in (1, 0):  # along rows (horizontal lines), then along columns
        length = ink.shape[axis]
        if length < MIN_LINE_SPAN:
            continue
        edge = max(1, round(LINE_END * length))
        level = np.median(ink, axis=axis)
        start = np.take(ink, np.arange(edge), axis=axis).mean(axis=axis)
        end = np.take(ink, np.arange(length - edge, length), axis=axis).mean(axis=axis)
        line = _thin_runs((level > LINE_LEVEL) & (np.minimum(start, end) > LINE_LEVEL), LINE_WIDEST)
        if line.any():
            level = np.expand_dims(np.where(line, np.minimum(level, 0.9), 0.0), axis)  # 0.9: as dark as ink
            ink = np.clip((ink - level) / (1.0 - level), 0.0, None)
    return ink


def _thin_runs(flags: np.ndarray, widest: float) -> np.ndarray:
    """`flags` (one per row or column) keeping only runs of neighbours at most `widest` of their number."""
    from scipy import ndimage

    runs, count = ndimage.label(flags)
    if count == 0:
        return flags
    lengths = np.bincount(runs, minlength=count + 1)
    return flags & (lengths[runs] <= max(1.0, widest * flags.size))


def _digit_mask(mask: np.ndarray) -> np.ndarray:
    """The digit's pixels in `mask`: its largest connected piece and the pieces near it, without
    noise's specks or far-off marks (a digit may come in several strokes, a 5's bar or a 4's top)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
    if count == 0:
        raise InputError(NO_DIGIT)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    boxes = ndimage.find_objects(labels)
    main = int(np.argmax(areas))
    rows, cols = boxes[main]
    reach = NEAR * max(rows.stop - rows.start, cols.stop - cols.start)
    keep = np.zeros(count + 1, bool)
    for index, (piece_rows, piece_cols) in enumerate(boxes):
        near = (
            piece_rows.start < rows.stop + reach
            and piece_rows.stop > rows.start - reach
            and piece_cols.start < cols.stop + reach
            and piece_cols.stop > cols.start - reach
        )
        keep[index + 1] = areas[index] >= SPECK * areas[main] and (near or areas[index] >= 0.3 * areas[main])
    return keep[labels]


def _bounds(mask: np.ndarray) -> tuple[slice, slice]:
    """The rows and columns spanned by `mask`'s pixels."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _digit_crop(ink: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """The digit cut from the ink map, specks and strays left out, in [0, 1], and where it lies:
    strokes are set solid and their edges sharpened by as much as the crop is larger than MNIST's
    box, since shrinking it to the box will smooth them again, as MNIST's own anti-aliasing did."""
    from scipy import ndimage

    digit = _digit_mask(ink > 0.5)
    found = rows, cols = _bounds(digit)
    sharpness = max(1.0, max(rows.stop - rows.start, cols.stop - cols.start) / BOX)
    rows = slice(max(rows.start - 2, 0), rows.stop + 2)  # room for the strokes' soft edges
    cols = slice(max(cols.start - 2, 0), cols.stop + 2)
    near = ndimage.binary_dilation(digit[rows, cols], np.ones((3, 3), bool), iterations=2)
    crop = np.clip((ink[rows, cols] - 0.5) * sharpness + 0.5, 0.0, 1.0) * near
    return crop[_bounds(crop > FAINTEST)], found


def _digit_in(gray: np.ndarray) -> np.ndarray:
    """The digit's crop from a picture of any size: found in a copy reduced to WORK_SIDE and, when
    it is small there (a digit far off in a large photo), found again in the full-size pixels
    around it, reduced less; the first crop stands if the second look finds nothing."""
    factor = _reduction(gray.shape)
    crop, (rows, cols) = _digit_crop(_ink(_reduced(gray)))
    size = max(rows.stop - rows.start, cols.stop - cols.start)
    if factor == 1 or size >= ZOOM_BELOW:
        return crop
    margin = round(ZOOM_MARGIN * size)
    around = tuple(
        slice(max(0, (span.start - margin) * factor), (span.stop + margin) * factor) for span in (rows, cols)
    )
    try:
        return _digit_crop(_ink(_reduced(gray[around])))[0]
    except InputError:
        return crop


def resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Grayscale pixels in [0, 1] resized to width x height (Lanczos)."""
    from PIL import Image

    resized = Image.fromarray(pixels.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.clip(np.asarray(resized), 0.0, 1.0)


def _stroke_width(mask: np.ndarray) -> float:
    """Mean stroke width in pixels: a stroke of width w and length L covers wL pixels, 2L of them
    on its outline, so the width is twice the area over the outline."""
    from scipy import ndimage

    area = int(mask.sum())
    outline = area - int(ndimage.binary_erosion(mask, border_value=0).sum())
    return 2.0 * area / max(outline, 1)


def _mnist_strokes(crop: np.ndarray) -> np.ndarray:
    """`crop` itself when its pen width is one of MNIST's usual widths; else the digit at STROKE_SIDE
    with its strokes widened (a fine pen) or narrowed (a marker) to the nearest usual width, by
    distance transforms of the ink, which grow or shrink every stroke by the same amount.
    `InputError` (no digit) for a blob: ink far thicker than any pen, such as a bright spot."""
    from scipy import ndimage

    factor = STROKE_SIDE / max(crop.shape)
    sized = resize(crop, max(1, round(crop.shape[1] * factor)), max(1, round(crop.shape[0] * factor)))
    mask = sized > 0.5
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]  # padded: beyond the crop is paper
    if inside.max() > BLOB_DEPTH * STROKE_SIDE:
        raise InputError(f"{NO_DIGIT} (a smooth blob, not pen strokes)")
    width = _stroke_width(mask) / STROKE_SIDE
    change = (np.clip(width, *MNIST_STROKES) - width) * STROKE_SIDE / 2
    if abs(change) < 0.5 or not mask.any():  # each side of each stroke would move by `change` pixels
        return crop
    margin = max(int(np.ceil(change)), 0) + 1  # room around the digit for wider strokes
    sized, mask, inside = (np.pad(array, margin) for array in (sized, mask, inside))
    if change > 0:
        outside = ndimage.distance_transform_edt(~mask)
        sized = np.maximum(sized, np.clip(change + 1.0 - outside, 0.0, 1.0))
    else:
        sized = np.minimum(sized, np.clip(inside + change, 0.0, 1.0))
    return sized[_bounds(sized > FAINTEST)] if (sized > FAINTEST).any() else crop


def _fitted(crop: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`crop` resized to fill the box for `shape` with its proportions kept, brightest pixel 1."""
    box_h, box_w = box_for(shape)
    factor = min(box_h / crop.shape[0], box_w / crop.shape[1])  # the whole digit fits, proportions kept
    height = min(box_h, max(1, round(crop.shape[0] * factor)))
    width = min(box_w, max(1, round(crop.shape[1] * factor)))
    digit = resize(crop, width, height)
    return digit / max(float(digit.max()), 1e-6)


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


def as_gray(gray) -> np.ndarray:
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
    `InputError` "no digit found" when the picture has no ink that stands out from its paper. A
    picture already in that layout (an MNIST digit saved as a PNG) is kept as it is: fitting it
    again would only resample it (9 of MNIST's first 600 test digits then changed their class)."""
    shape = as_shape(shape)
    gray = as_gray(gray)
    if in_layout(gray, shape):
        return gray
    crop = _mnist_strokes(_digit_in(gray))
    return _place(_fitted(crop, shape), shape)


def in_layout(gray: np.ndarray, shape: tuple[int, int]) -> bool:
    """Whether `gray` is a digit in MNIST's layout at `shape`: light ink on a black field (its median
    pixel below FAINTEST, its brightest at least 0.5), the ink's larger side filling the box to a
    pixel, its centre of mass within a pixel of the field's centre (MNIST's test digits: all)."""
    if gray.shape != shape or np.median(gray) > FAINTEST or gray.max() < 0.5:
        return False
    ink = gray > FAINTEST
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = box_for(shape)
    filled = max(rows[-1] - rows[0] + 1 - box[0], cols[-1] - cols[0] + 1 - box[1])
    total = float(gray.sum())
    centre = (gray.sum(axis=1) @ np.arange(shape[0]) / total, gray.sum(axis=0) @ np.arange(shape[1]) / total)
    off = max(abs(centre[0] - shape[0] / 2), abs(centre[1] - shape[1] / 2))
    return -1 <= filled <= 1 and off <= 1
