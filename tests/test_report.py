"""Reports: every figure is a real PNG of the fixed size drawn from the run's data, the metrics
added to metrics.json are right, report.html is self-contained and renders in Chromium; demos."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.localserver import CHROMIUM_FLAGS
from torchlogreg import preset, train
from torchlogreg.apps.demos import cross_entropy_cases, fit_logistic, least_squares, linear_vs_logistic
from torchlogreg.apps.report import _literal_text, write_report
from torchlogreg.apps.report_figures import DPI, FIGSIZE, curves_figure, weights_figure
from torchlogreg.apps.report_metrics import Predictions, calibration_bins, expected_calibration_error
from torchlogreg.data.inmemory import prepare
from torchlogreg.runfolder.checkpoints import load_run, save_run
from torchlogreg.runfolder.layout import REPORT_FIGURES, REPORT_PAGE

FIGURES = ("samples", "weights", "curves", "confusion", "mistakes", "calibration")
SIZE = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))


@pytest.fixture(scope="module")
def report_dir(default_run, mnist_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(default_run, run_dir)
    return write_report(load_run(run_dir), mnist_data)


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_a_png_of_the_fixed_size(report_dir, name):
    """The fixed width; the fixed height too, but for a grid of pictures whose rows need less (two
    rows had sat in the whole height, a band between them)."""
    with Image.open(report_dir / f"{name}.png") as image:
        assert image.format == "PNG" and image.width == SIZE[0]
        assert image.height == SIZE[1] if name not in ("samples", "mistakes") else image.height <= SIZE[1]
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # something is drawn


def test_metrics_json_gains_the_report_metrics(report_dir):
    metrics = json.loads((report_dir.parent / "metrics.json").read_text())
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 10000
    assert np.trace(matrix) / 10000 == pytest.approx(metrics["test"]["accuracy"])
    assert [row["class"] for row in metrics["per_class"]] == list("0123456789")
    assert sum(row["support"] for row in metrics["per_class"]) == 10000
    assert 0 <= metrics["ece"] < 0.05


def test_weights_figure_has_one_panel_per_class(default_run, mnist_data):
    figure = weights_figure(load_run(default_run), mnist_data.image_shape)
    assert sum(1 for ax in figure.axes if ax.images and ax.get_title()) == 10
    assert [ax.get_title() for ax in figure.axes if ax.images and ax.get_title()] == list("0123456789")


def test_report_html_is_self_contained(report_dir):
    page = (report_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "src='//" not in page
    assert page.count("data:image/png;base64,") == len(FIGURES)
    for fragment in ("ECE", "precision", "recall", "F1", "Settings", "0.92"):
        assert fragment in page


def test_report_renders_in_chromium(report_dir, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install chromium); .ci/run installs it")
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'p'}",
            f"--screenshot={shot}",
            "--window-size=1000,2400",
            (report_dir / "report.html").as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as image:
        assert image.size == (1000, 2400)
        gray = np.asarray(image.convert("L"))
    assert gray.std() > 20  # text and figures, not a blank page
    shutil.copy(shot, report_dir / "screenshot.png")


def test_binary_report_has_roc_and_pr(mnist_splits, tmp_path):
    config = preset("default", classes=(3, 8), device="cpu", epochs=1)
    data = prepare(config, *mnist_splits)
    run_dir = save_run(train(config, data, verbose=False), tmp_path / "binary")
    out = write_report(load_run(run_dir), data)
    # every file report writes: what an overwrite removes (remove_run), the user's own files kept
    assert {path.name for path in out.iterdir()} == {REPORT_PAGE, *(f"{name}.png" for name in REPORT_FIGURES)}
    with Image.open(out / "roc_pr.png") as image:
        assert image.size == SIZE
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["roc_auc"] > 0.97 and metrics["average_precision"] > 0.97
    assert sum(map(sum, metrics["confusion_matrix"])) == 1010 + 974
    assert "Decision threshold: 0.5" in (out / "report.html").read_text()
    assert len([ax for ax in weights_figure(load_run(run_dir), (28, 28)).axes if ax.images]) == 1


def test_per_class_metrics_and_confusion_are_scikit_learns():
    """Computed by hand from one bincount (importing sklearn.metrics took over a second of a report):
    the same numbers as scikit-learn's, a class never predicted and one never present included."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    from torchlogreg.apps.report_metrics import per_class_metrics, report_metrics

    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    labels[labels == 3], predicted[predicted == 2] = 0, 1  # class 3 absent, class 2 never predicted
    probabilities = np.full((300, 5), 0.2)
    pred = Predictions(labels, predicted, probabilities)
    names = ("a", "b", "c", "d", "e")
    rows = per_class_metrics(pred, names)
    expected = precision_recall_fscore_support(labels, predicted, labels=np.arange(5), zero_division=0)
    for key, values in zip(("precision", "recall", "f1", "support"), expected, strict=True):
        np.testing.assert_allclose([row[key] for row in rows], values, rtol=1e-12)
    matrix = confusion_matrix(labels, predicted, labels=np.arange(5))
    assert report_metrics(pred, names)["confusion_matrix"] == matrix.tolist()


