"""Converting other formats to dataset folders: IDX (raw and gzipped), NPZ, CSV (streamed in
chunks, with and without a header, 0..255 or 0..1 pixels) and train/test image folders; what is
refused, and that a failed conversion leaves the output as it was."""

import contextlib
import gzip
import json
import re
import shutil

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from torchlogreg import ConfigError, DataError, TorchLogRegError, TrainConfig, preset, train
from torchlogreg.apps.cli import main
from torchlogreg.data.convert import convert, present_classes, stratified_split
from torchlogreg.data.inmemory import Split, load_data
from torchlogreg.data.ondisk import read_meta
from torchlogreg.data.readers import MAX_LABEL


def _synthetic(n: int, shape=(4, 4), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), np.arange(n) % classes


def _load(folder, split):
    return np.load(folder / f"{split}-images.npy"), np.load(folder / f"{split}-labels.npy")


def _same_rows(folder, split, images, labels):
    """The folder's split holds exactly these (image, label) pairs (train rows are shuffled)."""
    ours, our_labels = _load(folder, split)
    flat = images.reshape(len(images), -1)
    key = np.concatenate([labels[:, None], flat], 1)
    our_key = np.concatenate([our_labels[:, None], ours.reshape(len(ours), -1)], 1)
    return ours.shape == images.shape and np.array_equal(np.unique(key, axis=0), np.unique(our_key, axis=0))


def _write_idx(path, array):
    dtype_code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, dtype_code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def test_idx_folder_gives_the_same_dataset_as_the_builtin(tmp_path, data_root):
    builtin = convert(tmp_path / "builtin", dataset="mnist", data_root=data_root, download=False)
    written = convert(tmp_path / "idx", idx=f"{data_root}/MNIST/raw")
    assert written["train"] == 60000 and written["class_names"] == tuple("0123456789")
    assert builtin["pictures"] == written["pictures"] == "mnist-style"  # the IDX files: light on dark
    for name in ("train-images.npy", "train-labels.npy", "test-images.npy", "test-labels.npy"):
        assert (tmp_path / "builtin" / name).read_bytes() == (tmp_path / "idx" / name).read_bytes(), name


