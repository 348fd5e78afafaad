"""A CSV's first line, and what it says about the file (csvfiles.py reads the rows): the delimiter,
whether it is a header, and which column holds the labels. The rules are csvfiles.py's docstring's.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import itertools
import re
from pathlib import Path

from ..base.exceptions import ConfigError, InputError, listed

CSV_LABEL_NAMES = ("label", "labels", "class", "target", "y")  # a header column taken as the label
ROW_ID_NAMES = ("id", "imageid", "image_id", "index", "row_id")  # a header column that numbers the rows
DELIMITERS = (",", ";", "\t")
COUNTED_NAMES = 8  # a first line of at least this many numbers counting up by one is a header of them


@dataclasses.dataclass(frozen=True)
class CsvLayout:
    """What a CSV's first line says about the file."""

    delimiter: str
    header: bool  # the first line names the columns
    fields: tuple[str, ...]  # the first line's cells
    label: int | None  # the label column, or None
    n_pixels: int  # pixel columns
    label_rule: str = ""  # how the label column was found: "as asked", "by its name", ...

    @property
    def width(self) -> int:
        """Cells in each row."""
        return self.n_pixels + (self.label is not None)


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
    columns = listed(fields, 5) if header else "none (no header)"
    raise ConfigError(
        f"label_column {label_column!r} is not a column of {path}; columns: {columns}",
        parameter="label_column",
    )


def csv_cells(line: str, delimiter: str) -> list[str]:
    """The cells of a line of CSV as Python's csv module reads them (quotes removed), stripped."""
    try:
        cells = next(csv.reader([line], delimiter=delimiter), [""])
    except csv.Error:  # a NUL byte, say: the line as it is
        cells = line.split(delimiter)
    return [cell.strip() for cell in cells]


def _unlike_the_others(names: list[str]) -> int | None:
    """The one column whose header name, digits aside, differs from the name all the others share
    (`digit` among `px0`..`px63`, `id` among `pixel0`..), or None."""
    stems = [re.sub(r"\d+", "#", name) for name in names]
    counts = collections.Counter(stems)
    if len(names) < 3 or len(counts) != 2 or min(counts.values()) != 1:
        return None
    return stems.index(min(counts, key=counts.get))


def _unnamed_label(
    fields: list[str], header: bool, path: Path, n_pixels: int | None, labels: bool, headerless: int = 0
):
    """(the label column, how it was found) of a file that must have one but names none: the header
    name unlike the others, or without a header the column `headerless` (-1: the last; predict: where
    the run's training CSV held it); a header that leaves it open is refused (convert: naming
    label_column; predict: naming what the header would need)."""
    if not header:
        if headerless == 0:
            return 0, "the first: no header"
        if headerless >= len(fields):
            raise InputError(
                f"{path}: the run's training CSV held its label in column {headerless}, but this file has "
                f"{len(fields)} columns; give label_column (predict: --label-column)"
            )
        where = "the last" if headerless == -1 else f"column {headerless}"
        return headerless % len(fields), f"{where}, as the training CSV had it: no header"
    if (column := _unlike_the_others([f.lower() for f in fields])) is not None:
        return column, "the one not named like the pixels"
    names = f"{', '.join(CSV_LABEL_NAMES[:-1])} or {CSV_LABEL_NAMES[-1]}, and none is named unlike the others"
    if labels or n_pixels is None:
        raise ConfigError(
            f"{path}: no column is named {names}; give label_column=NAME "
            "(a header name, or an index: -1 is the last)",
            parameter="label_column",
        )
    raise InputError(
        f"{path}: {len(fields)} columns, one more than the {n_pixels} pixels, but no column is named "
        f"{names}; give label_column (predict: --label-column), name it label in the header, or remove it"
    )


def first_line(first: str, label_column: str | None = None) -> tuple[str, list[str], bool]:
    """(delimiter, cells, whether it is a header) of a CSV's first line: the delimiter it holds most
    of; a header when a cell is not a number, or when its numbers count up by one (pandas' column
    numbers, 0, 1, 2, ...; a crop's, 100, 101, ...). A first line of pixels with one class name among
    them is a row (a file of class names without a header), unless that name is a label column's
    (CSV_LABEL_NAMES, or `label_column`)."""
    line = first.rstrip("\r\n")
    delimiter = max(DELIMITERS, key=line.count)
    fields = csv_cells(line, delimiter)
    words = [f for f in fields if not is_number(f)]
    numbers = [float(f) for f in fields if is_number(f)]
    counted = len(numbers) >= COUNTED_NAMES and all(b - a == 1 for a, b in itertools.pairwise(numbers))
    if len(words) != 1 or len(fields) < 3:
        return delimiter, fields, bool(words) or counted
    return delimiter, fields, counted or words[0].lower() in CSV_LABEL_NAMES or words[0] == label_column


def csv_layout(
    first: str,
    path: Path,
    n_pixels: int | None,
    label_column: str | None = None,
    labels: bool = False,
    headerless: int = 0,
) -> CsvLayout:
    """The layout of a CSV from its first line. `n_pixels` None: every row has a label (found as the
    module's docstring says) and the other columns are pixels; else the file must hold `n_pixels`
    pixel columns, and a label column only when named or when there is one column more. `labels`:
    the caller needs labels (convert), so a label column left open is refused naming label_column.
    `headerless`: the label column of a file without a header that names none (predict: the run's)."""
    delimiter, fields, header = first_line(first, label_column)
    if header and fields[0] in ("", "Unnamed: 0"):  # a pixel or label column has a name
        raise InputError(
            f"{path}: the first column has no name: pandas' row index (to_csv writes it unless "
            "index=False)? Write the file without it: df.to_csv(path, index=False)"
        )
    ids = [f for f in fields if f.strip().lower() in ROW_ID_NAMES and f != label_column]  # (asked: a label)
    if header and ids:
        raise InputError(  # (it had been read as a pixel: "65 pixel columns do not make a square image")
            f"{path}: column {ids[0]!r} numbers the rows, it is not a pixel; write the file without it "
            f"(pandas: df.drop(columns={ids[0]!r}).to_csv(path, index=False))"
        )
    names = [f.lower() for f in fields] if header else []
    label, rule = None, ""
    if label_column is not None:
        label, rule = _label_column(fields, header, label_column, path), "as asked"
    elif (named := next((names.index(n) for n in CSV_LABEL_NAMES if n in names), None)) is not None:
        label, rule = named, "by its name"
    elif n_pixels is None or len(fields) == n_pixels + 1:
        label, rule = _unnamed_label(fields, header, path, n_pixels, labels, headerless)
    if n_pixels is None:
        if len(fields) < 2:
            raise InputError(f"{path}: expected a label column and pixel columns, got one column")
        n_pixels = len(fields) - 1
    if len(fields) - (label is not None) != n_pixels:
        held = f", a label and {len(fields) - 1} pixels" if label is not None else ""
        raise InputError(
            f"{path}: {len(fields)} columns{held}, expected {n_pixels} pixel columns (and optionally a label)"
        )
    return CsvLayout(delimiter, header, tuple(fields), label, n_pixels, rule)


def label_note(layout: CsvLayout, path: Path) -> str:
    """A line saying which column was taken as the label (not used by predict), or ""."""
    if layout.label is None:
        return ""
    column = layout.fields[layout.label] if layout.header else layout.label
    return f"{path}: column {column} taken as the label ({layout.label_rule}), not used"
