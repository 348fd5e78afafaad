"""Metrics of a model on a split: exact mean loss and accuracy over the whole set."""

from __future__ import annotations

import math

import torch

from ..base.exceptions import ConfigError, InputError
from ..core import fused
from ..core.model import (
    EVAL_BATCH,
    LogisticRegression,
    as_inputs,
    decide,
    logits_of,
    pixel_scale,
    scores_overflow,
)
from ..data.batches import rank_range
from ..data.ondisk import DiskImages
from .distributed import DistContext, all_reduce_sum

PASS_BYTES = 16 * 2**20  # pixels read and scored at once by the fused kernel, which splits them over threads


@torch.no_grad()
def predict_proba(model: LogisticRegression, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities for `images`, computed in chunks on the model's device.

    Parameters
    ----------
    model : LogisticRegression
    images : torch.Tensor, NumPy array or list
        (N, H, W) or (N, features): uint8 pixels (0..255) or floats in [0, 1].

    Returns
    -------
    torch.Tensor
        (N, C) probabilities, rows summing to 1 (two columns for a binary model).
    """
    return model.probabilities(logits_of(model, images))


@torch.no_grad()
def evaluate(
    model: LogisticRegression, images: torch.Tensor, labels: torch.Tensor, threshold: float | None = None
) -> dict[str, float]:
    """Accuracy and the exact mean loss of `model` over a whole set.

    Summed chunk by chunk, so memory does not grow with the set (which may stream from disk).

    Parameters
    ----------
    model : LogisticRegression
    images : torch.Tensor, NumPy array or list
        (N, H, W) uint8 pixels or floats in [0, 1].
    labels : torch.Tensor, NumPy array or list
        (N,) class indices.
    threshold : float, optional
        Binary models: predict the positive class when its probability is above this; by default the
        model's own (``model.threshold``: the run's, for a model from :func:`load_run`).

    Returns
    -------
    dict
        ``{"accuracy": fraction correct, "loss": mean cross-entropy, "n": N}``.

    Examples
    --------
    >>> import torchlogreg as tl
    >>> run = tl.load_run("runs/default")  # doctest: +SKIP
    >>> data = tl.load_data(run.config)  # doctest: +SKIP
    >>> tl.evaluate(run.model, data.test.images, data.test.labels)  # doctest: +SKIP
    {'accuracy': 0.9255, 'loss': 0.2663..., 'n': 10000}
    """
    images, labels = checked_inputs(images, labels, 2 if model.binary else model.n_classes)
    return _evaluate(model, images, labels, model.decides_at(threshold))


def checked_inputs(images, labels, n_classes: int) -> tuple:
    """(images, labels) as `evaluate` takes them, checked: finite pixels, one label per image, each
    in 0..n_classes-1. Training checks the splits it evaluates every epoch once, here."""
    images = as_inputs(images, "images")
    return images, _checked_labels(labels, len(images), n_classes)


def _evaluate(model: LogisticRegression, images, labels: torch.Tensor, threshold: float) -> dict[str, float]:
    """`evaluate` on images and labels already checked (`checked_inputs`)."""
    was_training = model.training
    model.eval()
    device = model.linear.weight.device
    loss_sum, correct = 0.0, 0
    rows = _pass_rows(model, images)
    for start in range(0, len(labels), rows):
        chunk_labels = labels[start : start + rows].to(device)
        chunk_loss, chunk_correct = _sums(
            model, images[start : start + rows].to(device), chunk_labels, threshold
        )
        loss_sum += chunk_loss
        correct += chunk_correct
    model.train(was_training)
    if not math.isfinite(loss_sum) and all(torch.isfinite(param).all() for param in model.parameters()):
        raise scores_overflow("images")  # finite inputs and weights: their scores overflowed
    n = len(labels)
    return {"accuracy": correct / max(n, 1), "loss": loss_sum / n if n else float("nan"), "n": n}


def _checked_labels(labels, n_images: int, n_classes: int) -> torch.Tensor:
    """`labels` as a tensor of class indices, one per image, each in 0..n_classes-1: checked here,
    where they enter, rather than found out of range by the kernel."""
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise InputError(
            f"labels must be a tensor, array or list of integers, got {type(labels).__name__}"
        ) from None
    if labels.ndim != 1 or len(labels) != n_images or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(
            f"labels must be one integer per image ({n_images}), got {labels.dtype} {tuple(labels.shape)}"
        )
    if labels.is_floating_point() and not torch.equal(labels, labels.trunc()):  # NaN fails too
        raise InputError("labels must be whole numbers (class indices), got fractions or NaN")
    if len(labels) and not 0 <= labels.min() <= labels.max() < n_classes:
        raise InputError(
            f"labels must be in 0..{n_classes - 1}, got {labels.min().item()}..{labels.max().item()}"
        )
    return labels


def _pass_rows(model: LogisticRegression, images) -> int:
    """Rows per chunk: PASS_BYTES of pixels where the fused kernel scores them (on the CPU), else
    EVAL_BATCH, small enough that PyTorch's floats and logits stay in cache."""
    if model.linear.weight.device.type != "cpu":
        return EVAL_BATCH
    size = images.element_size() if isinstance(images, torch.Tensor) else 1  # DiskImages: uint8
    row_bytes = max(1, math.prod(images.shape[1:]) * size)
    return max(EVAL_BATCH, PASS_BYTES // row_bytes)


def _sums(
    model: LogisticRegression, x: torch.Tensor, labels: torch.Tensor, threshold: float
) -> tuple[float, int]:
    """(summed loss, correct predictions) of one chunk: one call of the fused kernel (which splits it
    over the threads), else PyTorch's kernels EVAL_BATCH rows at a time."""
    weight, bias = model.linear.weight, model.linear.bias
    rows = x.reshape(len(x), -1)
    if fused.usable(weight, bias, rows, labels):
        return fused.sums(weight, bias, rows, labels, pixel_scale(rows), threshold=threshold)
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), EVAL_BATCH):
        logits = model(x[start : start + EVAL_BATCH])
        part = labels[start : start + EVAL_BATCH]
        loss_sum += model.loss(logits, part, reduction="sum").item()
        correct += (decide(logits, threshold) == part).sum().item()
    return loss_sum, correct


