"""Prediction inputs read a chunk at a time (inputs.read_chunks) and predicted into one output
(prediction.predict_files): the vectorised CSV parse agrees with np.loadtxt wherever it is used, a
bad row or file is named with its row and what was expected, `skip_bad` leaves out exactly the bad
ones (a bad file's lines taken back out of the output), the default writes nothing at all, and
memory does not grow with a CSV's size.

Hypothesis generates CSV rows (good ones in varied spellings, bad ones of every kind), random bytes
as CSV files and damaged files among good ones; those tests run under the memory cap of
tests/test_hostile_inputs.py. 60 examples a test (TORCHLOGREG_FUZZ_EXAMPLES for more)."""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from corpus.hostile import memory_cap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchlogreg import InputError
from torchlogreg.apps.cli import main
from torchlogreg.apps.prediction import json_lines, kaggle_csv, predict_files, show_progress
from torchlogreg.base.storage import atomic_output
from torchlogreg.data import csvfiles, csvlayout, inputs
from torchlogreg.data.inputs import load_inputs, read_chunks
from torchlogreg.runfolder.checkpoints import load_run

FUZZ = settings(
    max_examples=int(os.environ.get("TORCHLOGREG_FUZZ_EXAMPLES", 60)),
    deadline=None,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SHAPE = (2, 3)  # small images keep generated rows short: 6 pixel cells
PIXELS = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A folder the Hypothesis tests rewrite their files in (tmp_path is per test, not per example)."""
    return tmp_path_factory.mktemp("inputs")


def _read(path, skip_row=None, block_bytes=None, shape=SHAPE):
    """(rows, float images in [0, 1]) of every chunk of `path`, each chunk's invariants checked."""
    rows, images = [], []
    for chunk in read_chunks(path, shape, skip_row=skip_row, block_bytes=block_bytes):
        assert chunk.images.dtype in (np.uint8, np.float32) and chunk.images.shape == (
            len(chunk.rows),
            PIXELS,
        )
        if chunk.images.dtype == np.float32:
            assert np.isfinite(chunk.images).all() and chunk.images.min(initial=0) >= 0
            assert chunk.images.max(initial=0) <= 1
        rows.append(chunk.rows)
        images.append(chunk.images / (255.0 if chunk.images.dtype == np.uint8 else 1.0))
    return np.concatenate(rows), np.concatenate(images)


def _check_error(error: InputError, path, fragment: str = "") -> None:
    message = str(error)
    assert type(error) is InputError and message.startswith(str(path)) and "\n" not in message, message
    assert fragment in message, message


# --- CSV rows ---------------------------------------------------------------------------------------
def _spell(value: int, style: str) -> str:
    """An integer pixel as a CSV cell: plain (the fast parse), or padded, spaced or as a float."""
    return {"plain": str(value), "zeros": f"{value:04d}", "space": f" {value}", "float": f"{value}.0"}[style]


@FUZZ
@given(
    pixels=st.lists(st.lists(st.integers(0, 255), min_size=PIXELS, max_size=PIXELS), min_size=1, max_size=40),
    style=st.sampled_from(["plain", "plain", "zeros", "space", "float"]),
    header=st.booleans(),
    label=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    block_bytes=st.integers(1, 300),
)
def test_csv_rows_are_read_as_written(
    scratch, pixels, style, header, label, newline, final_newline, block_bytes
):
    # every spelling and block size gives the same images, in order, rows numbered from 0
    names = (["label"] if label else []) + [f"pixel{i}" for i in range(PIXELS)]
    lines = [",".join(names)] if header else []
    for i, row in enumerate(pixels):
        lines.append(",".join(([str(i % 10)] if label else []) + [_spell(v, style) for v in row]))
    path = scratch / "rows.csv"
    path.write_bytes((newline.join(lines) + (newline if final_newline else "")).encode())
    rows, images = _read(path, block_bytes=block_bytes)
    np.testing.assert_array_equal(rows, np.arange(len(pixels)))
    expected = np.array(pixels, dtype=np.float64)
    if expected.max(initial=0) > 1:  # (a file of only 0s and 1s is fractions: 1 is full intensity)
        expected = expected / 255.0
    np.testing.assert_allclose(images, expected, rtol=1e-6)


def test_fractions_are_read_as_they_are(tmp_path):
    path = tmp_path / "fractions.csv"
    values = np.random.default_rng(0).random((5, PIXELS))
    np.savetxt(path, values, delimiter=",", fmt="%.6f")
    _, images = _read(path)
    np.testing.assert_allclose(images, values, atol=1e-6)


BAD_CELLS = {
    "not a number": st.text(alphabet="abcxyz_#-+. ", min_size=0, max_size=6).filter(
        lambda text: not csvlayout.is_number(text)
    ),
    "out of range": st.one_of(st.integers(256, 10**6), st.integers(-1000, -1)).map(str),
    "not finite": st.sampled_from(["nan", "inf", "-inf", "NaN"]),
}


@st.composite
def bad_rows(draw):
    """(a bad row's cells, a fragment its message must hold)."""
    kind = draw(st.sampled_from(["ragged", *BAD_CELLS]))
    cells = [str(draw(st.integers(0, 255))) for _ in range(PIXELS)]
    if kind == "ragged":
        count = draw(st.integers(1, PIXELS + 4).filter(lambda n: n != PIXELS))
        cells = (cells * 2)[:count]
        return cells, f"has {count} cells, expected {PIXELS} ({PIXELS} pixels of 2x3 images)"
    cell = draw(BAD_CELLS[kind])
    cells[draw(st.integers(0, PIXELS - 1))] = cell
    if kind == "not a number":
        return cells, f"{cell[:20]!r} is not a number"
    return cells, "expected 0..255 (or fractions in [0, 1])"


@FUZZ
@given(
    n_good=st.integers(1, 30),
    bad=st.lists(bad_rows(), min_size=1, max_size=3),
    data=st.data(),
    header=st.booleans(),
    block_bytes=st.integers(1, 200),
)
def test_bad_rows_are_named_and_can_be_skipped(scratch, n_good, bad, data, header, block_bytes):
    row = st.lists(st.integers(0, 255), min_size=PIXELS, max_size=PIXELS)
    good = [[str(v) for v in data.draw(row)] for _ in range(n_good)]
    rows = [cells for cells, _ in bad] + good
    order = data.draw(st.permutations(range(len(rows))))
    if not header:  # the first line of a headerless file sets the columns: keep it good
        order = sorted(order, key=lambda i: i < len(bad))
    rows = [rows[i] for i in order]
    path = scratch / "bad.csv"
    text = ([",".join(f"pixel{i}" for i in range(PIXELS))] if header else []) + [",".join(r) for r in rows]
    path.write_text("\n".join(text) + "\n")
    bad_at = [position for position, i in enumerate(order) if i < len(bad)]  # data rows, from 0
    first = bad_at[0]
    with pytest.raises(InputError) as error:  # by default: the first bad row, by its line in the file
        _read(path, block_bytes=block_bytes)
    _check_error(error.value, path, f"row {first + 1 + header}")
    assert bad[order[first]][1] in str(error.value)
    skipped = []
    kept, images = _read(path, skip_row=skipped.append, block_bytes=block_bytes)
    assert [s.split(": row ")[1].split()[0].rstrip(":") for s in skipped] == [
        str(b + 1 + header) for b in bad_at
    ]
    assert all(message in s for s, (_, message) in zip(skipped, (bad[order[b]] for b in bad_at), strict=True))
    good_at = [position for position in range(len(rows)) if position not in bad_at]
    np.testing.assert_array_equal(kept, good_at)  # the others keep their row numbers
    expected = np.array([[int(c) for c in rows[p]] for p in good_at]) / 255.0
    np.testing.assert_allclose(images, expected, rtol=1e-6)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=400),
        st.text(alphabet="0123456789,,,\n\n\r.-e x\"'#", max_size=400).map(str.encode),
    ),
    skip=st.booleans(),
    block_bytes=st.integers(1, 64),
)
def test_any_bytes_as_a_csv_give_images_or_one_input_error(scratch, raw, skip, block_bytes):
    path = scratch / "fuzz.csv"
    path.write_bytes(raw)
    skipped = []
    with memory_cap():
        try:
            rows, _ = _read(path, skip_row=skipped.append if skip else None, block_bytes=block_bytes)
        except InputError as error:
            _check_error(error, path)
            return
    assert len(rows) or skipped  # rows were read, or every one was bad and reported
    assert all(message.startswith(f"{path}: row ") and "\n" not in message for message in skipped)


