"""Training from a config: the engine set up for a dataset, periodic evaluation and early stopping,
and the final metrics. The run's life around it (folders, resume, checkpoints, torchrun, signals) is
in training/runs.py; `torchlogreg.train` is that module's.

>>> from torchlogreg import preset, train
>>> result = train(preset("default", data_root="../shared/data"))
>>> result.metrics["test"]["accuracy"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..base.config import TrainConfig
from ..base.devices import outside_threads, resolve_device
from ..base.exceptions import ConfigError, DivergenceError
from ..core.model import LogisticRegression
from ..core.objective import Objective
from ..core.optimizers import Proximal, make_optimizer, scheduled_lr
from ..core.stopping import EarlyStopping
from ..data.batches import batch_source
from ..data.images import MNIST_STYLE, background_of
from ..data.inmemory import Data
from ..data.rules import OTHER_LR, FeatureSample, settle
from ..runfolder.layout import HISTORY_KEYS
from .distributed import DistContext
from .engine import Callback, Engine
from .evaluation import checked_inputs, evaluate_on_ranks
from .history import BatchLosses

__all__ = ["HISTORY_KEYS", "TrainResult", "Training", "build", "finish"]

STOP_REASONS = ("converged", "no progress", "step limit", "early stopping", "interrupted")
NO_CHANGE_EPOCHS = 2  # mini-batch training measures the gradient after this many epochs of change under tol
MEASURE_WAIT = 8  # ... and after a measure above tol, twice as many, at most this many (a pass each)

# periodic train accuracy is estimated on a tenth of the training rows, within these bounds (all of
# them when fewer): a check then costs a small share of an epoch's steps, however large the set
TRAIN_ACCURACY_SAMPLES = (1_000, 5_000)
LBFGS_EVAL_EVERY = 10  # L-BFGS iterations between checks (each is a full pass already)
VAL_LOSS_TOL = 1e-7  # a validation loss must fall by more than this to count as progress
MAX_CHECKS = 8  # mini-batch runs: a check every epoch, or every few epochs on long runs


@dataclass
class TrainResult:
    """What a training run produced: the model, its history and its metrics.

    ``config`` is the configuration with every rule-settled field filled in: what training used.
    ``history`` has one dict per iteration (``iteration``, ``epoch``, ``lr``, ``loss``, and the
    validation columns filled at each check); ``metrics`` maps ``"train"``, ``"val"`` (when a
    validation set was held out) and ``"test"`` to ``{"accuracy", "loss", "n"}`` and holds the
    run's timing, device and why it stopped (``stop_reason``, ``converged``, ``train_longer``), as
    ``metrics.json`` in a run folder does.
    """

    model: LogisticRegression
    config: TrainConfig
    class_names: tuple[str, ...]
    source_labels: tuple[int, ...]
    image_shape: tuple[int, ...]
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    pictures: str = MNIST_STYLE  # how picture files become the data's pixels: the run predicts them so
    background: str = "light"  # the training pictures' (images.background_of), which a pad draws on;
    # unset, light: the pad's paper, as runs saved before it was recorded (checkpoints.Run.background)
    csv_label: int | None = None  # where the data's CSV without a header held the label: predict's too


def train_sample_rows(rows: int) -> int:
    """How many of `rows` training rows the periodic train accuracy is measured on."""
    least, most = TRAIN_ACCURACY_SAMPLES
    return min(rows, max(least, min(most, rows // 10)))


class Evaluator:
    """Every `every` steps and where the run ends (its budget, or a stop reason set before this
    callback: the convergence rule's runs first): train accuracy on a sample, validation loss and accuracy,
    a printed line (with the mean of the batches' losses since the last check: one batch's swings
    widely), the best weights by validation loss, and early stopping after `patience` checks."""

    def __init__(self, data: Data, config: TrainConfig, every: int, dist, log: Callable[[str], None]):
        self.data, self.config, self.every, self.dist, self.log = data, config, every, dist, log
        count, classes = train_sample_rows(len(data.train)), data.n_classes
        # checked once here, not at every check (a tenth of a small pass)
        self.train_sample = checked_inputs(data.train.images[:count], data.train.labels[:count], classes)
        self.val = None if data.val is None else checked_inputs(data.val.images, data.val.labels, classes)
        self.stopping = EarlyStopping(VAL_LOSS_TOL, config.patience, keep=config.patience is not None)
        self.batch_losses = BatchLosses()  # the steps' since the last check

    def _metrics(self, model, images, labels) -> dict:
        with outside_threads():  # a whole set's pass, not a mini-batch step: split over the threads
            return evaluate_on_ranks(model, images, labels, self.config.threshold, self.dist, checked=True)

    def steps_ahead(self, engine: Engine) -> int:
        return self.every - engine.iteration % self.every  # (the run's end bounds every call too)

    def on_step(self, engine: Engine, row: dict) -> None:
        self.on_steps(engine, [row], [engine.step_share])

    def on_steps(self, engine: Engine, rows: list[dict], shares: list[float]) -> None:
        """A call's steps (its last may be due a check): their losses summed, each weighing its share
        of a whole batch (an epoch's short last batch, as in the epoch objective)."""
        self.batch_losses.add(rows, shares)
        if engine.iteration % self.every and engine.iteration != engine.total and engine.stop_reason is None:
            return
        row = rows[-1]
        row["train_accuracy"] = self._metrics(engine.model, *self.train_sample)["accuracy"]
        mean = self.batch_losses.take()
        if engine.full_batch:  # the loss where this step ended
            line = f"iteration {engine.iteration:>7}  loss {row['loss']:.4f}"
        else:  # one batch's swings widely: the mean of the batches' since the last check
            line = f"iteration {engine.iteration:>7}  mean batch loss {mean:.4f}"
        if self.data.val is None:
            rows = len(self.train_sample[1])
            self.log(f"{line}  train accuracy ({rows:,} rows) {row['train_accuracy']:.4f}")
            return
        val = self._metrics(engine.model, *self.val)
        row.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
        self.log(f"{line}  val accuracy {val['accuracy']:.4f}")
        if self.stopping.update(val["loss"], engine.model, engine.iteration) and engine.stop_reason is None:
            engine.stop_reason = "early stopping"

    def state_dict(self, tensors: dict, meta: dict) -> None:
        self.stopping.state_dict(tensors, meta)

    def load_state_dict(self, tensors: dict, meta: dict) -> None:
        self.stopping.load_state_dict(tensors, meta)


class ProgressBar:
    """A tqdm bar over the steps; disable=None lets tqdm decide (no bar when stderr is no terminal)."""

    def __init__(self, total: int, start: int, disable: bool | None):
        self.bar = tqdm(
            total=total, initial=start, unit="it", disable=disable, leave=False, dynamic_ncols=True
        )

    def steps_ahead(self, engine: Engine) -> int:
        return engine.total  # the bar may move a call's steps at once

    def on_step(self, engine: Engine, row: dict) -> None:
        self.on_steps(engine, [row], [engine.step_share])

    def on_steps(self, engine: Engine, rows: list[dict], shares: list[float]) -> None:
        self.bar.update(len(rows))
        if engine.stop_reason is not None or engine.iteration >= engine.total:
            self.bar.close()

    def load_state_dict(self, tensors: dict, meta: dict) -> None:
        """A resumed run's bar starts where the run stopped."""
        self.bar.n = int(meta["iteration"])
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class Convergence:
    """The one stopping rule on the objective (tol; see rules.RULES["tol"]): converged when the
    objective's largest (sub)gradient entry is at most tol. L-BFGS measures it before each step.
    Mini-batch steps measure it with a pass over the training rows (Engine.measure) once the
    epochs suggest it: NO_CHANGE_EPOCHS in a row whose mean objective (their batches' losses, a short
    batch's counting its share of a whole one, plus the penalty at the epoch's start) is within tol of
    the best so far. That alone is no proof (a schedule's shrinking steps still the objective
    anywhere); a measure above tol doubles the epochs before the next, up to MEASURE_WAIT.
    `objective`: the one to measure, where the engine steps on part of it (the estimator's sgd takes
    a strong L2 as a proximal step); None: the engine's."""

    def __init__(self, tol: float, objective: Objective | None = None):
        self.tol, self.objective = tol, objective
        self.epoch_loss, self.epoch_steps = 0.0, 0
        self.best, self.unchanged, self.change = math.inf, 0, None
        self.start_penalty: float | None = None  # the penalty as the epoch began (None: not yet known)
        self.wait = NO_CHANGE_EPOCHS  # unchanged epochs before the gradient is measured
        self.gradient: float | None = None  # its last measure (None: not measured)

    def steps_ahead(self, engine: Engine) -> int:
        return engine.total  # it acts at epochs' ends, where the fused kernel's calls end too

    def on_step(self, engine: Engine, row: dict) -> None:
        if engine.full_batch:
            measured = getattr(engine.optimizer, "gradient_max", None)  # (L-BFGS's, every iteration)
            self.gradient = measured if measured is not None and math.isfinite(measured) else None
            if engine.stop_reason is None and getattr(engine.optimizer, "iterations", 1) == 0:
                if getattr(engine.optimizer, "stalled", ""):
                    if engine.iteration == 1:  # (the run's first step: the model is the untrained start)
                        _check_first_step(row["lr"], engine.objective.weight_decay)
                    engine.stop_reason = "no progress"
                elif self.tol:
                    engine.stop_reason = "converged"
            return
        self.on_steps(engine, [row], [engine.step_share])

    def on_steps(self, engine: Engine, rows: list[dict], shares: list[float]) -> None:
        """A call's steps (an epoch ends at its last, if anywhere): the epoch's mean loss, each
        step's weighing its share (one row at the end of a batch of 1,999 weighed half an epoch)."""
        if engine.full_batch:  # (a full-batch call is one step)
            self.on_step(engine, rows[-1])
            return
        for row, share in zip(rows, shares, strict=True):
            self.epoch_loss += row["loss"] * share
            self.epoch_steps += share
        if not engine.at_epoch_end:
            return
        # the batches' losses are at the weights before each step: the penalty is taken where the
        # epoch began, which makes one step an epoch (a batch of every row) its exact objective
        end_penalty = (self.objective or engine.objective).penalty(engine.model.linear.weight)
        start = end_penalty if self.start_penalty is None else self.start_penalty
        mean = self.epoch_loss / self.epoch_steps + start
        self.epoch_loss, self.epoch_steps, self.start_penalty = 0.0, 0, end_penalty
        self.change = None if math.isinf(self.best) else self.best - mean
        self.best = min(self.best, mean)
        # within tol of the best either way: an epoch far worse than the best (a step too bold for a
        # batch) is no sign of convergence, however many follow
        still = self.change is not None and abs(self.change) < self.tol
        self.unchanged = self.unchanged + 1 if still else 0
        if self.tol and self.unchanged >= self.wait:  # (the last epoch too: the run then says so)
            with outside_threads():  # a whole set's pass, not a mini-batch step: split over the threads
                _, measured = engine.measure(self.objective)
            self.gradient = measured if math.isfinite(measured) else None  # (JSON has no nan)
            if measured <= self.tol:
                engine.stop_reason = "converged"
            else:
                self.unchanged, self.wait = 0, min(2 * self.wait, MEASURE_WAIT)

    def state_dict(self, tensors: dict, meta: dict) -> None:
        best = self.best if math.isfinite(self.best) else None  # JSON has no infinity
        meta["convergence"] = [self.epoch_loss, self.epoch_steps, best, self.unchanged, self.change,
                               self.start_penalty, self.wait, self.gradient]  # fmt: skip

    def load_state_dict(self, tensors: dict, meta: dict) -> None:
        values = meta.get("convergence")
        if values is not None:
            self.epoch_loss, self.epoch_steps, best, self.unchanged, self.change = values[:5]
            self.best = math.inf if best is None else best
            self.start_penalty = values[5] if len(values) > 5 else None  # (older checkpoints: none)
            if len(values) > 6:  # (older checkpoints: the rule's start)
                self.wait, self.gradient = values[6:8]


def stall_cause(lr: float, weight_decay: float) -> str | None:
    """The setting that left L-BFGS's line search with no lower objective: "weight_decay" (at 1 or
    more the weights' curvature dwarfs the bias's: steps too short to tell), "lr" (below the default,
    its trial steps are too short to change the objective, lr 1e-30), or None (the objective no
    longer falls measurably in the model's arithmetic; a larger lr is no cause: the search cuts it)."""
    if weight_decay >= 1:
        return "weight_decay"
    return "lr" if lr < OTHER_LR["lbfgs"] else None


def _check_first_step(lr: float, weight_decay: float) -> None:
    """L-BFGS's first step found no objective below the start's: where the lr is the cause, a
    DivergenceError (as for a bold lr: failed, with the flag to change), not the untrained start
    saved as the model. Otherwise the start is the optimum as far as the model's arithmetic tells
    (weight decay 1e10): the run stops 'no progress'."""
    if stall_cause(lr, weight_decay) == "lr":
        default = OTHER_LR["lbfgs"]
        raise DivergenceError(
            f"training made no progress: L-BFGS's first step, its trial steps scaled by lr={lr:g}, found "
            f"no objective below the start's; set lr={default:g} (the default)",
            parameter="lr",
        )


@dataclass
class Training:
    """One configured training: the engine and its evaluator, for the data and processes given."""

    config: TrainConfig
    data: Data
    engine: Engine
    evaluator: Evaluator
    dist: DistContext | None
    bar: ProgressBar
    convergence: Convergence


def check_fits(config: TrainConfig, data: Data) -> None:
    """Check the settings that need the data (the batch fits the training set, the task matches the
    classes): at the start of a run, and before a live run's settings change mid-run."""
    if config.optimizer != "lbfgs" and config.batch_size > len(data.train):
        raise ConfigError(
            f"batch_size must be at most the {len(data.train)} training samples, got {config.batch_size}; "
            f"choose 1..{len(data.train)}, or leave it unset to follow the data"
        )
    if config.threshold != 0.5 and not data.binary:
        raise ConfigError(f"threshold applies to binary tasks; {config.dataset} has {data.n_classes} classes")
    expected = 2 if config.positive is not None else len(config.classes or ()) or None
    if expected is not None and data.n_classes != expected:
        raise ConfigError(
            f"the data holds {data.n_classes} classes but the config asks for {expected} "
            f"(classes={config.classes}, positive={config.positive}); load the data with load_data(config)"
        )


def _initial_model(config: TrainConfig, data: Data, generator: torch.Generator) -> LogisticRegression:
    """The model before training: zeros, or (init="uniform") nn.Linear's uniform start from `generator`."""
    model = LogisticRegression(math.prod(data.image_shape), data.n_classes, threshold=config.threshold)
    return model.init_uniform(generator) if config.init == "uniform" else model


def _evaluate_every(config: TrainConfig, steps_per_epoch: int, total: int) -> int:
    """Steps between evaluations: config.eval_every, or every LBFGS_EVAL_EVERY iterations for
    lbfgs, or whole epochs so that a run makes at most MAX_CHECKS evaluations."""
    if config.eval_every:
        return config.eval_every
    if config.optimizer == "lbfgs":
        return LBFGS_EVAL_EVERY
    return steps_per_epoch * math.ceil(total / steps_per_epoch / MAX_CHECKS)


def build(
    config: TrainConfig,
    data: Data,
    *,
    dist: DistContext | None = None,
    verbose: bool = True,
    progress: bool | None = None,
    callbacks: Sequence[Callback] = (),
    should_stop: Callable[[], bool] | None = None,
) -> Training:
    """The engine for `config` on `data`: model, objective, optimizer, batches, evaluation. Fields
    left None follow the data (rules.settle); `Training.config` holds the values used."""
    device = resolve_device(config.device)
    started = time.perf_counter()
    sample = FeatureSample(data.train.images)  # one sample for the step size and the centring
    config = settle(config, data, sample).replace(device=str(device))
    ruled = time.perf_counter() - started  # part of fitting: train_seconds counts it (not moving data)
    check_fits(config, data)
    rank, world = (dist.rank, dist.world_size) if dist else (0, 1)
    source = batch_source(data.train.images, data.train.labels, config.batch_size, device, rank, world)
    generator = torch.Generator().manual_seed(config.seed)
    model = _initial_model(config, data, generator).to(device)
    full_batch = config.optimizer == "lbfgs"
    steps_per_epoch = 1 if full_batch else source.steps_per_epoch
    total = config.iters or config.epochs * steps_per_epoch
    log = tqdm.write if verbose else (lambda line: None)
    evaluator = Evaluator(data, config, _evaluate_every(config, steps_per_epoch, total), dist, log)
    bar = ProgressBar(total, 0, None if progress is None else not (progress and verbose))
    optimizer = make_optimizer(
        list(model.parameters()),
        config.optimizer,
        config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        tolerance_grad=config.tol,
    )
    if config.optimizer == "sgd":  # L1 (handed over by the engine) as a proximal step: exact zeros
        optimizer = Proximal(optimizer, model.linear.weight, momentum=config.momentum)
    convergence = Convergence(config.tol)
    engine = Engine(
        model,
        Objective(config.weight_decay, config.l1),
        optimizer,
        source,
        lambda step: scheduled_lr(config, step, total),
        total,
        generator=generator,
        full_batch=full_batch,
        callbacks=[convergence, evaluator, bar, *callbacks],  # a run that converges ends with a check
        dist=dist,
        should_stop=should_stop,
        advice=f"with {config.optimizer} lr {config.lr:g}: lower the learning rate (lr)",
        centre=sample.mean if config.centred else None,
    )
    engine.train_seconds = ruled
    return Training(config, data, engine, evaluator, dist, bar, convergence)


def longer_budget(config: TrainConfig) -> dict[str, int]:
    """The budget that trains twice as long as `config`'s (what to set when it did not converge)."""
    return {"iters": 2 * config.iters} if config.iters else {"epochs": 2 * config.epochs}


def finish(training: Training) -> TrainResult:
    """The trained model (the best weights when early stopping was on) and its final metrics."""
    engine, evaluator, data = training.engine, training.evaluator, training.data
    gradient = training.convergence.gradient
    restored = training.config.patience is not None and evaluator.stopping.restore(engine.model)
    if restored and evaluator.stopping.best_iteration != engine.iteration:
        gradient = None  # measured at weights other than those kept
    splits = {"train": data.train, "val": data.val, "test": data.test}
    metrics = {
        name: evaluate_on_ranks(
            engine.model, split.images, split.labels, training.config.threshold, training.dist
        )
        for name, split in splits.items()
        if split is not None
    }
    metrics.update(
        train_seconds=engine.train_seconds,
        iterations=engine.iteration,
        epochs=round(engine.epochs, 4),
        stopped_early=engine.stop_reason == "early stopping",
        stop_reason=engine.stop_reason or "step limit",
        converged=engine.stop_reason == "converged",
        objective_change=training.convergence.change,
        gradient_max=gradient,
        train_longer=longer_budget(training.config) if engine.stop_reason in (None, "step limit") else {},
        best_iteration=evaluator.stopping.best_iteration if data.val is not None else None,
        device=str(engine.parameters[0].device),
        world_size=training.dist.world_size if training.dist else 1,
    )
    return TrainResult(
        model=engine.model.eval(),
        config=training.config,
        class_names=data.class_names,
        source_labels=data.source_labels,
        image_shape=data.image_shape,
        history=engine.history,
        metrics=metrics,
        pictures=data.pictures,
        background=background_of(data.train.images),
        csv_label=data.csv_label,
    )