def evaluate_on_ranks(
    model: LogisticRegression,
    images,
    labels: torch.Tensor,
    threshold: float,
    dist: DistContext | None,
    checked: bool = False,
) -> dict[str, float]:
    """evaluate(), its inputs checked unless `checked` (`checked_inputs` was called on them); under
    torchrun each rank takes its contiguous part (read from disk alone) and the sums are
    all-reduced, so every rank gets the metrics of the whole set."""
    if dist is not None:
        first, last = rank_range(len(labels), dist.rank, dist.world_size)
        images = images.view(first, last) if isinstance(images, DiskImages) else images[first:last]
        labels = labels[first:last]
    if checked:
        local = _evaluate(model, images, labels, threshold)
    else:
        local = evaluate(model, images, labels, threshold)
    if dist is None:
        return local
    n = local["n"]
    totals = torch.tensor([local["loss"] * n if n else 0.0, local["accuracy"] * n, n], dtype=torch.float64)
    all_reduce_sum(totals, dist, "the all-reduce of the metrics")
    count = max(totals[2].item(), 1.0)
    return {
        "accuracy": round(totals[1].item()) / count,
        "loss": totals[0].item() / count,
        "n": int(totals[2]),
    }


def top_k(
    model: LogisticRegression,
    images: torch.Tensor,
    class_names: tuple[str, ...],
    k: int = 3,
    threshold: float | None = None,
) -> list[dict]:
    """The prediction for each image, with the `k` most likely classes.

    Parameters
    ----------
    model : LogisticRegression
    images : torch.Tensor, NumPy array or list
        (N, H, W) uint8 pixels or floats in [0, 1], e.g. from :func:`load_inputs`.
    class_names : tuple of str
        The run's class names (``run.class_names``), one per class of the model.
    k : int, default=3
        How many classes to list (at most the number of classes).
    threshold : float, optional
        Binary models: the decision threshold; by default the model's own (``model.threshold``: the
        run's, for a model from :func:`load_run`).

    Returns
    -------
    list of dict
        Per image: ``label`` (its class name), ``index``, ``probability`` of that label, and
        ``top_k``, a list of ``{"label", "probability"}`` by falling probability.

    Examples
    --------
    >>> import torchlogreg as tl
    >>> run = tl.load_run("runs/default")  # doctest: +SKIP
    >>> images, names = tl.load_inputs(["seven.png"])  # doctest: +SKIP
    >>> tl.top_k(run.model, images, run.class_names, k=2)[0]["top_k"]  # doctest: +SKIP
    [{'label': '7', 'probability': 0.997...}, {'label': '3', 'probability': 0.003...}]
    """
    if len(class_names) != model.n_classes:
        raise ConfigError(
            f"class_names must name the model's {model.n_classes} classes, got {len(class_names)} names",
            parameter="class_names",
        )
    if isinstance(k, bool) or not isinstance(k, int):
        raise ConfigError(f"k must be an integer (how many classes to list), got {k!r}", parameter="k")
    logits = logits_of(model, images)
    probabilities = model.probabilities(logits).cpu()
    predicted = decide(logits, model.decides_at(threshold)).cpu()
    k = max(1, min(k, len(class_names)))
    values, indices = probabilities.topk(k, dim=1)
    return [
        {
            "label": class_names[int(label)],
            "index": int(label),
            "probability": float(row[int(label)]),
            "top_k": [
                {"label": class_names[int(i)], "probability": float(v)}
                for v, i in zip(vals, idx, strict=True)
            ],
        }
        for label, row, vals, idx in zip(predicted, probabilities, values, indices, strict=True)
    ]
