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
(`_uint8_cells`, about 20x np.loadtxt); other numbers go through np.loadtxt, and a block that fails
is read cell by cell to name its bad rows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..base.exceptions import DataError, InputError, TorchLogRegError
from .csvlayout import CsvLayout, csv_cells, csv_layout, first_line, is_number
from .readers import MAX_LABEL, byte_size, one_line, open_regular

PIXEL_RANGE = "0..255 (or fractions in [0, 1])"
CSV_BLOCK_BYTES = 1024 * 1024  # CSV text parsed at a time (whole lines): ~550 rows of 28x28 pixels
LOOK_AHEAD_BYTES = 64 * 1024  # CSV text scanned at a time for the row that settles the pixel scale:
# most files settle in their first row, so little is read twice (and blocks this small scan fastest)
CSV_CELL_BYTES = 32  # a CSV row may take this many bytes per cell (or CSV_BLOCK_BYTES) before it is refused
MAX_CSV_COLUMNS = 2**20 + 1  # columns a first line may have when the image size is not given (convert)
FRACTIONS, BYTES = "fractions in [0, 1]", "values 0..255"  # the two pixel scales
DIM_PIXEL = 16  # a 0..255 file whose pixels never pass this is noted as near-black (0..16: sklearn's digits)
ONLY_0_1 = "only 0s and 1s, read as fractions (1 = full intensity)"  # how a file of 0s and 1s is read
QUOTE = ord('"')


@dataclasses.dataclass(frozen=True)
class CsvBlock:
    """Consecutive good rows of a CSV."""

    rows: np.ndarray  # each one's data row, from 0 (a bad row left out leaves a gap)
    pixels: np.ndarray  # (len(rows), n_pixels): uint8 0..255, or float32 in [0, 1]
    labels: np.ndarray | None  # (len(rows),) int64 class numbers, when labels were asked for
    end: int  # data rows read so far, bad ones included
    nbytes: int  # bytes of the file this block took


def near_black(largest: float) -> str:
    """The words for 0..255 pixels whose largest is `largest`, where it is at most DIM_PIXEL (else
    ""): a model sees them as near-black pictures, and the 0..16 levels of scikit-learn's 8x8
    digits trained to 90% where the same images scaled to 0..255 reach 96%."""
    if not 1 < largest <= DIM_PIXEL:
        return ""
    return (
        f"pixels read as 0..255, the largest {largest:g}: near-black pictures to a model; if they are "
        f"levels 0..{largest:g}, multiply them by 255/{largest:g} (so that {largest:g} becomes 255; a "
        "file of fractions holds every pixel in [0, 1])"
    )


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
) -> tuple[CsvLayout, _PixelScale, bool]:
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


def _unquoted(block: bytes, delimiter: str) -> bytes | None:
    """`block` (whole lines) without the quotes around cells of 1 to 3 digits ("0","12"), which is
    how Python's csv module reads them; None when a quote does more (holds a delimiter, a point, a
    quote; opens mid-cell) or less: the general parse reads those. The fast parse takes the rest."""
    raw = np.frombuffer(block, np.uint8)
    quotes = np.flatnonzero(raw == QUOTE)
    opens, closes = quotes[0::2], quotes[1::2]
    if len(quotes) % 2:
        return None
    inside = closes - opens - 1
    if inside.min(initial=1) < 1 or inside.max(initial=1) > 3:
        return None
    edge, newline = np.uint8(ord(delimiter)), np.uint8(ord("\n"))
    before, after = raw[opens - 1], raw[closes + 1]  # -1: the block's last byte, a newline
    if not (((before == edge) | (before == newline)).all() and ((after == edge) | (after == newline)).all()):
        return None
    for k in (1, 2, 3):  # each byte between a pair of quotes is a digit
        if ((raw[opens[inside >= k] + k] - np.uint8(48)) >= 10).any():  # non-digits wrap to >= 10
            return None
    return block.translate(None, b'"')


