"""Figures and a one-page HTML report of a run: the data, the learned templates, the curves,
the confusion matrix, the most confident mistakes and the calibration (plus ROC/PR when binary).

    torchlogreg report RUN_DIR          # writes RUN_DIR/report/*.png and report.html

Figures are drawn with matplotlib's object API on the Agg canvas (no display, no global state)
and all have the same size; the page embeds them, so it opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base.exceptions import require
from ..base.storage import atomic_write_bytes, atomic_write_json, atomic_write_text, make_folder
from ..core.model import decide, logits_of
from ..data.inmemory import Data, load_run_data
from ..runfolder.checkpoints import Run, load_run, read_history
from ..runfolder.layout import METRICS_FILE, REPORT_DIR, REPORT_PAGE

FIGSIZE = (9.0, 6.0)  # inches; every figure has this size
DPI = 100  # so every PNG is 900 x 600 pixels
CALIBRATION_BINS = 10
N_SAMPLES = 32
N_MISTAKES = 24


@dataclass
class Predictions:
    """The test set's labels, predictions and class probabilities."""

    labels: np.ndarray
    predicted: np.ndarray
    probabilities: np.ndarray  # (N, C)

    @property
    def confidence(self) -> np.ndarray:
        return self.probabilities[np.arange(len(self.predicted)), self.predicted]


def predict_split(run: Run, images: torch.Tensor, labels: torch.Tensor) -> Predictions:
    logits = logits_of(run.model, images)
    return Predictions(
        labels=labels.numpy(),
        predicted=decide(logits, run.threshold).cpu().numpy(),
        probabilities=run.model.probabilities(logits).cpu().numpy(),
    )


# --- metrics -------------------------------------------------------------------------------


def calibration_bins(pred: Predictions, bins: int = CALIBRATION_BINS) -> list[dict]:
    """Per confidence bin: its range, sample count, mean confidence and accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(pred.confidence, edges[1:-1], right=True), 0, bins - 1)
    correct = pred.predicted == pred.labels
    rows = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": float(pred.confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(pred: Predictions, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the count-weighted mean gap between confidence and accuracy over confidence bins."""
    total = len(pred.labels)
    return float(
        sum(
            row["count"] / total * abs(row["accuracy"] - row["confidence"])
            for row in calibration_bins(pred, bins)
            if row["count"]
        )
    )


