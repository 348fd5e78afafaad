"""How well `predict` reads users' pictures: MNIST test digits rendered as photos, then classified.

    python -m benchmarks.robustness                        # 1,000 digits per degradation, ~2 min
    python -m benchmarks.robustness --per-degradation 200 --seed 1 --only noise,lined

The same test digits (a seeded sample of MNIST's test set) are drawn as a user's picture would look:
dark ink on light paper, enlarged 2-10x on a larger canvas, then one degradation each (noise, blur,
JPEG, shadows, ruled or squared paper, coloured ink and paper, thin and thick pens, rotation). Each
picture is encoded as a real file (PNG, or JPEG where said) and goes through the path `predict` takes:
`images.read_image` then `digits.mnist_style`. A model trained with the default preset classifies
them; its accuracy on the same digits, raw, is the "clean" line. Floor: every degradation within 3
points of clean, their mean within 2. Writes benchmarks/results/robustness.{md,json,png}.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torchlogreg.core.model import LogisticRegression

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
ROW_DROP, MEAN_DROP = 0.03, 0.02  # the floor: largest drop from clean per degradation, and on average
NOISE_LEVELS = (0.05, 0.1, 0.2)  # standard deviations of sensor noise, in units of white
PAPERS = {  # colours of paper (RGB reflectance)
    "white": (0.95, 0.95, 0.93),
    "cream": (0.96, 0.91, 0.76),
    "yellow": (0.98, 0.92, 0.45),
    "pink": (0.97, 0.75, 0.82),
    "light blue": (0.72, 0.86, 0.97),
    "light green": (0.74, 0.93, 0.72),
}
INKS = {  # colours of pens (RGB reflectance)
    "blue ballpoint": (0.12, 0.18, 0.58),
    "black": (0.08, 0.08, 0.1),
    "red": (0.78, 0.1, 0.12),
    "green": (0.1, 0.5, 0.2),
    "purple": (0.42, 0.12, 0.55),
}

Generator = np.random.Generator
Colour = tuple[float, ...] | np.ndarray  # RGB (or one grey) reflectance in [0, 1]
Render = Callable[[np.ndarray, Generator], tuple[bytes, str]]


@dataclass(frozen=True)
class Degradation:
    """One way a user's picture differs from MNIST, and how to draw a test digit that way."""

    name: str
    description: str
    render: Render  # (28x28 ink in [0, 1], random generator) -> (file bytes, file suffix)


def default_data_root() -> str:
    """$TORCHLOGREG_DATA, else ../shared/data beside the repository."""
    return os.environ.get("TORCHLOGREG_DATA") or str(REPO.parent / "shared" / "data")


# --- drawing a digit as a photo ------------------------------------------------------------------


