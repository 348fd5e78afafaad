"""IDX files (idxfiles): the header checked against the data, and labels that are class numbers. The
built-in datasets read through them are tested in test_data.py; gzip bombs in test_readers.py."""

import struct

import numpy as np
import pytest

from torchlogreg import DataError
from torchlogreg.data.convert import convert
from torchlogreg.data.idxfiles import read_idx, read_idx_pair


def _write_pair(folder, prefix, labels):
    """An IDX images file of random 4x4 images and an int32 IDX labels file holding `labels`."""
    count = len(labels)
    pixels = np.random.default_rng(0).integers(0, 256, (count, 16), dtype=np.uint8)
    images = folder / f"{prefix}-images-idx3-ubyte"
    images.write_bytes(struct.pack(">4B3I", 0, 0, 8, 3, count, 4, 4) + pixels.tobytes())
    labels_path = folder / f"{prefix}-labels-idx1-ubyte"
    labels_path.write_bytes(
        struct.pack(">4BI", 0, 0, 0x0C, 1, len(labels)) + np.array(labels, ">i4").tobytes()
    )
    return images, labels_path


def test_wrong_magic_is_refused(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x56\x78" + bytes(100))
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="magic number missing"):
        read_idx(path)


def test_read_idx_reads_int32(tmp_path):
    path = tmp_path / "ints"
    values = np.arange(6, dtype=">i4").reshape(3, 2)
    path.write_bytes(b"\x00\x00\x0c\x02" + (3).to_bytes(4, "big") + (2).to_bytes(4, "big") + values.tobytes())
    assert read_idx(path).tolist() == [[0, 1], [2, 3], [4, 5]]


@pytest.mark.parametrize("labels,found", [([0, 1, -1, 2], "-1..2"), ([0, 1, 100_000, 1], "0..100000")])
def test_labels_that_are_no_class_numbers_are_refused(tmp_path, labels, found):
    # int32 labels of -1 or 100,000 are damage, not 256 or 161 classes
    images, labels_path = _write_pair(tmp_path, "train", labels)
    with pytest.raises(
        DataError, match=rf"train-labels-idx1-ubyte: labels must be integers in 0\.\.99999, found {found}$"
    ):
        read_idx_pair(images, labels_path)
    _write_pair(tmp_path, "t10k", [0, 1, 1, 0])
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: labels must be integers in 0..99999"):
        convert(tmp_path / "out", idx=tmp_path)
    assert not (tmp_path / "out").exists()


def test_labels_that_are_class_numbers_are_read(tmp_path):
    images, labels_path = _write_pair(tmp_path, "train", [0, 99_999, 3])
    pixels, labels = read_idx_pair(images, labels_path)
    assert pixels.shape == (3, 4, 4) and labels.tolist() == [0, 99_999, 3]


def test_an_idx_array_is_writable_so_no_caller_copies_it(tmp_path):
    images, labels = _write_pair(tmp_path, "train", [1, 2, 3])
    pixels = read_idx(images)
    assert pixels.flags.writeable and pixels.flags.owndata and pixels.shape == (3, 4, 4)
    assert read_idx(labels).tolist() == [1, 2, 3]
