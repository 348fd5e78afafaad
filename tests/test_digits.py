"""MNIST-style digits from pictures (`data.digits`): real test digits made to look like users' photos
keep their accuracy, pages without a digit are refused, and what is not a picture is refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from torchlogreg import InputError
from torchlogreg.data.digits import mnist_style
from torchlogreg.data.images import read_image

N_DIGITS = 200  # test digits per degradation: a 3-point drop shows, and the file runs in seconds
PAPER = {"yellow": (0.98, 0.92, 0.45), "light blue": (0.72, 0.86, 0.97), "pink": (0.97, 0.75, 0.82)}
PEN = {"blue": (0.12, 0.18, 0.58), "red": (0.78, 0.1, 0.12), "green": (0.1, 0.5, 0.2)}

# --- test digits drawn as users' photos: the small version of benchmarks/robustness.py ------------


def _page(ink: np.ndarray, rng, spread: float = 1.5) -> tuple[np.ndarray, float]:
    """A 28x28 digit (ink in [0, 1]) enlarged 2-5x at a random place on a larger empty page, and
    its scale."""
    scale = float(rng.uniform(2, 5))
    side = round(28 * scale)
    big = np.asarray(Image.fromarray(ink).resize((side, side), Image.Resampling.BICUBIC))
    page = np.zeros((round(side * spread), round(side * spread * 1.2)), np.float32)
    top, left = (int(rng.integers(0, room - side + 1)) for room in page.shape)
    page[top : top + side, left : left + side] = np.clip(big, 0, 1)
    return page, scale


def _printed(ink: np.ndarray, paper=(0.9,), pen=(0.15,)) -> np.ndarray:
    """Light paper carrying dark `ink`: grey, or RGB when `paper` and `pen` are colours."""
    picture = np.asarray(paper, np.float32) + (np.asarray(pen, np.float32) - paper) * ink[..., None]
    return picture[..., 0] if picture.shape[-1] == 1 else picture


def _shadowed(shape: tuple[int, int], rng) -> np.ndarray:
    """Light falling off by 30% across the page, times a soft shadow of 40% over part of it."""
    rows, cols = np.indices(shape) / max(shape)
    angle = rng.uniform(0, 2 * np.pi)
    across = rows * np.sin(angle) + cols * np.cos(angle)
    shadow = 1 - 0.4 / (1 + np.exp(-(across - np.median(across)) / 0.03))
    return (1 - 0.3 * cols / cols.max()) * shadow


def _ruled(shape: tuple[int, int], scale: float, squared: bool) -> np.ndarray:
    """Pale lines 0.45 (squared: 0.3) of the digit's height apart, as ink in [0, 1]."""
    lines = np.zeros(shape, np.float32)
    step, width = round(20 * scale * (0.3 if squared else 0.45)), max(1, round(scale / 4))
    for offset in range(step // 2, shape[0], step):
        lines[offset : offset + width] = 0.4
    for offset in range(step // 2, shape[1], step) if squared else [shape[1] // 5]:  # a margin line
        lines[:, offset : offset + width] = 0.4
    return lines


def _fine_pen(ink: np.ndarray, width: float) -> np.ndarray:
    """The digit redrawn along its strokes' middle lines with a pen `width` MNIST pixels wide, at 4x."""
    from scipy import ndimage

    from benchmarks.robustness import skeleton  # the benchmark's thinning, run from the repository

    big = np.asarray(Image.fromarray(ink).resize((112, 112), Image.Resampling.BICUBIC)) > 0.5
    distance = ndimage.distance_transform_edt(~skeleton(big)) / 4
    return np.clip(4 * (width / 2 - distance) + 0.5, 0, 1).astype(np.float32)


def _marker(ink: np.ndarray, grow: float) -> np.ndarray:
    """The digit with every stroke `grow` MNIST pixels wider on each side, at 4x."""
    from scipy import ndimage

    big = np.clip(np.asarray(Image.fromarray(ink).resize((112, 112), Image.Resampling.BICUBIC)), 0, 1)
    distance = ndimage.distance_transform_edt(big <= 0.5) / 4
    return np.maximum(big, np.clip(4 * (grow - distance) + 0.5, 0, 1)).astype(np.float32)


def _difference(seen: np.ndarray, expected: np.ndarray) -> float:
    """Mean absolute difference of two MNIST-style images, the better of shifts by up to a pixel
    (centring by mass rounds to whole pixels: a small change of mass can move the digit by one)."""
    return min(
        float(np.abs(np.roll(seen, (dy, dx), axis=(0, 1)) - expected).mean())
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    )


def _picture(kind: str, ink: np.ndarray, rng) -> tuple[np.ndarray, str]:
    """`ink` drawn as a user's picture degraded by `kind`, as 8-bit pixels and a file format."""
    if kind == "thin pen":  # about a third of MNIST's width
        ink = _fine_pen(ink, 0.8)
    if kind == "thick pen":  # a felt-tip: strokes 2 pixels wider
        ink = _marker(ink, 1.0)
    page, scale = _page(ink, rng)
    if kind in ("ruled paper", "squared paper"):
        page = np.maximum(page, _ruled(page.shape, scale, squared=kind == "squared paper"))
    if kind == "coloured, JPEG":
        paper, pen = (list(table.values())[rng.integers(3)] for table in (PAPER, PEN))
        picture, fmt = _printed(page, paper, pen), "JPEG"
    else:
        picture, fmt = _printed(page), "PNG"
    if kind == "sensor noise":
        picture = picture + rng.normal(0, 0.2, picture.shape)
    if kind == "shadow":
        picture = picture * _shadowed(page.shape, rng)
    return np.rint(np.clip(picture, 0, 1) * 255).astype(np.uint8), fmt


def _seen(pixels: np.ndarray, fmt: str) -> np.ndarray:
    """What `predict` makes of a picture: saved as a file, read back, made MNIST-style."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **({"quality": 30} if fmt == "JPEG" else {}))
    return mnist_style(read_image(io.BytesIO(buffer.getvalue()), name=f"photo.{fmt.lower()}"))


@pytest.mark.parametrize(
    "kind",
    ["sensor noise", "shadow", "ruled paper", "squared paper", "coloured, JPEG", "thin pen", "thick pen"],
)
def test_photos_of_test_digits_keep_accuracy(default_result, mnist_splits, kind):
    # each degradation used to cost 4 to 80 points (noise 0.2: 11% right); now within 3 of the raw digits
    test = mnist_splits[1]
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(rng.choice(len(test.labels), N_DIGITS, replace=False))
    digits, labels = test.images[rows], test.labels[rows]
    seen = np.stack([_seen(*_picture(kind, d.numpy().astype(np.float32) / 255, rng)) for d in digits])
    model = default_result.model
    raw = (model.predict(digits) == labels).float().mean().item()
    ours = (model.predict(torch.from_numpy(seen)) == labels).float().mean().item()
    assert ours >= raw - 0.03, (raw, ours)


@pytest.mark.parametrize("kind", ["sensor noise", "shadow", "ruled paper", "squared paper", "coloured, JPEG"])
def test_a_degraded_page_without_a_digit_is_no_digit(kind):
    rng = np.random.default_rng(1)
    for _ in range(5):
        with pytest.raises(InputError, match="no digit found"):
            _seen(*_picture(kind, np.zeros((28, 28), np.float32), rng))


def test_ruled_lines_are_taken_out(mnist_splits):
    # lines darker than half the pen's ink, crossing the digit: the model sees the digit alone
    ink = mnist_splits[1].images[0].numpy().astype(np.float32) / 255  # a 7
    page, scale = _page(ink, np.random.default_rng(0))
    for squared in (False, True):
        lined = np.maximum(page, _ruled(page.shape, scale, squared) * 1.5)  # lines at 0.6
        assert _difference(mnist_style(_printed(lined)), mnist_style(_printed(page))) < 0.02


def test_light_ink_on_dark_paper_reads_like_dark_on_light(mnist_splits):
    # chalk on a blackboard, or a digit drawn in a dark-mode app
    page, _ = _page(mnist_splits[1].images[0].numpy().astype(np.float32) / 255, np.random.default_rng(0))
    chalk = 1 - _printed(page, paper=(0.15,), pen=(0.85,))
    assert _difference(mnist_style(chalk), mnist_style(_printed(page))) < 0.01


@pytest.mark.parametrize("pen", ["fine", "marker"])
def test_pen_width_is_brought_to_mnists(mnist_splits, pen):
    # drawn as they are, a fine pen's digits hold less ink than 95% of MNIST's, a marker's more
    test = mnist_splits[1].images.numpy().astype(np.float32) / 255
    usual = np.percentile(test.sum(axis=(1, 2)), [5, 95])
    rng = np.random.default_rng(0)
    redrawn = [_fine_pen(d, 0.6) if pen == "fine" else _marker(d, 2.0) for d in test[:20]]
    ink = np.median([mnist_style(_printed(_page(d, rng)[0])).sum() for d in redrawn])
    assert usual[0] < ink < usual[1], (usual, ink)


def test_a_small_digit_far_off_in_a_large_photo_is_found(mnist_splits):
    # 50 pixels tall in 2000x1500: averaged down, it would be 10 pixels; it is looked at again up close
    ink = mnist_splits[1].images[0].numpy().astype(np.float32) / 255
    close_up = mnist_style(_printed(_page(ink, np.random.default_rng(0))[0]))
    small = np.asarray(Image.fromarray(ink).resize((70, 70), Image.Resampling.BICUBIC))
    photo = np.zeros((1500, 2000), np.float32)
    photo[1100:1170, 300:370] = np.clip(small, 0, 1)
    noisy = np.clip(_printed(photo) + np.random.default_rng(0).normal(0, 0.02, photo.shape), 0, 1)
    assert _difference(mnist_style(noisy), close_up) < 0.02


def test_a_large_photo_reads_like_its_smaller_copy(mnist_splits):
    # a 12-megapixel photo is averaged down before the work: same digit, same layout
    page, _ = _page(mnist_splits[1].images[0].numpy().astype(np.float32) / 255, np.random.default_rng(0))
    small = _printed(page)
    large = np.asarray(Image.fromarray(small).resize((4000, 3000), Image.Resampling.BILINEAR))
    assert np.abs(mnist_style(large) - mnist_style(small)).mean() < 0.03


def test_mnist_digits_pass_through_unchanged(mnist_splits):
    """A digit already in MNIST's layout is kept exactly: fitting it again resampled it (a mean
    change of 10/255 a pixel, and 9 of the first 600 test digits changed their predicted class)."""
    digits = mnist_splits[1].images[:600].numpy().astype(np.float32) / 255
    assert all(np.array_equal(mnist_style(digit), digit) for digit in digits)
    shifted = np.roll(digits[0], 3, axis=1)  # off centre: fitted and centred again
    assert not np.array_equal(mnist_style(shifted), shifted)
    assert np.abs(mnist_style(shifted) - digits[0]).mean() < 0.03


def test_blank_image_is_refused():
    with pytest.raises(InputError, match="no digit found"):
        mnist_style(np.ones((50, 50), np.float32))


def _ramp(size: int, kind: str) -> np.ndarray:
    x = np.linspace(0, 1, size, dtype=np.float32)
    rows, cols = np.indices((size, size)) / size
    return {
        "horizontal": np.tile(x, (size, 1)),
        "vertical": np.tile(x[:, None], (1, size)),
        "diagonal": (x[:, None] + x[None, :]) / 2,
        "radial": np.clip(1 - np.hypot(rows - 0.5, cols - 0.5), 0, 1),
        "vignette": 0.9 - 0.4 * np.hypot(rows - 0.5, cols - 0.5) ** 2,
        "lit page": np.clip(0.8 + 0.15 * cols + np.random.default_rng(0).normal(0, 0.02, (size, size)), 0, 1),
    }[kind].astype(np.float32)


@pytest.mark.parametrize("size", [28, 64, 280, 1000])
@pytest.mark.parametrize("kind", ["horizontal", "vertical", "diagonal", "radial", "vignette", "lit page"])
def test_a_page_without_ink_is_no_digit(size, kind):
    # a blank gradient used to be called "3 (0.925)": smooth light is not ink
    with pytest.raises(InputError, match="no digit found"):
        mnist_style(_ramp(size, kind))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("size", [(28, 28), (64, 48), (300, 400)])
def test_random_noise_is_no_digit(seed, size):
    # uniform noise used to leave no ink after thresholding and divide by zero
    noise = np.random.default_rng(seed).random(size).astype(np.float32)
    with pytest.raises(InputError, match="no digit found"):
        mnist_style(noise)


@pytest.mark.parametrize(
    "gray,fragment",
    [
        (np.ones(5, np.float32), "2-D"),
        (np.ones((0, 5), np.float32), "non-empty"),
        (np.full((9, 9), np.nan, np.float32), "NaN"),
        (np.full((9, 9), 255, np.float32), r"\[0, 1\]"),
    ],
)
def test_mnist_style_refuses_what_is_not_a_picture(gray, fragment):
    with pytest.raises(InputError, match=fragment):
        mnist_style(gray)
