"""The report's figures, each FIGSIZE at DPI (a short grid of pictures less tall): sample images,
the learned templates, the training curves, the confusion matrix, the most confident mistakes, the
calibration and (two classes) the ROC and precision-recall curves. Drawn with matplotlib's object
API on the Agg canvas (no display, no global state); apps/report.py embeds them in the page.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..runfolder.checkpoints import Run
from .report_metrics import CALIBRATION_BINS, Predictions, binary_curves, calibration_bins

FIGSIZE = (9.0, 6.0)  # inches: every figure's width, and its height but for short picture grids
DPI = 100  # so a PNG is 900 pixels wide, 600 high
N_MISTAKES = 24
GRAY = "gray"  # pictures as stored: 0 black, 255 white (MNIST: white ink on black; a scan: dark on light)


def _figure():
    from matplotlib.figure import Figure

    return Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")


def _picture_grid(rows: int, columns: int, title_lines: int = 1):
    """(figure, axes) for a grid of small pictures with short titles, laid out by fixed margins:
    matplotlib's constrained layout measured each of 32 panels and took most of a report's drawing
    time (about 1.3 s of 1.5 for the samples)."""
    from matplotlib.figure import Figure

    width = FIGSIZE[0]
    space = 0.25 * title_lines + 0.1  # (between rows, for the titles, as a share of a panel)
    panel = width * 0.96 / (columns + 0.15 * (columns - 1))  # (a square panel's side, in inches)
    # as tall as the rows need, at most FIGSIZE's: two rows had sat in six inches, a band between them
    height = min(FIGSIZE[1], rows * panel * (1 + space) + 0.8)
    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.subplots(rows, columns, squeeze=False)
    top = 1 - 0.6 / height  # (room for the title)
    figure.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=top, wspace=0.15, hspace=space)
    return figure, axes


def png_bytes(figure) -> bytes:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _grid(count: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(count, max_columns)
    return math.ceil(count / columns), columns


def samples_figure(images: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...]):
    """Training pictures as the data holds them (GRAY: 0 black), so a dark-on-light set looks so."""
    figure, axes = _picture_grid(*_grid(len(images)))
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        ax.imshow(image.numpy(), cmap=GRAY, vmin=0, vmax=255)
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
    one = "one template (two classes: one logit)" if run.model.binary else "one template per class"
    figure.suptitle(f"Learned weights: {one}")
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
    if history:
        loss_ax.legend()
    else:  # (history.csv missing or empty)
        loss_ax.text(0.5, 0.5, "no history recorded", ha="center", transform=loss_ax.transAxes)
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
    if accuracy_ax.get_lines():
        accuracy_ax.legend()
    else:  # (a run with no history, or no checks: matplotlib warns of an empty legend)
        no_checks = "no accuracy checks recorded"
        accuracy_ax.text(0.5, 0.5, no_checks, ha="center", transform=accuracy_ax.transAxes)
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
    figure, axes = _picture_grid(*_grid(max(len(worst), 1)), title_lines=2)
    for ax, index in zip(axes.flat, worst, strict=False):
        ax.imshow(images[index].numpy(), cmap=GRAY, vmin=0, vmax=255)
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
    chosen = pred.predicted == 1  # the run's operating point: its own predictions (model.decide)
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
