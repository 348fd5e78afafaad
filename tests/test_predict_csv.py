"""`predict` on CSV rows reads them as `data convert` read the training CSV, end to end on MNIST
digits: a label column found the same way (`digit`, last, among `px0`..`px783`), and a file of only
0s and 1s (binarized digits) read as fractions by both, so the model predicts on the pixels it was
trained on. The reader's rules themselves are tested in test_csvfiles.py."""

import numpy as np
import pytest

from torchlogreg.apps.cli import main

N_TRAIN, N_TEST = 2000, 500


def _write(path, images, labels, binarize):
    """Digits as CSV rows: px0..px783 then the label, `digit`; 0 and 1 (threshold 128) when `binarize`."""
    pixels = images.reshape(len(images), -1).astype(np.int64)
    if binarize:
        pixels = (pixels > 127).astype(np.int64)
    header = ",".join([f"px{i}" for i in range(pixels.shape[1])] + ["digit"])
    np.savetxt(path, np.column_stack([pixels, labels]), fmt="%d", delimiter=",", header=header, comments="")


@pytest.mark.parametrize("binarize", [False, True])
def test_predict_reads_a_csv_as_convert_read_the_training_csv(tmp_path, mnist_splits, capsys, binarize):
    # before: predict took px0 as the label (shifted pixels, accuracy 0.41), and a binarized file
    # was stored and read as 0..255 values 0 and 1, nearly black (accuracy 0.34)
    train, test = mnist_splits[:2]
    truth = test.labels[:N_TEST].numpy()
    _write(tmp_path / "train.csv", train.images[:N_TRAIN].numpy(), train.labels[:N_TRAIN].numpy(), binarize)
    _write(tmp_path / "test.csv", test.images[:N_TEST].numpy(), truth, binarize)
    data, run = tmp_path / "data", tmp_path / "run"
    csvs = [str(tmp_path / "train.csv"), str(tmp_path / "test.csv")]
    assert main(["data", "convert", "--from-csv", *csvs, "--out", str(data)]) == 0
    line = capsys.readouterr().out
    assert "label column 'digit' (the one not named like the pixels; --label-column picks another)" in line
    assert ("pixels only 0s and 1s, read as fractions" if binarize else "pixels 0..255") in line
    stored = np.load(data / "test-images.npy")
    if binarize:
        assert set(np.unique(stored).tolist()) == {0, 255}
    assert main(["train", "--dataset", str(data), "--out", str(run), "--quiet", "--device", "cpu"]) == 0
    np.save(tmp_path / "stored.npy", stored)  # what training saw
    for name in ("test.csv", "stored.npy"):
        output = tmp_path / f"{name}.predictions.csv"
        assert main(["predict", str(run), str(tmp_path / name), "--output", str(output)]) == 0
    err = capsys.readouterr().err
    assert "test.csv: column digit taken as the label (the one not named like the pixels)" in err
    assert ("test.csv: pixels only 0s and 1s, read as fractions" in err) == binarize  # (0..255: no note)
    from_csv, from_stored = (
        np.loadtxt(tmp_path / f"{name}.predictions.csv", delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
        for name in ("test.csv", "stored.npy")
    )
    assert np.array_equal(from_csv, from_stored)
    assert np.mean(from_csv == truth) > 0.8
    if binarize:  # one stray 2 makes the file 0..255, near black: predict says so (it said nothing)
        stray = tmp_path / "stray.csv"
        lines = (tmp_path / "test.csv").read_text().splitlines()
        lines[-1] = "2" + lines[-1][1:]
        stray.write_text("\n".join(lines) + "\n")
        assert main(["predict", str(run), str(stray), "--output", str(tmp_path / "stray.out.csv")]) == 0
        said = f"{stray}: pixels read as 0..255, the largest 2: near-black pictures"
        assert said in capsys.readouterr().err
        lines[-1] = "200.5" + lines[-1][1:]  # a largest pixel that is not whole counts too (it was 0)
        stray.write_text("\n".join(lines) + "\n")
        assert main(["predict", str(run), str(stray), "--output", str(tmp_path / "bright.out.csv")]) == 0
        assert "near-black" not in capsys.readouterr().err


def test_predict_takes_a_label_column_by_name(tmp_path, default_run, mnist_splits, capsys):
    """`predict --label-column` names a CSV's label column where the header cannot tell it (a name
    like the pixels' own), as `data convert --label-column` does; without it the line says how."""
    test = mnist_splits[1]
    pixels = test.images[:50].reshape(50, -1).numpy().astype(np.int64)
    header = ",".join([f"c{i}" for i in range(784)] + ["c784"])
    path = tmp_path / "odd.csv"
    np.savetxt(path, np.column_stack([pixels, test.labels[:50].numpy()]), fmt="%d", delimiter=",",
               header=header, comments="")  # fmt: skip
    out = tmp_path / "out.csv"
    assert main(["predict", str(default_run), str(path), "--output", str(out)]) == 1
    assert "give label_column (predict: --label-column)" in capsys.readouterr().err
    assert main(["predict", str(default_run), str(path), "--label-column", "c784", "--output", str(out)]) == 0
    labels = np.loadtxt(out, delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    assert np.mean(labels == test.labels[:50].numpy()) > 0.8


def test_predict_ignores_a_text_label_column(tmp_path, default_run, mnist_splits):
    """The label column is not read by predict, so class names there ('seven') do not make rows bad."""
    test = mnist_splits[1]
    words = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    pixels = test.images[:20].reshape(20, -1).numpy()
    lines = ["label," + ",".join(f"pixel{i}" for i in range(784))]
    labels = test.labels[:20].tolist()
    lines += [",".join([words[y], *map(str, row)]) for y, row in zip(labels, pixels, strict=True)]
    path = tmp_path / "named.csv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    assert main(["predict", str(default_run), str(path), "--output", str(out)]) == 0
    predicted = np.loadtxt(out, delimiter=",", skiprows=1, dtype=np.int64)[:, 1]
    assert np.mean(predicted == test.labels[:20].numpy()) > 0.8


@pytest.mark.parametrize("name", ["id", "ImageId", "index"])
def test_a_column_numbering_the_rows_is_refused_not_read_as_a_pixel(tmp_path, name):
    """`id,label,pixel0..` had been read as 65 pixels ("do not make a square image"), and without a
    label `id` was taken as the label."""
    from torchlogreg.base.exceptions import InputError
    from torchlogreg.data.inputs import load_inputs

    path = tmp_path / "rows.csv"
    header, row = ",".join([name, *(f"pixel{i}" for i in range(784))]), ",".join(["1"] + ["0"] * 784)
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(InputError, match=rf"column '{name}' numbers the rows, it is not a pixel"):
        load_inputs([path])