def per_class_metrics(pred: Predictions, class_names: tuple[str, ...]) -> list[dict]:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        pred.labels, pred.predicted, labels=np.arange(len(class_names)), zero_division=0
    )
    return [
        {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
    ]


def binary_curves(pred: Predictions) -> dict:
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    scores = pred.probabilities[:, 1]
    fpr, tpr, _ = roc_curve(pred.labels, scores)
    precision, recall, _ = precision_recall_curve(pred.labels, scores)
    return {
        "fpr": fpr,
        "tpr": tpr,
        "roc_auc": float(auc(fpr, tpr)),
        "precision": precision,
        "recall": recall,
        "average_precision": float(average_precision_score(pred.labels, scores)),
    }


def report_metrics(pred: Predictions, class_names: tuple[str, ...]) -> dict:
    from sklearn.metrics import confusion_matrix

    metrics = {
        "per_class": per_class_metrics(pred, class_names),
        "ece": expected_calibration_error(pred),
        "calibration": calibration_bins(pred),
        "confusion_matrix": confusion_matrix(
            pred.labels, pred.predicted, labels=np.arange(len(class_names))
        ).tolist(),
    }
    if len(class_names) == 2:
        curves = binary_curves(pred)
        metrics.update(roc_auc=curves["roc_auc"], average_precision=curves["average_precision"])
    return metrics


# --- figures -------------------------------------------------------------------------------


def _figure():
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")


def _png(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _grid(count: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(count, max_columns)
    return math.ceil(count / columns), columns


def samples_figure(images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...]):
    figure = _figure()
    rows, columns = _grid(len(images))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(image.numpy(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(class_names[int(label)], fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    figure.suptitle(f"Training samples ({len(images)} drawn at random) with their labels")
    return figure


def weights_figure(run: Run, image_shape: tuple[int, ...]):
    """Each class's weights as an image on a diverging map centred at zero (red: evidence for)."""
    weight = run.model.linear.weight.detach().cpu().numpy()
    names = run.class_names
    titles = [f"{names[1]} (red) vs {names[0]} (blue)"] if run.model.binary else list(names)
    figure = _figure()
    rows, columns = _grid(len(weight), max_columns=5)
    axes = figure.subplots(rows, columns, squeeze=False)
    limit = float(np.abs(weight).max()) or 1.0
    for ax, row, title in zip(axes.flat, weight, titles, strict=False):
        shown = ax.imshow(row.reshape(image_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(title, fontsize=11)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[len(weight) :]:
        ax.axis("off")
    figure.colorbar(shown, ax=axes, shrink=0.8, label="weight (per unit of pixel intensity)")
    figure.suptitle("Learned weights: one template per class")
    return figure


MAX_PLOTTED_LOSS = 1e30  # a loss beyond this (history.csv from a stranger, a diverged run) is not drawn


def _plottable(values: list, low: float, high: float) -> np.ndarray:
    """`values` as floats, with those outside (low, high] (or missing, or not finite) as NaN, which
    matplotlib leaves out: a damaged history.csv gives gaps in a curve, not an overflow."""
    array = np.array([np.nan if v is None else v for v in values], dtype=float)
    with np.errstate(invalid="ignore"):
        array[~((array > low) & (array <= high))] = np.nan
    return array


def _smooth(values: np.ndarray, window: int) -> np.ndarray:
    if len(values) < 2 or window < 2:
        return values
    window = min(window, len(values))
    kernel = np.ones(window) / window
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, kernel, mode="valid")


def _plain_number(value: float) -> str:
    """`value` to three significant digits, as plain text: 0.6, 20, 1e-5, 1e6."""
    mantissa, _, exponent = f"{value:.3g}".partition("e")
    return mantissa + (f"e{int(exponent)}" if exponent else "")


def _log_y(ax) -> None:
    """Put `ax`'s y axis on a log scale whose tick labels are plain numbers. Matplotlib's own are mathtext
    (`$\\mathdefault{10^{-1}}$`), which `_literal_text()` draws character by character."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        """Labels the ticks matplotlib would label, as plain numbers."""

        def __call__(self, x, pos=None) -> str:
            return self.fix_minus(_plain_number(x)) if super().__call__(x, pos) else ""

    ax.set_yscale("log")  # (which resets the formatters: set them after it)
    ax.yaxis.set_major_formatter(PlainLogFormatter())
    ax.yaxis.set_minor_formatter(PlainLogFormatter())


def curves_figure(history: list[dict]):
    figure = _figure()
    loss_ax, accuracy_ax = figure.subplots(1, 2)
    iterations = np.array([row["iteration"] for row in history], dtype=float)
    loss = _plottable([row["loss"] for row in history], 0, MAX_PLOTTED_LOSS)
    loss_ax.plot(iterations, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="per iteration")
    loss_ax.plot(iterations, _smooth(loss, max(1, len(loss) // 50)), color="tab:blue", label="smoothed")
    loss_ax.set(xlabel="iteration", ylabel="training loss (cross-entropy)", title="Loss")
    _log_y(loss_ax)
    loss_ax.legend()
    for key, label, color in (
        ("train_accuracy", "train", "tab:orange"),
        ("val_accuracy", "validation", "tab:green"),
    ):
        points = [
            (row["iteration"], row[key]) for row in history if row.get(key) is not None and 0 <= row[key] <= 1
        ]
        if points:
            x, y = zip(*points, strict=True)
            accuracy_ax.plot(x, y, marker="o", color=color, label=label)
    accuracy_ax.set(xlabel="iteration", ylabel="accuracy", title="Accuracy")
    accuracy_ax.grid(alpha=0.3)
    accuracy_ax.legend()
    figure.suptitle("Training curves")
    return figure


def confusion_figure(matrix: np.ndarray, class_names: tuple[str, ...]):
    figure = _figure()
    ax = figure.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = matrix / np.maximum(rows, 1)
    shown = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(matrix)):
        for j in range(len(matrix)):
            color = "white" if normalised[i, j] > 0.5 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45 if len(class_names) > 10 else 0)
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted", ylabel="true")
    figure.colorbar(shown, ax=ax, label="fraction of the true class")
    figure.suptitle(f"Confusion matrix on the test set ({int(matrix.sum())} images)")
    return figure


def mistakes_figure(images: torch.Tensor, pred: Predictions, class_names: tuple[str, ...]):
    wrong = np.nonzero(pred.predicted != pred.labels)[0]
    worst = wrong[np.argsort(-pred.confidence[wrong])][:N_MISTAKES]
    figure = _figure()
    rows, columns = _grid(max(len(worst), 1))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax, index in zip(axes.flat, worst, strict=False):
        ax.imshow(images[index].numpy(), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(
            f"true {class_names[pred.labels[index]]}\npred {class_names[pred.predicted[index]]} "
            f"{pred.confidence[index]:.2f}",
            fontsize=8,
        )
    for ax in axes.flat:
        ax.axis("off")
    figure.suptitle(f"The {len(worst)} most confident mistakes (of {len(wrong)})")
    return figure


def calibration_figure(pred: Predictions, ece: float):
    figure = _figure()
    ax = figure.subplots()
    rows = [row for row in calibration_bins(pred) if row["count"]]
    centres = [(row["low"] + row["high"]) / 2 for row in rows]
    width = 1.0 / CALIBRATION_BINS
    ax.bar(
        centres,
        [row["accuracy"] for row in rows],
        width=width * 0.9,
        color="tab:blue",
        edgecolor="black",
        label="accuracy in bin",
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.plot(
        [row["confidence"] for row in rows],
        [row["accuracy"] for row in rows],
        "o",
        color="tab:red",
        label="(mean confidence, accuracy)",
    )
    for centre, row in zip(centres, rows, strict=True):
        ax.annotate(str(row["count"]), (centre, 0.02), ha="center", fontsize=8, color="white")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="confidence (probability of the predicted class)",
        ylabel="accuracy",
        title=f"Reliability diagram: ECE = {ece:.4f} (counts in the bars)",
    )
    ax.legend(loc="upper left")
    return figure


def roc_pr_figure(pred: Predictions, class_names: tuple[str, ...], threshold: float):
    curves = binary_curves(pred)
    scores = pred.probabilities[:, 1]
    chosen = scores >= threshold
    positives = pred.labels == 1
    tpr = float((chosen & positives).sum() / max(positives.sum(), 1))
    fpr = float((chosen & ~positives).sum() / max((~positives).sum(), 1))
    precision = float((chosen & positives).sum() / max(chosen.sum(), 1))
    figure = _figure()
    roc_ax, pr_ax = figure.subplots(1, 2)
    roc_ax.plot(curves["fpr"], curves["tpr"], label=f"AUC = {curves['roc_auc']:.4f}")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="gray")
    roc_ax.plot([fpr], [tpr], "o", color="tab:red", label=f"threshold {threshold:g}")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    roc_ax.legend(loc="lower right")
    pr_ax.plot(curves["recall"], curves["precision"], label=f"AP = {curves['average_precision']:.4f}")
    pr_ax.plot([tpr], [precision], "o", color="tab:red", label=f"threshold {threshold:g}")
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall curve")
    pr_ax.legend(loc="lower left")
    figure.suptitle(f"Binary task: positive class {class_names[1]!r}")
    return figure


# --- the report ----------------------------------------------------------------------------


def _text(value, spec: str = "") -> str:
    """Every value that reaches the page passes here: formatted by `spec` when it is a number, and
    always HTML-escaped (metrics.json and model.json may come from a stranger)."""
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return html.escape(format(value, spec))
    return html.escape(str(value))


def _row(cells: list[str], header: str = "") -> str:
    """A table row of already escaped cells; the first is a header cell when `header` is set."""
    first = f"<th>{header}</th>" if header else ""
    return "<tr>" + first + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _metrics_html(metrics: dict, extra: dict) -> str:
    splits = [s for s in ("train", "val", "test") if isinstance(metrics.get(s), dict)]
    rows = "".join(
        _row(
            [_text(metrics[s].get(k), ".4f") for k in ("accuracy", "loss")] + [_text(metrics[s].get("n"))], s
        )
        for s in splits
    )
    summary = (
        f"<table><tr><th>split</th><th>accuracy</th><th>loss</th><th>samples</th></tr>{rows}</table>"
        f"<p>Expected calibration error (ECE, test): <b>{_text(extra['ece'], '.4f')}</b>"
    )
    if "roc_auc" in extra:
        summary += (
            f" · ROC AUC <b>{_text(extra['roc_auc'], '.4f')}</b> · average precision "
            f"<b>{_text(extra['average_precision'], '.4f')}</b>"
        )
    summary += f" · training time <b>{_text(metrics.get('train_seconds'), '.2f')} s</b></p>"
    per_class = "".join(
        _row(
            [_text(r[k], ".4f") for k in ("precision", "recall", "f1")] + [_text(r["support"])],
            _text(r["class"]),
        )
        for r in extra["per_class"]
    )
    return summary + (
        "<h3>Per class (test)</h3><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>"
        f"<th>support</th></tr>{per_class}</table>"
    )


def _settings_html(meta: dict) -> str:
    rows = "".join(_row([_text(json.dumps(v))], _text(k)) for k, v in meta["config"].items())
    return f"<table class='settings'>{rows}</table>"


FIGURE_TITLES = {
    "samples": "The data",
    "weights": "Learned templates",
    "curves": "Training curves",
    "confusion": "Confusion matrix",
    "mistakes": "Most confident mistakes",
    "calibration": "Calibration",
    "roc_pr": "ROC and precision-recall",
}

PAGE_STYLE = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 960px; margin: 2em auto;
       padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; text-align: left; }
img { width: 100%; border: 1px solid #ddd; }
table.settings td { text-align: left; font-family: monospace; }
"""


def render_html(run: Run, metrics: dict, extra: dict, figures: dict[str, bytes]) -> str:
    meta = run.meta
    title = f"torchlogreg run {run.path.name}: {meta.get('dataset')}"
    images = "".join(
        f"<h2>{FIGURE_TITLES[name]}</h2><img alt='{name}' src='data:image/png;base64,"
        f"{base64.b64encode(png).decode('ascii')}'>"
        for name, png in figures.items()
    )
    threshold = f"<p>Decision threshold: {_text(run.threshold, 'g')}</p>" if run.model.binary else ""
    versions = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_text(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<style>{PAGE_STYLE}</style></head><body><h1>{_text(title)}</h1>"
        f"<p>Classes: {_text(', '.join(run.class_names))}"
        f" · created {_text(meta.get('created'))}"
        f" · torch {_text(versions.get('torch'))}</p>{threshold}"
        f"<h2>Metrics</h2>{_metrics_html(metrics, extra)}{images}"
        f"<h2>Settings</h2>{_settings_html(meta)}</body></html>\n"
    )


def write_report(run: Run, data: Data) -> Path:
    """Write RUN_DIR/report/ (figures and report.html); add the report's metrics to metrics.json."""
    require("matplotlib", "report")
    require("sklearn", "report")
    out = make_folder(run.path / REPORT_DIR, follow_link=False)  # a link there must not send the report away
    pred = predict_split(run, data.test.images, data.test.labels)
    extra = report_metrics(pred, run.class_names)
    sample = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:N_SAMPLES]
    with _literal_text():
        pngs = _draw(run, data, pred, extra, sample)
    for name, png in pngs.items():
        atomic_write_bytes(out / f"{name}.png", png)
    metrics = {**run.metrics, **{k: v for k, v in extra.items() if k != "calibration"}}
    atomic_write_json(run.path / METRICS_FILE, metrics)
    atomic_write_text(out / REPORT_PAGE, render_html(run, metrics, extra, pngs))
    return out


def _literal_text():
    """Matplotlib settings under which text is drawn as it is: class names and file names come from
    strangers, and a `$` would start mathtext (or LaTeX with usetex) and fail or draw something else.
    Matplotlib's log-axis labels are mathtext too: a figure with a log axis labels it by `_log_y`."""
    import matplotlib

    return matplotlib.rc_context({"text.usetex": False, "text.parse_math": False})


def _draw(run: Run, data: Data, pred: Predictions, extra: dict, sample: torch.Tensor) -> dict[str, bytes]:
    """The report's figures as PNG bytes, by name."""
    figures = {
        "samples": samples_figure(data.train.images[sample], data.train.labels[sample], run.class_names),
        "weights": weights_figure(run, data.image_shape),
        "curves": curves_figure(read_history(run.path / "history.csv")),
        "confusion": confusion_figure(np.array(extra["confusion_matrix"]), run.class_names),
        "mistakes": mistakes_figure(data.test.images, pred, run.class_names),
        "calibration": calibration_figure(pred, extra["ece"]),
    }
    if run.model.binary:
        figures["roc_pr"] = roc_pr_figure(pred, run.class_names, run.threshold)
    return {name: _png(figure) for name, figure in figures.items()}


def report_for_run(
    run_dir: str | Path, data_root: str | None = None, download: bool = True, dataset: str | None = None
) -> Path:
    """Load the run in `run_dir` and its dataset (or `dataset`: its folder where it is now, or another
    with the run's classes), then write its report."""
    run = load_run(run_dir)
    return write_report(run, load_run_data(run.config, run.class_names, dataset, data_root, download))
