"""The one CSV reader (csvfiles), as predict and `data convert` both use it: delimiters, headers and
label columns decided the same way, labels checked when wanted, and one pixel scale per file (a
row of the other scale is refused, naming the row that set it). Predict's streaming, fuzzing and
memory tests are in test_inputs.py, convert's in test_convert.py."""

import numpy as np
import pytest

from torchlogreg import ConfigError, DataError, InputError
from torchlogreg.data.convert import convert
from torchlogreg.data.csvfiles import CsvRows, csv_layout
from torchlogreg.data.inputs import read_chunks


def _rows(path, shape=(2, 2), block_bytes=None, **options):
    """(the blocks' pixels as float in [0, 1] stacked, their labels or None) of the CSV `path`."""
    reader = CsvRows(path, shape, **options)
    with open(path, "rb") as handle:
        blocks = list(reader.blocks(handle, block_bytes))
    pixels = np.concatenate([b.pixels / 255.0 if b.pixels.dtype == np.uint8 else b.pixels for b in blocks])
    labels = np.concatenate([b.labels for b in blocks]) if options.get("labels") else None
    return pixels, labels


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_delimiter_is_the_one_the_first_line_holds_most_of(tmp_path, delimiter):
    path = tmp_path / "rows.csv"
    path.write_text(
        f"label{delimiter}a{delimiter}b{delimiter}c{delimiter}d\n" + delimiter.join("70255") + "\n"
    )
    pixels, labels = _rows(path, labels=True)
    assert labels.tolist() == [7] and np.allclose(pixels, [[0, 2 / 255, 5 / 255, 5 / 255]])


@pytest.mark.parametrize(
    "first,n_pixels,label_column,label",
    [
        ("a,b,target,c,d", 4, None, 2),  # named in the header
        ("1,2,3,4,5", 4, None, 0),  # one column more than pixels: the first
        ("1,2,3,4", 4, None, None),  # as many columns as pixels: no label
        ("1,2,3,4,5", None, None, 0),  # labels required: the first unless named
        ("a,b,digit,c,d", None, "digit", 2),  # named by the caller
        ("1,2,3,4,5", None, "-1", 4),  # an index from the end
    ],
)
def test_the_label_column(tmp_path, first, n_pixels, label_column, label):
    layout = csv_layout(first, tmp_path / "x.csv", n_pixels, label_column)
    assert layout.label == label and layout.n_pixels == 4


def test_a_label_column_that_is_not_there_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="label_column 'digit' is not a column of .*x.csv; columns: a, b"):
        csv_layout("a,b,c", tmp_path / "x.csv", None, "digit")
    with pytest.raises(InputError, match="3 columns, expected 4 pixel columns"):
        csv_layout("1,2,3", tmp_path / "x.csv", 4)


@pytest.mark.parametrize(
    "lines,row,fragment",
    [
        (["0.5,0,0,0", "200,0,0,0"], 2, "pixel 0 is 200 but row 1 holds fractions in [0, 1]"),
        (["200,0,0,0", "0.5,0,0,0"], 2, "pixel 0 is 0.5 but row 1 holds values 0..255"),
        (
            ["0,0,0,0", "0,1,0,0", "0.5,0,0,0"],
            3,
            "pixel 0 is 0.5 but row 2 was read as 0..255 (its 1s as 1/255)",
        ),
    ],
)
@pytest.mark.parametrize("block_bytes", [1, None])  # a block per row, or one for the file
def test_rows_of_another_pixel_scale_are_refused_naming_the_row_that_set_it(
    tmp_path, lines, row, fragment, block_bytes
):
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    if block_bytes is None and row == 3:
        # in one block, the fraction settles the scale for the rows before it: 0s and 1s fit both
        pixels, _ = _rows(path, block_bytes=block_bytes)
        assert np.allclose(pixels, [[0, 0, 0, 0], [0, 1, 0, 0], [0.5, 0, 0, 0]])
        return
    with pytest.raises(InputError) as error:
        _rows(path, block_bytes=block_bytes)
    assert str(error.value) == (
        f"{path}: row {row}: {fragment}; use one scale for the whole file, 0..255 or fractions in [0, 1]"
    )


def test_a_mixed_row_is_skipped_by_predict_and_refused_by_convert(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("7,0,0.5,0,1\n3,0,0.25,0,0\n7,0,200,0,0\n3,0,0.75,1,0\n")
    skipped = []
    chunks = list(read_chunks(path, (2, 2), skip_row=skipped.append))
    assert [row for chunk in chunks for row in chunk.rows.tolist()] == [0, 1, 3]
    assert skipped == [f"{path}: row 3: pixel 1 is 200 but row 1 holds fractions in [0, 1]; use one "
                       "scale for the whole file, 0..255 or fractions in [0, 1]"]  # fmt: skip
    with pytest.raises(DataError, match=r"mixed.csv: row 3: pixel 1 is 200 but row 1 holds fractions"):
        convert(tmp_path / "out", csv=(path, path))
    assert not (tmp_path / "out").exists()


def test_one_scale_reads_the_same_for_predict_and_convert(tmp_path):
    # fractions throughout and 0..255 throughout: the same pixels, by either path
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (12, 2, 2)), np.arange(12) % 3
    for name, values, fmt in (("bytes.csv", images, "%d"), ("fractions.csv", images / 255, "%.6f")):
        np.savetxt(tmp_path / name, np.column_stack([labels, values.reshape(12, -1)]), fmt=fmt, delimiter=";")
        pixels, read_labels = _rows(tmp_path / name, labels=True)
        assert np.allclose(pixels, images.reshape(12, -1) / 255, atol=1e-6)
        assert read_labels.tolist() == labels.tolist()
        written = convert(tmp_path / name.replace(".csv", ""), csv=(tmp_path / name, tmp_path / name))
        stored = np.load(written["out"] / "test-images.npy")
        assert np.array_equal(stored, images.astype(np.uint8))


@pytest.mark.parametrize("label", ["-1", "2.5", "100000", "nan"])
def test_labels_that_are_no_class_numbers_are_refused_when_wanted(tmp_path, label):
    path = tmp_path / "labels.csv"
    path.write_text(f"1,0,0,0,0\n{label},0,0,0,0\n")
    with pytest.raises(
        InputError, match=r"row 2: label .* is not a class number; labels must be integers in 0\.\.99999"
    ):
        _rows(path, labels=True)
    assert len(_rows(path)[0]) == 2  # predict does not use them


def test_a_first_line_longer_than_any_row_is_refused_before_it_is_held(tmp_path, monkeypatch):
    # convert knows no image size until the first line is read: that line is capped too
    monkeypatch.setattr("torchlogreg.data.csvfiles.MAX_CSV_COLUMNS", 1000)
    path = tmp_path / "long.csv"
    path.write_bytes(b"1," * 2**20 + b"1\n")
    with pytest.raises(DataError, match=r"long.csv: row 1 is longer than 1 MiB; is this a CSV\?"):
        convert(tmp_path / "out", csv=(path, path))
