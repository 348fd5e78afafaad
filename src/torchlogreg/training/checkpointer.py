"""A run's checkpoints while it trains: the callback that writes them (every N steps, and a last good
state at each evaluation to fall back to on divergence), and the disk held for the finished run."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..base.config import TrainConfig
from ..base.storage import reserved_space
from ..runfolder.layout import is_run_folder, remove_run
from ..runfolder.resumable import remove_training_state, save_training_state
from .history import MAX_HISTORY_ROWS
from .trainer import Training

RUN_OVERHEAD_BYTES = 256 * 1024  # model.json, metrics.json and file system slack
HISTORY_ROW_BYTES = 128  # one line of history.csv
# History rows held ahead: as many as the engine keeps (a step limit is a cap that convergence usually
# stops long before: `--epochs 10**26` is legal)
HISTORY_ROWS_HELD = MAX_HISTORY_ROWS


def run_bytes(training: Training) -> int:
    """About what the run folder will take once saved: the weights as safetensors (float32), the
    history (a row per step, up to HISTORY_ROWS_HELD) and the JSON files."""
    model = training.engine.model
    rows = 1 if model.binary else model.n_classes
    history = min(training.engine.total, HISTORY_ROWS_HELD) * HISTORY_ROW_BYTES
    return (model.n_features + 1) * rows * 4 + history + RUN_OVERHEAD_BYTES


def space_for_run(out: Path | None, training: Training, main_rank: bool):
    """Disk held in `out` while training, for the run it will save: a disk too full is found before
    the work, not after (see storage.reserved_space)."""
    if out is None or not main_rank:
        return contextlib.nullcontext()
    return reserved_space(out, run_bytes(training))


class Checkpointer:
    """Callback: a resumable checkpoint every `every` steps; a last good state at each evaluation."""

    def __init__(
        self,
        out: Path | None,
        every: int | None,
        main_rank: bool,
        config: TrainConfig,
        replaces: bool = False,
    ):
        self.out, self.every, self.main_rank, self.config = out, every, main_rank, config.to_dict()
        self.data: dict | None = None  # the data's fingerprint (Data.fingerprint), once it is loaded
        self.last_good = None
        self.replaces = replaces  # what `out` holds is replaced at the first write (a fresh run)

    def claim(self) -> None:
        """Before the run's first write into `out`, remove the run (and any checkpoint) it replaces
        (overwrite): a run refused or failing before it has anything to keep leaves the old one as it
        was, and an interrupted run's folder holds its own checkpoint alone, read as interrupted,
        never as the old run. A folder of other files keeps them."""
        if self.replaces and self.out is not None and self.main_rank and is_run_folder(self.out):
            remove_run(self.out)
            remove_training_state(self.out)
        self.replaces = False

    def write(self, engine, state=None) -> None:
        if self.out is None or not self.main_rank:
            return
        self.claim()
        tensors, meta = state or engine.state_dict()
        history = [row for row in engine.history if row["iteration"] <= meta["iteration"]]  # (a last
        # good state's: the history may have been thinned since)
        meta = {**meta, "config": self.config, "checkpoint_every": self.every}  # (a resume keeps it)
        meta = meta if self.data is None else {**meta, "data": self.data}
        save_training_state(self.out, tensors, meta, history)

    def steps_ahead(self, engine) -> int:
        """To the next checkpoint (a last good state is taken at evaluations, which end calls too)."""
        return self.every - engine.iteration % self.every if self.every else engine.total

    def on_steps(self, engine, rows: list[dict], shares: list[float]) -> None:
        self.on_step(engine, rows[-1])  # (evaluations and checkpoints end calls: only the last is due)

    def on_step(self, engine, row: dict) -> None:
        if row["train_accuracy"] is not None and self.out is not None and self.main_rank:
            self.last_good = engine.state_dict()  # evaluated at this step, so not diverging
        if self.every and engine.iteration % self.every == 0:
            self.write(engine)
