"""A run's history: a row per step (its loss and learning rate; checks fill in their accuracy), kept
readable however long the run: past MAX_HISTORY_ROWS rows, every 2nd step's, then every 4th's, ...,
every check's, and the last step's.

The engine records each call's steps here; checkpoints save the rows with `every`, and a resumed run
goes on with both, so its history is the one the run would have had unbroken.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..runfolder.layout import HISTORY_KEYS

# batch 1 for 65 epochs of MNIST had made 3.9 million rows, a history.csv over what a run folder may
# hold, and 2.85 GB of rows in memory
MAX_HISTORY_ROWS = 2**17

_BLANK_ROW = dict.fromkeys(HISTORY_KEYS)  # a row before its values (copied: cheaper per step)


def step_rows(first: int, steps_per_epoch: int, losses: Sequence[float], lrs: Sequence[float]) -> list[dict]:
    """The rows of the steps after step `first` that had these losses and learning rates."""
    rows = []
    for step, (loss, lr) in enumerate(zip(losses, lrs, strict=True), start=first + 1):
        row = _BLANK_ROW.copy()
        row.update(iteration=step, epoch=step / steps_per_epoch, lr=lr, loss=loss)
        rows.append(row)
    return rows


def kept(row: dict, every: int) -> bool:
    """Whether the history keeps `row` when it keeps every `every`-th step's: a check's always."""
    return row["iteration"] % every == 0 or row["train_accuracy"] is not None


def drop_stray_last(history: list[dict], every: int) -> None:
    """Before more steps' rows: the last row, kept for the callbacks of the call that made it (a check
    fills it in), leaves where it is not one the history keeps. A row per call had stayed, so a thinned
    history grew dense again on the step-by-step path, and its spacing followed where calls ended.
    Only a thinned history drops one: a live view that reads rows by index (the playground's) never
    meets it, as its runs stop short of MAX_HISTORY_ROWS steps."""
    if history and not kept(history[-1], every):
        history.pop()


def thin(history: list[dict], every: int) -> int:
    """`history` within MAX_HISTORY_ROWS rows, in place (a live run shares the list): every other kept
    step's row dropped, `every` doubling, checks' and the last kept; where checks alone fill it, every
    other check too. Returns the spacing now kept."""
    while len(history) > MAX_HISTORY_ROWS:
        last = history[-1]
        if any(row["train_accuracy"] is None for row in history[:-1]):
            every *= 2
            history[:] = [row for row in history if kept(row, every) or row is last]
        else:
            history[:] = [row for i, row in enumerate(history) if i % 2 == 0 or row is last]
    return every


class BatchLosses:
    """The mean of the steps' losses since it was last taken, each weighing its share of a whole
    batch (an epoch's short last batch, as in the epoch objective): what a check reports of
    mini-batch training, where one batch's loss swings widely (at batch 1, from 0.005 to 2)."""

    def __init__(self):
        self.total, self.shares = 0.0, 0.0

    def add(self, rows: Sequence[dict], shares: Sequence[float]) -> None:
        for row, share in zip(rows, shares, strict=True):
            self.total, self.shares = self.total + row["loss"] * share, self.shares + share

    def take(self) -> float:
        """The mean since the last take (NaN where no step came), and a fresh start."""
        mean = self.total / self.shares if self.shares else float("nan")
        self.total, self.shares = 0.0, 0.0
        return mean
