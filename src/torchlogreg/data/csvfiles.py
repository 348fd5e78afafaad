"""CSV files of one image per row: one column per pixel (row by row) and perhaps a label column. The
one CSV reader, for predict, serve's callers and `load_inputs` (labels optional, not used) and for
`data convert --from-csv` (labels required), so a file means the same everywhere:

- Cells are separated by commas, semicolons or tabs: whichever the first line holds most of.
- The first line is a header when a cell of it is not a number. The label column is the one
  `label_column` names (an index or a header name), else a header column named like CSV_LABEL_NAMES,
  else the first one when the file must have labels or has one column more than the pixels.
- Pixels are 0..255, or fractions in [0, 1] throughout. A row holding a fraction in a file whose
  earlier rows hold values over 1 (or the other way round) is a bad row naming the row that set the
  scale: one scale is never silently chosen for rows that mean the other. Rows of whole 0s and 1s
  fit either scale and take the file's; handed on before any row settles it (in an earlier block
  of lines), they count as 0..255, and a later fraction is refused.
- Labels (when wanted) are integers in 0..readers.MAX_LABEL.

Memory does not grow with a file: the text is parsed CSV_BLOCK_BYTES of whole lines at a time.
Kaggle-style rows (integers 0..255) take a vectorised NumPy parse of the bytes (`_uint8_cells`, about
20x np.loadtxt); other numbers go through np.loadtxt, and a block that fails is read cell by cell
to name its bad rows.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..base.exceptions import ConfigError, InputError, TorchLogRegError
from .readers import MAX_LABEL, byte_size, one_line

CSV_LABEL_NAMES = ("label", "labels", "class", "target", "y")  # a header column taken as the label
DELIMITERS = (",", ";", "\t")
PIXEL_RANGE = "0..255 (or fractions in [0, 1])"
CSV_BLOCK_BYTES = 1024 * 1024  # CSV text parsed at a time (whole lines): ~550 rows of 28x28 pixels
CSV_CELL_BYTES = 32  # a CSV row may take this many bytes per cell (or CSV_BLOCK_BYTES) before it is refused
MAX_CSV_COLUMNS = 2**20 + 1  # columns a first line may have when the image size is not given (convert)
FRACTIONS, BYTES = "fractions in [0, 1]", "values 0..255"  # the two pixel scales


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """What a CSV's first line says about the file."""

    delimiter: str
    header: bool  # the first line names the columns
    fields: tuple[str, ...]  # the first line's cells
    label: int | None  # the label column, or None
    n_pixels: int  # pixel columns

    @property
    def width(self) -> int:
        """Cells in each row."""
        return self.n_pixels + (self.label is not None)


@dataclasses.dataclass(frozen=True)
class CsvBlock:
    """Consecutive good rows of a CSV."""

    rows: np.ndarray  # each one's data row, from 0 (a bad row left out leaves a gap)
    pixels: np.ndarray  # (len(rows), n_pixels): uint8 0..255, or float32 in [0, 1]
    labels: np.ndarray | None  # (len(rows),) int64 class numbers, when labels were asked for
    end: int  # data rows read so far, bad ones included
    nbytes: int  # bytes of the file this block took


def is_number(text: str) -> bool:
    """Whether `text` is a number as a cell may hold it."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_column(fields: list[str], header: bool, label_column: str, path: Path) -> int:
    """The column `label_column` names: an index (negative from the end) or a header name."""
    if re.fullmatch(r"-?\d+", label_column):
        index = int(label_column)
        if not -len(fields) <= index < len(fields):
            raise ConfigError(
                f"label_column {index}: {path} has {len(fields)} columns", parameter="label_column"
            )
        return index % len(fields)
    if header and label_column in fields:
        return fields.index(label_column)
    columns = ", ".join(fields[:5]) + (", ..." if len(fields) > 5 else "") if header else "none (no header)"
    raise ConfigError(
        f"label_column {label_column!r} is not a column of {path}; columns: {columns}",
        parameter="label_column",
    )


def csv_layout(
    first: str, path: Path, n_pixels: int | None, label_column: str | None = None
) -> CsvLayout:
    """The layout of a CSV from its first line. `n_pixels` None: every row has a label (the first
    column unless named) and the other columns are pixels; else the file must hold `n_pixels`
    pixel columns, and a label column only when named or when there is one column more."""
    line = first.rstrip("\r\n")
    delimiter = max(DELIMITERS, key=line.count)
    fields = [f.strip().strip('"') for f in line.split(delimiter)]
    header = not all(is_number(f) for f in fields)
    names = [f.lower() for f in fields] if header else []
    if label_column is not None:
        label = _label_column(fields, header, label_column, path)
    else:
        label = next((names.index(n) for n in CSV_LABEL_NAMES if n in names), None)
        if label is None and (n_pixels is None or len(fields) == n_pixels + 1):
            label = 0  # one column more than pixels and none named: the first, as Kaggle writes it
    if n_pixels is None:
        if len(fields) < 2:
            raise InputError(f"{path}: expected a label column and pixel columns, got one column")
        n_pixels = len(fields) - 1
    if len(fields) - (label is not None) != n_pixels:
        raise InputError(
            f"{path}: {len(fields)} columns, expected {n_pixels} pixel columns (and optionally a label)"
        )
    return CsvLayout(delimiter, header, tuple(fields), label, n_pixels)


def label_note(layout: CsvLayout, path: Path) -> str:
    """A line saying which column was taken as the label (not used by predict), or ""."""
    if layout.label is None:
        return ""
    column = layout.fields[layout.label] if layout.header else layout.label
    return f"{path}: column {column} taken as the label, not used"


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
    FRACTIONS; a value over 1: BYTES), or by the first row holding a 1 handed on as 0..255."""

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


