"""The picture rule (images.PICTURE_RULES): decided when a dataset is made (convert, meta.json),
copied by each run (model.json), applied alike by predict, load_inputs and serve, so that a model
is shown the pixels it was trained on. Real MNIST digits, written out as picture files."""

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from torchlogreg import CheckpointError, DataError, preset, train
from torchlogreg.apps.cli import main
from torchlogreg.apps.prediction import json_lines, predict_files
from torchlogreg.data.convert import convert
from torchlogreg.data.images import AS_IS, MNIST_STYLE, picture_pixels, read_image
from torchlogreg.data.inmemory import load_data
from torchlogreg.data.inputs import expand_inputs, load_inputs
from torchlogreg.data.ondisk import read_meta
from torchlogreg.runfolder.checkpoints import load_run

CLASSES = ("zero", "one", "two")


def _write_pictures(root, splits, per_class: dict, paint) -> None:
    """root/{train,test}/<class>/<index>.png: the first `per_class[split]` MNIST digits of classes
    0, 1, 2, each as `paint(uint8 digit)` makes it."""
    for split, data in zip(("train", "test"), splits, strict=False):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in torch.nonzero(data.labels == label).flatten()[: per_class[split]].tolist():
                Image.fromarray(paint(data.images[index].numpy())).save(folder / f"{index:05d}.png")


def _fit(folder, out, **config):
    """A run trained on the dataset folder `folder` into `out` (explicit small-data settings)."""
    settings = dict(val_size=30, epochs=20, batch_size=32, lr=0.02, device="cpu") | config
    train(preset("default", dataset=str(folder), **settings), out=out, verbose=False)
    return load_run(out)


def _predicted(run, files) -> list[dict]:
    """predict's JSON lines for `files`, as dicts."""
    sink = io.BytesIO()
    predict_files(run, files, sink, json_lines(run.class_names, len(run.class_names)))
    return [json.loads(line) for line in sink.getvalue().decode().splitlines()]


def _truth(record: dict) -> str:
    return record["file"].replace("\\", "/").split("/")[-2]


@pytest.fixture(scope="module")
def dark_on_light(tmp_path_factory, mnist_splits):
    """Dark digits on white paper in photos/{train,test}/{zero,one,two} (mean pixel about 220), as
    a user's scans would be; converted as they are and trained on."""
    root = tmp_path_factory.mktemp("pictures")
    _write_pictures(root / "photos", mnist_splits[:2], {"train": 60, "test": 20}, lambda d: 255 - d)
    written = convert(root / "mine", folder=root / "photos")
    run = _fit(root / "mine", root / "run")
    return root, written, run


def test_an_image_folder_is_stored_as_it_is_and_the_run_copies_the_rule(dark_on_light):
    root, written, run = dark_on_light
    assert written["pictures"] == AS_IS and read_meta(root / "mine")["pictures"] == AS_IS
    assert run.pictures == AS_IS and run.meta["pictures"] == AS_IS
    assert "as it is" in run.meta["preprocessing"]["input"]
    stored = np.load(root / "mine" / "test-images.npy")
    assert stored.mean() > 200  # dark ink on white: nothing was inverted


def test_a_run_records_its_pictures_background_for_the_drawing_pads(dark_on_light, default_run):
    """serve's and the playground's pads draw on the training pictures' background: an as-is run of
    light digits on black read a pad's black ink on white as nothing it knew (0 of 100 right)."""
    from torchlogreg.apps.serving import model_summary
    from torchlogreg.data.images import background_of

    _, _, run = dark_on_light
    assert run.background == "light" and model_summary(run)["background"] == "light"
    mnist = load_run(default_run)
    assert mnist.background == "dark" and model_summary(mnist)["background"] == "dark"
    assert background_of(torch.zeros(3, 8, 8)) == "dark" and background_of(np.ones((3, 8, 8))) == "light"
    framed = torch.zeros(3, 8, 8, dtype=torch.uint8)
    framed[:, [0, -1]], framed[:, :, [0, -1]] = 255, 255
    assert background_of(framed) == "dark"  # (a frame or a scan's edge: the border alone said light)


def test_a_picture_folder_predicts_as_it_evaluates(dark_on_light):
    root, _, run = dark_on_light
    data = load_data(run.config)
    files = expand_inputs([root / "photos" / "test"])
    records = _predicted(run, files)
    # the dataset's test rows and predict's files come in the same order: class folders, then names
    with torch.no_grad():
        expected = run.model.predict_proba(data.test.images.flatten(1))
    assert [r["label"] for r in records] == [run.class_names[i] for i in expected.argmax(1).tolist()]
    chosen = torch.tensor([r["probability"] for r in records])
    assert torch.allclose(chosen, expected.max(1).values, atol=1e-5)
    correct = sum(r["label"] == _truth(r) for r in records)
    assert correct == round(run.metrics["test"]["accuracy"] * len(records)) and correct >= 50


