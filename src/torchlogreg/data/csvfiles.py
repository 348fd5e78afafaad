"""CSV files of one image per row: one column per pixel (row by row) and perhaps a label column. The
one CSV reader, for predict, serve's callers and `load_inputs` (labels optional, not used) and for
`data convert --from-csv` (labels required), so a file means the same everywhere:

- Cells are separated by commas, semicolons or tabs: whichever the first line holds most of. They
  may be quoted as Python's csv module reads them ("0","12": pandas' QUOTE_ALL).
- The first line is a header when a cell of it is not a number (but not pixels with one class name
  among them) or its numbers count up by one (`csvlayout.first_line`). The label column is the one
  `label_column` names (an index or a header name), else a header column named like
  csvlayout.CSV_LABEL_NAMES; when the file must have labels or has one column more than the pixels
  and none is named, it is the one header name unlike the others' (`digit` among `px0`..`px63`), or
  in a file without a header the first (as Kaggle writes it). A header that leaves it open is
  refused, never guessed.
- Pixels are 0..255, or fractions in [0, 1] throughout: a file whose every pixel lies in [0, 1] is
  fractions (0..255 pixels that never pass 1 would be a black image), so a file of only 0s and 1s
  (binarized digits) reads 1 as full intensity, and a file with a pixel over 1 is 0..255. The first
  row only one scale fits settles it; before rows of 0s and 1s are handed on with nothing settled,
  the rest of the file is scanned for that row (a pass that stops at it), so they are read in the
  file's scale wherever it is settled. A row of the other scale than the one settled is a bad row
  naming the row that set it: one scale is never silently chosen for rows that mean the other.
- Labels (when wanted) are integers in 0..readers.MAX_LABEL, or for `data convert` class names
  throughout (the file's first label decides; see CsvRows' `names`).

Memory does not grow with a file: the text is parsed CSV_BLOCK_BYTES of whole lines at a time.
Kaggle-style rows (integers 0..255, quoted or not) take a vectorised NumPy parse of the bytes
(csvparse.py, about 20x np.loadtxt); other numbers go through np.loadtxt, and a block that fails
is read cell by cell to name its bad rows. The pixel scale's rules are csvscale.py's.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..base.exceptions import DataError, InputError, TorchLogRegError
from .csvlayout import CsvLayout, csv_cells, csv_layout, first_line, is_number
from .csvparse import csv_blocks, numbered_labels, uint8_cells, unquoted
from .csvscale import BYTES, FRACTIONS, ONLY_0_1, PixelScale, near_black
from .readers import MAX_LABEL, byte_size, one_line, open_regular

CSV_BLOCK_BYTES = 1024 * 1024  # CSV text parsed at a time (whole lines): ~550 rows of 28x28 pixels
LOOK_AHEAD_BYTES = 64 * 1024  # CSV text scanned at a time for the row that settles the pixel scale:
# most files settle in their first row, so little is read twice (and blocks this small scan fastest)
CSV_CELL_BYTES = 32  # a CSV row may take this many bytes per cell (or CSV_BLOCK_BYTES) before it is refused
MAX_CSV_COLUMNS = 2**20 + 1  # columns a first line may have when the image size is not given (convert)


@dataclasses.dataclass(frozen=True)
class CsvBlock:
    """Consecutive good rows of a CSV."""

    rows: np.ndarray  # each one's data row, from 0 (a bad row left out leaves a gap)
    pixels: np.ndarray  # (len(rows), n_pixels): uint8 0..255, or float32 in [0, 1]
    labels: np.ndarray | None  # (len(rows),) int64 class numbers, when labels were asked for
    end: int  # data rows read so far, bad ones included
    nbytes: int  # bytes of the file this block took


def csv_header(path: str | os.PathLike) -> list[str] | None:
    """The names of the CSV `path`'s header line, or None where it starts with data (csv_layout's rule)."""
    with open_regular(Path(path), DataError) as handle:
        first = handle.readline(CSV_BLOCK_BYTES).removeprefix(b"\xef\xbb\xbf")
    _, fields, header = first_line(first.decode("utf-8", "replace"))
    return fields if header else None


def describe_csv(
    path: str | os.PathLike,
    n_pixels: int | None = None,
    label_column: str | None = None,
    named: bool | None = None,
) -> tuple[CsvLayout, PixelScale, bool]:
    """(the layout, the pixel scale: its `describe()` says how the pixels are read) of the labelled
    CSV `path` as `CsvRows` reads it for `data convert`, `n_pixels` as the pixel columns it must hold
    (a test file: the training file's; it may then lack the label column). Reads up to the row that
    settles the scale: the first block of most files, all of a file of 0s and 1s (which is then
    settled as fractions: a reader given this scale need not scan it again), and whether its labels
    are class names (`named`: as CsvRows takes it)."""
    path = Path(path)
    reader = CsvRows(
        path, None, n_pixels=n_pixels, label_column=label_column, labels=True, error=DataError, names={},
        named=named,
    )  # fmt: skip
    with open_regular(path, DataError) as handle:
        layout = reader.read_layout(handle)
        reader.settle_scale(handle)
    return layout, reader.scale, bool(reader.named)


class CsvRows:
    """One CSV's rows as blocks (see the module's docstring) of images of `image_shape` (H, W), or of
    `n_pixels` or as many pixels as the first line has columns after the label when None (set
    `image_shape` once known, for messages). Bad rows are raised as `error`, or given to `skip_row`
    (a one-line message) and left out; `labels` asks for the label column's values. `whole`: 0..255
    pixels must be whole numbers (a dataset stores 8-bit pixels: 5.1 would be stored as 5), else
    they are read as they are. `names` (a dict, shared by the files of one dataset) lets labels be
    class names ('cat', 'seven'): each is numbered in order of first appearance in `names`, where
    `named` says the file's labels are names (None: decided by its first row's, a name when not a
    number; every label of a named file is a name, '3' among them)."""

    def __init__(
        self,
        path: Path,
        image_shape: tuple[int, int] | None,
        *,
        n_pixels: int | None = None,
        label_column: str | None = None,
        labels: bool = False,
        skip_row: Callable[[str], None] | None = None,
        error: type[TorchLogRegError] = InputError,
        whole: bool = False,
        names: dict[str, int] | None = None,
        named: bool | None = None,
        headerless: int = 0,
    ):
        self.path, self.image_shape, self.label_column, self.whole = path, image_shape, label_column, whole
        self.headerless = headerless  # (predict: where the run's training CSV held its label)
        self.names, self.named = names, named
        self.n_pixels = image_shape[0] * image_shape[1] if image_shape else n_pixels
        self.want_labels, self.skip_row, self.error = labels, skip_row, error
        self.layout: CsvLayout | None = None  # read from the first line
        self._pending, self._line = b"", 1  # the first line when it is data, and its number
        self.scale = PixelScale()
        self.rows = 0  # data rows read so far
        self.largest = 0.0  # the largest 0..255 pixel read so far
        self.max_line = CSV_CELL_BYTES * (self.n_pixels + 1 if self.n_pixels else MAX_CSV_COLUMNS)
        self.max_line = max(CSV_BLOCK_BYTES, self.max_line)
        self._handle = None  # the stream `blocks` reads, for looking ahead
        self._offset: int | None = None  # where the lines after the last block read begin, if seekable
        self._last: tuple[int, bytes] = (1, b"")  # the last block read and the number of its first line

    def read_layout(self, handle) -> CsvLayout:
        """Reads the first line of a binary stream at the file's start: the file's layout."""
        first = handle.readline(self.max_line + 1).removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
        if not first.strip():
            raise self.error(f"{self.path}: no data rows" + (" (the first line is empty)" if first else ""))
        if len(first) > self.max_line:
            raise self.error(f"{self.path}: row 1 is longer than {byte_size(self.max_line)}; is this a CSV?")
        try:
            text = first.decode("utf-8")
            self.layout = csv_layout(
                text, self.path, self.n_pixels, self.label_column, self.want_labels, self.headerless
            )
        except UnicodeDecodeError as failure:
            raise self.error(f"{self.path}: cannot read it as a text CSV ({one_line(failure)})") from None
        except InputError as failure:
            raise self.error(str(failure)) from None
        self.max_line = max(CSV_BLOCK_BYTES, CSV_CELL_BYTES * (self.layout.width + 1))
        self._pending, self._line = (b"", 2) if self.layout.header else (first, 1)
        if handle.seekable():
            self._offset, self._last = handle.tell() - len(self._pending), (self._line, b"")
        return self.layout

    def blocks(self, handle, block_bytes: int | None = None) -> Iterator[CsvBlock]:
        """The file's good rows, block by block, from a binary stream at its start (or just after
        `read_layout` read its first line)."""
        if self.layout is None:
            self.read_layout(handle)
        self._handle = handle
        lines = csv_blocks(
            handle, self._pending, self._line, block_bytes or CSV_BLOCK_BYTES, self.max_line, self.path
        )
        try:
            for first_line, block in lines:
                if self._offset is not None:
                    self._offset += len(block)
                    self._last = first_line, block
                yield self._block(block, first_line)
        except InputError as failure:
            raise self.error(str(failure)) from None
        if self.rows == 0:
            raise self.error(f"{self.path}: no data rows")

    def settle_scale(self, handle, first: int = 0) -> None:
        """Settles the file's pixel scale by its rows after the last block read (of `handle`, if it
        can seek): by the first that only one scale fits, else, every pixel being 0 or 1, as fractions
        from row `first` (the module's rule). The stream is left where it was."""
        if self._offset is not None:
            try:
                self._look_ahead(handle)
            except InputError as failure:  # a line too long to be a row
                raise self.error(str(failure)) from None
        if self.scale.scale is None:
            self.scale.settle(FRACTIONS, first, f"holds {ONLY_0_1}")

    def _block(self, block: bytes, line: int) -> CsvBlock:
        """The good rows of `block` (whole lines from `line`), bad ones raised or skipped."""
        size = len(block)
        bad: list[tuple[int, str]] = []
        lines, parsed, cells = self._rows_of(block, line, bad)
        label = self.layout.label
        pixels = np.delete(cells, label, axis=1) if label is not None else cells
        kept = self._check_labels(cells[:, label], lines[parsed], bad) if self.want_labels else None
        kept, pixels = self.scale.ready(
            pixels, lines[parsed], bad, kept, whole=self.whole, settle_rest=self._settle_rest
        )
        if self.scale.scale == BYTES and len(pixels):  # (uint8, or float32 / 255 where not whole)
            top = float(pixels.max())
            self.largest = max(self.largest, top if pixels.dtype == np.uint8 else round(top * 255, 4))
        for number, message in sorted(bad):
            if self.skip_row is None:
                raise self.error(f"{self.path}: row {number}{message}")
            self.skip_row(f"{self.path}: row {number}{message}")
        labels = cells[kept, label].astype(np.int64) if self.want_labels else None
        rows = self.rows + np.flatnonzero(parsed)[kept]
        self.rows += len(lines)
        return CsvBlock(rows, pixels, labels, self.rows, size)

    def dim_note(self) -> str:
        """A line for a file read as 0..255 whose pixels stay near black (binarized digits with one
        stray 2, or 0..16 digits), else "": the file's scale was settled by its largest values, and
        a model scores such images as dark pictures."""
        note = near_black(self.largest) if self.scale.scale == BYTES else ""
        return f"{self.path}: {note}" if note else ""

    def _rows_of(self, block: bytes, line: int, bad: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(line numbers of the data lines of `block`, which of them parsed, their cells): by the
        vectorised parse (uint8) when it takes them, else by `_parse` (float64)."""
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if self.names is not None and self.layout.label is not None:
            block, self.named = numbered_labels(block, self.layout, self.names, self.named, self.path)
        plain = unquoted(block, self.layout.delimiter) if b'"' in block else block
        cells = uint8_cells(plain, self.layout.width, self.layout.delimiter) if plain else None
        if cells is None:
            return self._parse(block, line, bad)
        return np.arange(line, line + len(cells)), np.ones(len(cells), bool), cells

    def _parse(self, block: bytes, line: int, bad: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(line numbers of the data lines, which of them parsed, their cells as float64) for a block
        the fast parse refused; blank lines are not rows."""
        data = [(n, raw) for n, raw in enumerate(block.split(b"\n")[:-1], start=line) if raw.strip()]
        lines = np.array([n for n, _ in data], dtype=np.int64)
        width = self.layout.width
        if not data:
            return lines, np.zeros(0, bool), np.zeros((0, width))
        try:
            texts = [raw.decode("utf-8") for _, raw in data]
            delimiter, quote = self.layout.delimiter, '"' if b'"' in block else None
            cells = np.loadtxt(
                texts, delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None, quotechar=quote
            )
            if cells.shape == (len(data), width):
                return lines, np.ones(len(data), bool), cells
        except (ValueError, UnicodeDecodeError):
            pass
        parsed, rows = np.zeros(len(data), bool), []
        for i, (number, raw) in enumerate(data):
            problem, values = self._cells(raw)
            if problem:
                bad.append((number, problem))
            else:
                parsed[i] = True
                rows.append(values)
        return lines, parsed, np.array(rows, dtype=np.float64).reshape(-1, width)

    def _cells(self, raw: bytes) -> tuple[str, list[float]]:
        """What is wrong with one row (or "") and its values."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return " is not UTF-8 text", []
        delimiter = self.layout.delimiter
        cells = csv_cells(text, delimiter) if '"' in text else text.split(delimiter)
        if len(cells) != self.layout.width:
            label = "a label and " if self.layout.label is not None else ""
            of = f" of {self.image_shape[0]}x{self.image_shape[1]} images" if self.image_shape else ""
            expected = f"{self.layout.width} ({label}{self.layout.n_pixels} pixels{of})"
            return f" has {len(cells)} cells, expected {expected}", []
        label = self.layout.label
        if label is not None and not self.want_labels:  # (predict: the label column is not read)
            cells[label] = "0"
        try:
            return "", [float(cell) for cell in cells]
        except ValueError:
            at = next(i for i, c in enumerate(cells) if not is_number(c))
            if at == label:
                name = repr(self.layout.fields[label]) if self.layout.header else str(label)
                if self.named:  # (a blank name: `numbered_labels` left it)
                    return f": its label (column {name}) is blank; each row of class names names one", []
                return (
                    f": label {cells[at][:20]!r} (column {name}) is not a class number, as the file's "
                    f"first label is; labels are class numbers (0..{MAX_LABEL}) or class names throughout"
                ), []
            return f": {cells[at][:20]!r} is not a number", []

    def _check_labels(self, labels: np.ndarray, lines: np.ndarray, bad: list) -> np.ndarray:
        """Which rows hold a class number (an integer 0..MAX_LABEL) as their label; the others are bad."""
        if labels.dtype == np.uint8:
            return np.ones(len(labels), bool)
        with np.errstate(invalid="ignore"):
            good = (labels >= 0) & (labels <= MAX_LABEL) & (labels == np.rint(labels))
        for i in np.flatnonzero(~good):
            rule = f"labels must be integers in 0..{MAX_LABEL}"
            bad.append((int(lines[i]), f": label {labels[i]:g} is not a class number; {rule}"))
        return good

    def _settle_rest(self, first: int) -> None:
        """`settle_scale` by the stream `blocks` reads (rows of 0s and 1s from row `first` leave the
        scale open)."""
        self.settle_scale(self._handle, first)

    def _look_ahead(self, handle) -> None:
        """Settles the scale by the first good row after the last block read (of the seekable
        `handle`) that only one scale fits, if any; the stream is left where it was."""
        back, line = handle.tell(), self._last[0] + self._last[1].count(b"\n")  # (counted only here)
        try:
            handle.seek(self._offset)
            rest = csv_blocks(handle, b"", line, LOOK_AHEAD_BYTES, self.max_line, self.path)
            for first_line, block in rest:
                self._settle_by(block, first_line)
                if self.scale.scale is not None:
                    return
        finally:
            handle.seek(back)

    def _settle_by(self, block: bytes, line: int) -> None:
        """Settles the scale by the first good row of `block` (whole lines from `line`) that only
        one scale fits, if any; nothing is reported (the rows are read again, in order)."""
        lines, parsed, cells = self._rows_of(block, line, [])
        label = self.layout.label
        pixels = (np.delete(cells, label, axis=1) if label is not None else cells).astype(np.float64)
        kept = np.ones(len(pixels), bool)
        if self.want_labels and label is not None:
            kept = self._check_labels(cells[:, label], lines[parsed], [])
        kept = self.scale.in_range(pixels, lines[parsed], [], kept)
        self.scale.off_scale(pixels, kept, lines[parsed], [])