def test_a_row_without_end_is_refused_not_buffered(tmp_path):
    path = tmp_path / "long.csv"
    path.write_bytes(b"1,2,3,4,5,6\n" + b"7" * (csvfiles.CSV_BLOCK_BYTES * 3))
    with memory_cap(), pytest.raises(InputError) as error:
        _read(path)
    _check_error(error.value, path, "row 2 is longer than 1 MiB")


def test_an_empty_csv_has_no_data_rows(tmp_path):
    for text in ("", ",".join(f"pixel{i}" for i in range(PIXELS)) + "\n"):
        (tmp_path / "empty.csv").write_text(text)
        with pytest.raises(InputError) as error:
            _read(tmp_path / "empty.csv")
        _check_error(error.value, tmp_path / "empty.csv", "no data rows")


# --- arrays -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64, np.int32, bool])
def test_arrays_are_read_in_chunks_as_a_whole(tmp_path, dtype):
    array = np.random.default_rng(0).integers(0, 2 if dtype is bool else 256, (250, *SHAPE))
    array = (array / 255.0 if dtype in (np.float32, np.float64) else array).astype(dtype)
    np.save(tmp_path / "a.npy", array)
    chunks = list(read_chunks(tmp_path / "a.npy", SHAPE, chunk_rows=64))
    assert [len(c.rows) for c in chunks] == [64, 64, 64, 58] and chunks[-1].end == 250
    expected = array.reshape(250, -1) / (255.0 if dtype in (np.uint8, np.int32) else 1.0)
    _, images = _read(tmp_path / "a.npy")
    np.testing.assert_allclose(images, expected, rtol=1e-6)


