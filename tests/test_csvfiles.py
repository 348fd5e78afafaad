"""The one CSV reader (csvfiles), as predict and `data convert` both use it: delimiters, quoting,
headers and label columns decided the same way, labels checked when wanted, and one pixel scale per
file (a file of only 0s and 1s is fractions; a row of the other scale is refused, naming the row
that set it). Predict's streaming, fuzzing and memory tests are in test_inputs.py, convert's in
test_convert.py, predict on CSVs end to end in test_predict_csv.py."""

import csv
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchlogreg import ConfigError, DataError, InputError
from torchlogreg.data.convert import convert
from torchlogreg.data.csvfiles import CsvRows
from torchlogreg.data.csvlayout import csv_layout
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
        ("px0,px1,px2,px3,digit", 4, None, 4),  # the one header name unlike the others
        ("px0,px1,px2,px3,digit", None, None, 4),
        ("id,pixel0,pixel1,pixel2,pixel3", 4, "id", 0),  # (a column named id is the label only as asked)
        ('"label","px0","px1","px2","px3"', None, None, 0),  # quoted names
        ('"a,b",c,d,e,label', None, None, 4),  # a quoted comma is no delimiter
    ],
)
def test_the_label_column(tmp_path, first, n_pixels, label_column, label):
    layout = csv_layout(first, tmp_path / "x.csv", n_pixels, label_column)
    assert layout.label == label and layout.n_pixels == 4


@pytest.mark.parametrize(
    "first,n_pixels,error,message",
    [
        ("a,b,c,d,e", None, ConfigError, "no column is named label, labels, class, target or y, and none "
         "is named unlike the others; give label_column=NAME (a header name, or an index: -1 is the last)"),
        ("px0,px1,px2,px3,px4", 4, InputError, "5 columns, one more than the 4 pixels, but no column is "
         "named label, labels, class, target or y, and none is named unlike the others; give "
         "label_column (predict: --label-column), name it label in the header, or remove it"),
        ("id,pixel0,pixel1,pixel2,pixel3", 4, InputError, "column 'id' numbers the rows, it is not a pixel; "
         "write the file without it (pandas: df.drop(columns='id').to_csv(path, index=False))"),
    ],
)  # fmt: skip
def test_a_header_that_leaves_the_label_column_open_is_refused(tmp_path, first, n_pixels, error, message):
    # never a pixel column taken as the labels: px0 gave 17 'classes' of pixel values
    with pytest.raises(error) as raised:
        csv_layout(first, tmp_path / "x.csv", n_pixels)
    assert str(raised.value) == f"{tmp_path / 'x.csv'}: {message}"


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
        (["0,1,0,0", "0.5,0,0,0", "0,0,7,0"], 3, "pixel 2 is 7 but row 2 holds fractions in [0, 1]"),
    ],
)
@pytest.mark.parametrize("block_bytes", [1, None])  # a block per row, or one for the file
def test_rows_of_another_pixel_scale_are_refused_naming_the_row_that_set_it(
    tmp_path, lines, row, fragment, block_bytes
):
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as error:
        _rows(path, block_bytes=block_bytes)
    assert str(error.value) == (
        f"{path}: row {row}: {fragment}; use one scale for the whole file, 0..255 or fractions in [0, 1]"
    )


@pytest.mark.parametrize("block_bytes", [1, 20, None])  # a block per row, some rows, the whole file
@pytest.mark.parametrize(
    "lines,expected",
    [
        (["0,1,0,1", "1,1,0,0", "0,0,0,0"], [[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0]]),  # binarized
        (["0,1,0,1", "1,1,0,0", "0,0,0.5,0"], [[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 0.5, 0]]),  # fractions
        (["0,1,0,1", "1,1,0,0", "0,0,255,0"], [[0, 1, 0, 1], [1, 1, 0, 0], [0, 0, 255, 0]]),  # 0..255
    ],
)
def test_rows_of_0s_and_1s_take_the_files_scale_wherever_it_is_settled(
    tmp_path, lines, expected, block_bytes
):
    # a file whose every pixel lies in [0, 1] is fractions; a pixel over 1 anywhere makes it 0..255,
    # for the rows before it too, however the file is cut into blocks
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n")
    pixels, _ = _rows(path, block_bytes=block_bytes)
    assert np.allclose(pixels, np.array(expected) / (255 if "255" in lines[-1] else 1))


def test_a_binarized_csv_is_stored_and_predicted_with_1_as_full_intensity(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_text("label,a,b,c,d\n1,0,1,1,0\n0,1,0,0,1\n1,0,0,0,0\n")
    written = convert(tmp_path / "out", csv=(path, path))
    assert written["csv"][0]["pixels"] == "pixels only 0s and 1s, read as fractions (1 = full intensity)"
    stored = np.load(written["out"] / "test-images.npy").reshape(3, 4)
    assert stored.tolist() == [[0, 255, 255, 0], [255, 0, 0, 255], [0, 0, 0, 0]]
    chunk = next(read_chunks(path, (2, 2)))
    assert np.array_equal(chunk.images * 255, stored)  # predict sees what training saw


def _quoted(rows, quoting) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, quoting=quoting, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.lists(st.integers(0, 255), min_size=5, max_size=5), min_size=1, max_size=12),
    quoting=st.sampled_from([csv.QUOTE_ALL, csv.QUOTE_MINIMAL, csv.QUOTE_NONNUMERIC]),
    fractions=st.booleans(),
    header=st.booleans(),
    block_bytes=st.sampled_from([1, 7, 64, None]),
)
def test_quoted_cells_are_read_as_pythons_csv_module_reads_them(
    tmp_path, values, quoting, fractions, header, block_bytes
):
    # pandas' QUOTE_ALL ("0","12"), quoted or not, integers or fractions, in blocks of any size
    pixels = np.array(values)[:, 1:] / (255 if fractions else 1)
    rows = [[str(row[0]), *(f"{v:.6f}" if fractions else str(int(v)) for v in pixel_row)]
            for row, pixel_row in zip(values, pixels, strict=True)]  # fmt: skip
    text = _quoted(([["label", "a", "b", "c", "d"]] if header else []) + rows, csv.QUOTE_ALL if quoting ==
                   csv.QUOTE_NONNUMERIC else quoting)  # fmt: skip
    path = tmp_path / "quoted.csv"
    path.write_text(text)
    read, labels = _rows(path, block_bytes=block_bytes, labels=True)
    if pixels.max() <= 1 and not fractions:  # whole 0s and 1s only: fractions by the file's rule
        pixels = pixels * 255
    assert np.allclose(read, pixels / 255 if not fractions else pixels, atol=1e-6)
    assert labels.tolist() == [row[0] for row in values]


def test_a_quoted_cell_is_one_cell(tmp_path):
    # the quotes are read as the csv module reads them, never stripped: "1,2" is one cell, not two
    path = tmp_path / "quoted.csv"
    path.write_text('"0","1","2","3"\n"1,2","3","4","5"\n')
    with pytest.raises(InputError, match=r"row 2: '1,2' is not a number"):
        _rows(path)


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
