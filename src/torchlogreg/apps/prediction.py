"""Batch prediction: any number of files, of any size, into one output, a chunk at a time.

    torchlogreg predict runs/default test.csv --output submission.csv      # what the CLI runs

`predict_files` reads each input with `inputs.read_chunks` (about 1 MB of CSV text, 2,048 rows of an
array, or one picture at a time), predicts the chunk with the run's model and writes its lines to
the output before reading on, so memory holds one chunk however large the input. The caller opens
the output: `atomic_output` gives a temporary file beside the target that is renamed over it only
when every input was predicted, so a failure leaves no file, whole or partial.

Bad input: by default the first bad file or row stops everything (an `InputError` naming it). With
`skip_bad`, a bad CSV row is left out, and a bad file is left out with whatever lines of it were
written (the output is cut back to where the file began); each is reported in one line, and the
ImageIds of the others do not move: a left-out row or file keeps its ImageId, unused.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

import numpy as np
import torch

from ..base.devices import cpu_threads
from ..base.exceptions import InputError
from ..data.inputs import Chunk, read_chunks

if TYPE_CHECKING:
    from ..runfolder.checkpoints import Run

MAX_LISTED_ROWS = 20  # bad rows of one file reported one by one; the rest are counted
PREDICT_THREADS = 1  # a chunk's product is a few columns wide, bound by memory, not arithmetic: a
# second thread only adds waiting for a core another program may hold (as devices.threads_for says)
PROGRESS_MIN_BYTES = 16 * 1024 * 1024  # smaller inputs are predicted too soon for a bar to help ...
PROGRESS_MIN_FILES = 200  # ... unless they are this many files (pictures are preprocessed one by one)


class ChunkPredictions(NamedTuple):
    """A chunk's predictions (one chunk of input read by inputs.read_chunks)."""

    chunk: Chunk
    ids: np.ndarray  # ImageIds: from 1, in input order
    labels: np.ndarray  # predicted class indices
    top: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # P(label), top-k probabilities and classes

    def results(self, class_names: Sequence[str]) -> Iterator[tuple[str, dict]]:
        """(name, {label, index, probability, top_k}) per image: what JSON lines and the terminal show."""
        chosen, values, indices = (part.tolist() for part in self.top)
        for name, label, p, vals, idx in zip(
            self.chunk.names(), self.labels.tolist(), chosen, values, indices, strict=True
        ):
            top_k = [{"label": class_names[i], "probability": v} for v, i in zip(vals, idx, strict=True)]
            yield name, {"label": class_names[label], "index": label, "probability": p, "top_k": top_k}


class Format(NamedTuple):
    """How predictions are written: a header, then each chunk's lines."""

    header: str
    top_k: int  # classes each line lists; 0: labels only (no probabilities computed)
    render: Callable[[ChunkPredictions], str]  # a chunk's lines, each ending in a newline


def _csv_cell(text: str) -> str:
    """`text` as one CSV cell, quoted when it needs to be (a class name with a comma)."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([text])
    return buffer.getvalue().rstrip("\r\n")


def kaggle_csv(class_names: Sequence[str]) -> Format:
    """Kaggle's submission form: ImageId,Label, ImageId from 1 in input order (CRLF, as csv writes)."""
    cells = [_csv_cell(name) for name in class_names]

    def render(predicted: ChunkPredictions) -> str:
        ids, labels = predicted.ids.tolist(), predicted.labels.tolist()
        return "".join(f"{i},{cells[label]}\r\n" for i, label in zip(ids, labels, strict=True))

    return Format("ImageId,Label\r\n", 0, render)


def json_lines(class_names: Sequence[str], top_k: int) -> Format:
    """One JSON object per image: file, label, index, probability, top_k; the bytes json.dumps writes
    for that dict (floats as repr, as json does), built from pieces rather than a dict per image."""
    labels = [json.dumps(name) for name in class_names]

    def render(predicted: ChunkPredictions) -> str:
        chosen, values, indices = (part.tolist() for part in predicted.top)
        lines = []
        for name, label, p, vals, idx in zip(
            predicted.chunk.names(), predicted.labels.tolist(), chosen, values, indices, strict=True
        ):
            top = ", ".join(
                f'{{"label": {labels[i]}, "probability": {v!r}}}' for v, i in zip(vals, idx, strict=True)
            )
            lines.append(
                f'{{"file": {json.dumps(name)}, "label": {labels[label]}, "index": {label}, '
                f'"probability": {p!r}, "top_k": [{top}]}}\n'
            )
        return "".join(lines)

    return Format("", max(1, min(top_k, len(class_names))), render)


@dataclasses.dataclass
class Tally:
    """What a prediction did."""

    predicted: int = 0  # images predicted
    skipped_files: int = 0  # bad files left out (with --skip-bad)
    skipped_rows: int = 0  # bad CSV rows left out (with --skip-bad)


@torch.no_grad()
def _predict(run: Run, chunk: Chunk, first_id: int, top_k: int) -> ChunkPredictions:
    """The predictions for one chunk, its images numbered from `first_id` by their rows."""
    model = run.model
    images = torch.from_numpy(chunk.images).to(model.linear.weight.device)
    labels = model.predict(images, run.threshold)
    top = None
    if top_k:
        probabilities = model.predict_proba(images)
        values, indices = probabilities.topk(top_k, dim=1)
        chosen = probabilities.gather(1, labels[:, None])[:, 0]
        top = (chosen.cpu().numpy(), values.cpu().numpy(), indices.cpu().numpy())
    return ChunkPredictions(chunk, chunk.rows + first_id, labels.cpu().numpy(), top)


