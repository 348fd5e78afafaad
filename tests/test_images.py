"""Prediction inputs: the picture rules (as-is, mnist-style) and the reading of image and array files,
with their errors (MNIST-style digits themselves: test_digits.py)."""

import re

import numpy as np
import pytest
from corpus.hostile import npy_with_header, npz_bomb
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from torchlogreg import InputError
from torchlogreg.data.digits import mnist_style
from torchlogreg.data.images import AS_IS, MNIST_STYLE, picture_pixels, read_image
from torchlogreg.data.inputs import load_inputs, read_array


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


def test_a_picture_over_pillows_size_limit_is_one_line_at_the_cli(default_run, tmp_path):
    """Pillow warns (two lines) of a picture over its own limit as it opens the header; the CLI's line
    refusing it had come after that warning."""
    import struct
    import subprocess
    import sys
    import zlib

    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 0, 0, 0, 0)  # IHDR: 10,000 x 10,000, grey
    chunk = b"IHDR" + header
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(header)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    (tmp_path / "huge.png").write_bytes(png + b"\x00\x00\x00\x00IEND\xaeB`\x82")
    command = [sys.executable, "-m", "torchlogreg", "predict", str(default_run), str(tmp_path / "huge.png")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)  # (stderr as a user sees it)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "larger than the limit" in done.stderr


def test_arrays_of_one_channel_are_images(tmp_path):
    """torchvision's (N, 1, H, W) tensors, saved as arrays, are N images."""
    path = tmp_path / "nchw.npy"
    np.save(path, np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 1, 28, 28))
    assert load_inputs([path])[0].shape[0] == 2


@pytest.mark.parametrize(
    "layout,image_shape,found,expected",
    [
        ((3, 28, 28), (32, 32), r"\(3, 28, 28\)", "32x32"),
        ((784,), (32, 24), r"\(784,\)", "32x24"),
        ((2, 32, 32), (28, 28), r"\(2, 32, 32\)", "28x28"),
        ((1, 3, 28, 28), (28, 28), r"\(1, 3, 28, 28\)", "28x28"),  # RGB, channels first: not 3 images
        ((2, 2, 28, 28), (28, 28), r"\(2, 2, 28, 28\)", "28x28"),
    ],
)
def test_arrays_of_another_shape_are_refused(tmp_path, layout, image_shape, found, expected):
    path = tmp_path / "wrong.npy"
    np.save(path, np.zeros(layout, np.uint8))
    with pytest.raises(InputError, match=rf"array of shape {found} does not hold {expected} images") as error:
        load_inputs([path], image_shape=image_shape)
    assert str(error.value).startswith(str(path))


# --- pictures turned by EXIF, or of wide pixels ----------------------------------------------------


