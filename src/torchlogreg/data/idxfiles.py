"""MNIST's IDX files (uint8 or int32 arrays, gzipped when named .gz): the one reader of them, for the
built-in datasets and `data convert --from-idx`.

Written by hand rather than through torchvision: importing torchvision costs ~2 s (more than
training takes), and its reader checks the format with bare asserts, which give no message.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..base.exceptions import DataError
from .readers import labels_problem, open_regular

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x0C: np.dtype(">i4")}
MAX_IDX_BYTES = 2**30  # one IDX array decoded: EMNIST's largest split takes 547 MB


def read_idx(path: Path) -> np.ndarray:
    """The array in an IDX file (uint8 or int32; gzipped when named .gz), checked against its header.

    Read through the package's reader (a regular file only); the header's dimensions are checked
    against MAX_IDX_BYTES, and the data must be exactly what they declare, before anything large is
    held: a gzip bomb is cut where its header says the data ends.
    """
    path = Path(path)
    try:
        with open_regular(path, DataError) as handle:
            stream = gzip.GzipFile(fileobj=handle) if path.suffix == ".gz" else handle
            dtype, dims, header = _idx_header(stream, path)
            expected = math.prod(dims) * dtype.itemsize
            if expected > MAX_IDX_BYTES:
                raise DataError(
                    f"{path}: header says {' x '.join(map(str, dims))} values ({expected} bytes), over the "
                    f"{MAX_IDX_BYTES} bytes allowed for one IDX array"
                )
            data = np.empty(dims, dtype=dtype)
            got = _read_into(stream, data.reshape(-1).view(np.uint8))
            extra = stream.read(1)
    except (OSError, EOFError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({getattr(error, 'strerror', None) or error})") from None
    if got != expected or extra:
        found = f"{got}" if not extra else "more"
        raise DataError(
            f"{path}: header says {' x '.join(map(str, dims))} values ({expected} bytes) but the file "
            f"holds {found} bytes after the header (truncated or corrupt)"
        )
    return data


def _read_into(stream, buffer: np.ndarray) -> int:
    """Fill `buffer` (uint8) from `stream`; the bytes read, fewer when the stream ends first. Read in
    place: the array returned is the one buffer, writable, with no second copy of the data."""
    view, got = memoryview(buffer), 0
    while got < len(view):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _idx_header(stream, path: Path) -> tuple[np.dtype, list[int], int]:
    """(dtype, dimensions, header bytes) from the start of an IDX stream."""
    magic = stream.read(4)
    if len(magic) < 4 or magic[0:2] != b"\x00\x00" or magic[2] not in _IDX_TYPES or not 1 <= magic[3] <= 3:
        raise DataError(
            f"{path}: not an IDX file (magic number {magic[:4].hex() or 'missing'}, "
            "expected 0000080N or 00000c0N)"
        )
    dtype, ndim = _IDX_TYPES[magic[2]], magic[3]
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise DataError(f"{path}: IDX header cut short ({4 + len(sizes)} bytes)")
    dims = [int.from_bytes(sizes[4 * i : 4 + 4 * i], "big") for i in range(ndim)]
    return dtype, dims, 4 + 4 * ndim


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x H x W uint8) and labels (N) from two IDX files, checked to belong together."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{images_path}: expected uint8 images N x H x W, got shape {images.shape}")
    if labels.ndim == 2:  # QMNIST: one row of metadata per image, the class first
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected one label per image, got shape {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    if problem := labels_problem(labels):  # a negative int32 is no class, nor is 100,000
        raise DataError(f"{labels_path}: {problem}")
    return images, labels