def enlarged(ink: np.ndarray, scale: float) -> np.ndarray:
    """The 28x28 ink enlarged `scale` times (bicubic, as a camera sees a smooth pen stroke)."""
    from PIL import Image

    side = round(28 * scale)
    image = Image.fromarray(ink.astype(np.float32), mode="F").resize((side, side), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def on_canvas(
    ink: np.ndarray, rng: Generator, spread: tuple[float, float] = (1.2, 1.8), off_centre: bool = False
) -> np.ndarray:
    """`ink` placed on a larger empty canvas (`spread` times its size), at random or near an edge."""
    height, width = ink.shape
    canvas_h, canvas_w = (round(side * rng.uniform(*spread)) for side in (height, width))
    room_h, room_w = canvas_h - height, canvas_w - width
    if off_centre:  # within the outer 15% of the room on each axis: near a corner
        top = round(room_h * (rng.uniform(0, 0.15) if rng.random() < 0.5 else rng.uniform(0.85, 1)))
        left = round(room_w * (rng.uniform(0, 0.15) if rng.random() < 0.5 else rng.uniform(0.85, 1)))
    else:
        top, left = int(rng.integers(0, room_h + 1)), int(rng.integers(0, room_w + 1))
    canvas = np.zeros((canvas_h, canvas_w), np.float32)
    canvas[top : top + height, left : left + width] = ink
    return canvas


def printed(
    ink: np.ndarray, rng: Generator, paper: Colour | None = None, pen: Colour | None = None
) -> np.ndarray:
    """Reflectance of paper carrying `ink`: dark ink on light paper (grey, or RGB when colours given)."""
    paper = np.asarray(paper if paper is not None else [rng.uniform(0.8, 0.97)], np.float32)
    pen = np.asarray(pen if pen is not None else [rng.uniform(0.03, 0.3)], np.float32)
    picture = paper + (pen - paper) * ink[..., None]
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def as_file(picture: np.ndarray, fmt: str = "PNG", **options) -> tuple[bytes, str]:
    """`picture` (reflectance in [0, 1]) saved as 8-bit PNG or JPEG bytes, as a user's file would be."""
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.rint(np.clip(picture, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue(), ".jpg" if fmt == "JPEG" else ".png"


def photo(
    ink: np.ndarray, rng: Generator, scale_range: tuple[float, float] = (2.0, 10.0)
) -> tuple[np.ndarray, float]:
    """A digit enlarged 2-10x and placed on a larger canvas (ink in [0, 1]), and its scale."""
    scale = float(rng.uniform(*scale_range))
    return on_canvas(enlarged(ink, scale), rng), scale


def lighting(shape: tuple[int, int], rng: Generator) -> np.ndarray:
    """Uneven light: a gradient across the page times a soft-edged shadow over part of it."""
    rows, cols = np.indices(shape, dtype=np.float32) / max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    along = rows * np.sin(angle) + cols * np.cos(angle)
    along = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    light = 1.0 - rng.uniform(0.2, 0.45) * along
    angle = rng.uniform(0, 2 * np.pi)
    across = rows * np.sin(angle) + cols * np.cos(angle)
    edge = np.quantile(across, rng.uniform(0.25, 0.75))
    softness = rng.uniform(0.01, 0.08)
    shadow = 1.0 - rng.uniform(0.3, 0.5) / (1.0 + np.exp(-(across - edge) / softness))
    return (light * shadow).astype(np.float32)


def ruled(shape: tuple[int, int], scale: float, rng: Generator, squared: bool) -> np.ndarray:
    """Ruled lines (and columns, for squared paper) as ink in [0, 1]: thinner than the pen, 30-60% as dark."""
    lines = np.zeros(shape, np.float32)
    spacing = 20 * scale * rng.uniform(*((0.25, 0.5) if squared else (0.35, 0.6)))
    thickness = max(1, round(scale * rng.uniform(0.15, 0.35)))
    strength = rng.uniform(0.3, 0.6)
    for axis in (0, 1) if squared else (0,):
        start = rng.uniform(0, spacing)
        for position in np.arange(start, shape[axis], spacing).astype(int):
            index = [slice(None), slice(None)]
            index[axis] = slice(position, position + thickness)
            lines[tuple(index)] = strength
    if not squared and rng.random() < 0.5:  # a margin line down the page
        left = int(rng.integers(0, shape[1] - thickness))
        lines[:, left : left + thickness] = strength
    return lines


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The middle lines of `mask`'s strokes, one pixel wide (Zhang and Suen's thinning, 1984)."""
    image = np.pad(mask, 1).astype(np.uint8)
    while True:
        removed = False
        for second in (False, True):
            centre = image[1:-1, 1:-1]
            # the 8 neighbours, clockwise from north (P2 ... P9 in the paper)
            ring = [image[:-2, 1:-1], image[:-2, 2:], image[1:-1, 2:], image[2:, 2:]]
            ring += [image[2:, 1:-1], image[2:, :-2], image[1:-1, :-2], image[:-2, :-2]]
            count = sum(p.astype(np.int16) for p in ring)
            turns = sum((ring[i] == 0) & (ring[(i + 1) % 8] == 1) for i in range(8))
            north, east, south, west = ring[0], ring[2], ring[4], ring[6]
            if second:
                side = (north * east * west == 0) & (north * south * west == 0)
            else:
                side = (north * east * south == 0) & (east * south * west == 0)
            erase = (centre == 1) & (count >= 2) & (count <= 6) & (turns == 1) & side
            if erase.any():
                centre[erase] = 0
                removed = True
        if not removed:
            return image[1:-1, 1:-1].astype(bool)


def thin_strokes(ink: np.ndarray, scale: float, width: float) -> np.ndarray:
    """The 28x28 digit drawn `scale` times larger with a fine pen `width` pixels wide along its
    strokes' middle lines (found at 4x, where thinning is fast, then scaled up smoothly)."""
    from PIL import Image
    from scipy import ndimage

    middle = skeleton(enlarged(ink, 4) > 0.5)
    distance = ndimage.distance_transform_edt(~middle).astype(np.float32) * (scale / 4)
    side = round(28 * scale)
    distance = np.asarray(Image.fromarray(distance).resize((side, side), Image.Resampling.BILINEAR))
    return np.clip(width / 2 + 0.5 - distance, 0, 1).astype(np.float32)


def thick_strokes(ink: np.ndarray, grow: float) -> np.ndarray:
    """The digit redrawn with a wider pen: every stroke `grow` pixels wider on each side."""
    from scipy import ndimage

    distance = ndimage.distance_transform_edt(~(ink > 0.5))
    return np.maximum(ink, np.clip(grow + 0.5 - distance, 0, 1)).astype(np.float32)


# --- the degradations ----------------------------------------------------------------------------


def scaled(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Dark ink on light paper, enlarged 2-10x on a canvas 1.2-1.8x the digit's size."""
    return as_file(printed(photo(ink, rng)[0], rng))


def off_centre(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """The digit near a corner of a canvas 2.5-3.5x its size."""
    big = enlarged(ink, rng.uniform(2, 6))
    return as_file(printed(on_canvas(big, rng, spread=(2.5, 3.5), off_centre=True), rng))


def tight_crop(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Cropped tight: 0-3 pixels of paper around the digit's ink, which may touch the edges."""
    big = enlarged(ink, rng.uniform(2, 10))
    rows, cols = (np.flatnonzero(big.max(axis=axis) > 0.05) for axis in (1, 0))
    crop = big[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return as_file(printed(np.pad(crop, int(rng.integers(0, 4))), rng))


def far_off(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Small in a large photo: a digit 25-70 pixels tall in a 1000x750 JPEG (quality 90), noise 0.02."""
    big = enlarged(ink, rng.uniform(1.25, 3.5))  # a box of 35-98 pixels, the digit 25-70 tall
    canvas = np.zeros((750, 1000), np.float32)
    top, left = (int(rng.integers(0, side - big.shape[0])) for side in canvas.shape)
    canvas[top : top + big.shape[0], left : left + big.shape[1]] = big
    picture = printed(canvas, rng) + rng.normal(0, 0.02, canvas.shape).astype(np.float32)
    return as_file(picture, "JPEG", quality=90)


def noisy(sigma: float) -> Render:
    """A renderer adding Gaussian sensor noise of standard deviation `sigma` to every pixel."""

    def render(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
        picture = printed(photo(ink, rng)[0], rng)
        return as_file(picture + rng.normal(0, sigma, picture.shape).astype(np.float32))

    return render


def blurred(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Out of focus: a Gaussian blur of 0.6-1.2 MNIST pixels (of the digit's own size)."""
    from scipy import ndimage

    canvas, scale = photo(ink, rng)
    return as_file(ndimage.gaussian_filter(printed(canvas, rng), scale * rng.uniform(0.6, 1.2)))


def jpeg(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Saved as JPEG at quality 10-25: blocky, with ringing around strokes."""
    return as_file(printed(photo(ink, rng)[0], rng), "JPEG", quality=int(rng.integers(10, 26)))


def shadowed(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Lit unevenly: light falling off by 20-45% across the page and a shadow of 30-50% over part."""
    picture = printed(photo(ink, rng)[0], rng)
    return as_file(picture * lighting(picture.shape, rng))


def lined(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Ruled paper: lines 0.35-0.6 of the digit's height apart, paler and thinner than the pen."""
    canvas, scale = photo(ink, rng)
    return as_file(printed(np.maximum(canvas, ruled(canvas.shape, scale, rng, squared=False)), rng))


def squared(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Squared (graph) paper: a grid 0.25-0.5 of the digit's height, paler and thinner than the pen."""
    canvas, scale = photo(ink, rng)
    return as_file(printed(np.maximum(canvas, ruled(canvas.shape, scale, rng, squared=True)), rng))


def coloured(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Coloured pen on coloured paper (RGB), saved as PNG or JPEG at quality 85."""
    paper = np.asarray(list(PAPERS.values())[rng.integers(len(PAPERS))]) + rng.uniform(-0.03, 0.03, 3)
    pen = np.asarray(list(INKS.values())[rng.integers(len(INKS))]) + rng.uniform(-0.05, 0.05, 3)
    picture = printed(photo(ink, rng)[0], rng, paper=paper, pen=pen)
    return as_file(picture, "JPEG", quality=85) if rng.random() < 0.5 else as_file(picture)


def thin_pen(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """A fine pen: strokes 0.6-1.0 MNIST pixels wide where MNIST's are about 2-3."""
    scale = float(rng.uniform(2, 10))
    strokes = thin_strokes(ink, scale, scale * rng.uniform(0.6, 1.0))
    return as_file(printed(on_canvas(strokes, rng), rng))


def thick_pen(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """A marker: strokes 1-2 MNIST pixels wider than the digit's own."""
    scale = float(rng.uniform(2, 10))
    strokes = thick_strokes(enlarged(ink, scale), scale * rng.uniform(0.5, 1.0))
    return as_file(printed(on_canvas(strokes, rng), rng))


def rotated(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """The paper turned by up to 6 degrees either way."""
    from PIL import Image

    big = Image.fromarray(enlarged(ink, rng.uniform(2, 10)), mode="F")
    turned = np.clip(np.asarray(big.rotate(rng.uniform(-6, 6), Image.Resampling.BICUBIC, expand=True)), 0, 1)
    return as_file(printed(on_canvas(turned, rng), rng))


def phone_photo(ink: np.ndarray, rng: Generator) -> tuple[bytes, str]:
    """Several at once: coloured pen and paper, half of them ruled or squared, uneven light and a
    shadow, turned by up to 3 degrees, noise of 0.04, JPEG at quality 70."""
    from PIL import Image

    scale = float(rng.uniform(2, 10))
    big = Image.fromarray(enlarged(ink, scale), mode="F").rotate(rng.uniform(-3, 3), expand=True)
    canvas = on_canvas(np.clip(np.asarray(big), 0, 1), rng)
    if rng.random() < 0.5:
        canvas = np.maximum(canvas, ruled(canvas.shape, scale, rng, squared=bool(rng.random() < 0.5)))
    paper = np.asarray(list(PAPERS.values())[rng.integers(len(PAPERS))])
    pen = np.asarray(list(INKS.values())[rng.integers(len(INKS))])
    picture = printed(canvas, rng, paper=paper, pen=pen) * lighting(canvas.shape, rng)[..., None]
    picture += rng.normal(0, 0.04, picture.shape).astype(np.float32)
    return as_file(picture, "JPEG", quality=70)


DEGRADATIONS = (
    Degradation("scaled 2-10x", scaled.__doc__, scaled),
    Degradation("off-centre", off_centre.__doc__, off_centre),
    Degradation("tight crop", tight_crop.__doc__, tight_crop),
    Degradation("small in a large photo", far_off.__doc__, far_off),
    *(
        Degradation(f"noise sigma {sigma:.2f}", f"Gaussian noise, sigma {sigma} (white = 1).", noisy(sigma))
        for sigma in NOISE_LEVELS
    ),
    Degradation("blur", blurred.__doc__, blurred),
    Degradation("JPEG q10-25", jpeg.__doc__, jpeg),
    Degradation("uneven light, shadow", shadowed.__doc__, shadowed),
    Degradation("lined paper", lined.__doc__, lined),
    Degradation("squared paper", squared.__doc__, squared),
    Degradation("coloured ink and paper", coloured.__doc__, coloured),
    Degradation("thin pen", thin_pen.__doc__, thin_pen),
    Degradation("thick pen", thick_pen.__doc__, thick_pen),
    Degradation("rotated up to 6 deg", rotated.__doc__, rotated),
    Degradation("phone photo (mixed)", phone_photo.__doc__, phone_photo),
)


# --- measuring -----------------------------------------------------------------------------------


def model_sees(data: bytes, suffix: str) -> np.ndarray:
    """What the model gets from a picture file: `predict`'s path, read_image then mnist_style."""
    from torchlogreg.data.digits import mnist_style
    from torchlogreg.data.images import read_image

    return mnist_style(read_image(io.BytesIO(data), name=f"photo{suffix}"))


def measure(
    degradation: Degradation, digits: np.ndarray, labels: np.ndarray, model: LogisticRegression, seed: int
) -> dict:
    """Accuracy of `model` on `digits` drawn with `degradation`, the answers it lost and gained
    against the raw digits, and the time per picture from file bytes to the model's input."""
    import torch

    from torchlogreg import InputError

    rng = np.random.default_rng([seed, DEGRADATIONS.index(degradation)])
    seen, spent, refused = [], 0.0, 0
    for digit in digits:
        data, suffix = degradation.render(digit.astype(np.float32) / 255, rng)
        start = time.perf_counter()
        try:
            seen.append(model_sees(data, suffix))
        except InputError:  # "no digit found" counts as a wrong answer
            seen.append(np.zeros((28, 28), np.float32))
            refused += 1
        spent += time.perf_counter() - start
    right = model.predict(torch.from_numpy(np.stack(seen))).numpy() == labels
    raw_right = model.predict(torch.from_numpy(digits)).numpy() == labels
    return {
        "degradation": degradation.name,
        "description": " ".join(degradation.description.split()),
        "accuracy": float(right.mean()),
        "lost": int((raw_right & ~right).sum()),  # right on the raw digit, wrong on its picture
        "gained": int((~raw_right & right).sum()),
        "no_digit_found": refused,
        "ms_per_picture": 1000 * spent / len(digits),
    }


def photo_timing(
    sizes: tuple[tuple[int, int], ...] = ((1000, 1000), (3000, 4000)), repeats: int = 10
) -> list[dict]:
    """Median milliseconds to read (decode) and to preprocess a shadowed, noisy JPEG photo of a digit,
    for each (height, width) in `sizes`."""
    from torchlogreg.data.digits import mnist_style
    from torchlogreg.data.images import read_image

    rng, timings = np.random.default_rng(0), []
    for height, width in sizes:
        ink = enlarged(np.pad(np.ones((16, 4), np.float32), ((6, 6), (12, 12))), min(height, width) / 42)
        canvas = np.zeros((height, width), np.float32)
        canvas[: ink.shape[0], : ink.shape[1]] = ink  # a "1" in the top-left
        picture = printed(canvas, rng, paper=PAPERS["cream"], pen=INKS["blue ballpoint"])
        picture = picture * lighting(canvas.shape, rng)[..., None] + rng.normal(0, 0.05, picture.shape)
        data = as_file(picture, "JPEG", quality=85)[0]
        mnist_style(read_image(io.BytesIO(data)))  # the first call imports SciPy's modules
        reads, preprocessings = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            gray = read_image(io.BytesIO(data))
            middle = time.perf_counter()
            mnist_style(gray)
            reads.append(middle - start)
            preprocessings.append(time.perf_counter() - middle)
        timings.append(
            {
                "height": height,
                "width": width,
                "read_ms": 1000 * statistics.median(reads),
                "preprocess_ms": 1000 * statistics.median(preprocessings),
            }
        )
    return timings


def sample(data_root: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` MNIST test digits (uint8, 28x28) and labels, a seeded random sample of the 10,000."""
    from torchlogreg.data.inmemory import load_splits

    test = load_splits("mnist", data_root, download=False)[1]
    rows = np.sort(np.random.default_rng(seed).choice(len(test.labels), size=count, replace=False))
    return test.images.numpy()[rows], test.labels.numpy()[rows]


# --- reporting -----------------------------------------------------------------------------------


def summary(rows: list[dict], clean: float) -> dict:
    """Each row's drop from clean, their mean, and whether the floor holds."""
    for row in rows:
        row["drop_points"] = round(100 * (clean - row["accuracy"]), 2)
    mean = statistics.fmean(row["accuracy"] for row in rows)
    worst = max(rows, key=lambda row: row["drop_points"])
    return {
        "clean_accuracy": clean,
        "mean_accuracy": mean,
        "mean_drop_points": round(100 * (clean - mean), 2),
        "worst": worst["degradation"],
        "floor_holds": all(row["drop_points"] <= 100 * ROW_DROP for row in rows)
        and clean - mean <= MEAN_DROP,
    }


def markdown(result: dict) -> str:
    """The results as Markdown: a row per degradation next to the clean digits, the mean, the
    floor's verdict, the time a photo takes, and how each degradation is drawn."""
    overview, rows = result["summary"], result["rows"]
    lines = [
        f"Robustness on {result['machine']}, {result['date']} ({result['versions']}): "
        f"{result['per_degradation']} MNIST test digits per degradation (seed {result['seed']}), the "
        f"default preset trained in {result['train_seconds']:.1f} s. Lost / gained: digits the model "
        "gets right raw but wrong as a picture, and the other way round.",
        "",
        "| pictures | accuracy | vs clean (points) | lost / gained | no digit found | ms / picture |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| clean: the same digits, raw 28x28 | {100 * overview['clean_accuracy']:.1f}% |  |  |  |  |",
        *(
            f"| {row['degradation']} | {100 * row['accuracy']:.1f}% | {-row['drop_points']:+.1f} "
            f"| {row['lost']} / {row['gained']} | {row['no_digit_found']} | {row['ms_per_picture']:.1f} |"
            for row in rows
        ),
        f"| **mean of the degradations** | **{100 * overview['mean_accuracy']:.1f}%** "
        f"| **{-overview['mean_drop_points']:+.1f}** |  |  |  |",
        "",
        f"Floor (each degradation within {100 * ROW_DROP:.0f} points of clean, their mean within "
        f"{100 * MEAN_DROP:.0f}): {'holds' if overview['floor_holds'] else 'NOT met'}; the largest drop: "
        f"{overview['worst']}. ms / picture: from the file's bytes to the model's input.",
        "",
        *(
            f"A {t['width']}x{t['height']} JPEG photo: read in {t['read_ms']:.0f} ms, "
            f"preprocessed in {t['preprocess_ms']:.0f} ms (medians)."
            for t in result["timing"]
        ),
        "",
        "| degradation | how it is drawn |",
        "| --- | --- |",
        *(f"| {row['degradation']} | {row['description']} |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def figure(digits: np.ndarray, seed: int, path: Path, columns: int = 5) -> None:
    """For each degradation, one example picture and what the model sees after preprocessing."""
    from matplotlib.figure import Figure
    from PIL import Image

    from torchlogreg import InputError

    rows = -(-len(DEGRADATIONS) // columns)
    plot = Figure(figsize=(2.4 * columns, 2.5 * rows), dpi=100, layout="constrained")
    panels = plot.subfigures(rows, columns, squeeze=False).ravel()
    for index, (degradation, panel) in enumerate(zip(DEGRADATIONS, panels, strict=False)):
        rng = np.random.default_rng([seed, 1000 + index])
        data, suffix = degradation.render(digits[index % len(digits)].astype(np.float32) / 255, rng)
        picture, processed = Image.open(io.BytesIO(data)).convert("RGB"), np.zeros((28, 28))
        with contextlib.suppress(InputError):  # a refused picture shows as black: "no digit found"
            processed = model_sees(data, suffix)
        given, seen = panel.subplots(1, 2)
        given.imshow(picture)
        seen.imshow(processed, cmap="gray", vmin=0, vmax=1)
        given.set_title("picture", fontsize=8)
        seen.set_title("model sees", fontsize=8)
        panel.suptitle(degradation.name, fontsize=9)
        for axes in (given, seen):
            axes.set_xticks([])
            axes.set_yticks([])
    for panel in panels[len(DEGRADATIONS) :]:
        panel.set_visible(False)
    plot.savefig(path)


def versions() -> str:
    """The versions of the libraries the preprocessing and the model use."""
    from importlib.metadata import version

    return ", ".join(f"{name} {version(name)}" for name in ("torch", "numpy", "scipy", "pillow"))


def run(data_root: str, per_degradation: int, seed: int, only: list[str] | None) -> dict:
    """Train the default preset once, then measure every (or each chosen) degradation."""
    import torch

    import torchlogreg

    torch.manual_seed(seed)
    start = time.perf_counter()
    model = torchlogreg.train(
        torchlogreg.preset("default", data_root=data_root, device="cpu"), verbose=False
    ).model
    train_seconds = time.perf_counter() - start
    digits, labels = sample(data_root, per_degradation, seed)
    clean = float((model.predict(torch.from_numpy(digits)).numpy() == labels).mean())
    chosen = [d for d in DEGRADATIONS if not only or any(word in d.name for word in only)]
    rows = []
    for degradation in chosen:
        rows.append(measure(degradation, digits, labels, model, seed))
        print(f"{degradation.name:<26} {100 * rows[-1]['accuracy']:5.1f}%  (clean {100 * clean:.1f}%)")
    return {
        "machine": f"{os.cpu_count()}-CPU {platform.machine()}",
        "versions": versions(),
        "date": date.today().isoformat(),
        "per_degradation": per_degradation,
        "seed": seed,
        "train_seconds": train_seconds,
        "rows": rows,
        "summary": summary(rows, clean),
        "timing": photo_timing(),
        "digits": digits,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line; exit status 1 when the floor does not hold."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=default_data_root(), help="folder holding MNIST/raw")
    parser.add_argument("--per-degradation", type=int, default=1000, help="test digits per degradation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the digit sample and the drawing")
    parser.add_argument("--only", help="comma-separated words: measure only degradations named so")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for robustness.{md,json,png}")
    args = parser.parse_args(argv)
    only = [word.strip() for word in args.only.split(",")] if args.only else None
    result = run(args.data_root, args.per_degradation, args.seed, only)
    digits = result.pop("digits")
    table = markdown(result)
    print("\n" + table)
    if only:  # a partial run is for trying things out; the saved results cover every degradation
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.md").write_text(table)
    (args.out / "robustness.json").write_text(json.dumps(result, indent=2) + "\n")
    figure(digits, args.seed, args.out / "robustness.png")
    print(f"wrote {args.out / 'robustness.md'}, .json and .png")
    return 0 if result["summary"]["floor_holds"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