def _uint8_cells(block: bytes, width: int, delimiter: str = ",") -> np.ndarray | None:
    """The cells of `block` (whole lines, each ending in a newline) as uint8 rows (N, `width`) when
    every cell is an integer 0..255 of 1 to 3 digits and every row has `width` cells, else None.

    Vectorised over the bytes: a cell ends at each non-digit; the number ending at each byte is that
    digit plus 10x and 100x the digits before it, as far as they are digits. About 20x np.loadtxt."""
    raw = np.frombuffer(block, np.uint8)
    digits = np.empty(len(raw) + 3, np.uint8)
    digits[:3] = 10  # three non-digits in front, so every byte can look back three
    np.subtract(raw, 48, out=digits[3:])  # '0'..'9' -> 0..9; every other byte wraps to >= 10
    is_digit = digits < 10
    ends = np.flatnonzero(~is_digit[3:])  # the byte after each cell
    if len(ends) == 0 or len(ends) % width or ends[-1] != len(raw) - 1:
        return None
    separators = raw[ends].reshape(-1, width)
    if not ((separators[:, :-1] == ord(delimiter)).all() and (separators[:, -1] == ord("\n")).all()):
        return None
    if not (is_digit[2:-1] | is_digit[3:]).all():
        return None  # two separators in a row: an empty cell
    longer = is_digit[:-3] & is_digit[1:-2]
    longer &= is_digit[2:-1]
    longer &= is_digit[3:]
    if longer.any():
        return None  # a number of 4 digits or more: the general parse decides
    digits *= is_digit  # non-digits count as 0 below
    value = digits[3:].astype(np.uint16)
    value += digits[2:-1] * np.uint8(10)
    hundreds = digits[1:-2] * is_digit[2:-1]  # only when the tens are a digit of the same cell
    value += hundreds.astype(np.uint16) * np.uint16(100)
    values = value[ends - 1]
    if values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(-1, width)


def _csv_blocks(handle, pending: bytes, line: int, block_bytes: int, max_line: int, path: Path):
    """(number of its first line, whole lines ending in a newline) from a binary stream, about
    `block_bytes` at a time; `pending` comes first. A line over `max_line` bytes is refused."""
    while True:
        data = handle.read(block_bytes)
        if not data:
            if pending:  # the last line, without its newline
                yield line, pending if pending.endswith(b"\n") else pending + b"\n"
            return
        data = pending + data if pending else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            if len(data) > max_line:
                raise InputError(f"{path}: row {line} is longer than {byte_size(max_line)}; is this a CSV?")
            pending = data
            continue
        pending = data[cut:]
        yield line, data[:cut]
        line += data.count(b"\n", 0, cut)