# --- prediction ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(default_run):
    return load_run(default_run)


@pytest.fixture(scope="module")
def digits(tmp_path_factory, mnist_splits):
    """1,000 MNIST test digits as a .npy and as a Kaggle CSV, and their labels."""
    folder = tmp_path_factory.mktemp("digits")
    test = mnist_splits[1]
    images = test.images[:1000].numpy()
    np.save(folder / "digits.npy", images)
    header = ",".join(f"pixel{i}" for i in range(784))
    np.savetxt(
        folder / "digits.csv", images.reshape(1000, -1), fmt="%d", delimiter=",", header=header, comments=""
    )
    return folder, test.labels[:1000].numpy()


def _predict(run, files, fmt, **options) -> tuple[str, object]:
    out = io.BytesIO()
    tally = predict_files(run, [Path(f) for f in files], out, fmt, **options)
    return out.getvalue().decode(), tally


@pytest.mark.parametrize("name", ["digits.npy", "digits.csv"])
def test_chunked_predictions_are_the_models(run, digits, name, monkeypatch):
    # small chunks: the output is what the model predicts for all the images at once, in order
    monkeypatch.setattr(inputs, "ARRAY_CHUNK_ROWS", 96)
    monkeypatch.setattr(csvfiles, "CSV_BLOCK_BYTES", 50_000)
    folder, labels = digits
    text, tally = _predict(run, [folder / name], kaggle_csv(run.class_names))
    lines = text.splitlines()
    assert lines[0] == "ImageId,Label" and tally.predicted == 1000 and text.count("\r\n") == 1001
    images, _ = load_inputs([folder / name])
    expected = run.model.predict(images, run.threshold).numpy()
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(1, 1001))
    got = np.array([int(line.split(",")[1]) for line in lines[1:]])
    assert np.all((got == expected) | _near_tie(run, images))
    assert np.mean(got == labels) > 0.9


def _near_tie(run, images) -> np.ndarray:
    """Which images have their two largest logits within float32 rounding of each other: uint8
    chunks and float32 batches may then decide differently, both correctly."""
    top = run.model(images).topk(2, dim=1).values
    return (top[:, 0] - top[:, 1] < 1e-4).numpy()


