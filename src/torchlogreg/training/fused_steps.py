"""The engine's mini-batch steps, many per call of the fused kernel (fused.steps), where it covers
them: one CPU process, SGD (momentum, Nesterov) or Adam on the model's float32 weight and bias, rows
of uint8 or float32 that the source hands out as an epoch's index (`epoch_rows`: in memory, or a
dataset folder a shard at a time). Each step is what Engine.step takes one at a time (the batch's
fused gradient, the penalty's, the centring, the optimizer's update), so a run takes the same steps
either way, up to float32's rounding; what it saves is the Python between them, most of a step's
time under a few hundred rows a batch.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from ..core import fused
from ..core.model import pixel_scale
from ..data.batches import EpochRows

RUN_ROWS = 16384  # rows one call takes at most: a stop request waits for no more


def covers(engine) -> bool:
    """Whether the engine's steps can run in the fused kernel (its data is asked at each epoch's
    start: `source.epoch_rows`)."""
    weight, bias = engine.model.linear.weight, engine.model.linear.bias
    stepped = engine.parameters
    rule = getattr(engine.optimizer, "fused_rule", None)  # SGD, Adam, Proximal
    return (
        fused.available()
        and not engine.full_batch
        and engine.dist is None
        and rule is not None
        and rule() is not None
        and hasattr(engine.source, "epoch_rows")
        and fused._dense(weight, 2, torch.float32)
        and fused._dense(bias, 1, torch.float32)
        and len(stepped) in (1, 2)
        and stepped[0] is weight
        and (stepped[1] is bias if len(stepped) == 2 else engine.centring is None)
    )


class EpochCursor:
    """Where the engine is in an epoch it steps through in the fused kernel: the epoch's parts still
    to come (`source.epoch_rows`: one, or one per shard), the part being stepped through, its next
    batch and the entry of the part's index where that batch's rows start."""

    def __init__(self, parts: Iterable[EpochRows]):
        self.parts, self.rows, self.at, self.first = iter(parts), None, 0, 0

    def part(self) -> EpochRows | None:
        """The part holding the next batch (moving on to the next part where one is done); None at
        the epoch's end."""
        while self.rows is None or self.at >= len(self.rows.sizes):
            self.rows, self.at, self.first = next(self.parts, None), 0, 0
            if self.rows is None:
                return None
        return self.rows

    def advance(self, steps: int) -> None:
        """`steps` batches were taken."""
        self.first += int(self.rows.sizes[self.at : self.at + steps].sum())
        self.at += steps


def run_length(engine, cursor: EpochCursor) -> int:
    """Steps the next call may take from the cursor: to the end of its part (an epoch, or a shard of
    one), the run's end, RUN_ROWS rows, and no further than every callback lets the engine tell it
    of steps afterwards (`steps_ahead`; one step for a callback without it)."""
    if engine.start_loss is None:  # the divergence rule's ceiling follows from the first loss
        return 1
    rows, at = cursor.rows, cursor.at
    left = len(rows.sizes) - at
    count = min(left, engine.total - engine.iteration, max(1, RUN_ROWS // int(rows.sizes[at])))
    for callback in engine.callbacks:
        ahead = getattr(callback, "steps_ahead", None)
        count = min(count, ahead(engine) if ahead is not None else 1)
    return max(count, 1)


def take_steps(engine, cursor: EpochCursor, lrs: np.ndarray, ceiling: float) -> np.ndarray:
    """Take len(lrs) steps from the cursor on the engine's model and optimizer, stopping after a step
    whose loss is not finite or above `ceiling`, and move the cursor past them; each step's mean
    loss."""
    weight, bias = engine.model.linear.weight, engine.model.linear.bias
    for param in (weight, bias):
        if param.grad is None:
            param.grad = torch.empty_like(param)
    rows = cursor.rows
    sizes = rows.sizes[cursor.at : cursor.at + len(lrs)]
    index = rows.index[cursor.first : cursor.first + int(sizes.sum())]
    objective, centring = engine.gradient.objective, engine.centring
    step_bias = len(engine.parameters) == 2
    losses = fused.steps(
        weight,
        bias,
        rows.x,
        rows.y,
        index,
        sizes,
        lrs,
        pixel_scale(rows.x),
        engine.optimizer.fused_rule(),
        sample_weight=rows.sample_weight,
        weight_decay=objective.weight_decay,
        l1=objective.l1,
        mean=centring.mean if centring is not None and step_bias else None,
        step_bias=step_bias,
        ceiling=ceiling,
        batch=engine.source.batch_size,
    )
    cursor.advance(len(losses))
    if not step_bias:
        bias.grad = None  # (as the step-by-step path: a fixed parameter has no gradient)
    return losses
