"""A training driven live: the one engine that `torchlogreg train` runs, stepped on its own thread,
with start, pause, single steps and settings changed between steps (learning rate, penalties, batch
size), and what a viewer shows (history rows, a copy of the weights) read from another thread. The
playground is its front end.

    live = LiveTraining(preset("default"), load_data(preset("default")))
    live.start()                      # returns at once; the engine runs on live's thread
    live.change(lr=0.1)               # from the next step on, marked in live.changes
    live.pause(); live.step(); live.close()

Untouched, a live training computes exactly what `torchlogreg train` with its config computes: the
same engine, callbacks, thread count and final metrics (`finish`), bit for bit.
"""

from __future__ import annotations

import copy
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..base.config import TrainConfig
from ..base.devices import cpu_threads, threads_for
from ..base.exceptions import ConfigError, DivergenceError
from ..core.objective import Objective
from ..core.optimizers import schedule_lr
from ..data.batches import batch_source
from ..data.inmemory import Data
from .trainer import Training, TrainResult, build, check_fits, finish

LIVE_FIELDS = ("lr", "weight_decay", "l1", "batch_size")  # what may change while a run goes on
SCHEDULE_SCALE = 2**20  # the schedule's position once the batch size changed: a fraction of this


@dataclass(frozen=True)
class Snapshot:
    """The weights and counters as they were between two steps (copies: the engine goes on)."""

    version: int
    weight: torch.Tensor
    bias: torch.Tensor
    iteration: int
    epoch: float
    samples: int
    lr: float | None

    @classmethod
    def of(cls, engine, samples: int, previous: Snapshot | None) -> Snapshot:
        """The engine's weights and counters now, one version after `previous`."""
        last = engine.history[-1] if engine.history else None
        return cls(
            previous.version + 1 if previous is not None else 0,
            engine.model.linear.weight.detach().to("cpu", copy=True),
            engine.model.linear.bias.detach().to("cpu", copy=True),
            engine.iteration,
            last["epoch"] if last else 0.0,
            samples,
            last["lr"] if last else None,
        )