class CsvRows:
    """One CSV's rows as blocks (see the module's docstring) of images of `image_shape` (H, W), or of
    as many pixels as the first line has columns after the label when None (set `image_shape` once
    known, for messages). Bad rows are raised as `error`, or given to `skip_row` (a one-line message)
    and left out; `labels` asks for the label column's values."""

    def __init__(
        self,
        path: Path,
        image_shape: tuple[int, int] | None,
        *,
        label_column: str | None = None,
        labels: bool = False,
        skip_row: Callable[[str], None] | None = None,
        error: type[TorchLogRegError] = InputError,
    ):
        self.path, self.image_shape, self.label_column = path, image_shape, label_column
        n_pixels = image_shape[0] * image_shape[1] if image_shape else None
        self.want_labels, self.skip_row, self.error = labels, skip_row, error
        self.layout: CsvLayout | None = None  # read from the first line
        self._pending, self._line = b"", 1  # the first line when it is data, and its number
        self.scale = _PixelScale()
        self.rows = 0  # data rows read so far
        self.max_line = CSV_CELL_BYTES * (n_pixels + 1 if n_pixels else MAX_CSV_COLUMNS)
        self.max_line = max(CSV_BLOCK_BYTES, self.max_line)

    def read_layout(self, handle) -> CsvLayout:
        """Reads the first line of a binary stream at the file's start: the file's layout."""
        first = handle.readline(self.max_line + 1).removeprefix(b"\xef\xbb\xbf")  # a byte-order mark
        if not first.strip():
            raise self.error(f"{self.path}: no data rows" + (" (the first line is empty)" if first else ""))
        if len(first) > self.max_line:
            raise self.error(f"{self.path}: row 1 is longer than {byte_size(self.max_line)}; is this a CSV?")
        try:
            pixels = self.image_shape[0] * self.image_shape[1] if self.image_shape else None
            self.layout = csv_layout(first.decode("utf-8"), self.path, pixels, self.label_column)
        except UnicodeDecodeError as failure:
            raise self.error(f"{self.path}: cannot read it as a text CSV ({one_line(failure)})") from None
        except InputError as failure:
            raise self.error(str(failure)) from None
        self.max_line = max(CSV_BLOCK_BYTES, CSV_CELL_BYTES * (self.layout.width + 1))
        self._pending, self._line = (b"", 2) if self.layout.header else (first, 1)
        return self.layout

    def blocks(self, handle, block_bytes: int | None = None) -> Iterator[CsvBlock]:
        """The file's good rows, block by block, from a binary stream at its start (or just after
        `read_layout` read its first line)."""
        if self.layout is None:
            self.read_layout(handle)
        lines = _csv_blocks(
            handle, self._pending, self._line, block_bytes or CSV_BLOCK_BYTES, self.max_line, self.path
        )
        try:
            for first_line, block in lines:
                yield self._block(block, first_line)
        except InputError as failure:
            raise self.error(str(failure)) from None
        if self.rows == 0:
            raise self.error(f"{self.path}: no data rows")

    def _block(self, block: bytes, line: int) -> CsvBlock:
        """The good rows of `block` (whole lines from `line`), bad ones raised or skipped."""
        size = len(block)
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        bad: list[tuple[int, str]] = []
        cells = None  # a file of fractions has no rows for the integer parse
        if self.scale.scale != FRACTIONS:
            cells = _uint8_cells(block, self.layout.width, self.layout.delimiter)
        if cells is not None:
            lines, parsed = np.arange(line, line + len(cells)), np.ones(len(cells), bool)
        else:
            lines, parsed, cells = self._parse(block, line, bad)
        label = self.layout.label
        pixels = np.delete(cells, label, axis=1) if label is not None else cells
        kept = self._check_labels(cells[:, label], lines[parsed], bad) if self.want_labels else None
        kept, pixels = self._ready(pixels, lines[parsed], bad, kept)
        for number, message in sorted(bad):
            if self.skip_row is None:
                raise self.error(f"{self.path}: row {number}{message}")
            self.skip_row(f"{self.path}: row {number}{message}")
        labels = cells[kept, label].astype(np.int64) if self.want_labels else None
        rows = self.rows + np.flatnonzero(parsed)[kept]
        self.rows += len(lines)
        return CsvBlock(rows, pixels, labels, self.rows, size)

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
            delimiter = self.layout.delimiter
            cells = np.loadtxt(texts, delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None)
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
            cells = raw.decode("utf-8").split(self.layout.delimiter)
        except UnicodeDecodeError:
            return " is not UTF-8 text", []
        if len(cells) != self.layout.width:
            label = "a label and " if self.layout.label is not None else ""
            of = f" of {self.image_shape[0]}x{self.image_shape[1]} images" if self.image_shape else ""
            expected = f"{self.layout.width} ({label}{self.layout.n_pixels} pixels{of})"
            return f" has {len(cells)} cells, expected {expected}", []
        try:
            return "", [float(cell) for cell in cells]
        except ValueError:
            cell = next(c for c in cells if not is_number(c))
            return f": {cell[:20]!r} is not a number", []

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

    def _ready(
        self, pixels: np.ndarray, lines: np.ndarray, bad: list, kept: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(which rows are kept, their pixels): uint8 0..255, or float32 in [0, 1] (see _PixelScale)."""
        kept = np.ones(len(pixels), bool) if kept is None else kept
        if pixels.dtype == np.uint8 and self.scale.scale == BYTES:
            return kept, pixels[kept] if not kept.all() else pixels
        pixels = pixels.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            valid = (pixels >= 0).all(axis=1) & (pixels <= 255).all(axis=1)  # NaN compares False
        for i in np.flatnonzero(kept & ~valid):
            column = int(np.flatnonzero(~((pixels[i] >= 0) & (pixels[i] <= 255)))[0])
            bad.append((int(lines[i]), f": pixel {column} is {pixels[i, column]:g}, expected {PIXEL_RANGE}"))
        kept = kept & valid
        self._off_scale(pixels, kept, lines, bad)
        return kept, self._scaled(pixels[kept], lines[kept])

    def _off_scale(self, pixels: np.ndarray, kept: np.ndarray, lines: np.ndarray, bad: list) -> None:
        """Settles the file's scale by the first row only one scale fits (a value over 1: BYTES; a
        fraction: FRACTIONS); a kept row of the other scale becomes bad (`kept` updated in place)."""
        over = (pixels > 1).any(axis=1) & kept
        fractional = np.zeros(len(pixels), bool)
        if self.scale.scale != FRACTIONS:  # only rows of values 0..1 can hold a fraction
            maybe = np.flatnonzero(kept & ~over)
            fractional[maybe] = (pixels[maybe] != np.rint(pixels[maybe])).any(axis=1)
        if self.scale.scale is None and len(first := np.flatnonzero(over | fractional)):
            self.scale.settle(BYTES if over[first[0]] else FRACTIONS, int(lines[first[0]]))
        wrong = {FRACTIONS: over, BYTES: fractional}.get(self.scale.scale, np.zeros(0, bool))
        for i in np.flatnonzero(wrong):
            kind = BYTES if self.scale.scale == FRACTIONS else FRACTIONS
            bad.append((int(lines[i]), self.scale.problem(pixels[i], kind)))
            kept[i] = False

    def _scaled(self, pixels: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """Good rows in the file's scale: fractions as float32, 0..255 as uint8 (float32 / 255 when
        some are not whole). Rows handed on as 0..255 before the scale is settled settle it."""
        if self.scale.scale == FRACTIONS:
            return pixels.astype(np.float32)
        ones = np.flatnonzero(pixels.max(axis=1, initial=0) == 1) if self.scale.scale is None else []
        if len(ones):
            self.scale.settle(BYTES, int(lines[ones[0]]), "was read as 0..255 (its 1s as 1/255)")
        if np.array_equal(pixels, np.rint(pixels)):
            return pixels.astype(np.uint8)
        return (pixels / 255.0).astype(np.float32)
