"""What a report measures of a run on its test set: the predictions (labels, predicted classes,
probabilities), the per-class metrics, the calibration and, for two classes, the ROC and
precision-recall curves. apps/report_figures.py draws them; apps/report.py writes the page.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.model import decide, logits_of
from ..runfolder.checkpoints import Run

CALIBRATION_BINS = 10


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


def confusion_matrix(pred: Predictions, n_classes: int) -> np.ndarray:
    """Counts (rows: true class, columns: predicted), as scikit-learn's confusion_matrix. By hand: one
    bincount, where importing sklearn.metrics took over a second of a report's few."""
    pairs = np.asarray(pred.labels, np.int64) * n_classes + np.asarray(pred.predicted, np.int64)
    return np.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_metrics(pred: Predictions, class_names: tuple[str, ...]) -> list[dict]:
    """Each class's precision, recall, F1 and support from the confusion matrix, 0 where undefined
    (scikit-learn's precision_recall_fscore_support with zero_division=0)."""
    counts = confusion_matrix(pred, len(class_names))
    hits, predicted, support = np.diag(counts), counts.sum(axis=0), counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(predicted + support > 0, 2 * hits / (predicted + support), 0.0)
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
    metrics = {
        "per_class": per_class_metrics(pred, class_names),
        "ece": expected_calibration_error(pred),
        "calibration": calibration_bins(pred),
        "confusion_matrix": confusion_matrix(pred, len(class_names)).tolist(),
    }
    if len(class_names) == 2:
        curves = binary_curves(pred)
        metrics.update(roc_auc=curves["roc_auc"], average_precision=curves["average_precision"])
    return metrics