class LiveTraining:
    """One configured training on its own thread. Control methods return at once; the engine acts
    on them between steps. `notify` (when given) is called from the training thread whenever the
    state changes or new weights are copied, at most every `snapshot_seconds` while running."""

    def __init__(
        self,
        config: TrainConfig,
        data: Data,
        *,
        max_steps: int | None = None,
        snapshot_seconds: float = 0.05,
        notify: Callable[[], None] | None = None,
        settled: TrainConfig | None = None,
    ):
        """`settled`: the config build() made of this `config` on this data before (`used`), which
        trains the same without working out again the values of fields left None."""
        built = build(settled or config, data, verbose=False, progress=False, callbacks=[self])
        self.training: Training | None = built
        engine = self.training.engine
        self.history = engine.history  # the engine's own list, kept past the run's end
        if max_steps is not None and engine.total > max_steps:
            raise ConfigError(
                f"epochs/iters: this run takes {engine.total} steps, over the {max_steps} allowed here; "
                "train it with 'torchlogreg train' instead"
            )
        self.config, self.n_train, self.max_steps = config, len(data.train), max_steps
        self.used = self.training.config  # as build() took it: a field left None has its value there
        self.midrun = MidRun(self.used, self.n_train)
        self.state, self.error, self.result = "ready", None, None
        self.samples, self.published = 0, 0
        self.snapshot_seconds, self.notify = snapshot_seconds, notify or (lambda: None)
        self._lock = threading.Lock()
        self._steps_left: int | None = None
        self._pause = self._closing = False
        self._next_snapshot = 0.0
        self._idle = threading.Event()
        self._idle.set()
        self._snapshot = Snapshot.of(engine, 0, None)
        self._commands: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="torchlogreg-live", daemon=True)
        self._thread.start()

    # --- control (any thread) ----------------------------------------------------------------------
    def start(self) -> None:
        """Run (or go on) until the end, a pause or a close."""
        self._pause = False
        self._command("run")

    def step(self, count: int = 1) -> None:
        """Take `count` steps, then pause."""
        with self._lock:
            self._steps_left = count
        self._pause = False
        self._command("run")

    def pause(self) -> None:
        self._pause = True

    def change(self, **settings) -> dict:
        """Apply new values of LIVE_FIELDS from the next step on; checked here, at once, with the same
        rules as a config. Returns the values as they will be used."""
        unknown = [name for name in settings if name not in LIVE_FIELDS]
        if unknown:
            raise ConfigError(
                f"{unknown[0]} cannot change during a run; live settings: {', '.join(LIVE_FIELDS)}"
            )
        if self.training is None:
            raise ConfigError("the run has ended; reset to train again")
        if "lr" in settings and settings["lr"] is None:  # left blank: the rate the run started with
            settings = {**settings, "lr": self.used.learning_rate}
        if "batch_size" in settings and self.engine.full_batch:
            raise ConfigError(f"batch_size: {self.used.optimizer} takes the whole training set each step")
        check_fits(self.used.replace(**self.midrun.after(settings)), self.training.data)
        if "batch_size" in settings and self.max_steps is not None:
            self._check_steps(settings["batch_size"])
        return self.midrun.request(settings)

    def _check_steps(self, batch_size: int) -> None:
        """A smaller batch keeps the epochs left, in more steps: within max_steps, as the start was."""
        total = _total_after(self.engine, math.ceil(self.n_train / batch_size))
        if total > self.max_steps:
            raise ConfigError(
                f"batch_size: {batch_size} would make this run {total} steps, over the {self.max_steps} "
                "allowed here; choose a larger batch"
            )

    def close(self) -> None:
        """Stop for good (the page went away): the thread ends after the current step."""
        self._closing = True
        self._command("close")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the engine is idle (ready, paused, finished, diverged or closed); True if it is."""
        return self._idle.wait(timeout)

    @property
    def changed(self) -> bool:
        """Whether settings changed mid-run (then the config alone no longer reproduces the run)."""
        return bool(self.midrun.changes)

    @property
    def settings(self) -> dict:
        """The values of LIVE_FIELDS the engine uses now."""
        return self.midrun.settings

    @property
    def changes(self) -> list[dict]:
        """The changes made mid-run: {"iteration", "epoch", **settings changed}, in order."""
        return self.midrun.changes

    @property
    def engine(self):
        return self.training.engine if self.training is not None else None

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    def rows(self, start: int) -> list[dict]:
        """History rows from `start` up to the last complete one (every callback has filled it)."""
        return self.history[start : self.published]

    def partial_result(self) -> TrainResult:
        """The result as it stands: `finish` on a copy of the model, so a paused run can go on."""
        if self.result is not None:
            return self.result
        if self.state not in ("paused", "ready") or self.training is None:
            raise ConfigError(f"the run is {self.state}: pause it first")
        engine = copy.copy(self.training.engine)
        engine.model = copy.deepcopy(engine.model)
        training = copy.copy(self.training)
        training.engine = engine
        return finish(training)

    # --- the training thread -----------------------------------------------------------------------
    def _command(self, name: str) -> None:
        self._idle.clear()
        self._commands.put(name)

    def _work(self) -> None:
        while True:
            command = self._commands.get()
            if command == "close" or self._closing:
                self.training = None
                self._set_state("closed")
                self._idle.set()
                return
            if command == "run" and self.state in ("ready", "paused"):
                self._run()
            self._idle.set()

    def _run(self) -> None:
        training = self.training
        engine = training.engine
        self._set_state("running")
        device = engine.parameters[0].device
        if self.midrun.pending:  # changed while paused: from this step on
            self.midrun.apply(engine, self.training.data)
        try:
            while True:  # again after a new batch size: its thread count may differ
                rows = self.n_train if engine.full_batch else self.settings["batch_size"]
                model = engine.model
                with cpu_threads(threads_for(rows, model.n_features, model.linear.out_features, device)):
                    engine.run()
                if engine.stop_reason != "reconfigure" or self._pause or self._closing:
                    break
        except DivergenceError as error:
            self.error = str(error)
            self._take_snapshot(engine)
            self.training = None
            self._set_state("diverged")
            return
        if engine.stop_reason in ("paused", "closed", "reconfigure"):
            self._take_snapshot(engine)
            self._set_state("closed" if self._closing else "paused")
            return
        self.result = finish(training)
        self.published = len(self.result.history)
        self._take_snapshot(engine)
        self.training = None  # the data and the optimizer's state are no longer needed
        self._set_state("finished")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.notify()

    # --- the engine's callback (the training thread, between steps) --------------------------------
    def on_step(self, engine, row: dict) -> None:
        self.samples += self.midrun.samples_of_step(engine)
        self.midrun.renumber(engine, row)
        self.published = len(engine.history)
        if self.midrun.pending and engine.iteration < engine.total:
            self.midrun.apply(engine, self.training.data)
        now = time.perf_counter()
        if now >= self._next_snapshot:
            self._next_snapshot = now + self.snapshot_seconds
            self._take_snapshot(engine)
            self.notify()
        if self._steps_left is not None:
            self._steps_left -= 1
            if self._steps_left <= 0:
                self._steps_left, self._pause = None, True
        if self._closing:
            engine.stop_reason = "closed"
        elif self._pause and engine.iteration < engine.total and engine.stop_reason is None:
            engine.stop_reason = "paused"

    def _take_snapshot(self, engine) -> None:
        engine = engine or self.training.engine
        with self._lock:
            self._snapshot = Snapshot.of(engine, self.samples, self._snapshot)


class MidRun:
    """What may change while a live run goes on: the values of LIVE_FIELDS, the changes asked for
    (pending until the next step) and made, and, once the batch size changed, the segment the run
    counts its epochs, samples and schedule from (the step count per epoch changed with it)."""

    def __init__(self, used: TrainConfig, n_train: int):
        self.used, self.n_train = used, n_train
        self.settings = {"lr": used.learning_rate, **{k: getattr(used, k) for k in LIVE_FIELDS[1:]}}
        self.changes: list[dict] = []  # {"iteration", "epoch", **settings changed}
        self.pending: dict = {}
        self.segment: tuple[int, float, float] | None = None  # (iteration, epoch, schedule fraction)
        self._lock = threading.Lock()

    def after(self, settings: dict) -> dict:
        """The live values once `settings` (and what is pending) apply."""
        return {**self.settings, **self.pending, **settings}

    def request(self, settings: dict) -> dict:
        """Ask for `settings` (already checked) from the next step on; the values as they will be."""
        with self._lock:
            self.pending.update(settings)
        return {**self.settings, **self.pending}

    def samples_of_step(self, engine) -> int:
        """Samples the step just taken saw: a whole batch, or the epoch's short last one."""
        batch = self.settings["batch_size"]
        start = self.segment[0] if self.segment is not None else 0
        at_epoch_end = (engine.iteration - start) % engine.steps_per_epoch == 0
        return self.n_train - batch * (engine.steps_per_epoch - 1) if at_epoch_end else batch

    def renumber(self, engine, row: dict) -> None:
        """A history row's epoch, counted from where the batch size changed."""
        if self.segment is not None:
            start, epoch, _ = self.segment
            row["epoch"] = epoch + (engine.iteration - start) / engine.steps_per_epoch

    def apply(self, engine, data) -> None:
        """The pending changes, from the next step on; each recorded at the step it follows."""
        with self._lock:
            changes, self.pending = self.pending, {}
        changes = {k: v for k, v in changes.items() if v != self.settings[k]}
        if not changes:
            return
        self.settings.update(changes)
        epoch = engine.history[-1]["epoch"] if engine.history else 0.0
        self.changes.append({"iteration": engine.iteration, "epoch": epoch, **changes})
        if "weight_decay" in changes or "l1" in changes:
            engine.set_objective(Objective(self.settings["weight_decay"], self.settings["l1"]))
        if "batch_size" in changes:
            self._new_batch_size(engine, data, epoch)
            engine.stop_reason = engine.stop_reason or "reconfigure"  # the thread count may change
        engine.schedule = self._schedule(engine)

    def _new_batch_size(self, engine, data, epoch: float) -> None:
        """Batches of the new size from a fresh epoch; the run keeps the epochs it had left."""
        fraction = self._fraction(engine, engine.iteration)
        left = _epochs_left(engine)
        source = batch_source(
            data.train.images, data.train.labels, self.settings["batch_size"], engine.parameters[0].device
        )
        engine.set_source(source)
        engine.total = _total_after(engine, source.steps_per_epoch, left)
        self.segment = (engine.iteration, epoch, fraction)

    def _fraction(self, engine, iteration: int) -> float:
        """How far through the schedule step `iteration` is, once the batch size has changed."""
        if self.segment is None:
            return iteration / engine.total
        start, _, fraction = self.segment
        return fraction + (1 - fraction) * (iteration - start) / max(1, engine.total - start)

    def _schedule(self, engine) -> Callable[[int], float]:
        """The config's schedule with the current learning rate: exactly build()'s until the batch
        size changes, then on the fraction of the run done (the new step count differs)."""
        name, lr = self.used.schedule, self.settings["lr"]
        if self.segment is None:
            return lambda step: schedule_lr(name, lr, step, engine.total)
        return lambda step: schedule_lr(
            name, lr, self._fraction(engine, step) * SCHEDULE_SCALE, SCHEDULE_SCALE
        )


def _epochs_left(engine) -> float:
    return (engine.total - engine.iteration) / engine.steps_per_epoch


def _total_after(engine, steps_per_epoch: int, left: float | None = None) -> int:
    """The run's steps once batches give `steps_per_epoch`: it keeps the epochs it had `left`."""
    left = _epochs_left(engine) if left is None else left
    return engine.iteration + max(1, round(left * steps_per_epoch))
