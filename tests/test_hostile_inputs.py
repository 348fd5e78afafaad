"""Property-based tests of the input contract (issue 18, "hostile and broken input"): whatever bytes
arrive as a .npy/.npz, a picture or a JSON body, the library answers with images or an `InputError`
(one line, naming the input) and the server with a 200 or a 4xx JSON `{"error": ...}`; never another
exception, a 500 or a traceback. Every test runs under a memory cap (RLIMIT_AS: the current address
space plus 2 GiB), so a regression that decodes a bomb fails with MemoryError instead of swapping.

Hypothesis generates damaged .npy/.npz headers and payloads, JSON of random nesting, types and sizes,
and random bytes and small PNG/JPEG/GIF/TIFF/BMP/WebP images of random modes, sizes and EXIF tags.
80 examples a test by default (about 10 s in all); hunt longer with TORCHLOGREG_FUZZ_EXAMPLES=2000."""

import contextlib
import io
import json
import os
import zipfile

import numpy as np
import pytest
from corpus.hostile import memory_cap, npy_with_header, npz_bomb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from torchlogreg import InputError
from torchlogreg.data.digits import MNIST_SHAPE, mnist_style
from torchlogreg.data.images import read_image
from torchlogreg.data.inputs import read_array

CAP = 4 * 1024 * 1024  # decoded bytes allowed in these tests: anything larger must be refused from its header
FUZZ = settings(
    max_examples=int(os.environ.get("TORCHLOGREG_FUZZ_EXAMPLES", 80)),  # more for a longer hunt
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture(autouse=True)
def _capped():
    with memory_cap():
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny run on synthetic 28x28 images: what it predicts does not matter here, only that it answers."""
    from conftest import synthetic_data

    from torchlogreg import TrainConfig, train
    from torchlogreg.runfolder.checkpoints import save_run

    result = train(TrainConfig(batch_size=16, epochs=1, device="cpu", val_size=60), synthetic_data(side=28))
    return save_run(result, tmp_path_factory.mktemp("runs") / "tiny")


@pytest.fixture(scope="module")
def client(run_dir):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from torchlogreg.apps.serving import create_app

    # unexpected exceptions are raised here, in the test, with their traceback
    return TestClient(create_app(run_dir, max_upload_bytes=256 * 1024))


def test_the_memory_cap_is_in_force():
    # what every test here runs under: an allocation of gigabytes fails instead of swapping
    with memory_cap() as capped:
        if not capped:
            pytest.skip("no RLIMIT_AS or /proc on this platform")
        with pytest.raises(MemoryError):
            np.ones(3 * 1024**3, np.uint8)


def _check_error(error: InputError, name: str) -> None:
    message = str(error)
    assert type(error) is InputError and message.startswith(name) and "\n" not in message, message


def _check_rows(rows: np.ndarray) -> None:
    assert rows.dtype == np.float32 and rows.ndim == 2 and rows.shape[1] == 784
    assert np.isfinite(rows).all() and rows.min() >= 0 and rows.max() <= 1


def _check_reply(response) -> None:
    """A 200 with a prediction, or a 4xx with one JSON error line; never a 500."""
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text[:300]
    body = response.json()
    if response.status_code == 200:
        assert len(body["image"]) == 28 and abs(sum(body["probabilities"].values()) - 1) < 1e-4
    else:
        assert set(body) == {"error"} and "\n" not in body["error"] and "Traceback" not in body["error"]


def _read_array_or_error(raw: bytes, name: str) -> None:
    try:
        rows = read_array(io.BytesIO(raw), MNIST_SHAPE, name=name, max_bytes=CAP)
    except InputError as error:
        _check_error(error, name)
    else:
        _check_rows(rows)


# --- .npy: headers that declare anything, payloads of any length -----------------------------------

NUMBERS = ["|u1", "<u2", ">i4", "<i8", "<u8", "<f2", "<f4", ">f8", "|b1"]
NOT_NUMBERS = ["|O", "<c8", "<U3", "|S5", "|V8", "<M8[s]"]  # objects (pickles), complex, text, bytes, dates
DESCRS = st.sampled_from(NUMBERS + NOT_NUMBERS)
SIDES = st.one_of(
    st.sampled_from([0, 1, 2, 28, 784, 1_000, 100_000_000, 2**40]), st.integers(-3, 40), st.integers(0, 2**63)
)
IMAGE_LAYOUTS = st.one_of(  # what holds 28x28 images, with any number of them (huge too)
    st.sampled_from([(28, 28), (784,)]),
    st.one_of(st.integers(1, 4), SIDES).map(lambda n: (n, 784)),
    st.one_of(st.integers(1, 4), SIDES).map(lambda n: (n, 28, 28)),
)
SHAPES = st.one_of(IMAGE_LAYOUTS, IMAGE_LAYOUTS, st.lists(SIDES, max_size=4).map(tuple))


@st.composite
def npy_files(draw) -> bytes:
    """A .npy: a header declaring a random shape and dtype (mostly real ones, some structured or
    garbage), then a payload that is right, short, long or absent; sometimes damaged anywhere."""
    descr = draw(
        st.one_of(
            DESCRS,
            DESCRS,
            DESCRS,
            st.lists(st.tuples(st.text(max_size=3), DESCRS), min_size=1, max_size=2),
            st.text(max_size=8),
        )
    )
    shape = draw(SHAPES)
    try:
        promised = (
            int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize if min(shape, default=0) >= 0 else 0
        )
    except (TypeError, ValueError, SyntaxError):  # np.dtype parses strings like "3,f4" with ast
        promised = 0
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    payload = draw(
        st.sampled_from(
            [
                bytes(min(promised, CAP + 1024)),  # zeros: valid for every number type
                rng.bytes(min(promised, 100_000)),  # any bit pattern: NaN, out of range
                rng.bytes(min(promised, 100_000) // 2),  # short
                b"",
            ]
        )
    )
    raw = npy_with_header(
        shape, descr, draw(st.booleans()), payload, version=draw(st.sampled_from([(1, 0), (2, 0)]))
    )
    return _damaged(draw, raw)


def _damaged(draw, raw: bytes) -> bytes:
    """`raw` as it is, cut short, or with a few bytes overwritten."""
    how = draw(st.sampled_from(["whole", "whole", "whole", "cut", "flipped"]))
    if how == "cut" and raw:
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "flipped" and raw:
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        return bytes(raw)
    return raw


@FUZZ
@given(raw=npy_files())
def test_any_npy_gives_images_or_one_input_error(raw):
    _read_array_or_error(raw, "fuzz.npy")


@FUZZ
@given(
    array=st.one_of(st.integers(0, 255), st.floats(0, 1)).flatmap(
        lambda fill: st.sampled_from([(28, 28), (784,), (3, 784), (2, 28, 28)]).map(
            lambda shape: np.full(shape, fill)
        )
    )
)
def test_valid_npy_is_read(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    _check_rows(read_array(io.BytesIO(buffer.getvalue()), max_bytes=CAP))


# --- .npz: members of any kind and number, zips damaged anywhere -----------------------------------


@st.composite
def npz_files(draw) -> bytes:
    members = draw(
        st.lists(
            st.tuples(
                st.one_of(
                    st.sampled_from(["images.npy", "x.npy", "labels.npy"]),
                    st.text(st.characters(min_codepoint=1, max_codepoint=0x2FF), min_size=1, max_size=12),
                ),
                st.one_of(
                    npy_files(),
                    npy_files(),
                    st.binary(max_size=512),
                    st.just(npy_with_header((2, 28, 28), data=bytes(2 * 784))),
                    st.just(npy_with_header((1_300_000, 28, 28), data=bytes(4096))),  # a bomb's header
                ),
            ),
            max_size=draw(st.sampled_from([3, 3, 40])),
        )
    )
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED] * 3 + [zipfile.ZIP_BZIP2]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.comment = draw(st.binary(max_size=64))
        for name, data in members:
            archive.writestr(name, data)
    return _damaged(draw, buffer.getvalue())


@FUZZ
@given(raw=npz_files())
def test_any_npz_gives_images_or_one_input_error(raw):
    _read_array_or_error(raw, "fuzz.npz")


@pytest.mark.parametrize("rows", [10_000, 400_000])
def test_real_npz_bombs_are_refused(rows):
    bomb = io.BytesIO()
    npz_bomb(bomb, rows)  # 7.8 MB and 314 MB decoded: both over CAP
    with pytest.raises(InputError, match="over the limit of 4 MiB"):
        read_array(io.BytesIO(bomb.getvalue()), name="bomb.npz", max_bytes=CAP)


def test_the_predict_command_refuses_a_bomb_in_one_line(run_dir, tmp_path, capsys):
    from torchlogreg.apps.cli import main

    npz_bomb(tmp_path / "bomb.npz", 400_000)  # 314 MB decoded: over MAX_ARRAY_BYTES, 256 MiB
    (tmp_path / "huge.npy").write_bytes(npy_with_header((100_000_000, 784)))
    for name in ("bomb.npz", "huge.npy"):
        assert main(["predict", str(run_dir), str(tmp_path / name)]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err and "over the limit of 256 MiB" in err



def _npz_with_header_length(target, declared: int, written: int) -> None:
    """A .npz whose one member is a version 2.0 .npy declaring a header of `declared` bytes, of which
    `written` (spaces, deflated to almost nothing) are there."""
    with (
        zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive,
        archive.open("images.npy", "w") as member,
    ):
        member.write(b"\x93NUMPY\x02\x00" + declared.to_bytes(4, "little"))
        for _ in range(written >> 20):
            member.write(b" " * (1 << 20))


def test_a_npy_header_length_is_checked_before_the_header_is_read(run_dir, tmp_path, capsys):
    # a .npz whose member's header said 1.9 GB (1.9 MB of deflated spaces) used to be read whole into
    # memory by NumPy (MemoryError in predict and serve); 8 MB of it is enough to tell
    from torchlogreg.apps.cli import main

    _npz_with_header_length(tmp_path / "spaces.npz", 1_900_000_000, 8 << 20)
    raw = (tmp_path / "spaces.npz").read_bytes()
    with pytest.raises(InputError, match=r"damaged header \(it declares 1.77 GiB of header"):
        read_array(io.BytesIO(raw), name="spaces.npz", max_bytes=CAP)
    assert main(["predict", str(run_dir), str(tmp_path / "spaces.npz")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "spaces.npz[images.npy]: damaged header" in err


# --- JSON bodies of any nesting, types and sizes ----------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-1, 300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1),
    st.text(max_size=5),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=6), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=60,
)


@st.composite
def near_images(draw):
    """784 (or 28x28) pixel values with a few of them replaced by anything JSON can hold."""
    flat = draw(st.lists(st.one_of(st.integers(0, 255), st.floats(0, 1)), min_size=784, max_size=784))
    for _ in range(draw(st.integers(0, 3))):
        flat[draw(st.integers(0, 783))] = draw(JSON_VALUES)
    return [flat[row * 28 : row * 28 + 28] for row in range(28)] if draw(st.booleans()) else flat


@st.composite
def json_bodies(draw) -> bytes:
    kind = draw(st.sampled_from(["pixels", "near", "anything", "deep", "bytes"]))
    if kind == "pixels":
        return json.dumps({"pixels": draw(JSON_VALUES)}).encode()
    if kind == "near":
        return json.dumps({"pixels": draw(near_images())}).encode()
    if kind == "anything":
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 20_000))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"pixels":']))
        closer = b"]" if opener == b"[" else b"}"
        return b'{"pixels":' + opener * depth + draw(st.sampled_from([b"", b"1"])) + closer * depth + b"}"
    return draw(st.binary(max_size=2048))


@FUZZ
@given(body=json_bodies())
def test_any_json_body_gets_a_prediction_or_a_4xx(client, body):
    _check_reply(client.post("/api/predict", content=body, headers={"content-type": "application/json"}))


@FUZZ
@given(body=st.binary(max_size=2048), boundary=st.sampled_from(["x", "----b", ""]))
def test_any_multipart_body_gets_a_4xx(client, body, boundary):
    headers = {
        "content-type": f"multipart/form-data; boundary={boundary}" if boundary else "multipart/form-data"
    }
    _check_reply(client.post("/api/predict", content=body, headers=headers))


# --- pictures: random bytes, and real images of random modes, sizes, formats and EXIF -----------

MODES = ["1", "L", "P", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "HSV", "LAB", "I", "I;16", "F"]
FORMATS = ["PNG", "JPEG", "GIF", "TIFF", "BMP", "WEBP"]
MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBP",
]


@st.composite
def pictures(draw) -> bytes:
    """The bytes of a picture: a format's signature then junk, or a real image of a random mode, size
    and content saved by Pillow (converted where the format cannot hold the mode), maybe damaged."""
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=512))
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(1, 48)), draw(st.integers(1, 48)))
    content = draw(st.sampled_from(["random", "constant", "gradient", "digit"]))
    if content == "random":  # any bit pattern: NaN floats, negative 32-bit values, palette indices
        noise = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).bytes(_bytes_for(mode, size))
        image = Image.frombytes(mode, size, noise)
    else:
        image = Image.fromarray(_picture(content, size))
        with contextlib.suppress(ValueError):  # Pillow has no conversion from L to some modes
            image = image.convert(mode)
    fmt = draw(st.sampled_from(FORMATS))
    exif = Image.Exif()
    exif[0x0112] = draw(st.sampled_from([1, 3, 6, 8, 0, 9, 65535]))
    buffer = io.BytesIO()
    for candidate in (image, image.convert("RGB")):
        try:
            candidate.save(buffer, format=fmt, exif=exif)
            break
        except (OSError, ValueError, KeyError, TypeError):
            buffer = io.BytesIO()
    return _damaged(draw, buffer.getvalue())


def _bytes_for(mode: str, size: tuple[int, int]) -> int:
    bits = {"1": 1, "I;16": 16, "I": 32, "F": 32}.get(mode, 8 * len(Image.new(mode, (1, 1)).getbands()))
    return ((size[0] * bits + 7) // 8) * size[1]


def _picture(content: str, size: tuple[int, int]) -> np.ndarray:
    """A blank page, a gradient, or a dark bar (a "1") on white, of `size` (width, height)."""
    width, height = size
    if content == "constant":
        return np.full((height, width), 255, np.uint8)
    if content == "gradient":
        return np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    paper = np.full((height, width), 255, np.uint8)
    paper[height // 5 : height - height // 5, width // 3 : width - width // 3] = 0  # a bar: a "1"
    return paper


@FUZZ
@given(raw=pictures())
def test_any_picture_gives_an_image_or_one_input_error(raw):
    try:
        image = mnist_style(read_image(io.BytesIO(raw), name="fuzz.png"))
    except InputError as error:
        assert type(error) is InputError and "\n" not in str(error)
    else:
        assert image.shape == (28, 28) and np.isfinite(image).all() and 0 <= image.min() <= image.max() <= 1


@FUZZ
@given(raw=pictures(), name=st.sampled_from(["a.png", "b.jpg", "c.tif", "d.gif", "e.npy", "f.npz", "g"]))
def test_any_upload_gets_a_prediction_or_a_4xx(client, raw, name):
    _check_reply(client.post("/api/predict", files={"file": (name, raw, "application/octet-stream")}))
