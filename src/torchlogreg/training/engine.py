"""The one training loop. Every front end drives it: the CLI and `tl.train`, the sweep, and the
scikit-learn estimator.

It takes a model, an objective, an optimizer with one `step(lr, closure)` signature (SGD, Adam and
L-BFGS alike), a batch source and callbacks (evaluation, early stopping, checkpoints, progress). One
gradient path everywhere: the closed-form gradient of this rank's part of the batch, and under
torchrun one all-reduce of the flat gradient per evaluation of the objective, with the stop request
riding along, so every rank stops at the same step. (In one process on the CPU, L-BFGS evaluates the
same objective on its own flat vector, `FlatObjective`, without the model: the same kernel and sums.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from ..base.exceptions import CheckpointError
from ..core import fused
from ..core.lbfgs import pseudo_gradient
from ..core.model import LogisticRegression
from ..core.objective import FlatObjective, Objective
from ..core.optimizers import LBFGS
from ..core.stopping import EXPLOSION_FACTOR, diverged, divergence
from ..data.batches import Batch
from . import fused_steps, history
from .distributed import DistContext
from .gradient import Centring, Gradient, stepped_objective


class Callback(Protocol):
    """Called after every step with its history row (just recorded); may set `engine.stop_reason`.

    A callback may also have `steps_ahead(engine) -> int`: how many steps from now it may be told of
    after they are all taken, because it reads the model or stops the run at the last of them at the
    earliest. The engine then takes that many steps in one call of the fused kernel where it can
    (training/fused_steps.py); a callback without it is told of every step as it is taken. It may
    then also have `on_steps(engine, rows, shares)`: told of a call's steps at once (each step's
    history row and share of a whole batch), the engine as at the last of them."""

    def on_step(self, engine: Engine, row: dict) -> None: ...


class Engine:
    """Runs steps until `total` or a callback stops it; `run()` may be called again after a stop."""

    def __init__(
        self,
        model: LogisticRegression,
        objective: Objective,
        optimizer,
        source,
        schedule: Callable[[int], float],
        total: int,
        *,
        generator: torch.Generator,
        full_batch: bool = False,
        parameters: Sequence[torch.Tensor] | None = None,
        callbacks: Sequence[Callback] = (),
        dist: DistContext | None = None,
        should_stop: Callable[[], bool] | None = None,
        advice: str = "lower the learning rate",
        explosion_factor: float | None = EXPLOSION_FACTOR,
        centre: torch.Tensor | None = None,
    ):
        self.model, self.objective, self.optimizer, self.source = model, objective, optimizer, source
        self.schedule, self.total, self.generator = schedule, total, generator
        self.full_batch, self.dist, self.should_stop, self.advice = full_batch, dist, should_stop, advice
        self.explosion_factor = explosion_factor  # None: only a non-finite loss counts as diverged
        self.parameters = list(parameters if parameters is not None else model.parameters())
        self._weight = model.linear.weight  # the penalised tensor, looked up once
        self.centring = Centring(model, centre) if centre is not None else None
        stepped = stepped_objective(optimizer, objective, self._weight)
        self.gradient = Gradient(model, stepped, self.parameters, dist, self.centring, full_batch)
        self._measuring: Gradient | None = None  # another objective's, for `measure`
        self.flat_kept: tuple | None = None  # (source, objective, its FlatObjective or None)
        self.callbacks = list(callbacks)
        self.steps_per_epoch = 1 if full_batch else source.steps_per_epoch
        self._epoch_origin = 0  # the iteration epochs are counted from (moved by set_source)
        self.iteration, self.history, self.start_loss = 0, [], None
        self.history_every = 1  # the steps the history keeps a row of (history.MAX_HISTORY_ROWS)
        self.train_seconds, self.stop_reason = 0.0, None
        self.step_share = 1.0  # the last step's rows as a share of a whole batch (1: full batch)
        self.epoch_rng_state = generator.get_state()  # the generator as the current epoch began
        self._batches = None  # the current epoch's batches, step by step,
        self._cursor: fused_steps.EpochCursor | None = None  # or where it is in them in the fused kernel

    # --- one step --------------------------------------------------------------------------------
    def _next_batch(self) -> Batch:
        while True:
            if self._batches is None:
                self.epoch_rng_state = self.generator.get_state()
                self._batches = self.source.epoch(self.generator, self._done_in_epoch())
            batch = next(self._batches, None)
            if batch is not None:
                return batch
            self._batches = None

    def _centred_gradient(self, batches: Sequence[Batch] | None, stop: bool) -> tuple[float, bool]:
        """(data loss, stop), the gradient of `batches` (None: the whole source) in .grad."""
        parts = self.source.chunks() if batches is None else batches
        return self.gradient(parts, stop, self.iteration + 1)

    def step(self, lr: float) -> tuple[float, bool]:
        """One optimizer step; returns (data loss, stop requested on any rank). A mini-batch step
        (SGD, Adam) computes the gradient first and builds no closure: its cost is per step. An
        epoch's short last batch of n rows is a step of share n / batch_size (optimizers.fractional):
        as a whole step, one row at the end of batches of 1,999 took the test loss to 10."""
        wants_stop = self.should_stop is not None and self.should_stop()
        if self.full_batch:
            return self._full_batch_step(lr, wants_stop)
        batch = self._next_batch()
        loss, stop = self._centred_gradient([batch], wants_stop)
        centring = self.centring
        if centring is not None:
            centring.enter()
        share = self.step_share = self._share(batch.size)
        self.optimizer.step(lr, _computed, share)
        if centring is not None:
            centring.leave()
        return loss, stop

    def measure(self, objective: Objective | None = None) -> tuple[float, float]:
        """(value, largest gradient entry) of `objective` (default: the engine's) at the model: the entry
        of the minimal subgradient with L1, as L-BFGS measures it, in the coordinates steps are taken
        in. One pass over the training rows, every rank's under torchrun (all ranks call it together);
        leaves the smooth part's gradient in .grad."""
        objective = objective or self.objective
        smooth = objective.smooth
        gradient = self.gradient
        if gradient.objective != smooth:  # (the optimizer takes L1 itself, or another objective)
            # kept: under torchrun a Gradient's first call sets up the ranks' shared sum
            if self._measuring is None or self._measuring.objective != smooth:
                self._measuring = Gradient(
                    self.model, smooth, self.parameters, self.dist, self.centring, self.full_batch
                )
            gradient = self._measuring
        loss, _ = gradient(self.source.chunks(), False, self.iteration + 1)
        entries = [0.0]
        for param in self.parameters:
            grad = param.grad
            if grad is None:
                continue
            if objective.l1 and param is self._weight:
                pseudo = pseudo_gradient(param.cpu().numpy(), grad.cpu().numpy(), objective.l1)
                grad = torch.from_numpy(pseudo)
            entries.append(float(grad.abs().max()))
        largest = max(entries) if all(map(math.isfinite, entries)) else math.nan  # (max() drops a nan)
        return loss + objective.penalty(self._weight), largest

    def _share(self, rows: int) -> float:
        """A mini-batch step of `rows` rows as a share of a whole batch (Engine.step)."""
        return min(rows / self.source.batch_size, 1.0)

    def _full_batch_step(self, lr: float, wants_stop: bool) -> tuple[float, bool]:
        """An L-BFGS step: its closure evaluates the whole objective, as often as the line search asks
        (or `FlatObjective`, at the driver's vector, where it applies: `flat_objective`)."""
        centring, result = self.centring, {}
        flat = flat_objective(self)

        def closure() -> torch.Tensor:
            if centring is not None:  # L-BFGS evaluates at points of its own: the model's there
                centring.leave()
            result["loss"], result["stop"] = self._centred_gradient(None, wants_stop)
            objective = result["loss"] + self.gradient.objective.penalty(self._weight)
            if centring is not None:
                centring.enter()
            return torch.tensor(objective, dtype=torch.float64)  # (as FlatObjective's: unrounded)

        if centring is not None:
            centring.enter()
        if flat is None:
            self.optimizer.step(lr, closure)
        else:
            self.optimizer.step(lr, None, flat)
            result["loss"], result["stop"] = flat.loss, wants_stop
        if centring is not None:
            centring.leave()
        return result["loss"], result["stop"]

    # --- changes between steps (the playground's live settings) ----------------------------------
    def set_objective(self, objective: Objective) -> None:
        """Minimise `objective` from the next step on (new penalties mid-run)."""
        self.objective = objective
        self.gradient.set_objective(stepped_objective(self.optimizer, objective, self._weight))

    def set_source(self, source) -> None:
        """Draw batches from `source` from the next step on (a new batch size mid-run), starting a
        fresh epoch there."""
        self.source, self.steps_per_epoch = source, source.steps_per_epoch
        self._batches, self._cursor, self._epoch_origin = None, None, self.iteration

    # --- the loop --------------------------------------------------------------------------------
    def _ceiling(self) -> float | None:
        """The loss above which training has diverged (None: only a non-finite loss has)."""
        factor = self.explosion_factor
        return None if factor is None else factor * max(self.start_loss, 1.0)

    def _check_loss(self, loss: float) -> None:
        start, factor, ceiling = self.start_loss, self.explosion_factor, self._ceiling()
        if diverged(loss, ceiling):
            raise divergence(
                loss,
                who="training",
                what="loss",
                where=f"at iteration {self.iteration}",
                advice=self.advice,
                ceiling=ceiling,
                ceiling_is=""
                if ceiling is None
                else f" ({factor:g}x the larger of its start, {start:.4g}, and 1)",
            )

    def run(self) -> Engine:
        """Step until `total`, or until a callback or a stop request sets `stop_reason`. Under one
        no_grad for the whole loop: the closed-form gradient needs no graph."""
        self.stop_reason = None
        started = time.perf_counter()
        try:
            with torch.no_grad():
                self._loop()
        finally:
            if self.parameters[0].device.type == "cuda":
                torch.cuda.synchronize(self.parameters[0].device)
            self.train_seconds += time.perf_counter() - started
        return self

    def _loop(self) -> None:
        while self.iteration < self.total and self.stop_reason is None:
            if self._fused_epoch():
                self._fused_steps()
                continue
            lr = self.schedule(self.iteration)
            loss, stop = self.step(lr)
            self._after_steps([loss], [lr], [self.step_share], stop)

    def _after_steps(self, losses: list[float], lrs: list[float], shares: list[float], stop: bool) -> None:
        """Count, check, record and tell the callbacks of steps just taken: one, or a fused call's,
        which stopped at the first step that broke the divergence rule (only the last can have). A
        callback with `on_steps(engine, rows, shares)` hears of a call's steps at once, at the last;
        one without, of each step in turn, the engine's count, share and history as at that step."""
        self.start_loss = losses[0] if self.start_loss is None else self.start_loss
        if diverged(losses[-1], self._ceiling()):  # the steps before it are told of, then it raises
            if len(losses) > 1:
                self._after_steps(losses[:-1], lrs[:-1], shares[:-1], False)
            self.iteration += 1
            self._check_loss(losses[-1])
        rows = history.step_rows(self.iteration, self.steps_per_epoch, losses, lrs)
        history.drop_stray_last(self.history, self.history_every)
        each = [callback for callback in self.callbacks if not hasattr(callback, "on_steps")]
        for row, share in zip(rows[:-1], shares[:-1], strict=True):
            if row["iteration"] % self.history_every == 0:
                self.history.append(row)
            if each:
                self.iteration, self.step_share = row["iteration"], share
                for callback in each:
                    callback.on_step(self, row)
        self.history.append(rows[-1])
        self.iteration, self.step_share = rows[-1]["iteration"], shares[-1]
        for callback in self.callbacks:
            if hasattr(callback, "on_steps"):
                callback.on_steps(self, rows, shares)
            else:
                callback.on_step(self, rows[-1])
        if stop and self.stop_reason is None and self.iteration < self.total:
            self.stop_reason = "interrupted"
        self.history_every = history.thin(self.history, self.history_every)

    def _done_in_epoch(self) -> int:
        """Steps of the current epoch already taken (counted from where the batch source changed)."""
        return (self.iteration - self._epoch_origin) % self.steps_per_epoch

    def _fused_epoch(self) -> bool:
        """Whether the next steps run in the fused kernel: an epoch begun there, or a new one whose
        rows it can read (step by step otherwise, to the epoch's end)."""
        while self._cursor is None or self._cursor.part() is None:
            self._cursor = None
            if self._batches is not None or not fused_steps.covers(self):
                return False
            state = self.generator.get_state()
            parts = self.source.epoch_rows(self.generator, self._done_in_epoch())
            if parts is None:
                return False
            self._cursor, self.epoch_rng_state = fused_steps.EpochCursor(parts), state
        return True

    def _fused_steps(self) -> None:
        """Steps in one call of the fused kernel, then recorded and told to the callbacks. The call
        stops after a step that diverged, whose check then raises; a stop request asked after the
        call ends the run there."""
        count = fused_steps.run_length(self, self._cursor)
        lrs = [self.schedule(step) for step in range(self.iteration, self.iteration + count)]
        ceiling = math.inf if self.start_loss is None else self._ceiling() or math.inf
        sizes = self._cursor.rows.sizes[self._cursor.at : self._cursor.at + count].tolist()
        losses = fused_steps.take_steps(self, self._cursor, np.asarray(lrs), ceiling)
        shares = [self._share(size) for size in sizes[: len(losses)]]
        self.optimizer.took(shares)  # (Adam's bias corrections count them)
        wants_stop = self.should_stop is not None and self.should_stop()
        self._after_steps(losses.tolist(), lrs[: len(losses)], shares, wants_stop)

    @property
    def at_epoch_end(self) -> bool:
        """Whether the last step ended an epoch (counted from where the batch source last changed)."""
        return self._done_in_epoch() == 0

    @property
    def epochs(self) -> float:
        return self.iteration / self.steps_per_epoch

    # --- resumable state -------------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue exactly from here: tensors, and JSON-able numbers."""
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        tensors.update(
            {f"optimizer.{k}": v.detach().cpu().clone() for k, v in self.optimizer.state_dict().items()}
        )
        at_epoch_start = self.iteration % self.steps_per_epoch == 0
        tensors["rng.epoch"] = self.generator.get_state() if at_epoch_start else self.epoch_rng_state.clone()
        meta = {
            "iteration": self.iteration,
            "start_loss": self.start_loss,
            "train_seconds": self.train_seconds,
            "history_rows": len(self.history),
            "history_every": self.history_every,
        }
        for callback in self.callbacks:
            if hasattr(callback, "state_dict"):
                callback.state_dict(tensors, meta)
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict, history: list[dict]) -> None:
        """Continue from `state_dict()` of an interrupted run of the same settings."""
        iteration, rows = meta.get("iteration"), meta.get("history_rows")
        if not (_is_count(iteration) and iteration <= self.total and _is_count(rows)):
            raise CheckpointError(
                f"the checkpoint's iteration {iteration!r} (of {self.total}) or history rows {rows!r} "
                "are out of range"
            )
        self.model.load_state_dict(_part(tensors, "model."))
        # (as read: each optimizer copies its buffers to their device, and reads counts on the host,
        # where a float64 count can be; MPS has no float64)
        self.optimizer.load_state_dict(_part(tensors, "optimizer."))
        self.generator.set_state(tensors["rng.epoch"])
        self.iteration = int(meta["iteration"])
        self.start_loss = meta["start_loss"]
        self.train_seconds = float(meta["train_seconds"])
        # its rows up to its step (a checkpoint from before history files were named per checkpoint
        # may read a history written for the next one)
        self.history = [row for row in history if row["iteration"] <= iteration][:rows]
        self.history_every = int(meta.get("history_every", 1))  # (older checkpoints: every step's)
        self._batches, self._cursor = None, None
        for callback in self.callbacks:
            if hasattr(callback, "load_state_dict"):
                callback.load_state_dict(tensors, meta)


