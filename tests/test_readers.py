"""The one reader (torchlogreg.data.readers: open_regular, read_capped; npyfiles: read_npy,
read_npz_arrays) and the places that use it: predict's inputs, `data convert`'s sources, dataset
folders and IDX files.
A FIFO, device or folder is refused without blocking; a declared size is checked against the file
and a budget before memory is spent; a gzip stream is cut where its header says the data ends."""

import contextlib
import gzip
import os
import zipfile

import numpy as np
import pytest
from corpus.hostile import deadline, memory_cap, npy_with_header
from PIL import Image

from torchlogreg import DataError, InputError
from torchlogreg.apps.cli import main
from torchlogreg.data.npyfiles import read_npy, read_npz_arrays
from torchlogreg.data.readers import open_regular, raised_as, read_capped


@contextlib.contextmanager
def must_not_block(seconds: int = 20):
    """Fail (instead of hanging the test run) when the block waits on a FIFO, or takes gigabytes."""
    with deadline(seconds), memory_cap():
        yield


@pytest.fixture
def fifo(tmp_path):
    def make(name: str):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        return path

    return make


@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_only_regular_files_are_opened(tmp_path, kind):
    path = {"fifo": tmp_path / "x.csv", "folder": tmp_path, "device": "/dev/zero"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    with must_not_block(), pytest.raises(DataError, match="not a regular file"):
        open_regular(path, DataError)


def test_a_link_is_refused_where_links_are_not_followed(tmp_path):
    (tmp_path / "real").write_bytes(b"{}")
    os.symlink(tmp_path / "real", tmp_path / "link")
    assert read_capped(tmp_path / "link", 10) == b"{}"
    with pytest.raises(InputError, match="not a regular file"):
        read_capped(tmp_path / "link", 10, follow_links=False)
    with pytest.raises(InputError, match="over the 1 bytes allowed"):
        read_capped(tmp_path / "real", 1)


def test_predict_refuses_a_fifo_named_like_a_csv(default_run, fifo, capsys):
    # a FIFO named x.csv given to predict used to hang until killed
    path = fifo("x.csv")
    with must_not_block():
        assert main(["predict", str(default_run), str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a regular file" in err


def test_convert_refuses_a_fifo_among_a_folders_pictures(tmp_path, fifo, capsys):

    for split in ("train", "test"):
        for label in ("a", "b"):
            folder = tmp_path / "pictures" / split / label
            folder.mkdir(parents=True)
            Image.fromarray(np.full((8, 8), 90, np.uint8)).save(folder / "0.png")
    fifo("pictures/train/a/1.png")
    with must_not_block():
        code = main(
            ["data", "convert", "--from-folder", str(tmp_path / "pictures"), "--out", str(tmp_path / "ds")]
        )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "1.png: not a regular file" in err
    assert not (tmp_path / "ds").exists() and not (tmp_path / ".ds.converting").exists()


def test_convert_refuses_a_fifo_given_as_a_csv(tmp_path, fifo, capsys):
    # data convert --from-csv opened the file without the one reader: a FIFO hung it
    path = fifo("train.csv")
    with must_not_block():
        code = main(["data", "convert", "--from-csv", str(path), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "train.csv: not a regular file" in err
    assert not (tmp_path / "ds").exists() and not (tmp_path / ".ds.converting").exists()


def _dataset_folder(tmp_path):
    from conftest import synthetic_data

    from torchlogreg.data.ondisk import write_dataset

    data = synthetic_data(n_classes=2)
    write_dataset(tmp_path / "ds", data.train, data.test, ("a", "b"))
    return tmp_path / "ds"


@pytest.mark.parametrize("name", ["train-images.npy", "train-labels.npy", "meta.json"])
def test_a_dataset_folder_with_a_fifo_is_refused(tmp_path, name):
    from torchlogreg import TrainConfig
    from torchlogreg.data.inmemory import load_data

    folder = _dataset_folder(tmp_path)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with must_not_block(), pytest.raises(DataError, match="not a regular file|holds no meta.json"):
        load_data(TrainConfig(dataset=str(folder), val_size=10))


def test_dataset_labels_declaring_gigabytes_are_refused_from_the_header(tmp_path):
    from torchlogreg import TrainConfig
    from torchlogreg.data.inmemory import load_data

    folder = _dataset_folder(tmp_path)
    (folder / "train-labels.npy").write_bytes(npy_with_header((500_000_000,), descr="<i8"))
    with must_not_block(), pytest.raises(DataError, match="would decode to 3.73 GiB"):
        load_data(TrainConfig(dataset=str(folder), val_size=10))


def _idx_gz(path, dims, data: bytes):
    header = b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header)
        out.write(data)


def test_an_idx_gzip_bomb_is_cut_where_its_header_says_the_data_ends(tmp_path):
    # a 4.6 MB .gz whose data inflated to 4.7 GB was decompressed whole
    from torchlogreg.data.idxfiles import read_idx

    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _idx_gz(path, [10], bytes(64 << 20))  # declares 10 bytes, holds 64 MB
    with must_not_block(), pytest.raises(DataError, match="holds more bytes after the header"):
        read_idx(path)
    _idx_gz(path, [2**31, 2**31, 2**31], b"")  # dimensions whose product overflows 64 bits
    with pytest.raises(DataError, match="over the 1073741824 bytes allowed"):
        read_idx(path)


def test_convert_refuses_an_npz_bomb_from_its_headers(tmp_path, capsys):
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train_images.npy", npy_with_header((6_000_000, 28, 28)))
        for key in ("train_labels", "test_images", "test_labels"):
            archive.writestr(f"{key}.npy", npy_with_header((2,)))
    with must_not_block():
        code = main(["data", "convert", "--from-npz", str(path), "--out", str(tmp_path / "ds")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "would decode to 4.38 GiB" in err
    with pytest.raises(DataError, match="over the limit of 1 MiB"):
        read_npz_arrays(path, 1 << 20, DataError)


def test_read_npy_checks_the_declared_size_against_the_file(tmp_path):
    (tmp_path / "short.npy").write_bytes(npy_with_header((1000,), descr="<i8", data=bytes(80)))
    with pytest.raises(DataError, match="truncated"):
        read_npy(tmp_path / "short.npy", 1 << 20, DataError)
    np.save(tmp_path / "ok.npy", np.arange(5))
    assert read_npy(tmp_path / "ok.npy", 1 << 20).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"image_sape": [28, 28]}, "unknown key 'image_sape'"),
        ({"image_shape": [2, 8]}, "image_shape \\[2, 8\\] is not the shape of the images"),
    ],
)
def test_a_dataset_folders_meta_json_is_checked_against_its_data(tmp_path, change, fragment):
    import json

    from torchlogreg import TrainConfig
    from torchlogreg.data.inmemory import load_data

    folder = _dataset_folder(tmp_path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, **change}))
    with pytest.raises(DataError, match=fragment):
        load_data(TrainConfig(dataset=str(folder), val_size=10))