def test_ece_and_bins_on_a_known_case():
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.35, 0.65]])
    pred = Predictions(
        labels=np.array([0, 1, 1, 1]), predicted=np.array([0, 0, 1, 1]), probabilities=probabilities
    )
    bins = [b for b in calibration_bins(pred) if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in bins] == [(2, 1.0), (2, 0.5)]
    # bin 0.6-0.7: confidence 0.65, accuracy 1.0; bin 0.9-1.0: confidence 0.95, accuracy 0.5
    assert expected_calibration_error(pred) == pytest.approx(0.5 * 0.35 + 0.5 * 0.45)


def test_cross_entropy_demo_numbers():
    losses = {(row["label"], row["p"]): row["loss"] for row in cross_entropy_cases()}
    assert losses[(0, 1e-5)] == pytest.approx(1e-5, rel=1e-3)
    assert losses[(0, 0.99999)] == pytest.approx(11.5129, abs=1e-3)
    assert losses[(1, 0.5)] == pytest.approx(np.log(2))


def test_outlier_drags_the_line_not_the_logistic_cut(tmp_path):
    x = np.array([1, 5, 10, 10, 25, 50, 70, 75, 100.0])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1])

    def cuts(x, y):
        slope, intercept = least_squares(x, y)
        model = fit_logistic(x, y)
        return (0.5 - intercept) / slope, -model.linear.bias.item() / model.linear.weight.item()

    (line, logistic), (line_out, logistic_out) = cuts(x, y), cuts(np.append(x, 300), np.append(y, 1))
    assert abs(line_out - line) > 10 > abs(logistic_out - logistic)
    assert 25 < logistic < 50 and 25 < logistic_out < 50
    with Image.open(linear_vs_logistic(tmp_path / "fever.png")) as image:
        assert image.format == "PNG"


def test_model_predictions_agree_with_report_confusion(default_run, mnist_data):
    run = load_run(default_run)
    predicted = run.model.predict(mnist_data.test.images)
    assert (predicted == mnist_data.test.labels).float().mean().item() == pytest.approx(
        run.metrics["test"]["accuracy"]
    )
    assert torch.is_tensor(predicted)