def flat_objective(engine: Engine) -> FlatObjective | None:
    """The engine's L-BFGS objective on the driver's vector (`FlatObjective`), where that covers it:
    one process, the weight and the bias stepped on the CPU, and the whole set one part that the fused
    kernel reads in place (one shard, or rows in memory). Built again when the source or the
    objective changes (the playground's live settings)."""
    source, objective = engine.source, engine.gradient.objective
    kept = engine.flat_kept
    if kept is not None and kept[0] is source and kept[1] == objective:
        return kept[2]
    engine.flat_kept = (source, objective, _flat_objective(engine, objective))
    return engine.flat_kept[2]


def _flat_objective(engine: Engine, objective: Objective) -> FlatObjective | None:
    weight, bias = engine.model.linear.weight, engine.model.linear.bias
    optimizer = engine.optimizer
    if (
        engine.dist is not None
        or not isinstance(optimizer, LBFGS)
        or not fused.available()
        or not weight.is_cpu
    ):
        return None
    if len(optimizer.params) != 2 or optimizer.params[0] is not weight or optimizer.params[1] is not bias:
        return None  # (the vector holds the weight, then the bias)
    chunks = iter(engine.source.chunks())  # one part or not: at most two looked at (read, on disk)
    part = next(chunks, None)
    if part is None or next(chunks, None) is not None:
        return None
    mean = engine.centring.mean.numpy() if engine.centring is not None else None
    return FlatObjective.covering(objective, engine.model, part, mean)


def _computed() -> None:
    """The closure of a mini-batch step: its gradient is in .grad already."""
    return None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def full_objective(engine: Engine, source=None, objective: Objective | None = None) -> float:
    """The objective over a whole source (default: the engine's own), forward passes only, in this
    process only: the estimator's measure of progress between epochs."""
    source, objective, model = source or engine.source, objective or engine.objective, engine.model
    loss = sum(
        objective.data_loss(model, part.x, part.y, part.size, part.sample_weight, part.scale)
        for part in source.chunks()
    )
    return loss + objective.penalty(model.linear.weight)