def _upright_seven(mnist_splits) -> Image.Image:
    return Image.fromarray(255 - mnist_splits[1].images[0].numpy()).resize((112, 112))  # a 7, dark on white


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "WEBP", "MPO"])
@pytest.mark.parametrize("orientation,turn", [(3, 180), (6, 90), (8, -90)])
def test_exif_orientation_is_applied(default_result, mnist_splits, tmp_path, fmt, orientation, turn):
    # a phone stores the sensor's pixels and an EXIF tag saying how to turn them upright
    stored = _upright_seven(mnist_splits).convert("RGB").rotate(turn, expand=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"phone.{fmt.lower()}"
    extra = {"save_all": True, "append_images": [stored.resize((28, 28))]} if fmt == "MPO" else {}
    stored.save(path, format=fmt, exif=exif, **extra)  # an MPO: the photo plus a thumbnail frame
    images, _ = load_inputs([path.rename(path.with_suffix(".jpg")) if fmt == "MPO" else path])
    assert default_result.model.predict(images).item() == 7


@pytest.mark.parametrize(
    "mode,white",
    [("I", 255), ("I", 65535), ("I", 2**31 - 1), ("F", 1.0), ("F", 255.0), ("F", 65535.0), ("I;16", 65535)],
)
def test_wide_pixels_are_scaled_by_their_depth(default_result, mnist_splits, tmp_path, mode, white):
    # a 32-bit TIFF used to be divided by 65535 and clipped: all white, "no digit found"
    values = np.asarray(_upright_seven(mnist_splits), np.float64) / 255 * white
    dtype = {"I": np.int32, "F": np.float32, "I;16": np.uint16}[mode]
    image = Image.fromarray(values.astype(dtype))
    assert image.mode == mode
    path = tmp_path / "wide.tif"
    image.save(path)
    gray = read_image(path)
    assert gray.max() > 0.99 and gray.min() < 0.01
    images, _ = load_inputs([path])
    assert default_result.model.predict(images).item() == 7


# --- arrays: headers are checked before data is read ---------------------------------------------


def _allocated_while(function) -> tuple[int, str]:
    """Peak bytes Python and NumPy allocated while `function` ran, and the InputError it raised."""
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(InputError) as error:
            function()
        return tracemalloc.get_traced_memory()[1], str(error.value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "shape,descr,fragment",
    [
        (
            (100_000_000, 784),
            "|u1",
            r"shape \(100000000, 784\) \(uint8\) would decode to 73 GiB, over the limit",
        ),
        ((2**40, 28, 28), "<f8", "over the limit"),
        ((), "<f8", r"a single value \(a 0-d array\) does not hold 28x28 images"),
        ((-5, 784), "|u1", "negative size"),
        ((3, 784), "|O", "without pickles"),
        ((3, 784), "<c8", "must hold numbers"),
        ((3, 784), "<M8[s]", "must hold numbers"),
        ((3, 784), [("a", "<f4")], "must hold numbers"),
        ((3, 784), "|u1", r"truncated \(its header promises 2352 bytes of data, found 0\)"),
    ],
)
def test_npy_headers_are_checked_before_reading(tmp_path, shape, descr, fragment):
    path = tmp_path / "hostile.npy"
    path.write_bytes(npy_with_header(shape, descr))
    peak, message = _allocated_while(lambda: load_inputs([path]))
    assert re.search(fragment, message) and message.startswith(str(path)) and "\n" not in message
    assert peak < 1_000_000  # refused from the header: nothing of the declared size was allocated


def test_npz_bomb_is_refused_from_its_headers(tmp_path):
    path = tmp_path / "bomb.npz"
    npz_bomb(path, 350_000)  # 274 MB decoded, 1.2 MB on disk
    assert path.stat().st_size < 1_500_000
    peak, message = _allocated_while(lambda: load_inputs([path]))
    assert "its arrays would decode to 262 MiB, over the limit of 256 MiB for one file" in message
    assert peak < 2_000_000


def test_max_bytes_counts_every_member_of_an_npz(tmp_path):
    path = tmp_path / "a.npz"
    np.savez_compressed(path, images=np.zeros((10, 28, 28), np.uint8), extra=np.zeros(100_000, np.uint8))
    assert read_array(path, max_bytes=200_000).shape == (10, 784)
    with pytest.raises(InputError, match="its arrays would decode to 105 KiB, over the limit of 97.7 KiB"):
        read_array(path, max_bytes=100_000)


@pytest.mark.parametrize(
    "members,fragment",
    [
        ({f"a{i}": np.zeros(1) for i in range(33)}, "holds 33 arrays; a .npz may hold 1 to 32"),
        ({"images": np.zeros((2, 784), np.uint8), "meta": np.array([{}], dtype=object)}, "without pickles"),
        ({"images": np.zeros((2, 28, 28), np.uint8), "labels": np.arange(2)}, None),
        ({"a": np.zeros((2, 784)), "b": np.zeros((2, 784))}, "name the images 'images'"),
        ({"images": np.array(3.0)}, r"a single value \(a 0-d array\)"),
    ],
)
def test_npz_members(tmp_path, members, fragment):
    path = tmp_path / "a.npz"
    np.savez(path, **members)
    if fragment is None:
        assert read_array(path).shape == (2, 784)
        return
    with pytest.raises(InputError, match=fragment) as error:
        read_array(path)
    assert str(error.value).startswith(str(path))


def _zip(path, entries, compression=None, comment=b"") -> None:
    import zipfile

    with zipfile.ZipFile(path, "w", compression or zipfile.ZIP_STORED) as archive:
        archive.comment = comment
        for name, data in entries:
            archive.writestr(name, data)


def test_damaged_npz_files_are_refused(tmp_path):
    import zipfile

    npy = npy_with_header((1, 784), data=bytes(784))
    cases = {
        "no_npy_inside.npz": ([("readme.txt", b"hello")], None, "not a readable NumPy file"),
        "bzip2.npz": ([("images.npy", npy)], zipfile.ZIP_BZIP2, "a .npz uses stored or deflate"),
        "truncated_member.npz": ([("images.npy", npy[:-100])], None, "truncated"),
        "empty.npz": ([], None, "holds 0 arrays"),
        "many_entries.npz": ([(f"{i}.npy", b"") for i in range(5000)], None, "zip directory is too large"),
    }
    for name, (entries, compression, fragment) in cases.items():
        _zip(tmp_path / name, entries, compression)
        with pytest.raises(InputError, match=fragment):
            read_array(tmp_path / name)
    _zip(tmp_path / "good.npz", [("images.npy", npy)], comment=b"PK" * 100)
    assert read_array(tmp_path / "good.npz").shape == (1, 784)
    whole = (tmp_path / "good.npz").read_bytes()
    for cut in (10, len(whole) // 2, len(whole) - 250):  # the comment is 200 bytes
        (tmp_path / "cut.npz").write_bytes(whole[:cut])
        with pytest.raises(InputError, match="not a readable NumPy file"):
            read_array(tmp_path / "cut.npz")


@pytest.mark.parametrize(
    "array",
    [
        np.asfortranarray(np.random.default_rng(0).random((3, 28, 28))),
        np.full((2, 784), 7, ">i4"),
        np.ones((1, 28, 28), bool),
        np.full((28, 28), 0.5, np.float16),
    ],
)
def test_unusual_but_valid_arrays_are_read(tmp_path, array):
    np.save(tmp_path / "a.npy", array)
    rows = read_array(tmp_path / "a.npy")
    expected = array.astype(np.float64) / (255 if array.dtype.kind == "i" else 1)
    np.testing.assert_allclose(rows, expected.reshape(-1, 784), rtol=1e-3)


def test_folders_patterns_and_stdin_are_named_as_what_they_are(tmp_path):
    from torchlogreg.data.inputs import expand_inputs

    (tmp_path / "b" / "c").mkdir(parents=True)
    for name in ("b/2.npy", "a.npy", "b/c/1.npy"):
        np.save(tmp_path / name, np.zeros((1, 28, 28), np.uint8))
    (tmp_path / "notes.txt").write_text("skipped: not an image or array")
    images, names = load_inputs([tmp_path])
    assert names == [str(tmp_path / n) for n in ("a.npy", "b/2.npy", "b/c/1.npy")] and images.shape[0] == 3
    with pytest.raises(InputError, match="no file matches this pattern"):
        expand_inputs([str(tmp_path / "*.png")])
    with pytest.raises(InputError, match="standard input is not supported"):
        expand_inputs(["-"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no images or arrays"):
        expand_inputs([tmp_path / "empty"])


# --- the picture rules: how a picture becomes a run's pixels ----------------------------------------
def test_as_is_keeps_a_picture_s_pixels_as_a_dataset_stores_them(mnist_splits):
    paper = (255 - mnist_splits[1].images[0].numpy()).astype(np.float32) / 255  # dark ink on white
    same = picture_pixels(paper, (28, 28), AS_IS)
    assert same.dtype == np.float32 and np.array_equal(same, paper)  # no inversion, no crop, no fitting
    assert np.array_equal(picture_pixels(paper, (28, 28), MNIST_STYLE), mnist_style(paper))
    large = np.asarray(Image.fromarray(paper, mode="F").resize((84, 56), Image.Resampling.BILINEAR))
    resized = picture_pixels(large, (28, 28), AS_IS)
    assert resized.shape == (28, 28) and np.abs(resized - paper).mean() < 0.05
    with pytest.raises(InputError, match="pictures must be one of as-is, mnist-style, got 'negative'"):
        picture_pixels(paper, (28, 28), "negative")


@settings(max_examples=80, deadline=None)
@given(
    picture=hnp.arrays(
        np.float32, hnp.array_shapes(min_dims=2, max_dims=2, max_side=40), elements=st.floats(0, 1, width=32)
    ),
    shape=st.tuples(st.integers(1, 30), st.integers(1, 30)),
)
def test_as_is_gives_8_bit_pixels_of_the_run_s_shape(picture, shape):
    pixels = picture_pixels(picture, shape, AS_IS)
    assert pixels.shape == shape and pixels.dtype == np.float32
    levels = pixels * 255
    assert pixels.min() >= 0 and pixels.max() <= 1 and np.allclose(levels, np.rint(levels), atol=1e-4)
    if picture.shape == shape:
        assert np.array_equal(np.rint(levels), np.rint(picture * 255))