def _predict_file(
    run: Run, path: Path, out: BinaryIO, fmt: Format, first_id: int, tally: Tally, skip_row, say, advance,
    label_column: str | None = None,
):  # fmt: skip
    """Predicts one file into `out`, chunk by chunk; returns the ImageIds it takes (its rows, bad ones
    included). `skip_row` (or None: raise) gets each bad CSV row, `advance` the bytes read."""
    rows = 0
    chunks = read_chunks(
        path, run.image_shape, skip_row=skip_row, note=say, pictures=run.pictures, label_column=label_column,
        headerless=run.csv_label,  # (a CSV without a header holds its label where the training CSV did)
    )  # fmt: skip
    for chunk in chunks:
        if len(chunk.rows):
            out.write(fmt.render(_predict(run, chunk, first_id, fmt.top_k)).encode("utf-8"))
            tally.predicted += len(chunk.rows)
        rows = chunk.end
        advance(chunk.nbytes)
    return rows


def predict_files(
    run: Run,
    files: Sequence[Path],
    out: BinaryIO,
    fmt: Format,
    *,
    skip_bad: bool = False,
    report: Callable[[str], None] | None = None,
    progress: bool = False,
    label_column: str | None = None,
) -> Tally:
    """Predict every image in `files` with `run` (from `checkpoints.load_run`) and write them to `out`
    (a seekable binary file) in `fmt`, one chunk at a time. `report` gets notes and, with `skip_bad`,
    each bad file or row left out. A CSV's `label_column` (a header name or an index), when given, is
    left out of the pixels. Raises `InputError` at the first bad one without `skip_bad`, and when
    nothing could be predicted."""
    from tqdm import tqdm

    report, tally, next_id = report or _ignore, Tally(), 1
    out.write(fmt.header.encode("utf-8"))
    total = sum(map(_file_size, files))
    options = {"unit": "B", "unit_scale": True, "unit_divisor": 1024, "leave": False, "file": sys.stderr}
    on_cpu = run.model.linear.weight.device.type == "cpu"
    with (
        tqdm(total=total, desc="predicting", disable=not progress, **options) as bar,
        cpu_threads(PREDICT_THREADS if on_cpu else None),
    ):

        def say(message: str) -> None:
            with bar.external_write_mode(file=sys.stderr):
                report(message)

        for path in files:
            next_id += _file_into(run, path, out, fmt, next_id, tally, skip_bad, say, bar, label_column)
    if tally.predicted == 0:
        bad = f"{tally.skipped_files} bad files, {tally.skipped_rows} bad rows"
        raise InputError(f"nothing to predict: every input was bad ({bad})")
    return tally


def _file_into(
    run: Run, path: Path, out: BinaryIO, fmt: Format, first_id: int, tally: Tally, skip_bad, say, bar,
    label_column: str | None,
):  # fmt: skip
    """One file predicted into `out`; or, when it is bad and `skip_bad`, reported and its lines taken
    back out of `out`. Returns the ImageIds it takes (a bad file takes one)."""
    mark, before, done, listed = out.tell(), dataclasses.replace(tally), 0, 0

    def skip_row(message: str) -> None:
        nonlocal listed
        tally.skipped_rows += 1
        listed += 1
        if listed <= MAX_LISTED_ROWS:
            say(f"skipped {message}")
        elif listed == MAX_LISTED_ROWS + 1:
            say(f"{path}: more bad rows skipped; the summary counts them")

    def advance(n_bytes: int) -> None:
        nonlocal done
        done += n_bytes
        bar.update(n_bytes)

    try:
        taken = _predict_file(
            run, path, out, fmt, first_id, tally, skip_row if skip_bad else None, say, advance, label_column
        )
    except InputError as error:
        if not skip_bad:
            raise
        out.seek(mark)
        out.truncate()
        tally.predicted, tally.skipped_rows = before.predicted, before.skipped_rows
        tally.skipped_files += 1
        say(f"skipped {error}")
        taken = 1
    bar.update(max(_file_size(path) - done, 0))
    return taken


def _ignore(message: str) -> None:
    """A report that goes nowhere."""


def _file_size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def show_progress(files: Sequence[Path], stream=None) -> bool:
    """Whether a progress bar helps: `stream` (stderr) is a terminal and the input is large."""
    stream = sys.stderr if stream is None else stream
    if not (hasattr(stream, "isatty") and stream.isatty()):
        return False
    return len(files) >= PROGRESS_MIN_FILES or sum(map(_file_size, files)) >= PROGRESS_MIN_BYTES


@contextlib.contextmanager
def spool_to(stream) -> Iterator[BinaryIO]:
    """A binary file (unnamed, on disk) whose text is copied to `stream` when the block ends normally:
    output that appears whole or not at all, in flat memory however long it is."""
    import codecs

    with tempfile.TemporaryFile() as spool:
        yield spool
        spool.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        while block := spool.read(1024 * 1024):
            stream.write(decoder.decode(block))
        stream.flush()