def test_without_the_rule_an_old_run_fits_pictures_mnist_style(dark_on_light, tmp_path):
    """A run saved before the rule was recorded keeps today's behaviour (mnist-style); for these
    dark-on-light pictures that inverts them, which is what the recorded rule repairs."""
    root, _, run = dark_on_light
    old = tmp_path / "old-run"
    shutil.copytree(run.path, old)
    meta = json.loads((old / "model.json").read_text())
    del meta["pictures"]
    (old / "model.json").write_text(json.dumps(meta))
    old_run = load_run(old)
    assert old_run.pictures == MNIST_STYLE
    records = _predicted(old_run, expand_inputs([root / "photos" / "test"]))
    assert sum(r["label"] == _truth(r) for r in records) < 0.6 * len(records)


def test_load_inputs_and_serve_apply_the_run_s_rule(dark_on_light):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from torchlogreg.apps.serving import create_app

    root, _, run = dark_on_light
    picture = sorted((root / "photos" / "test" / "two").iterdir())[0]
    images, _ = load_inputs([picture], run.image_shape, pictures=run.pictures)
    assert torch.equal(images[0], torch.from_numpy(picture_pixels(read_image(picture), (28, 28), AS_IS)))
    [record] = _predicted(run, [picture])
    client = TestClient(create_app(run.path))
    assert client.get("/api/model").json()["pictures"] == AS_IS
    body = client.post(
        "/api/predict", files={"file": ("digit.png", picture.read_bytes(), "image/png")}
    ).json()
    assert body["label"] == record["label"] and body["probability"] == pytest.approx(record["probability"])
    assert np.allclose(np.array(body["image"]), images[0].numpy(), atol=1e-4)


def test_mnist_style_folder_fits_each_picture_like_predict_does(tmp_path, mnist_splits):
    """--pictures mnist-style: photos of digits of any size are fitted MNIST-style when converted,
    and predict fits a picture the same way, so it gets the stored test row's prediction."""

    def photo(digit):  # dark ink on grey paper, enlarged and off-centre, like a phone's crop
        page = np.full((90, 70), 200, np.uint8)
        page[10:66, 5:61] = 255 - np.asarray(Image.fromarray(digit).resize((56, 56)))
        return np.minimum(page, 200)

    _write_pictures(tmp_path / "photos", mnist_splits[:2], {"train": 40, "test": 8}, photo)
    written = convert(tmp_path / "mine", folder=tmp_path / "photos", pictures=MNIST_STYLE)
    assert written["pictures"] == MNIST_STYLE and written["image_shape"] == (28, 28)
    files = expand_inputs([tmp_path / "photos" / "test"])
    stored = np.load(tmp_path / "mine" / "test-images.npy")
    fitted = np.stack([picture_pixels(read_image(f), (28, 28), MNIST_STYLE) for f in files])
    assert np.array_equal(stored, np.rint(fitted * 255).astype(np.uint8))
    assert stored.mean() < 60  # white ink on black, as MNIST
    run = _fit(tmp_path / "mine", tmp_path / "run", val_size=12)
    assert run.pictures == MNIST_STYLE
    with torch.no_grad():
        expected = run.model.predict(torch.from_numpy(stored).flatten(1))
    assert [r["index"] for r in _predicted(run, files)] == expected.tolist()


def test_a_picture_without_a_digit_names_the_file_and_the_other_rule(tmp_path, mnist_splits):
    _write_pictures(tmp_path / "photos", mnist_splits[:2], {"train": 3, "test": 1}, lambda d: 255 - d)
    blank = tmp_path / "photos" / "train" / "one" / "blank.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(blank)
    with pytest.raises(DataError, match=r"blank\.png: no digit found.*pictures=as-is"):
        convert(tmp_path / "mine", folder=tmp_path / "photos", pictures=MNIST_STYLE)
    assert not (tmp_path / "mine").exists()