def test_json_lines_are_what_json_dumps_writes(run, digits):
    from torchlogreg.training.evaluation import top_k

    folder, _ = digits
    text, _ = _predict(run, [folder / "digits.npy"], json_lines(run.class_names, 3))
    images, names = load_inputs([folder / "digits.npy"])
    results = top_k(run.model, images, run.class_names, 3)  # what predict wrote before chunking
    for line, name, result, tie in zip(
        text.splitlines(), names, results, _near_tie(run, images), strict=True
    ):
        got = json.loads(line)
        assert line == json.dumps(got)  # the bytes json.dumps writes for that object
        assert list(got) == ["file", "label", "index", "probability", "top_k"] and got["file"] == name
        assert tie or (got["label"], got["index"]) == (result["label"], result["index"])
        assert got["probability"] == pytest.approx(result["probability"], abs=1e-5)
        assert [t["probability"] for t in got["top_k"]] == pytest.approx(
            [t["probability"] for t in result["top_k"]], abs=1e-5
        )


def test_skip_bad_takes_a_bad_files_lines_back_out(run, tmp_path, digits, monkeypatch):
    # a file found bad after some of its chunks were written leaves no line in the output
    monkeypatch.setattr(inputs, "ARRAY_CHUNK_ROWS", 10)
    folder, _ = digits
    late = np.random.default_rng(0).random((30, 28, 28)).astype(np.float32)
    late[25, 0, 0] = 2.0  # found in the third chunk
    np.save(tmp_path / "late.npy", late)
    good = folder / "digits.npy"
    with pytest.raises(InputError, match=r"late.npy: float arrays must hold values in \[0, 1\]"):
        _predict(run, [good, tmp_path / "late.npy", good], kaggle_csv(run.class_names))
    said = []
    files, fmt = [good, tmp_path / "late.npy", good], kaggle_csv(run.class_names)
    text, tally = _predict(run, files, fmt, skip_bad=True, report=said.append)
    ids = [int(line.split(",")[0]) for line in text.splitlines()[1:]]
    assert ids == [*range(1, 1001), *range(1002, 2002)]  # the bad file keeps one ImageId, unused
    assert (tally.predicted, tally.skipped_files, tally.skipped_rows) == (2000, 1, 0)
    assert len(said) == 1 and said[0].startswith(f"skipped {tmp_path / 'late.npy'}: float arrays")
    last, _ = _predict(run, [good, tmp_path / "late.npy"], kaggle_csv(run.class_names), skip_bad=True)
    assert last == text[: len(last)] and len(last.splitlines()) == 1001  # nothing of it at the end either


