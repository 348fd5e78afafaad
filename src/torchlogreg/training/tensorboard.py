"""TensorBoard logging: training curves and weight templates for a run, hyperparameters for a sweep.

    logger = TensorBoardLogger("tb/run1", image_shape=(28, 28), class_names=data.class_names)
    training = build(config, data, callbacks=[logger]); training.engine.run()
    logger.close(finish(training).model)          # then: tensorboard --logdir tb

Needs the ``tensorboard`` extra, imported only when a logger is made: nothing is loaded when it is off.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch

from ..base.exceptions import ConfigError, require
from ..base.storage import make_folder, writing
from .history import BatchLosses

if TYPE_CHECKING:
    from ..core.model import LogisticRegression
    from .engine import Engine

EXTRA = "tensorboard"
SCALARS = {  # TensorBoard tag: history key
    "train/loss": "loss",
    "train/accuracy": "train_accuracy",
    "val/loss": "val_loss",
    "val/accuracy": "val_accuracy",
    "lr": "lr",
}
SWEEP_METRIC_PREFIX = "final/"  # apart from the curves' tags, so the HParams table shows final values


def _summary_writer(log_dir: str | os.PathLike, **options):
    """torch's SummaryWriter, or a DependencyError naming the extra when tensorboard is missing."""
    require("tensorboard", EXTRA)  # first: torch.utils.tensorboard's own error names no extra
    make_folder(log_dir)  # a folder that cannot be made is one line, before the writer's threads start
    with writing(log_dir):
        return require("torch.utils.tensorboard", EXTRA).SummaryWriter(log_dir=str(log_dir), **options)


def weight_images(weight: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Each weight row as a (1, H, W) image in [0, 1]: 0.5 is weight 0, 1 and 0 the largest |weight|
    of all classes, so templates compare across classes (as the report's weights figure)."""
    height, width = image_shape
    if weight.shape[1] != height * width:
        raise ConfigError(
            f"image_shape {tuple(image_shape)} does not hold the model's {weight.shape[1]} inputs"
        )
    weight = weight.detach().float().cpu()
    limit = float(weight.abs().max()) or 1.0
    return (0.5 + weight / (2 * limit)).clamp(0, 1).reshape(-1, 1, height, width)


class TensorBoardLogger:
    """Engine callback: scalars at each evaluation step; `close(model)` adds the weight templates.

    Tags: train/loss (mini-batch training: the mean of the batches' losses since the last check, as
    the console's; one batch's swings widely; full batch: the objective where the step ended),
    train/accuracy, val/loss, val/accuracy (when there is a validation set) and lr, at the step's
    iteration. Images: weights/<class name>, one per class
    (one for a binary run: the positive class's template). On resume (the engine calls
    `load_state_dict`) events logged after the checkpoint are hidden, so curves do not fold back.
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        *,
        image_shape: Sequence[int] | None = None,
        class_names: Sequence[str] | None = None,
    ):
        self.log_dir = log_dir
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.class_names = tuple(class_names) if class_names is not None else None
        self.writer = _summary_writer(log_dir)
        self.batch_losses = BatchLosses()

    def steps_ahead(self, engine: Engine) -> int:
        return engine.total  # it logs evaluations' rows: the evaluator ends calls there

    def on_step(self, engine: Engine, row: dict) -> None:
        self.on_steps(engine, [row], [engine.step_share])

    def on_steps(self, engine: Engine, rows: list[dict], shares: list[float]) -> None:
        """Logs a check's row (evaluations end calls: only a call's last can be one)."""
        self.batch_losses.add(rows, shares)
        row = rows[-1]
        if row["train_accuracy"] is None:  # set only at evaluation steps
            return
        mean = self.batch_losses.take()
        for tag, key in SCALARS.items():
            value = mean if key == "loss" and not engine.full_batch else row[key]
            if value is not None:
                self.writer.add_scalar(tag, value, row["iteration"])

    def load_state_dict(self, tensors: dict, meta: dict) -> None:
        """Resuming at `meta["iteration"]`: hide events a crashed attempt logged after that step."""
        self.writer.close()
        self.writer = _summary_writer(self.log_dir, purge_step=int(meta["iteration"]) + 1)

    def add_weights(
        self, model: LogisticRegression, image_shape: Sequence[int] | None = None, step: int = 0
    ) -> None:
        """The weight rows as images, one per class (see `weight_images`)."""
        shape = image_shape or self.image_shape
        if shape is None:
            raise ConfigError("TensorBoardLogger needs image_shape (H, W) to draw the weights as images")
        images = weight_images(model.linear.weight, shape)
        names = self.class_names or tuple(str(c) for c in range(model.n_classes))
        if len(names) != model.n_classes:
            raise ConfigError(f"{len(names)} class_names for a model of {model.n_classes} classes")
        shown = names[1:] if model.binary else names  # binary: one row, evidence for the positive class
        for name, image in zip(shown, images, strict=True):
            self.writer.add_image(f"weights/{name}", image, step, dataformats="CHW")

    def close(
        self, model: LogisticRegression | None = None, image_shape: Sequence[int] | None = None
    ) -> None:
        """Write `model`'s weight templates (when given) and close the event file; call it after `finish`
        (its model holds the best weights under early stopping). Closing twice is harmless."""
        try:
            if model is not None:
                self.add_weights(model, image_shape)
        finally:
            self.writer.close()


def _hparam_value(value) -> float | str:
    """A value TensorBoard's HParams table takes: a number, else text (None, bools, lists, names)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        return ":".join(map(str, value))
    return str(value)


def _metric_value(value) -> float | None:
    """A metric as a finite float, or None when missing (a sweep row's "" for no validation set)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def log_sweep_run(log_dir: str | os.PathLike, options: Mapping, metrics: Mapping) -> None:
    """Record one sweep run's `options` and final `metrics` in `log_dir`, for TensorBoard's HParams table.

    Give each run its own folder (e.g. SWEEP/tensorboard/<n>) and point TensorBoard at the parent.
    Metrics are written as scalars tagged final/<name>; missing ones ("" or None) are left out.
    """
    values = {str(k): _hparam_value(v) for k, v in options.items()}
    finals = {SWEEP_METRIC_PREFIX + str(k): _metric_value(v) for k, v in metrics.items()}
    finals = {k: v for k, v in finals.items() if v is not None}
    writer = _summary_writer(log_dir)
    from torch.utils.tensorboard.summary import hparams  # importable once the writer is

    try:
        for summary in hparams(values, finals):  # the experiment, session start and session end
            writer.file_writer.add_summary(summary)
        for tag, value in finals.items():
            writer.add_scalar(tag, value, 0)
    finally:
        writer.close()