def test_the_cli_names_the_other_rule_by_its_flag(tmp_path, mnist_splits, capsys):
    _write_pictures(tmp_path / "photos", mnist_splits[:2], {"train": 3, "test": 1}, lambda d: 255 - d)
    blank = tmp_path / "photos" / "train" / "one" / "blank.png"
    Image.fromarray(np.full((28, 28), 255, np.uint8)).save(blank)
    args = ["data", "convert", "--from-folder", str(tmp_path / "photos"), "--pictures", "mnist-style"]
    args += ["--out", str(tmp_path / "mine")]
    assert main(args) == DataError.exit_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "blank.png: no digit found" in err
    assert "--pictures as-is" in err and "pictures=" not in err


def _lifted(images: np.ndarray) -> np.ndarray:
    """A grey background (20 of 255): mnist-style would take it off a picture, not off the rows."""
    return np.clip(images.astype(np.int16) + 20, 0, 255).astype(np.uint8)


def _padded(images: np.ndarray) -> np.ndarray:
    """MNIST on a 32x32 field: mnist-style would fit a picture's digit to 23 pixels, not 20."""
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))


def _off_centre(images: np.ndarray) -> np.ndarray:
    """Digits moved 3 pixels right: mnist-style would centre a picture's, not the rows'."""
    return np.roll(images, 3, axis=2)


@pytest.mark.parametrize(
    ("paint", "rule"),
    [(lambda d: d, MNIST_STYLE), (_lifted, AS_IS), (lambda d: 255 - d, AS_IS), (_padded, AS_IS),
     (_off_centre, AS_IS)],
)  # fmt: skip
def test_arrays_already_in_mnists_layout_are_mnist_style(tmp_path, mnist_splits, paint, rule):
    """Arrays are mnist-style only where their rows are what mnist-style makes of a picture, so a
    picture of a training row predicts as the row does (a newcomer's box-centred digits, fitted
    again by predict alone, lost 9 points)."""
    train_split, test_split, _ = mnist_splits
    arrays = {
        "train_images": paint(train_split.images[:300].numpy()),
        "train_labels": train_split.labels[:300].numpy(),
        "test_images": paint(test_split.images[:50].numpy()),
        "test_labels": test_split.labels[:50].numpy(),
    }
    np.savez(tmp_path / "digits.npz", **arrays)
    assert convert(tmp_path / "auto", npz=tmp_path / "digits.npz")["pictures"] == rule
    other = AS_IS if rule == MNIST_STYLE else MNIST_STYLE
    assert convert(tmp_path / "chosen", npz=tmp_path / "digits.npz", pictures=other)["pictures"] == other


def test_arrays_that_reach_their_border_are_as_is_so_their_own_pictures_predict_as_trained(tmp_path):
    """scikit-learn's 8x8 digits are light on dark but fill their frame: fitting a picture of one
    MNIST-style re-framed it (a newcomer's PNGs of training images: 40 of 91 right). As-is, a
    picture of the dataset's shape reaches the model as its training pixels were."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * 255 / 16).astype(np.uint8)
    np.savez(tmp_path / "d.npz", train_images=images[:300], train_labels=digits.target[:300],
             test_images=images[300:350], test_labels=digits.target[300:350])  # fmt: skip
    assert convert(tmp_path / "ds", npz=tmp_path / "d.npz")["pictures"] == AS_IS
    Image.fromarray(images[7]).save(tmp_path / "seven.png")
    pixels = picture_pixels(read_image(tmp_path / "seven.png"), (8, 8), AS_IS)  # (in 0..1)
    assert np.array_equal(np.rint(pixels * 255), images[7])


def test_a_dataset_written_before_the_rule_reads_as_mnist_style(dark_on_light, tmp_path):
    root, _, _ = dark_on_light
    old = tmp_path / "old"
    shutil.copytree(root / "mine", old)
    meta = json.loads((old / "meta.json").read_text())
    del meta["pictures"]
    (old / "meta.json").write_text(json.dumps(meta))
    data = load_data(preset("default", dataset=str(old), val_size=30))
    assert data.pictures == MNIST_STYLE
    meta["pictures"] = "inverted"
    (old / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="pictures must be one of as-is, mnist-style, got 'inverted'"):
        load_data(preset("default", dataset=str(old), val_size=30))


def test_a_run_with_an_unknown_rule_is_refused(dark_on_light, tmp_path):
    _, _, run = dark_on_light
    broken = tmp_path / "broken"
    shutil.copytree(run.path, broken)
    meta = json.loads((broken / "model.json").read_text())
    meta["pictures"] = ["as-is"]
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"pictures must be one of as-is, mnist-style, got \['as-is'\]"):
        load_run(broken)


def test_convert_refuses_an_unknown_rule_before_writing(tmp_path):
    assert main(["data", "convert", "--pictures", "inverted", "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