def test_an_image_shape_too_large_for_any_run_is_refused(tmp_path):
    # load_inputs with an image shape of 100,000 x 100,000 ended in a MemoryError
    from torchlogreg.data.inputs import load_inputs

    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "a.png")
    with must_not_block(), pytest.raises(InputError, match="image_shape 100000x100000 has 10000000000"):
        load_inputs([tmp_path / "a.png"], image_shape=(100_000, 100_000))


def test_a_name_too_long_cannot_be_opened_rather_than_being_no_regular_file(tmp_path):
    with pytest.raises(DataError, match=r": cannot open: File name too long$"):
        open_regular(tmp_path / ("x" * 300), DataError)


def test_a_symbolic_link_refused_is_not_a_regular_file(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="link: not a regular file"):
        open_regular(tmp_path / "link", follow_links=False)


def test_an_input_error_becomes_the_callers_kind_with_its_parameter():
    with pytest.raises(DataError, match="^bad$") as error, raised_as(DataError):
        raise InputError("bad", parameter="npz")
    assert error.value.parameter == "npz" and not isinstance(error.value, InputError)
    with pytest.raises(InputError), raised_as(InputError):
        raise InputError("kept")


def test_read_npy_and_read_npz_arrays_raise_the_callers_kind(tmp_path):
    (tmp_path / "a.npy").write_bytes(b"not an npy file")
    with zipfile.ZipFile(tmp_path / "a.npz", "w") as archive:
        archive.writestr("x.npy", b"not an npy file")
    with pytest.raises(DataError):
        read_npy(tmp_path / "a.npy", 1 << 20, DataError)
    with pytest.raises(DataError):
        read_npz_arrays(tmp_path / "a.npz", 1 << 20, DataError)