def test_gzipped_idx_and_class_names(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    images, labels = _synthetic(40)
    test_images, test_labels = _synthetic(10, seed=1)
    _write_idx(raw / "train-images-idx3-ubyte.gz", images)
    _write_idx(raw / "train-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    _write_idx(raw / "test-images-idx3-ubyte.gz", test_images)
    _write_idx(raw / "test-labels-idx1-ubyte.gz", test_labels.astype(np.uint8))
    written = convert(tmp_path / "out", idx=raw, class_names=["a", "b", "c"])
    assert written["class_names"] == ("a", "b", "c") and written["image_shape"] == (4, 4)
    assert np.array_equal(_load(tmp_path / "out", "test")[0], test_images)
    assert _same_rows(tmp_path / "out", "train", images, labels)
    with pytest.raises(ConfigError, match=r"lists 2 names but .* has 3 labels \(0, 1, 2\); give 3 names,"):
        convert(tmp_path / "two", idx=raw, class_names=["a", "b"])


def test_npz(tmp_path):
    images, labels = _synthetic(30)
    np.savez(tmp_path / "a.npz", train_images=images, train_labels=labels, test_images=images[:5],
             test_labels=labels[:5])  # fmt: skip
    written = convert(tmp_path / "out", npz=tmp_path / "a.npz")
    assert written["train"] == 30 and _same_rows(tmp_path / "out", "train", images, labels)
    np.savez(tmp_path / "bad.npz", train_images=images.astype(np.float32), train_labels=labels,
             test_images=images, test_labels=labels)  # fmt: skip
    with pytest.raises(DataError, match="train_images must be uint8"):
        convert(tmp_path / "bad", npz=tmp_path / "bad.npz")


def test_npz_with_keras_names(tmp_path):
    """keras.datasets.mnist's mnist.npz names its arrays x_train, y_train, x_test, y_test."""
    images, labels = _synthetic(30)
    np.savez(tmp_path / "mnist.npz", x_train=images, y_train=labels.astype(np.uint8), x_test=images[:5],
             y_test=labels[:5].astype(np.uint8))  # fmt: skip
    written = convert(tmp_path / "out", npz=tmp_path / "mnist.npz")
    assert written["train"] == 30 and _same_rows(tmp_path / "out", "train", images, labels)
    np.savez(tmp_path / "bad.npz", x_train=images, y_train=labels[:2], x_test=images, y_test=labels)
    with pytest.raises(DataError, match="y_train must be 30 integers, one per image"):
        convert(tmp_path / "bad", npz=tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", X=images, y=labels)
    with pytest.raises(DataError, match=r"needs arrays train_images, .* \(or Keras's x_train, .*found X, y"):
        convert(tmp_path / "other", npz=tmp_path / "other.npz")
    np.savez(tmp_path / "half.npz", x_train=images, y_train=labels)  # Keras's names, the test split left out
    with pytest.raises(DataError, match="missing x_test, y_test, found x_train, y_train"):
        convert(tmp_path / "half", npz=tmp_path / "half.npz")


def _write_csv(path, images, labels, header=True, label_at=0, unit=False):
    pixels = images.reshape(len(images), -1)
    values = pixels / 255 if unit else pixels
    columns = [f"pixel{i}" for i in range(pixels.shape[1])]
    rows = [[f"{v:.6f}" if unit else str(v) for v in row] for row in values]
    for row, label in zip(rows, labels, strict=True):
        row.insert(label_at, str(label))
    columns.insert(label_at, "label")
    lines = ([",".join(columns)] if header else []) + [",".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "header,label_at,unit,label_column",
    [(True, 0, False, None), (True, 5, False, None), (False, 0, False, None), (False, 16, True, "-1")],
)
def test_csv_streams_in_chunks(tmp_path, monkeypatch, header, label_at, unit, label_column):
    monkeypatch.setattr("torchlogreg.data.csvfiles.CSV_BLOCK_BYTES", 300)  # many blocks, a short last one
    images, labels = _synthetic(50)
    test_images, test_labels = _synthetic(12, seed=1)
    _write_csv(tmp_path / "train.csv", images, labels, header, label_at, unit)
    _write_csv(tmp_path / "test.csv", test_images, test_labels, header, label_at, unit)
    written = convert(
        tmp_path / "out", csv=(tmp_path / "train.csv", tmp_path / "test.csv"), label_column=label_column
    )
    assert written["image_shape"] == (4, 4) and written["class_names"] == ("0", "1", "2")
    # 0..1 fractions written with 6 decimals come back as the same uint8 values
    assert np.array_equal(_load(tmp_path / "out", "test")[0], test_images)
    assert _same_rows(tmp_path / "out", "train", images, labels)
    assert not list(tmp_path.glob(".*converting"))  # scratch files are gone


def test_csv_image_size_and_errors(tmp_path):
    images, labels = _synthetic(10, shape=(2, 5))
    _write_csv(tmp_path / "wide.csv", images, labels)
    with pytest.raises(ConfigError, match="10 pixel columns do not make a square image; give image_size=HxW"):
        convert(tmp_path / "a", csv=(tmp_path / "wide.csv", tmp_path / "wide.csv"))
    convert(tmp_path / "b", csv=(tmp_path / "wide.csv", tmp_path / "wide.csv"), image_size="2x5")
    assert np.array_equal(_load(tmp_path / "b", "test")[0], images)
    with pytest.raises(ConfigError, match="image_size 3x3 does not match 10 pixel columns"):
        convert(tmp_path / "c", csv=(tmp_path / "wide.csv", tmp_path / "wide.csv"), image_size="3x3")
    with pytest.raises(ConfigError, match="label_column 'digit' is not a column of .*wide.csv"):
        convert(tmp_path / "c", csv=(tmp_path / "wide.csv", tmp_path / "wide.csv"), label_column="digit")

    bad = tmp_path / "bad.csv"
    bad.write_text("label,a,b,c,d\n1,0,0,0,0\n2,0,x,0,0\n")
    with pytest.raises(DataError, match=r"bad.csv: row 3: 'x' is not a number"):
        convert(tmp_path / "d", csv=(bad, bad))
    bad.write_text("1,0,0,0,300\n")
    with pytest.raises(DataError, match=r"bad.csv: row 1: pixel 3 is 300, expected 0\.\.255"):
        convert(tmp_path / "d", csv=(bad, bad))
    bad.write_text("1.5,0,0,0,0\n")
    with pytest.raises(DataError, match="row 1: label 1.5 is not a class number; labels must be integers"):
        convert(tmp_path / "d", csv=(bad, bad))
    with pytest.raises(DataError, match="missing.csv: no such file"):
        convert(tmp_path / "d", csv=(tmp_path / "missing.csv", bad))


def test_a_test_csv_without_labels_is_refused_before_anything_is_read(tmp_path, capsys):
    # not "63 pixel columns do not make a square image": the file lacks its labels, and says so
    images, labels = _synthetic(12, shape=(8, 8))
    _write_csv(tmp_path / "train.csv", images, labels)
    np.savetxt(tmp_path / "test.csv", images.reshape(12, -1), fmt="%d", delimiter=",",
               header=",".join(f"pixel{i}" for i in range(64)), comments="")  # fmt: skip
    args = ["data", "convert", "--from-csv", str(tmp_path / "train.csv"), str(tmp_path / "test.csv")]
    assert main([*args, "--out", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    train = tmp_path / "train.csv"
    assert error.endswith(
        f"{tmp_path / 'test.csv'}: no label column (64 columns, as many as the pixels of {train}); a test "
        f"CSV needs its labels, in a column as {train} has them (column 'label'), or give the training CSV "
        "alone to split a test set off it"
    ) and len(error.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "header,said",
    [
        ([*(f"px{i}" for i in range(16)), "digit"], "label column 'digit' (the one not named like the "
         "pixels; --label-column picks another), pixels 0..255"),
        (None, "label column 0 (the first: no header; --label-column picks another), pixels 0..255"),
        (["target", *(f"px{i}" for i in range(16))], "label column 'target' (by its name), pixels 0..255"),
    ],
)  # fmt: skip
def test_convert_says_which_column_it_took_as_the_label(tmp_path, capsys, header, said):
    # never a pixel column silently: 'digit' last was px0 before, 17 'classes' of pixel values
    images, labels = _synthetic(30)
    table = np.column_stack([images.reshape(30, -1), labels] if header and header[-1] == "digit" else
                            [labels, images.reshape(30, -1)])  # fmt: skip
    path = tmp_path / "train.csv"
    np.savetxt(path, table, fmt="%d", delimiter=",", header=",".join(header or []), comments="")
    assert main(["data", "convert", "--from-csv", str(path), "--out", str(tmp_path / "out")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.endswith(f"; {path}: {said}") and "3 classes: 0, 1, 2" in line
    stored = np.concatenate([_load(tmp_path / "out", split)[0] for split in ("train", "test")])
    assert sorted(map(bytes, stored)) == sorted(map(bytes, images))  # the pixels, not shifted by a column


def test_predict_reads_a_csv_without_a_header_as_the_training_csv(tmp_path, capsys):
    """The dataset and the run record where a training CSV without a header held its label (here the
    last column), and predict reads such a file alike: it had taken column 0, shifting every pixel by
    one, and answered 42% of 8x8 digits right with exit 0."""
    images, labels = _synthetic(90, classes=3)
    images.reshape(90, -1)[np.arange(90), labels] = 255  # a pixel per class: learnable
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([images.reshape(90, -1), labels]), fmt="%d", delimiter=",")
    out, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "convert", "--from-csv", str(path), "--label-column", "-1", "--out", str(out)]) == 0
    assert read_meta(out)["csv_label"] == -1
    assert main(["train", "--dataset", str(out), "--out", str(run), "--quiet"]) == 0
    assert json.loads((run / "model.json").read_text())["csv_label"] == -1
    capsys.readouterr()
    assert main(["predict", str(run), str(path), "--output", str(tmp_path / "p.csv")]) == 0
    said = "column 16 taken as the label (the last, as the training CSV had it: no header)"
    assert said in capsys.readouterr().err
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    assert (predicted == labels).mean() > 0.9


def test_a_first_column_like_pixels_beside_a_last_like_labels_is_noted(tmp_path, capsys):
    """Without a header the first column is the label (Kaggle's way); where the last holds fewer values,
    convert says so (label-last shapes had made 66 classes of a pixel's values, 4% test, no word). A
    note, not a refusal: binarized label-first digits look the same."""
    images, labels = _synthetic(90, classes=3)
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.column_stack([images.reshape(90, -1), labels]), fmt="%d", delimiter=",")
    note = convert(tmp_path / "out", csv=(path,))["note"]
    said = r"taken as the label \(no header\), gives \d+ classes; the last column holds 3 values: if it is"
    assert re.search(said, note) and note.endswith("the label, convert again with label_column=-1")
    assert main(["data", "convert", "--from-csv", str(path), "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().err.rstrip().endswith("the label, convert again with --label-column -1")
    assert convert(tmp_path / "last", csv=(path,), label_column="-1")["note"] == ""
    binarized = np.column_stack([labels, (images.reshape(90, -1) > 127) * 255])  # label first: 3 classes
    np.savetxt(tmp_path / "first.csv", binarized, fmt="%d", delimiter=",")
    assert convert(tmp_path / "first", csv=(tmp_path / "first.csv",))["class_names"] == ("0", "1", "2")


def test_predict_takes_the_training_csvs_label_place_for_a_file_without_a_header(tmp_path, capsys):
    """Recorded whether or not the training CSV had a header (a file predicted may have none); a
    recorded place is refused when it is damaged or past the file's columns (it had wrapped round)."""
    images, labels = _synthetic(90, classes=3)
    images.reshape(90, -1)[np.arange(90), labels] = 255
    rows = np.column_stack([images.reshape(90, -1), labels])
    header = ",".join([*(f"px{i}" for i in range(16)), "label"])
    np.savetxt(tmp_path / "named.csv", rows, fmt="%d", delimiter=",", header=header, comments="")
    np.savetxt(tmp_path / "bare.csv", rows, fmt="%d", delimiter=",")
    out, run = tmp_path / "data", tmp_path / "run"
    assert main(["data", "convert", "--from-csv", str(tmp_path / "named.csv"), "--out", str(out)]) == 0
    assert main(["train", "--dataset", str(out), "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "bare.csv"), "--output", str(tmp_path / "p.csv")]) == 0
    predicted = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    assert (predicted == labels).mean() > 0.9
    capsys.readouterr()
    meta = json.loads((run / "model.json").read_text())
    for bad, said in ((None, "csv_label must be a column index"), (1000, "held its label in column 1000")):
        (run / "model.json").write_text(json.dumps({**meta, "csv_label": bad}))
        assert main(["predict", str(run), str(tmp_path / "bare.csv")]) in (1, 2)
        error = capsys.readouterr().err
        assert said in error and error.count("\n") == 1


def test_csv_refuses_a_change_of_pixel_scale(tmp_path, monkeypatch):
    monkeypatch.setattr("torchlogreg.data.csvfiles.CSV_BLOCK_BYTES", 1)  # a block per row
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("0,0.5,0,0,1\n1,0,200,0,0\n")
    scale = r"mixed.csv: row 2: pixel 1 is 200 but row 1 holds fractions in \[0, 1\]; use one scale"
    with pytest.raises(DataError, match=scale):
        convert(tmp_path / "out", csv=(mixed, mixed))


def _image_tree(root, images, labels, names, split, mode="L"):
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / split / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert(mode).save(folder / f"{i:03d}.png")


@pytest.mark.parametrize("layout", ["flat", "train only"])
def test_an_image_folder_without_test_has_one_split_off(tmp_path, layout):
    """ROOT/<class>/* (torchvision's ImageFolder(ROOT)) or ROOT/train/<class>/* alone: a stratified test
    split of test_size, as of one CSV; both had been refused, and --test-size ignored."""
    images, labels = _synthetic(40, shape=(6, 5), classes=2)
    root = tmp_path / "photos"
    _image_tree(root, images, labels, ["cat", "dog"], "." if layout == "flat" else "train")
    done = convert(tmp_path / "out", folder=root, test_size=0.25)
    assert (done["train"], done["test"], tuple(done["class_names"])) == (30, 10, ("cat", "dog"))
    test_labels = _load(tmp_path / "out", "test")[1]
    assert sorted(test_labels.tolist()) == [0] * 5 + [1] * 5  # stratified
    stored = np.concatenate([_load(tmp_path / "out", split)[0] for split in ("train", "test")])
    assert sorted(map(bytes, stored)) == sorted(map(bytes, images))


def test_a_dataset_of_two_classes_is_binary_with_a_training_subset_too(tmp_path):
    """A two-class dataset gives the binary model (one logit), train_size or not: with it, prepare had
    made a two-logit softmax model and the run's line lost "(binary: ... against ...)"."""
    images, labels = _synthetic(40, shape=(6, 5), classes=2)
    np.savez(tmp_path / "two.npz", train_images=images, train_labels=labels, test_images=images,
             test_labels=labels)  # fmt: skip
    convert(tmp_path / "two", npz=tmp_path / "two.npz")
    for train_size in (None, 20):
        data = load_data(TrainConfig(dataset=str(tmp_path / "two"), train_size=train_size), download=False)
        assert data.binary and data.n_classes == 2


def test_test_size_with_a_source_of_its_own_test_set_is_refused(tmp_path):
    """It had been ignored without a word (train/ and test/, two CSVs, an .npz)."""
    images, labels = _synthetic(20, shape=(6, 5), classes=2)
    root = tmp_path / "photos"
    _image_tree(root, images, labels, ["cat", "dog"], "train")
    _image_tree(root, images, labels, ["cat", "dog"], "test")
    with pytest.raises(ConfigError, match="test_size splits a test set off a source without one"):
        convert(tmp_path / "out", folder=root, test_size=0.5)
    assert convert(tmp_path / "out", folder=root)["test"] == 20


def test_a_folder_mixing_splits_and_classes_is_refused(tmp_path):
    """A class named train, or class folders beside test/: which layout is meant is not clear."""
    images, labels = _synthetic(20, shape=(6, 5), classes=2)
    for split_like in ("train", "test"):
        root = tmp_path / split_like
        _image_tree(root, images, labels, [split_like, "dog"], ".")
        with pytest.raises(DataError, match=r"holds train/ or test/ \(read as splits\) beside dog"):
            convert(tmp_path / f"out-{split_like}", folder=root)


def test_image_folders(tmp_path):
    images, labels = _synthetic(30, shape=(6, 5))
    test_images, test_labels = _synthetic(6, shape=(6, 5), seed=1)
    root = tmp_path / "photos"
    _image_tree(root, images, labels, ["cat", "dog", "emu"], "train")
    _image_tree(root, test_images, test_labels, ["cat", "dog", "emu"], "test", mode="RGB")
    written = convert(tmp_path / "out", folder=root)
    assert written["class_names"] == ("cat", "dog", "emu") and written["image_shape"] == (6, 5)
    assert _same_rows(tmp_path / "out", "train", images, labels)
    test_ours, test_our_labels = _load(tmp_path / "out", "test")  # in folder order: class, then file
    order = np.lexsort((np.arange(6), test_labels))
    assert np.array_equal(test_ours, test_images[order]) and np.array_equal(
        test_our_labels, test_labels[order]
    )

    resized = convert(tmp_path / "resized", folder=root, image_size="28x28")
    assert resized["image_shape"] == (28, 28)
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(root / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match=r"9x9 pixels, but .* is 6x5; give image_size=HxW"):
        convert(tmp_path / "mixed", folder=root)
    (tmp_path / "flat" / "train").mkdir(parents=True)
    (tmp_path / "flat" / "test").mkdir()
    with pytest.raises(DataError, match="Couldn't find any class folder"):
        convert(tmp_path / "flat-out", folder=tmp_path / "flat")
    (root / "test" / "fox").mkdir()
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(root / "test" / "fox" / "a.png")
    with pytest.raises(DataError, match="classes fox are not in"):
        convert(tmp_path / "fox", folder=root, image_size="6x5")


@pytest.mark.parametrize("suffix", [".gif", ".GIF", ".pgm"])
def test_image_folders_read_every_picture_format_predict_reads(tmp_path, suffix):
    """convert reads the picture files predict reads (torchvision's ImageFolder list left GIFs out,
    silently); other files are left alone."""
    images, labels = _synthetic(8, shape=(6, 5))
    for split in ("train", "test"):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = tmp_path / "pics" / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            kind = Image.registered_extensions()[suffix.lower()]
            Image.fromarray(image).save(folder / f"{i}{suffix}", format=kind)
        (tmp_path / "pics" / split / "c0" / "notes.txt").write_text("not a picture")
    written = convert(tmp_path / "out", folder=tmp_path / "pics")
    assert written["train"] == written["test"] == 8
    assert _same_rows(tmp_path / "out", "train", images, labels)


def test_output_folder_rules_and_failed_conversion_keeps_the_old_dataset(tmp_path):
    images, labels = _synthetic(20)
    np.savez(tmp_path / "a.npz", train_images=images, train_labels=labels, test_images=images,
             test_labels=labels)  # fmt: skip
    out = tmp_path / "out"
    convert(out, npz=tmp_path / "a.npz")
    before = (out / "train-images.npy").read_bytes()
    with pytest.raises(ConfigError, match="already holds a dataset; give out=ANOTHER_PATH, or overwrite"):
        convert(out, npz=tmp_path / "a.npz")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError):
        convert(out, npz=tmp_path / "broken.npz", overwrite=True)
    assert (out / "train-images.npy").read_bytes() == before and not list(tmp_path.glob(".*converting"))
    other = tmp_path / "home"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        convert(other, npz=tmp_path / "a.npz", overwrite=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_overwrite_refuses_a_dataset_folder_holding_other_files_its_source_among_them(tmp_path):
    """--overwrite replaces the whole folder: the user's files in it, or the very source being
    converted, are refused rather than deleted (a newcomer lost a folder of photos so)."""
    images, labels = _synthetic(20)
    out = tmp_path / "out"
    np.savez(tmp_path / "a.npz", train_images=images, train_labels=labels, test_images=images,
             test_labels=labels)  # fmt: skip
    convert(out, npz=tmp_path / "a.npz")
    (out / "a.npz").write_bytes((tmp_path / "a.npz").read_bytes())
    (out / "README.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"holds other files \(README.txt, a.npz\), which a dataset would"):
        convert(out, npz=out / "a.npz", overwrite=True)
    assert (out / "README.txt").read_text() == "mine" and (out / "a.npz").is_file()
    (out / "README.txt").unlink()
    (out / "a.npz").unlink()
    (out / ".DS_Store").write_bytes(b"")  # (a file browser's: no file of the user's)
    convert(out, npz=tmp_path / "a.npz", overwrite=True)  # the dataset's own files alone: replaced
    (out / "meta.json").unlink()
    with pytest.raises(ConfigError, match=r"holds part of a dataset \(no meta.json\): not one to replace"):
        convert(out, npz=tmp_path / "a.npz", overwrite=True)
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="link is a symbolic link to nothing; give out=A_FOLDER"):
        convert(tmp_path / "link", npz=tmp_path / "a.npz")


def test_overwriting_moves_the_old_dataset_aside_until_the_new_one_is_in(tmp_path, monkeypatch):
    images, labels = _synthetic(20)
    np.savez(tmp_path / "a.npz", train_images=images, train_labels=labels, test_images=images,
             test_labels=labels)  # fmt: skip
    out = tmp_path / "out"
    convert(out, npz=tmp_path / "a.npz")
    before = (out / "meta.json").read_bytes()
    real_rename = type(out).rename

    def rename(path, target):  # the new dataset cannot be renamed in: the old one goes back
        if path.name.endswith(".converting"):
            assert (tmp_path / ".out.replaced" / "meta.json").read_bytes() == before
            raise OSError(28, "No space left on device")
        return real_rename(path, target)

    monkeypatch.setattr(type(out), "rename", rename)
    with pytest.raises(OSError):
        convert(out, npz=tmp_path / "a.npz", overwrite=True)
    assert (out / "meta.json").read_bytes() == before
    monkeypatch.undo()
    convert(out, npz=tmp_path / "a.npz", overwrite=True, class_names=["a", "b", "c"])
    assert read_meta(out)["class_names"] == ["a", "b", "c"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "out"]


@pytest.mark.parametrize(
    "options,parameter",
    [
        ({"npz": "a.npz", "idx": "raw"}, "npz"),
        ({"folder": "photos", "class_names": ["a", "b"]}, "class_names"),
        ({"image_size": "big"}, "image_size"),
        ({"class_names": ["a", "a"]}, "class_names"),
    ],
)
def test_library_errors_name_the_parameter_not_a_flag(tmp_path, options, parameter):
    with pytest.raises(ConfigError) as error:
        convert(tmp_path / "out", **options)
    assert error.value.parameter == parameter and "--" not in str(error.value)
    assert not (tmp_path / "out").exists()


def test_cli_convert_from_csv_then_train(tmp_path, data_root, capsys):
    train_csv, test_csv = tmp_path / "train.csv", tmp_path / "test.csv"
    splits = load_data(preset("default", data_root=data_root, train_size=3000, val_size=0))
    _write_csv(train_csv, splits.train.images.numpy(), splits.train.labels.numpy())
    _write_csv(test_csv, splits.test.images.numpy()[:1000], splits.test.labels.numpy()[:1000])
    folder = tmp_path / "csv-data"
    assert main(["data", "convert", "--from-csv", str(train_csv), str(test_csv), "--out", str(folder)]) == 0
    printed = capsys.readouterr().out
    assert "images (28x28, 10 classes: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9; pictures mnist-style)" in printed
    result = train(preset("default", dataset=str(folder), val_size=300, device="cpu"), verbose=False)
    assert result.metrics["test"]["accuracy"] > 0.8
    assert json.loads((folder / "meta.json").read_text())["splits"] == {"train": 3000, "test": 1000}
    with pytest.raises(SystemExit) as exit_info:  # argparse: one source only
        main(["data", "convert", "--from-npz", "a.npz", "--from-idx", "raw", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert main(["data", "convert", "--from-csv", str(train_csv), str(test_csv), "--out", str(folder)]) == 2
    err = capsys.readouterr().err  # the library's one wording, in the flags' words
    assert f"error: --out {folder} already holds a dataset; give --out ANOTHER_PATH, or --overwrite to" in err
    args = ["--from-csv", str(train_csv), "--test-size", "2", "--out", str(tmp_path / "y")]
    assert main(["data", "convert", *args]) == 2
    assert "error: --test-size must be a fraction in (0, 1), got 2.0" in capsys.readouterr().err


# --- hostile and broken sources: one clear error, or the data kept whole ------------------------
def test_a_byte_order_mark_is_not_data(tmp_path):
    images, labels = _synthetic(20)
    _write_csv(tmp_path / "train.csv", images, labels, header=False)
    _write_csv(tmp_path / "test.csv", images[:5], labels[:5], header=False)
    for name in ("train.csv", "test.csv"):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # Excel's UTF-8 BOM
    convert(tmp_path / "out", csv=(tmp_path / "train.csv", tmp_path / "test.csv"))
    assert _same_rows(tmp_path / "out", "train", images, labels)  # the first row kept


@pytest.mark.parametrize(
    "cell,fragment",
    [
        ("nan", r"row 3: pixel 2 is nan, expected 0\.\.255"),
        ("inf", "row 3: pixel 2 is inf"),
        ("1e12", r"row 3: label 1e\+12 is not a class number; labels .* 0\.\.99999"),
        # (a dataset stores 8-bit pixels: 5.5 was stored as 6, and a table of iris's 5.1 cm as 5)
        ("5.5", r"row 3: pixel 2 is 5\.5, not a whole number 0\.\.255: .* TorchLogisticRegression"),
    ],
)
def test_csv_cells_that_are_not_pixels_or_labels(tmp_path, cell, fragment):
    images, labels = _synthetic(6)
    _write_csv(tmp_path / "train.csv", images, labels)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    fields = lines[2].split(",")
    fields[0 if cell == "1e12" else 3] = cell
    lines[2] = ",".join(fields)
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=fragment):
        convert(tmp_path / "out", csv=(tmp_path / "train.csv", tmp_path / "train.csv"))


def test_csv_labels_may_be_class_names(tmp_path):
    """Labels that are names ('cat', as a labelling tool writes them) are the classes, sorted (as a
    picture folder's subfolders and scikit-learn's classes_); a test file's labels are names as the
    training file's are, and a name only the test rows hold is refused."""
    images, labels = _synthetic(12)
    words = np.array(["emu", "cat", "3"])  # ('3' is a name too, in a file of names)
    _write_csv(tmp_path / "train.csv", images, words[labels])
    _write_csv(tmp_path / "test.csv", images[:6], words[labels[:6]])
    written = convert(tmp_path / "out", csv=(tmp_path / "train.csv", tmp_path / "test.csv"))
    assert written["class_names"] == ("3", "cat", "emu")
    number = {"3": 0, "cat": 1, "emu": 2}
    expected = np.array([number[word] for word in words[labels]])
    assert _same_rows(tmp_path / "out", "train", images, expected)
    assert _same_rows(tmp_path / "out", "test", images[:6], expected[:6])
    one_file = convert(tmp_path / "split", csv=(tmp_path / "train.csv",), test_size=0.25)
    assert one_file["class_names"] == ("3", "cat", "emu") and one_file["test"] == 3
    _write_csv(tmp_path / "fox.csv", images[:2], np.array(["fox", "cat"]))
    with pytest.raises(DataError, match=r"test labels 'fox' never occur in the training data \(labels '3', "):
        convert(tmp_path / "fox", csv=(tmp_path / "train.csv", tmp_path / "fox.csv"))
    assert not (tmp_path / "fox").exists()
    with pytest.raises(ConfigError, match=r"class_names: .*train.csv's labels are class names already"):
        convert(tmp_path / "renamed", csv=(tmp_path / "train.csv",), class_names=["a", "b", "c"])
    blank = words[labels].copy()
    blank[3] = ""
    _write_csv(tmp_path / "blank.csv", images, blank)
    with pytest.raises(DataError, match=r"blank.csv: row 5: its label \(column 'label'\) is blank"):
        convert(tmp_path / "blank", csv=(tmp_path / "blank.csv",))


@pytest.mark.parametrize(
    "header",
    ["label," + ",".join(str(2 * j) for j in range(16)),  # the label's name, pixels named by number
     ",".join(str(j) for j in range(17)),  # pandas' column numbers: pd.DataFrame(np.c_[y, X]).to_csv()
     "y," + ",".join(str(100 + j) for j in range(16))],  # a crop's pixel numbers
)  # fmt: skip
def test_a_header_of_numbers_stays_a_header(tmp_path, header):
    """First lines of column numbers are headers, not a row of pixels (an extra image, of the class
    'label', and predict's ImageIds shifted by one)."""
    images, labels = _synthetic(12)
    pairs = zip(images, labels, strict=True)
    rows = [header] + [",".join([str(y), *map(str, image.ravel())]) for image, y in pairs]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    written = convert(tmp_path / "out", csv=(tmp_path / "train.csv",), test_size=0.25, label_column="0")
    assert written["train"] + written["test"] == 12 and written["class_names"] == ("0", "1", "2")


def test_a_test_csv_holds_the_training_files_pixel_columns_in_order(tmp_path):
    """Pixels are read by their place: a test file whose columns are named in another order would be
    mirrored pictures, taken without a word."""
    images, labels = _synthetic(8)
    _write_csv(tmp_path / "train.csv", images, labels)
    lines = (tmp_path / "train.csv").read_text().splitlines()
    names = lines[0].split(",")
    lines[0] = ",".join([names[0], *reversed(names[1:])])
    (tmp_path / "test.csv").write_text("\n".join(lines) + "\n")
    mirrored = r"test.csv: pixel column 0 is 'pixel15' where .*train.csv has 'pixel0'"
    with pytest.raises(DataError, match=mirrored):
        convert(tmp_path / "out", csv=(tmp_path / "train.csv", tmp_path / "test.csv"))


def test_a_task_picks_a_dataset_folders_classes_by_name(tmp_path, capsys):
    """--classes and --positive take class names (a folder's classes are numbered in their sorted
    order, which a name spares counting: --classes 0,1 of digit names was eight against five); the
    training line names the binary task's classes."""
    images, labels = _synthetic(60, shape=(6, 6), classes=3)
    arrays = dict(train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    np.savez(tmp_path / "a.npz", **arrays)
    data = tmp_path / "data"
    convert(data, npz=tmp_path / "a.npz", class_names=["emu", "cat", "dog"])
    run = ["train", "--dataset", str(data), "--out"]
    assert main([*run, str(tmp_path / "r1"), "--classes", "emu,cat"]) == 0
    assert "2 classes (binary: cat against emu)" in capsys.readouterr().out
    assert read_meta(data)["class_names"] == ["emu", "cat", "dog"]
    assert json.loads((tmp_path / "r1" / "model.json").read_text())["class_names"] == ["emu", "cat"]
    assert main([*run, str(tmp_path / "r2"), "--positive", "dog", "--quiet"]) == 0
    assert json.loads((tmp_path / "r2" / "model.json").read_text())["class_names"] == ["not dog", "dog"]
    assert main([*run, str(tmp_path / "r3"), "--classes", "emu,cta"]) == 2
    assert "--classes: " in (err := capsys.readouterr().err) and "no class 'cta' (did you mean 'cat'?)" in err


def test_classes_named_by_other_numbers_are_picked_by_those_numbers(tmp_path, capsys):
    """Labels 3, 7 and 10 are classes 0, 1 and 2: --classes 3,7 means the classes so named, as
    `data convert` lists them (it had taken positions 3 and 7), and 0 names no class."""
    images, labels = _synthetic(60, shape=(6, 6), classes=3)
    labels = np.array([3, 7, 10])[labels]
    arrays = dict(train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    np.savez(tmp_path / "a.npz", **arrays)
    data = tmp_path / "data"
    assert convert(data, npz=tmp_path / "a.npz")["class_names"] == ("3", "7", "10")
    run = ["train", "--dataset", str(data), "--quiet", "--out"]
    assert main([*run, str(tmp_path / "r1"), "--classes", "3,10"]) == 0
    assert json.loads((tmp_path / "r1" / "model.json").read_text())["class_names"] == ["3", "10"]
    assert main([*run, str(tmp_path / "r2"), "--positive", "7"]) == 0
    assert json.loads((tmp_path / "r2" / "model.json").read_text())["class_names"] == ["not 7", "7"]
    assert main([*run, str(tmp_path / "r3"), "--classes", "0,1"]) == 2
    assert "--classes: " in (err := capsys.readouterr().err) and "no class '0'" in err and "3, 7, 10" in err


def test_a_class_name_holding_a_comma_is_shown_quoted_and_can_be_picked(tmp_path, capsys):
    """'deux, два' was listed bare (ten classes read as eleven) and could not be named in --classes."""
    images, labels = _synthetic(60, shape=(6, 6), classes=3)
    arrays = dict(train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    np.savez(tmp_path / "a.npz", **arrays)
    data = tmp_path / "data"
    convert(data, npz=tmp_path / "a.npz", class_names=["deux, два", "cat", "dog"])
    run = ["train", "--dataset", str(data), "--quiet", "--out"]
    assert main([*run, str(tmp_path / "r1"), "--classes", '"deux, два", dog']) == 0
    assert json.loads((tmp_path / "r1" / "model.json").read_text())["class_names"] == ["deux, два", "dog"]
    with pytest.raises(SystemExit, match="2"):  # (argparse's exit: a flag's own value is wrong)
        main([*run, str(tmp_path / "r2"), "--classes", "deux"])
    assert "at least two classes (A,B), got deux" in capsys.readouterr().err
    assert main([*run, str(tmp_path / "r4"), "--positive", '"deux, два"']) == 0  # (as listed shows it)
    assert json.loads((tmp_path / "r4" / "model.json").read_text())["class_names"][1] == "deux, два"
    assert main([*run, str(tmp_path / "r5"), "--classes", "²,1"]) == 2  # (int() reads '²': a traceback)
    assert "has no class '²'" in capsys.readouterr().err
    assert main([*run, str(tmp_path / "r3"), "--classes", "deux,cat"]) == 2
    assert 'its classes: "deux, два", cat, dog' in capsys.readouterr().err  # (as --classes takes it)


def test_a_csv_of_class_names_needs_no_header(tmp_path):
    """A first row holding one class name among pixels is a row, not a header (it was dropped as
    one); a header of pandas' column numbers (0, 1, ...) with one name among them is still a header."""
    images, labels = _synthetic(12)
    named = np.array(["emu", "cat", "dog"])[labels]
    _write_csv(tmp_path / "plain.csv", images, named, header=False)
    written = convert(tmp_path / "plain", csv=(tmp_path / "plain.csv", tmp_path / "plain.csv"))
    assert written["train"] == 12 and written["class_names"] == ("cat", "dog", "emu")
    numbered = tmp_path / "numbered.csv"
    rows = [",".join([str(i) for i in range(16)] + ["label"])]
    rows += [",".join([*map(str, image.ravel()), str(y)]) for image, y in zip(images, labels, strict=True)]
    numbered.write_text("\n".join(rows) + "\n")
    assert convert(tmp_path / "numbered", csv=(numbered, numbered))["train"] == 12


def test_one_class_from_a_guessed_label_column_says_how_to_pick_another(tmp_path):
    """A CSV without a header and its label last: the first column (a blank pixel) was taken as the
    label, and the one-class error now says so, and how to pick the last."""
    images, labels = _synthetic(8)
    images[:, 0, 0] = 0
    _write_csv(tmp_path / "train.csv", images, labels, header=False, label_at=16)
    hint = r"only class 0 \(.*train.csv: column 0 was taken as the label, the first: no header; --label-"
    with pytest.raises(DataError, match=hint + r"column picks another, -1 the last\)"):
        convert(tmp_path / "out", csv=(tmp_path / "train.csv",))
    assert convert(tmp_path / "out", csv=(tmp_path / "train.csv",), label_column="-1")["train"] > 0


def test_pandas_row_index_is_named_as_such(tmp_path):
    """df.to_csv() writes the row index as a first column without a name: refused with the fix (it
    was read as a pixel, or made the columns no square image)."""
    import pandas as pd

    images, labels = _synthetic(6)
    frame = pd.DataFrame(images.reshape(6, -1), columns=[f"px{i}" for i in range(16)])
    frame.insert(0, "label", labels)
    frame.to_csv(tmp_path / "train.csv")
    with pytest.raises(DataError, match=r"the first column has no name: pandas' row index .* index=False"):
        convert(tmp_path / "out", csv=(tmp_path / "train.csv",))
    frame.to_csv(tmp_path / "train.csv", index=False)
    assert convert(tmp_path / "out", csv=(tmp_path / "train.csv",), test_size=0.5)["train"] == 3


def test_a_csv_of_class_numbers_refuses_a_name_among_them(tmp_path):
    images, labels = _synthetic(6)
    mixed = labels.astype(str)
    mixed[4] = "seven"
    _write_csv(tmp_path / "train.csv", images, mixed)
    refused = r"row 6: label 'seven' \(column 'label'\) is not a class number, as the file's first label is"
    with pytest.raises(DataError, match=refused):
        convert(tmp_path / "out", csv=(tmp_path / "train.csv",))


@pytest.mark.parametrize("labels", [np.array([0, 1, 2**63], np.uint64), np.array([0, -1, 1], np.int64)])
def test_npz_labels_that_are_no_class_numbers_are_refused(tmp_path, labels):
    images, _ = _synthetic(3)
    arrays = {"train_images": images, "train_labels": labels, "test_images": images, "test_labels": labels}
    np.savez(tmp_path / "a.npz", **arrays)
    with pytest.raises(DataError, match=r"a.npz: train_labels: labels must be integers in 0\.\.99999, found"):
        convert(tmp_path / "out", npz=tmp_path / "a.npz")


def test_npz_counts_must_match_and_text_is_not_an_archive(tmp_path):
    images, labels = _synthetic(3)
    np.savez(
        tmp_path / "a.npz",
        train_images=images,
        train_labels=labels[:2],
        test_images=images,
        test_labels=labels,
    )
    with pytest.raises(DataError, match="train_labels must be 3 integers, one per image"):
        convert(tmp_path / "out", npz=tmp_path / "a.npz")
    (tmp_path / "b.npz").write_text("label,pixel0\n1,2\n")
    with pytest.raises(DataError, match="not an .npz archive"):
        convert(tmp_path / "out", npz=tmp_path / "b.npz")


def test_one_class_is_refused(tmp_path):
    images, _ = _synthetic(8)
    np.savez(
        tmp_path / "a.npz",
        train_images=images,
        train_labels=np.zeros(8, np.int64),
        test_images=images,
        test_labels=np.zeros(8, np.int64),
    )
    with pytest.raises(DataError, match="only class 0; a classifier needs at least two"):
        convert(tmp_path / "out", npz=tmp_path / "a.npz")
    assert not (tmp_path / "out").exists()


def test_a_symlink_loop_in_an_image_folder_is_refused(tmp_path):
    images, labels = _synthetic(6, shape=(8, 8))
    for split in ("train", "test"):
        _image_tree(tmp_path / "photos", images, labels, ["a", "b", "c"], split)
    (tmp_path / "photos" / "train" / "a" / "loop").symlink_to(tmp_path / "photos" / "train")
    with pytest.raises(DataError, match="same image as .*symlink loop"):
        convert(tmp_path / "out", folder=tmp_path / "photos")


# --- generated damage: meta.json of dataset folders, CSV rows -------------------------------------


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    images, labels = _synthetic(40)
    folder = tmp_path_factory.mktemp("ds") / "data"
    np.savez(
        folder.parent / "a.npz",
        train_images=images,
        train_labels=labels,
        test_images=images[:10],
        test_labels=labels[:10],
    )
    return convert(folder, npz=folder.parent / "a.npz")["out"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(
        st.sampled_from(["format", "class_names", "image_shape", "splits"]),
        JSON_VALUES,
        min_size=1,
        max_size=2,
    )
)
def test_damaged_meta_json_is_one_clear_error(small_dataset, tmp_path_factory, memory_cap, changes):
    folder = tmp_path_factory.mktemp("meta") / "data"
    shutil.copytree(small_dataset, folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))
    with contextlib.suppress(TorchLogRegError):
        load_data(TrainConfig(dataset=str(folder), val_size=10, device="cpu"))


@pytest.mark.parametrize(
    "labels,fragment",
    [
        (np.full(40, 10**9), r"labels must lie in 0\.\.2"),
        (np.zeros(39, np.int64), "expected 40 integer labels"),
    ],
)
def test_damaged_labels_on_disk(small_dataset, tmp_path, labels, fragment):
    folder = tmp_path / "data"
    shutil.copytree(small_dataset, folder)
    np.save(folder / "train-labels.npy", labels)
    with pytest.raises(DataError, match=fragment):
        load_data(TrainConfig(dataset=str(folder), val_size=10, device="cpu"))


CELLS = st.one_of(
    st.integers(-300, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=6),
    st.just(""),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(CELLS, min_size=0, max_size=20), min_size=1, max_size=8), header=st.booleans())
def test_generated_csv_rows_convert_or_fail_cleanly(tmp_path_factory, memory_cap, rows, header):
    folder = tmp_path_factory.mktemp("csv")
    lines = ([",".join(["label", *[f"pixel{i}" for i in range(16)]])] if header else []) + [
        ",".join(r) for r in rows
    ]
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    try:
        convert(folder / "out", csv=(folder / "train.csv", folder / "train.csv"))
    except TorchLogRegError:
        assert not (folder / "out").exists()  # a failed conversion leaves nothing behind


@pytest.mark.parametrize(("largest", "noted"), [(16, True), (2, True), (17, False), (255, False), (1, False)])
def test_near_black_training_images_are_noted(tmp_path, largest, noted):
    """Pixels that never pass 16 of 255 (scikit-learn's 0..16 digits) train as near-black pictures:
    convert says so, with the factor that scales them; 0s and 1s are read as fractions."""
    images = np.random.default_rng(0).integers(0, largest + 1, (20, 4, 4), dtype=np.uint8)
    images[0, 0, 0] = largest
    labels = np.arange(20) % 2
    arrays = dict(train_images=images, train_labels=labels, test_images=images, test_labels=labels)
    np.savez(tmp_path / "a.npz", **arrays)
    note = convert(tmp_path / "out", npz=tmp_path / "a.npz")["note"]
    assert bool(note) == noted
    if noted:
        assert f"the training pixels read as 0..255, the largest {largest}: near-black" in note
        assert f"multiply them by 255/{largest} (so that {largest} becomes 255;" in note  # (x 15 had said)


# --- classes are the labels present --------------------------------------------------------------
def _npz(path, train_labels, test_labels, shape=(4, 4)):
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 256, (len(train_labels), *shape), dtype=np.uint8),
             train_labels=np.asarray(train_labels), test_labels=np.asarray(test_labels),
             test_images=rng.integers(0, 256, (len(test_labels), *shape), dtype=np.uint8))  # fmt: skip
    return path


def test_classes_are_the_labels_present_in_sorted_order(tmp_path):
    source = _npz(tmp_path / "a.npz", [5, 3, 5, 3, 9, 5], [3, 9, 5])
    written = convert(tmp_path / "out", npz=source)
    assert written["class_names"] == ("3", "5", "9")
    train_labels, test_labels = _load(tmp_path / "out", "train")[1], _load(tmp_path / "out", "test")[1]
    assert sorted(train_labels.tolist()) == [0, 0, 1, 1, 1, 2] and test_labels.tolist() == [0, 2, 1]
    named = convert(tmp_path / "named", npz=source, class_names=["three", "five", "nine"])
    assert named["class_names"] == ("three", "five", "nine")
    by_label = convert(tmp_path / "by-label", npz=source, class_names=[f"n{i}" for i in range(10)])
    assert by_label["class_names"] == ("n3", "n5", "n9")
    with pytest.raises(ConfigError, match=r"lists 4 names but .* has 3 labels \(3, 5, 9\); give 3 names, one "
                       r"per label in that order, or 10, one per label 0\.\.9$"):  # fmt: skip
        convert(tmp_path / "four", npz=source, class_names=list("abcd"))


def test_a_test_label_the_training_data_lacks_is_refused(tmp_path):
    with pytest.raises(DataError, match=r"test labels 7 never occur in the training data \(labels 3, 5\)"):
        convert(tmp_path / "out", npz=_npz(tmp_path / "a.npz", [3, 5, 3, 5], [3, 7, 7]))
    assert not (tmp_path / "out").exists()


def test_two_labels_make_a_binary_model_that_predicts_their_names(tmp_path, mnist_splits, capsys):
    """Digits 3 and 5 written with their own labels: a two-class dataset, the sigmoid model, and
    predictions named '3' and '5' (convert -> train -> predict, as a user runs them)."""
    train_split, test_split, _ = mnist_splits
    rows = {}
    for name, split, count in (("train", train_split, 1000), ("test", test_split, 200)):
        keep = torch.nonzero((split.labels == 3) | (split.labels == 5)).flatten()[:count]
        rows[name] = (split.images[keep].numpy(), split.labels[keep].numpy())
    np.savez(tmp_path / "35.npz", train_images=rows["train"][0], train_labels=rows["train"][1],
             test_images=rows["test"][0], test_labels=rows["test"][1])  # fmt: skip
    np.save(tmp_path / "digits.npy", rows["test"][0][:40])
    data, run = tmp_path / "35", tmp_path / "run"
    assert main(["data", "convert", "--from-npz", str(tmp_path / "35.npz"), "--out", str(data)]) == 0
    assert "2 classes: 3, 5; pictures mnist-style" in capsys.readouterr().out
    train_flags = ["--val-size", "100", "--epochs", "3", "--device", "cpu", "--quiet"]
    assert main(["train", "--dataset", str(data), *train_flags, "--out", str(run)]) == 0
    meta = json.loads((run / "model.json").read_text())
    assert meta["binary"] is True and meta["class_names"] == ["3", "5"] and meta["n_classes"] == 2
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "digits.npy"), "--json"]) == 0
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    truth = [str(v) for v in rows["test"][1][:40]]
    assert set(labels) == {"3", "5"} and sum(a == b for a, b in zip(labels, truth, strict=True)) >= 34


def test_test_size_errors_say_what_would_be_valid(tmp_path):
    split = Split(torch.zeros((6, 2, 2), dtype=torch.uint8), torch.tensor([0, 0, 0, 1, 1, 1]))
    with pytest.raises(ConfigError, match=r"leaves 0 of 6 rows .* strictly between 0\.167 and 0\.833"):
        stratified_split(split, 0.1, 0)
    left_train, left_test = stratified_split(split, 0.2, 0)  # inside that range: both sides get rows
    assert len(left_train) and len(left_test)
    single = Split(torch.zeros((2, 2, 2), dtype=torch.uint8), torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="test_size cannot split 2 rows of one per class; give a test set"):
        stratified_split(single, 0.5, 0)


@settings(max_examples=100, deadline=None)
@given(
    train_labels=st.lists(st.integers(0, MAX_LABEL), min_size=1, max_size=30),
    picks=st.lists(st.integers(0, 29), max_size=10),
)
def test_present_classes_keep_every_label_s_name(train_labels, picks):
    """Whatever the labels, each row's new class is named by its old label, classes run 0..k-1 in
    the labels' order, and every class has training rows."""
    test_labels = [train_labels[i % len(train_labels)] for i in picks]
    blank = torch.zeros((1, 1, 1), dtype=torch.uint8)
    train_split = Split(blank.expand(len(train_labels), 1, 1), torch.tensor(train_labels))
    test_split = Split(blank.expand(len(test_labels), 1, 1), torch.tensor(test_labels, dtype=torch.int64))
    new_train, new_test, names = present_classes(train_split, test_split, None, "labels")
    assert list(names) == [str(v) for v in sorted(set(train_labels))]
    assert [names[c] for c in new_train.labels.tolist()] == [str(v) for v in train_labels]
    assert [names[c] for c in new_test.labels.tolist()] == [str(v) for v in test_labels]
    assert set(new_train.labels.tolist()) == set(range(len(names)))


def test_a_test_csv_without_a_header_takes_the_training_files_label_column(tmp_path):
    """The training CSV's label column is found by its header (`digit`, last); the test CSV, without
    a header, takes the same place (it took its first column: every test label a pixel's value)."""
    images, labels = _synthetic(60)
    rows = np.column_stack([images.reshape(60, -1), labels])
    header = ",".join([f"px{i}" for i in range(16)] + ["digit"])
    np.savetxt(tmp_path / "train.csv", rows[:40], fmt="%d", delimiter=",", header=header, comments="")
    np.savetxt(tmp_path / "test.csv", rows[40:], fmt="%d", delimiter=",")
    convert(tmp_path / "ds", csv=(tmp_path / "train.csv", tmp_path / "test.csv"))
    assert _same_rows(tmp_path / "ds", "test", images[40:], labels[40:])


def test_a_csv_of_0s_and_1s_is_scanned_once(tmp_path, monkeypatch):
    """The look-ahead that finds a file of 0s and 1s to be fractions runs once per file (when convert
    checks the files first), not again while the rows are read (it read the file three times)."""
    from torchlogreg.data.csvfiles import CsvRows

    images, labels = _synthetic(50)
    rows = np.column_stack([labels, (images.reshape(50, -1) > 127).astype(int)])
    np.savetxt(tmp_path / "train.csv", rows, fmt="%d", delimiter=",")
    scans = []
    real = CsvRows._look_ahead
    monkeypatch.setattr(CsvRows, "_look_ahead", lambda self, handle: scans.append(1) or real(self, handle))
    convert(tmp_path / "ds", csv=(tmp_path / "train.csv",), test_size=0.2)
    assert len(scans) == 1
    assert set(np.unique(_load(tmp_path / "ds", "train")[0]).tolist()) <= {0, 255}