def test_values_from_the_run_folder_are_escaped_on_the_page(default_run, tmp_path):
    """metrics.json and model.json may come from a stranger: nothing in them becomes markup."""
    from torchlogreg.apps.report import render_html

    folder = tmp_path / "run"
    shutil.copytree(default_run, folder)
    attack = "<img src=x onerror=alert(1)>"
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["train"]["n"] = attack
    metrics["test"]["accuracy"] = attack  # a string where a number belongs must not break the page
    run = load_run(folder)
    run.meta["dataset"] = attack
    run.meta["config"][attack] = attack
    extra = {
        "ece": 0.01,
        "per_class": [
            dict(
                zip(
                    ("class", "precision", "recall", "f1", "support"), (attack, 1.0, 1.0, 1.0, 5), strict=True
                )
            )
        ],
    }
    page = render_html(run, metrics, extra, {})
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_class_names_are_drawn_literally(default_run, mnist_data, tmp_path):
    # a `$` in a class name used to start matplotlib's math parser, which failed on it
    folder = tmp_path / "run"
    shutil.copytree(default_run, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["class_names"] = [r"$\nosuchsymbol$", "a $ b", "^_{", *meta["class_names"][3:]]
    (folder / "model.json").write_text(json.dumps(meta))
    out = write_report(load_run(folder), mnist_data)
    assert Image.open(out / "confusion.png").size == SIZE
    assert r"$\nosuchsymbol$" in (out / "report.html").read_text()


def test_a_report_folder_that_is_a_link_is_not_followed(default_run, mnist_data, tmp_path):
    # report/ as a symlink wrote the report outside the run folder
    from torchlogreg import OutputError

    folder = tmp_path / "run"
    shutil.copytree(default_run, folder)
    (tmp_path / "elsewhere").mkdir()
    (folder / "report").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputError, match="symbolic link"):
        write_report(load_run(folder), mnist_data)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_damaged_history_gives_gaps_not_a_crash(default_run, mnist_data, tmp_path, recwarn):
    # history.csv with 1e308 values or HTML in its header crashed report (or warned of overflows)
    folder = tmp_path / "run"
    shutil.copytree(default_run, folder)
    lines = (folder / "history.csv").read_text().splitlines()
    lines[0] += ",<b>x</b>"
    lines[1] = "1,0.01,0.1,1e308,1e308,-5,"
    lines[2] = "2,0.02,0.1,-1e308,nan,inf,"
    (folder / "history.csv").write_text("\n".join(lines) + "\n")
    out = write_report(load_run(folder), mnist_data)
    assert Image.open(out / "curves.png").size == SIZE
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_run_with_no_history_says_so_with_no_warning(default_run, mnist_data, tmp_path, recwarn):
    """Empty panels say why; matplotlib had warned "No artists with labels found to put in legend"."""
    folder = tmp_path / "run"
    shutil.copytree(default_run, folder)
    (folder / "history.csv").unlink()
    out = write_report(load_run(folder), mnist_data)
    assert Image.open(out / "curves.png").size == SIZE
    assert not [str(w.message) for w in recwarn if "legend" in str(w.message)]


def test_the_report_module_loads_no_training_module():
    """Scoring a saved run needs the model and the run format: report imports no training-side module."""
    training_side = tuple(f"torchlogreg.{name}" for name in ("evaluation", "training", "engine", "batches"))
    code = f"import sys, torchlogreg.apps.report; print([m for m in {training_side!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize("top,bottom", [(0.9, 0.3), (2.3, 1e-3)])
def test_the_loss_axis_is_labelled_in_plain_numbers(top, bottom):
    """Under `_literal_text` (class names drawn as they are) the log loss axis read
    `$\\mathdefault{6\\times10^{-1}}$`: its labels are numbers, within a decade and across several."""
    history = [
        {"iteration": i, "loss": float(loss), "train_accuracy": 0.9, "val_accuracy": None}
        for i, loss in enumerate(np.geomspace(top, bottom, 30), start=1)
    ]
    with _literal_text():
        figure = curves_figure(history)
        figure.draw_without_rendering()
    labels = [label.get_text() for label in figure.axes[0].yaxis.get_ticklabels(which="both")]
    shown = [text.replace("\N{MINUS SIGN}", "-") for text in labels if text]
    assert len(shown) >= 2 and not any("$" in text or "mathdefault" in text for text in shown)
    assert all(bottom / 10 <= float(text) <= top * 10 for text in shown)


def test_samples_show_pictures_as_the_data_holds_them():
    """A dark-on-light set's samples look dark on light, MNIST's white on black: a reversed grey had
    shown every set inverted, hiding a polarity mistake in the user's data."""
    import io

    from torchlogreg.apps.report_figures import png_bytes, samples_figure

    light = torch.full((4, 8, 8), 255, dtype=torch.uint8)
    light[:, 3:5, 2:6] = 0  # a dark stroke on white paper
    brightness = {}
    for name, images in {"light": light, "dark": 255 - light}.items():
        png = png_bytes(samples_figure(images, torch.zeros(4, dtype=torch.long), ("a",)))
        picture = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
        brightness[name] = picture.mean()  # (white margins and titles alike in both)
    assert brightness["light"] > brightness["dark"] + 20
