"""The bytes of a CSV's rows (csvfiles.py reads them): whole lines a block at a time, quotes around
small integers dropped, Kaggle-style rows of integers 0..255 parsed in NumPy, class-name labels
numbered. Each function leaves to csvfiles' general parse what it does not take on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..base.exceptions import InputError
from .csvlayout import CsvLayout, csv_cells, is_number
from .readers import MAX_LABEL, byte_size

QUOTE = ord('"')


def unquoted(block: bytes, delimiter: str) -> bytes | None:
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


def uint8_cells(block: bytes, width: int, delimiter: str = ",") -> np.ndarray | None:
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


def csv_blocks(handle, pending: bytes, line: int, block_bytes: int, max_line: int, path: Path):
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


def numbered_labels(
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