class _PixelScale:
    """The file's pixel scale, settled by the first row that only one scale fits (a fraction:
    FRACTIONS; a value over 1: BYTES), or, where no row does, FRACTIONS for a file of 0s and 1s; and
    the checks that hold each block's pixels to it (`ready`)."""

    def __init__(self):
        self.scale: str | None = None
        self.row = 0  # the row that settled it
        self.reason = ""

    def settle(self, scale: str, row: int, reason: str = "") -> None:
        """Holds the file to `scale` from `row` on; `reason` says how that row set it."""
        self.scale, self.row = scale, row
        self.reason = reason or f"holds {scale}"

    def problem(self, values: np.ndarray, kind: str) -> str:
        """Why a row of `kind` (BYTES or FRACTIONS) does not fit the settled scale."""
        odd = values > 1 if kind == BYTES else values != np.rint(values)
        column = int(np.flatnonzero(odd)[0])
        return (
            f": pixel {column} is {values[column]:g} but row {self.row} {self.reason}; "
            "use one scale for the whole file, 0..255 or fractions in [0, 1]"
        )

    def describe(self) -> str:
        """How the file's pixels are read: "pixels 0..255", "pixels fractions in [0, 1]", or
        "pixels only 0s and 1s, read as fractions (1 = full intensity)"."""
        if self.scale is None or self.reason == f"holds {ONLY_0_1}":
            return f"pixels {ONLY_0_1}"
        return "pixels 0..255" if self.scale == BYTES else f"pixels {FRACTIONS}"

    def ready(
        self,
        pixels: np.ndarray,
        lines: np.ndarray,
        bad: list,
        kept: np.ndarray | None,
        *,
        whole: bool,
        settle_rest: Callable[[int], None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """(which rows are kept, their pixels): uint8 0..255, or float32 in [0, 1]. Rows of `lines`
        that break the rules (`whole`: 0..255 pixels that are not whole numbers too) are added to
        `bad`; `settle_rest(row)` settles the scale by the rest of the file where rows of 0s and 1s
        leave it open."""
        kept = np.ones(len(pixels), bool) if kept is None else kept
        if pixels.dtype == np.uint8 and self.scale == BYTES:
            return kept, pixels[kept] if not kept.all() else pixels
        if pixels.dtype == np.uint8 and self.scale == FRACTIONS and pixels.max(initial=0) <= 1:
            return kept, pixels[kept].astype(np.float32)  # a file of 0s and 1s
        pixels = pixels.astype(np.float64, copy=False)
        kept = self.in_range(pixels, lines, bad, kept)
        self.off_scale(pixels, kept, lines, bad)
        if whole and self.scale == BYTES:
            self._whole(pixels, kept, lines, bad)
        return kept, self._scaled(pixels[kept], lines[kept], settle_rest)

    def _whole(self, pixels: np.ndarray, kept: np.ndarray, lines: np.ndarray, bad: list) -> None:
        """Kept rows of 0..255 pixels that are not all whole numbers become bad (`kept` in place)."""
        for i in np.flatnonzero(kept & (pixels != np.rint(pixels)).any(axis=1)):
            column = int(np.flatnonzero(pixels[i] != np.rint(pixels[i]))[0])
            bad.append((int(lines[i]), (
                f": pixel {column} is {pixels[i, column]:g}, not a whole number 0..255: a dataset holds "
                "8-bit pictures (or fractions in [0, 1]); fit a table of measurements with the "
                "scikit-learn estimator TorchLogisticRegression, or scale its columns to 0..255"
            )))  # fmt: skip
            kept[i] = False

    @staticmethod
    def in_range(pixels: np.ndarray, lines: np.ndarray, bad: list, kept: np.ndarray) -> np.ndarray:
        """Which `kept` rows' pixels all lie in 0..255; the other kept rows are bad."""
        with np.errstate(invalid="ignore"):
            valid = (pixels >= 0).all(axis=1) & (pixels <= 255).all(axis=1)  # NaN compares False
        for i in np.flatnonzero(kept & ~valid):
            column = int(np.flatnonzero(~((pixels[i] >= 0) & (pixels[i] <= 255)))[0])
            bad.append((int(lines[i]), f": pixel {column} is {pixels[i, column]:g}, expected {PIXEL_RANGE}"))
        return kept & valid

    def off_scale(self, pixels: np.ndarray, kept: np.ndarray, lines: np.ndarray, bad: list) -> None:
        """Settles the file's scale by the first row only one scale fits (a value over 1: BYTES; a
        fraction: FRACTIONS); a kept row of the other scale becomes bad (`kept` updated in place)."""
        over = (pixels > 1).any(axis=1) & kept
        fractional = np.zeros(len(pixels), bool)
        if self.scale != FRACTIONS:  # only rows of values 0..1 can hold a fraction
            maybe = np.flatnonzero(kept & ~over)
            fractional[maybe] = (pixels[maybe] != np.rint(pixels[maybe])).any(axis=1)
        if self.scale is None and len(first := np.flatnonzero(over | fractional)):
            self.settle(BYTES if over[first[0]] else FRACTIONS, int(lines[first[0]]))
        wrong = {FRACTIONS: over, BYTES: fractional}.get(self.scale, np.zeros(0, bool))
        for i in np.flatnonzero(wrong):
            kind = BYTES if self.scale == FRACTIONS else FRACTIONS
            bad.append((int(lines[i]), self.problem(pixels[i], kind)))
            kept[i] = False

    def _scaled(self, pixels: np.ndarray, lines: np.ndarray, settle_rest: Callable) -> np.ndarray:
        """Good rows in the file's scale: fractions as float32, 0..255 as uint8 (float32 / 255 when
        some are not whole). Rows with a 1 before the scale is settled settle it by the rest of the file."""
        if self.scale is None and pixels.max(initial=0) == 1:
            settle_rest(int(lines[np.flatnonzero(pixels.max(axis=1) == 1)[0]]))
        if self.scale == FRACTIONS:
            return pixels.astype(np.float32)
        if np.array_equal(pixels, np.rint(pixels)):
            return pixels.astype(np.uint8)
        return (pixels / 255.0).astype(np.float32)


def _numbered(
    block: bytes, layout: CsvLayout, names: dict[str, int], named: bool | None, path: Path
) -> tuple[bytes, bool | None]:
    """(`block` with each row's label, where the file's labels are class names, replaced by its
    number in `names`; whether they are: `named`, or where None, decided by the first row's label).
    Rows that do not split into the file's cells are left for the parse to name."""
    rows, label, delimiter = block.split(b"\n")[:-1], layout.label, layout.delimiter
    for i, raw in enumerate(rows):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            continue
        cells = csv_cells(text, delimiter) if '"' in text else text.split(delimiter)
        if len(cells) != layout.width or not text.strip():
            continue
        name = cells[label].strip()
        if named is None:  # the file's first row decides
            named = not is_number(name)
        if not named:
            return block, named
        if not name:  # (left for the parse to name the row)
            continue
        if name not in names and len(names) > MAX_LABEL:
            raise InputError(f"{path}: more than {MAX_LABEL + 1:,} class names (a dataset's most)")
        cells[label] = str(names.setdefault(name, len(names)))
        rows[i] = delimiter.join(cells).encode()
    return b"\n".join(rows) + b"\n", named


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
        self.scale = _PixelScale()
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
        lines = _csv_blocks(
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
            block, self.named = _numbered(block, self.layout, self.names, self.named, self.path)
        plain = _unquoted(block, self.layout.delimiter) if b'"' in block else block
        cells = _uint8_cells(plain, self.layout.width, self.layout.delimiter) if plain else None
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
                if self.named:  # (a blank name: `_numbered` left it)
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
            rest = _csv_blocks(handle, b"", line, LOOK_AHEAD_BYTES, self.max_line, self.path)
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