def test_nothing_to_predict_is_an_error(run, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(InputError, match="nothing to predict: every input was bad"):
        _predict(run, [tmp_path / "bad.png"], kaggle_csv(run.class_names), skip_bad=True)


def test_the_progress_bar_goes_to_stderr_only(run, digits, capsys):
    folder, _ = digits
    text, _ = _predict(run, [folder / "digits.csv"], kaggle_csv(run.class_names), progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "predicting" in captured.err and len(text.splitlines()) == 1001

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    files = [folder / "digits.csv"]
    assert not show_progress(files, io.StringIO())  # not a terminal: never
    assert show_progress(files * 400, Terminal()) and not show_progress(files, Terminal())


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as file:
        file.write(b"half")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_output(target) as file:
        file.write(b"whole")
    assert target.read_bytes() == b"whole" and list(tmp_path.iterdir()) == [target]


# --- the command: bad files among good ones -----------------------------------------------------------
def _damaged(kind: str, raw: bytes, cut: int) -> tuple[str, bytes]:
    """A damaged file of `kind`: (name, bytes)."""
    if kind == "truncated.npy":
        return kind, raw[: min(cut, len(raw) - 1)]
    if kind == "random.png":
        return kind, b"\x89PNG\r\n\x1a\n" + raw[cut % 64 :][:200]
    if kind == "ragged.csv":  # a good row, then one of 1 to 783 cells
        return kind, b"\n".join([b",".join([b"0"] * 784), b",".join([b"7"] * (1 + cut % 783))]) + b"\n"
    return kind, b"\x93NUMPY" + raw[cut % 200 :][:100]  # "header.npy": a damaged header


@FUZZ
@given(
    kind=st.sampled_from(["truncated.npy", "random.png", "ragged.csv", "header.npy"]),
    cut=st.integers(0, 10_000),
    position=st.integers(0, 2),
)
def test_a_bad_file_among_good_ones(default_run, scratch, kind, cut, position):
    folder = scratch / "cli"
    folder.mkdir(exist_ok=True)
    for stale in folder.iterdir():
        stale.unlink()
    good = np.random.default_rng(cut).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(folder / "good.npy", good)
    name, data = _damaged(kind, (folder / "good.npy").read_bytes(), cut)
    (folder / name).write_bytes(data)
    files = [str(folder / "good.npy")] * 2
    files.insert(position, str(folder / name))
    out, err = io.StringIO(), io.StringIO()
    command = ["predict", str(default_run), *files, "--output", str(folder / "out.csv")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(command)
    # by default: exit 1, one line naming the bad file, and no output file, not even a temporary one
    assert code == 1 and len(err.getvalue().splitlines()) == 1 and name in err.getvalue()
    assert sorted(p.name for p in folder.iterdir()) == sorted({"good.npy", name})
    err = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*command, "--skip-bad"])
    lines = err.getvalue().splitlines()
    assert (
        code == 0 and len(lines) >= 2 and lines[-1].endswith("; predicted " + str(6 + (kind == "ragged.csv")))
    )
    assert all(line.startswith(f"skipped {folder / name}") for line in lines[:-1])
    ids = [int(row.split(",")[0]) for row in (folder / "out.csv").read_text().splitlines()[1:]]
    assert len(ids) == 6 + (kind == "ragged.csv") and ids == sorted(ids)


# --- memory ---------------------------------------------------------------------------------------------
# the CLI in a fresh process, printing its peak RSS (VmHWM) last on stderr; the kernel's ru_maxrss
# would not do: a child's starts from its parent's RSS at fork (this whole test process)
PEAK_WRAPPER = (
    "import sys; from torchlogreg.apps.cli import main; code = main(sys.argv[1:]); "
    "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).strip(), file=sys.stderr); "
    "sys.exit(code)"
)


def _peak_rss_mb(args: list[str], wrapper: str = PEAK_WRAPPER) -> float:
    """Peak RSS in MB of `torchlogreg ARGS` run in a fresh process."""
    done = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.splitlines()[-1].split()[1]) / 1024


def _kaggle_csv(path: Path, rows: int, sample: np.ndarray) -> None:
    """A Kaggle-style CSV of `rows` rows: `sample`'s rows (uint8 784 pixels) over and over."""
    buffer = io.BytesIO()
    np.savetxt(buffer, sample, fmt="%d", delimiter=",")
    with open(path, "wb") as file:
        file.write(",".join(f"pixel{i}" for i in range(784)).encode() + b"\n")
        for _ in range(rows // len(sample)):
            file.write(buffer.getvalue())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc (Linux)")
def test_memory_does_not_grow_with_the_csv(default_run, mnist_splits, wrapper=PEAK_WRAPPER):
    # 200,000 rows hold 157 MB of pixels as uint8 (627 MB as float32): were they loaded at once, the
    # peak would grow by that much over 20,000 rows; streamed, it does not grow
    sample = mnist_splits[1].images[:100].reshape(100, -1).numpy()
    peaks = {}
    with tempfile.TemporaryDirectory() as scratch:
        for rows in (20_000, 200_000):
            path, out = Path(scratch) / f"{rows}.csv", Path(scratch) / "out.csv"
            _kaggle_csv(path, rows, sample)
            args = [
                "predict",
                str(default_run),
                str(path),
                "--output",
                str(out),
                "--overwrite",
                "--device",
                "cpu",
            ]
            peaks[rows] = _peak_rss_mb(args, wrapper)
            assert len(out.read_text().splitlines()) == rows + 1
            path.unlink()
    assert peaks[200_000] - peaks[20_000] < 50, peaks
