"""Prediction inputs: MNIST-style preprocessing of pictures (checked on real test digits made to
look like photos) and the reading of image and array files, with their errors."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from torchlogreg import InputError
from torchlogreg.images import load_inputs, mnist_style, read_array, read_image

N_DIGITS = 600


def _as_paper(digit: np.ndarray, rng, scale: int, photo: bool, thin: bool) -> np.ndarray:
    """A test digit as dark ink on light paper, enlarged, shifted, optionally lit like a photo."""
    image = Image.fromarray(255 - digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    if thin:  # thinner pen strokes than MNIST's
        image = Image.fromarray(
            255 - np.asarray(Image.fromarray(255 - np.asarray(image)).filter(ImageFilter.MinFilter(3)))
        )
    paper = np.ones((28 * scale + 40, 28 * scale + 60), np.float32)
    top, left = rng.integers(0, 40), rng.integers(0, 60)
    paper[top : top + 28 * scale, left : left + 28 * scale] = np.asarray(image, np.float32) / 255
    if photo:  # uneven light, grey ink, sensor noise
        light = 0.8 + 0.15 * np.linspace(0, 1, paper.shape[1])[None, :]
        paper = np.clip(light * (paper * 0.85 + 0.1) + rng.normal(0, 0.02, paper.shape), 0, 1)
    return paper


@pytest.mark.parametrize("photo,thin", [(False, False), (True, False), (True, True)])
def test_preprocessing_keeps_accuracy(default_result, mnist_splits, photo, thin):
    test = mnist_splits[1]
    digits, labels = test.images[:N_DIGITS], test.labels[:N_DIGITS]
    rng = np.random.default_rng(0)
    papers = [_as_paper(d.numpy(), rng, int(rng.integers(3, 6)), photo, thin) for d in digits]
    processed = torch.from_numpy(np.stack([mnist_style(p) for p in papers]))
    model = default_result.model
    raw = (model.predict(digits) == labels).float().mean().item()
    ours = (model.predict(processed) == labels).float().mean().item()
    assert ours >= raw - 0.03, (raw, ours)


def test_mnist_digit_passes_through_unchanged(mnist_splits):
    digit = mnist_splits[1].images[0].numpy().astype(np.float32) / 255
    assert np.abs(mnist_style(digit) - digit).mean() < 0.01


def test_blank_image_is_refused():
    with pytest.raises(InputError, match="no digit found"):
        mnist_style(np.ones((50, 50), np.float32))


def _digit_png(tmp_path, mnist_splits, mode="L", name="digit.png"):
    digit = 255 - mnist_splits[1].images[0].numpy()  # a 7, dark on white
    image = Image.fromarray(digit).resize((112, 112))
    if mode == "RGBA":  # ink opaque, paper transparent (black but invisible)
        alpha = 255 - np.asarray(image)
        image = Image.fromarray(np.dstack([np.zeros((112, 112, 3), np.uint8), alpha]), "RGBA")
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
    path = tmp_path / name
    image.save(path)
    return path


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16"])
def test_image_files_are_read_and_classified(default_result, mnist_splits, tmp_path, mode):
    path = _digit_png(tmp_path, mnist_splits, mode)
    images, names = load_inputs([path])
    assert images.shape == (1, 28, 28) and names == [str(path)]
    assert default_result.model.predict(images).item() == 7


def test_rgba_transparency_is_composited_on_white(tmp_path, mnist_splits):
    gray = read_image(_digit_png(tmp_path, mnist_splits, "RGBA"))
    assert np.median(gray) > 0.9  # the transparent (black) paper became white


def test_unsupported_suffix_is_refused(tmp_path):
    with pytest.raises(InputError, match="unsupported file type .txt"):
        load_inputs([tmp_path / "digit.txt"])


@pytest.mark.parametrize("shape", [(28, 28), (3, 28, 28), (784,), (2, 784)])
def test_arrays_of_every_layout(tmp_path, shape):
    path = tmp_path / "a.npy"
    np.save(path, np.full(shape, 255, np.uint8))
    images, names = load_inputs([path])
    rows = int(np.prod(shape)) // 784
    assert images.shape == (rows, 28, 28) and float(images.max()) == 1.0
    assert len(names) == rows


def test_npz_with_named_images(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, images=np.zeros((2, 28, 28), np.float32), labels=np.array([1, 2]))
    assert read_array(path).shape == (2, 784)


def _ink_box(image: np.ndarray) -> tuple[int, int]:
    """Height and width of the rows and columns holding any ink."""
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("shape", [(32, 24), (24, 32), (56, 56)])
def test_pictures_are_fitted_to_the_runs_shape(tmp_path, mnist_splits, shape):
    # MNIST's layout scaled: the ink fills a box of 20/28 of the field, centred by its mass
    images, _ = load_inputs([_digit_png(tmp_path, mnist_splits)], image_shape=shape)
    assert images.shape == (1, *shape) and 0.99 < float(images.max()) <= 1.0
    image = images[0].numpy()
    box = (round(shape[0] * 20 / 28), round(shape[1] * 20 / 28))
    ink = _ink_box(image)
    assert ink[0] <= box[0] and ink[1] <= box[1]  # fitted ...
    assert max(ink[0] - box[0], ink[1] - box[1]) >= -1  # ... as large as fits, proportions kept
    rows, cols = np.indices(shape)
    centre_y, centre_x = (image * rows).sum() / image.sum(), (image * cols).sum() / image.sum()
    assert abs(centre_y - shape[0] / 2) <= 1 and abs(centre_x - shape[1] / 2) <= 1


@pytest.mark.parametrize("layout", [(32, 24), (2, 32, 24), (768,), (3, 768)])
def test_arrays_of_the_runs_shape(tmp_path, layout):
    path = tmp_path / "a.npy"
    np.save(path, np.full(layout, 255, np.uint8))
    images, names = load_inputs([path], image_shape=(32, 24))
    rows = int(np.prod(layout)) // 768
    assert images.shape == (rows, 32, 24) and len(names) == rows


@pytest.mark.parametrize(
    "layout,image_shape,found,expected",
    [
        ((3, 28, 28), (32, 32), r"\(3, 28, 28\)", "32x32"),
        ((784,), (32, 24), r"\(784,\)", "32x24"),
        ((2, 32, 32), (28, 28), r"\(2, 32, 32\)", "28x28"),
    ],
)
def test_arrays_of_another_shape_are_refused(tmp_path, layout, image_shape, found, expected):
    path = tmp_path / "wrong.npy"
    np.save(path, np.zeros(layout, np.uint8))
    with pytest.raises(InputError, match=rf"array of shape {found} does not hold {expected} images") as error:
        load_inputs([path], image_shape=image_shape)
    assert str(error.value).startswith(str(path))
