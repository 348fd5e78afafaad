"""The one way the package opens a file it did not write itself (predict's and serve's inputs,
`data convert`'s sources, dataset folders, run folders), and the rules every format's reader shares.

`open_regular` opens regular files only: a FIFO, device or folder is refused without blocking.
`read_capped` reads one whole within a limit. The format readers build on them: `npyfiles` (.npy,
.npz), `csvfiles` (CSV rows), `idxfiles` (MNIST's IDX, gzipped or not) and `images` (pictures). Each
takes the error class its caller reports (InputError, DataError, CheckpointError).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

import numpy as np

from ..base.exceptions import InputError, TorchLogRegError

MAX_LABEL = 99_999  # labels read from a file are class numbers: integers 0..MAX_LABEL


def one_line(error: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, cut to `limit` characters (library messages can be long)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def byte_size(n_bytes: int) -> str:
    """`n_bytes` for a message: 1.5 GiB, 78 MiB, 12 KiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.3g} {unit}"
    return f"{n_bytes} bytes"


def open_regular(
    path: str | os.PathLike,
    error: type[TorchLogRegError] = InputError,
    *,
    follow_links: bool = True,
    missing: str = "no such file",
):
    """`path` opened for binary reading if it is a regular file. A FIFO, device or folder is refused
    with `error` before anything blocks (the file is opened non-blocking, checked with fstat, then
    made blocking); with follow_links=False a symbolic link is refused too (a run folder's files
    must be its own)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as failure:
        if failure.errno == errno.ELOOP:  # O_NOFOLLOW met a symbolic link
            raise error(f"{path}: not a regular file ({failure.strerror or failure})") from None
        raise error(f"{path}: cannot open: {failure.strerror or failure}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise error(f"{path}: not a regular file (a FIFO, device or folder is never read)")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def raised_as(error: type[TorchLogRegError]) -> Iterator[None]:
    """An InputError raised in the block becomes `error`, the caller's kind of error (DataError for a
    dataset's file), with its message and `parameter` kept."""
    try:
        yield
    except InputError as failure:
        if isinstance(failure, error):
            raise
        raise error(str(failure), parameter=failure.parameter) from None


def read_capped(
    path: str | os.PathLike, limit: int, error: type[TorchLogRegError] = InputError, **opening
) -> bytes:
    """The bytes of the regular file `path` when it holds at most `limit` (its size checked before it
    is read, and again while reading: a file that grows is cut)."""
    with open_regular(path, error, **opening) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise error(f"{path} is {size} bytes, over the {limit} bytes allowed for it")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path} grew past the {limit} bytes allowed for it while being read")
    return data


def labels_problem(labels: np.ndarray) -> str | None:
    """What is wrong with `labels` read from a file as class numbers (one line), or None: each must
    be an integer in 0..MAX_LABEL (a negative or huge label is damage, not a class)."""
    if not len(labels):
        return None
    integral = np.isfinite(labels).all() and np.array_equal(labels, np.rint(labels))
    if labels.dtype.kind not in "iu" and not integral:
        return f"labels must be integers in 0..{MAX_LABEL}, found {labels.dtype} values that are not"
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > MAX_LABEL:
        return f"labels must be integers in 0..{MAX_LABEL}, found {low}..{high}"
    return None
