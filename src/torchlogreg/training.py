"""The trainer: mini-batches drawn by index from in-memory tensors, a torch optimizer, metrics.

>>> from torchlogreg import preset, train
>>> result = train(preset("default", data_root="../shared/data"))
>>> result.metrics["test"]["accuracy"]
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .config import DEVICE_PATTERN, TrainConfig, validate
from .data import Data, load_data
from .distributed import DistContext, all_reduce_sum
from .evaluation import evaluate
from .exceptions import ConfigError, DivergenceError, Interrupted
from .model import LogisticRegression
from .ondisk import SHARD_ROWS, DiskImages, shard_batches
from .optimizers import make_optimizer, scheduled_lr

LBFGS_CHUNK = 16384  # rows per chunk of the full-batch gradient: bounds memory
TRAIN_ACCURACY_SAMPLES = 10_000  # periodic train accuracy is measured on this many samples
EXPLOSION_FACTOR = 100.0  # a loss this many times its starting value counts as diverged
HISTORY_KEYS = ("iteration", "epoch", "lr", "loss", "train_accuracy", "val_accuracy", "val_loss")


@dataclass
class TrainResult:
    """What a training run produced: the model, its history and its metrics."""

    model: LogisticRegression
    config: TrainConfig
    class_names: tuple[str, ...]
    source_labels: tuple[int, ...]
    image_shape: tuple[int, ...]
    history: list[dict] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda, then mps, then cpu; an unknown or unavailable device raises ConfigError."""
    if not DEVICE_PATTERN.match(str(name)):
        raise ConfigError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and (
        not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()
    ):
        raise ConfigError(
            f"device {name!r} is not available here (CUDA devices: "
            f"{torch.cuda.device_count()}); use --device cpu or auto"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {name!r} is not available here; use --device cpu or auto")
    return device


def add_penalty_gradients(weight: torch.Tensor, weight_decay: float, l1: float) -> None:
    """Add the gradients of 0.5 * weight_decay * |w|^2 + l1 * |w|_1 to `weight`.grad.

    Applied to the weight alone, never the bias (as in scikit-learn); done here rather than
    through the optimizer so that L-BFGS, which has no weight_decay, gets the same objective.
    """
    with torch.no_grad():
        if weight_decay:
            weight.grad.add_(weight, alpha=weight_decay)
        if l1:
            weight.grad.add_(weight.sign(), alpha=l1)


def penalty(weight: torch.Tensor, weight_decay: float, l1: float) -> float:
    """The value of 0.5 * weight_decay * |w|^2 + l1 * |w|_1."""
    weight = weight.detach()
    return float(0.5 * weight_decay * weight.square().sum() + l1 * weight.abs().sum())


def full_gradient(
    model: LogisticRegression, chunks, n: int, weight_decay: float, l1: float
) -> tuple[float, float]:
    """Gradient of the whole objective into .grad, from (x, y, sample_weight or None) chunks of n rows.

    Returns (mean data loss, objective = data loss + penalty). Chunked so memory stays bounded.
    """
    model.zero_grad(set_to_none=True)
    data_loss = 0.0
    for x, y, sample_weight in chunks:
        share = len(y) / n
        data_loss += model.accumulate_gradients(x, y, share, sample_weight).item() * share
    weight = model.linear.weight
    add_penalty_gradients(weight, weight_decay, l1)
    return data_loss, data_loss + penalty(weight, weight_decay, l1)


def _check_loss(loss: float, start: float, iteration: int, config: TrainConfig) -> None:
    if not math.isfinite(loss) or loss > EXPLOSION_FACTOR * max(start, 1.0):
        what = f"became {loss}" if not math.isfinite(loss) else f"rose to {loss:.4g} from {start:.4g}"
        raise DivergenceError(
            f"training diverged: the loss {what} at iteration {iteration} with "
            f"{config.optimizer} lr {config.learning_rate:g}; lower --lr"
        )


class Trainer:
    """Runs one training: call `run()` once."""

    def __init__(
        self,
        config: TrainConfig,
        data: Data,
        *,
        verbose: bool = True,
        progress: bool | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int | None = None,
        should_stop: Callable[[], bool] | None = None,
        dist: DistContext | None = None,
    ):
        validate(config)
        self.dist = dist
        if dist is not None and config.optimizer == "lbfgs":
            raise ConfigError(
                "optimizer lbfgs is full batch and runs in one process; use sgd or adam with torchrun"
            )
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_every = checkpoint_every
        self.should_stop = should_stop
        self.config = config
        self.data = data
        self.verbose = verbose
        self.progress = progress if verbose else False
        self.device = resolve_device(config.device)
        self.on_disk = isinstance(data.train.images, DiskImages)
        if self.on_disk:  # stays on disk: read a shard at a time in _disk_batches
            self.train_x = data.train.images
        else:
            self.train_x = data.train.images.reshape(len(data.train), -1).to(self.device)
        self.train_y = data.train.labels.to(self.device)
        n_train = len(self.train_y)
        if config.optimizer != "lbfgs" and config.batch_size > n_train:
            raise ConfigError(
                f"batch_size must be at most the {n_train} training samples, got {config.batch_size}"
            )
        if config.optimizer == "lbfgs":
            self.steps_per_epoch = 1
        elif self.on_disk:  # batches do not cross shard boundaries
            shard_sizes = [min(SHARD_ROWS, n_train - s) for s in range(0, n_train, SHARD_ROWS)]
            self.steps_per_epoch = sum(math.ceil(size / config.batch_size) for size in shard_sizes)
        else:
            self.steps_per_epoch = math.ceil(n_train / config.batch_size)
        self.total = config.iters or config.epochs * self.steps_per_epoch
        self.eval_every = config.eval_every or (10 if config.optimizer == "lbfgs" else self.steps_per_epoch)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.model = LogisticRegression(math.prod(data.image_shape), data.n_classes)
        if config.init == "uniform":
            self.model.init_uniform(self.generator)
        self.model.to(self.device)
        self.parameters = list(self.model.parameters())
        self.ddp = None
        if dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        self.optimizer = make_optimizer(self.parameters, config)
        self.history: list[dict] = []
        self.iteration = 0
        self.start_loss: float | None = None
        self.best = (math.inf, None, 0)  # (val loss, state dict, iteration)
        self.checks_without_progress = 0
        self.epoch_rng_state = self.generator.get_state()  # the generator as the current epoch began
        self.skip_batches = 0  # batches of the current epoch already done before a resume
        self.seconds_before = 0.0  # training time spent before a resume
        self.last_good = self.snapshot()

    # --- one optimizer step ---------------------------------------------------------------
    def _batch_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
        for param in self.parameters:
            param.grad = None
        loss = self.model.accumulate_gradients(x, y).item()
        add_penalty_gradients(self.model.linear.weight, self.config.weight_decay, self.config.l1)
        self.optimizer.step(lr)
        return loss

    def _distributed_step(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float, stop: bool
    ) -> tuple[float, bool]:
        """This rank's part (x, y) of a global batch through DDP; returns the global mean loss and stop.

        Each rank backpropagates its loss *sum* x world_size / global batch size; DDP averages the
        gradients over ranks, which gives exactly the gradient of the global batch's mean loss.
        """
        for param in self.parameters:
            param.grad = None
        loss_sum = self.model.loss(self.ddp(x), y, reduction="sum")
        (loss_sum * (self.dist.world_size / batch_size)).backward()
        add_penalty_gradients(self.model.linear.weight, self.config.weight_decay, self.config.l1)
        self.optimizer.step(lr)
        shared = torch.tensor([loss_sum.item(), float(stop)], dtype=torch.float64, device=self.device)
        all_reduce_sum(shared, self.dist, f"the all-reduce of iteration {self.iteration + 1}")
        return shared[0].item() / batch_size, shared[1].item() > 0

    def _evaluate_split(self, images, labels) -> dict:
        """evaluate(), each rank on its contiguous part (read from disk alone), summed when distributed."""
        if self.dist is None:
            return evaluate(self.model, images, labels, self.config.threshold)
        n, rank, world = len(labels), self.dist.rank, self.dist.world_size
        first, last = rank * n // world, (rank + 1) * n // world
        part = images.view(first, last) if isinstance(images, DiskImages) else images[first:last]
        local = evaluate(self.model, part, labels[first:last], self.config.threshold)
        n = local["n"]
        totals = torch.tensor(
            [local["loss"] * n if n else 0.0, local["accuracy"] * n, n], dtype=torch.float64
        )
        all_reduce_sum(totals, self.dist, "the all-reduce of the metrics")
        count = max(totals[2].item(), 1.0)
        return {
            "accuracy": round(totals[1].item()) / count,
            "loss": totals[0].item() / count,
            "n": int(totals[2]),
        }

    def _full_batch_step(self, lr: float) -> float:
        n = len(self.train_y)
        data_loss = 0.0

        def closure() -> torch.Tensor:
            nonlocal data_loss
            chunks = (
                (self.train_x[start : start + LBFGS_CHUNK], self.train_y[start : start + LBFGS_CHUNK], None)
                for start in range(0, n, LBFGS_CHUNK)
            )
            data_loss, objective = full_gradient(
                self.model, chunks, n, self.config.weight_decay, self.config.l1
            )
            return torch.tensor(objective)

        self.optimizer.step(lr, closure)
        return data_loss

    def _disk_batches(self):
        """(x, y, global batch size) from disk, epoch after epoch: shards in a random order, each
        read a rank's part at a time (see ondisk.shard_batches)."""
        n = len(self.train_y)
        rank, world = (self.dist.rank, self.dist.world_size) if self.dist else (0, 1)
        while True:
            self.epoch_rng_state = self.generator.get_state()
            shard_order = torch.randperm(math.ceil(n / SHARD_ROWS), generator=self.generator)
            skip = self.skip_batches
            for shard in shard_order.tolist():
                start = shard * SHARD_ROWS
                size = min(SHARD_ROWS, n - start)
                rows, local_sizes, batch_sizes = shard_batches(
                    size, self.config.batch_size, self.generator, rank, world
                )
                if skip >= len(batch_sizes):  # done before a resume: not even read
                    skip -= len(batch_sizes)
                    continue
                rows = rows[sum(local_sizes[:skip]) :]
                images = self.train_x.view(start, start + size).take(rows).to(self.device)
                labels = self.train_y[start + rows.to(self.device)]
                first = 0
                for batch in range(skip, len(batch_sizes)):
                    last = first + local_sizes[batch]
                    yield images[first:last], labels[first:last], batch_sizes[batch]
                    first = last
                skip = 0
            self.skip_batches = 0

    def _batches(self):
        """(x, y, global batch size) from memory, epoch after epoch, one permutation per epoch;
        under torchrun, this rank's strided slice of each global batch."""
        n, size = len(self.train_y), self.config.batch_size
        while True:
            self.epoch_rng_state = self.generator.get_state()
            order = torch.randperm(n, generator=self.generator).to(self.device)
            for start in range(self.skip_batches * size, n, size):
                index = order[start : start + size]
                local = index[self.dist.rank :: self.dist.world_size] if self.dist else index
                yield self.train_x.index_select(0, local), self.train_y.index_select(0, local), len(index)
            self.skip_batches = 0

    # --- resumable state ------------------------------------------------------------------
    def snapshot(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Everything needed to continue exactly from here: tensors, and JSON-able numbers."""
        tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if self.config.optimizer != "lbfgs":  # L-BFGS's history is not kept: it restarts on resume
            tensors.update(
                {f"optimizer.{k}": v.detach().cpu().clone() for k, v in self.optimizer.state_dict().items()}
            )
        at_epoch_start = self.iteration % self.steps_per_epoch == 0
        tensors["rng.epoch"] = self.generator.get_state() if at_epoch_start else self.epoch_rng_state.clone()
        if self.best[1] is not None:
            tensors.update({f"best.{k}": v.detach().cpu().clone() for k, v in self.best[1].items()})
        meta = {
            "iteration": self.iteration,
            "start_loss": self.start_loss,
            "best_loss": self.best[0] if math.isfinite(self.best[0]) else None,
            "best_iteration": self.best[2],
            "checks_without_progress": self.checks_without_progress,
            "train_seconds": self.seconds_before,
            "history_rows": len(self.history),
        }
        return tensors, meta

    def restore(self, tensors: dict[str, torch.Tensor], meta: dict, history: list[dict]) -> None:
        """Continue from a snapshot written by an interrupted run of the same config."""

        def part(prefix):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        self.model.load_state_dict(part("model."))
        if self.config.optimizer != "lbfgs":
            self.optimizer.load_state_dict({k: v.to(self.device) for k, v in part("optimizer.").items()})
        self.generator.set_state(tensors["rng.epoch"])
        self.iteration = int(meta["iteration"])
        self.skip_batches = self.iteration % self.steps_per_epoch
        self.start_loss = meta["start_loss"]
        best_state = part("best.")
        best_loss = meta["best_loss"] if meta["best_loss"] is not None else math.inf
        self.best = (best_loss, best_state or None, int(meta["best_iteration"]))
        self.checks_without_progress = int(meta["checks_without_progress"])
        self.seconds_before = float(meta["train_seconds"])
        self.history = history[: int(meta["history_rows"])]
        self.last_good = self.snapshot()

    def _write_checkpoint(self, state: tuple[dict, dict] | None = None) -> None:
        if self.checkpoint_dir is None or (self.dist is not None and not self.dist.is_main):
            return
        from .checkpoints import save_training_state

        tensors, meta = state or self.snapshot()
        save_training_state(
            self.checkpoint_dir,
            tensors,
            {**meta, "config": self.config.to_dict()},
            self.history[: meta["history_rows"]],
        )

    # --- checks ---------------------------------------------------------------------------
    def _record(self, loss: float, lr: float) -> dict:
        row = dict.fromkeys(HISTORY_KEYS)
        row.update(iteration=self.iteration, epoch=self.iteration / self.steps_per_epoch, lr=lr, loss=loss)
        self.history.append(row)
        return row

    def _evaluate(self, row: dict) -> bool:
        """Fill the periodic metrics into `row`; return True when early stopping says stop."""
        count = min(TRAIN_ACCURACY_SAMPLES, len(self.train_y))
        sample = self.train_x.view(0, count) if self.on_disk else self.train_x[:count]
        row["train_accuracy"] = self._evaluate_split(sample, self.train_y[:count])["accuracy"]
        if self.data.val is None:
            train_accuracy = row["train_accuracy"]
            self._log(
                f"iteration {self.iteration:>7}  loss {row['loss']:.4f}  train accuracy {train_accuracy:.4f}"
            )
            return False
        val = self._evaluate_split(self.data.val.images, self.data.val.labels)
        row.update(val_accuracy=val["accuracy"], val_loss=val["loss"])
        self._log(
            f"iteration {self.iteration:>7}  loss {row['loss']:.4f}  val accuracy {val['accuracy']:.4f}"
        )
        if val["loss"] < self.best[0] - 1e-7:
            state = copy.deepcopy(self.model.state_dict()) if self.config.patience else None
            self.best = (val["loss"], state, self.iteration)
            self.checks_without_progress = 0
        else:
            self.checks_without_progress += 1
        return self.config.patience is not None and self.checks_without_progress >= self.config.patience

    def _log(self, line: str) -> None:
        if self.verbose:
            tqdm.write(line)

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> TrainResult:
        # disable=None lets tqdm decide: no bar when stderr is not a terminal.
        disable = None if self.progress is None else not self.progress
        bar = tqdm(total=self.total, unit="it", disable=disable, leave=False, dynamic_ncols=True)
        batches = self._disk_batches() if self.on_disk else self._batches()
        stopped_early = False
        started = time.perf_counter()
        while self.iteration < self.total:
            lr = scheduled_lr(self.config, self.iteration, self.total)
            stop = False
            if self.config.optimizer == "lbfgs":
                loss = self._full_batch_step(lr)
            elif self.dist is not None:  # the stop request travels with the loss: all ranks stop together
                wants_stop = self.should_stop is not None and self.should_stop()
                loss, stop = self._distributed_step(*next(batches), lr, wants_stop)
            else:
                x, y, _ = next(batches)
                loss = self._batch_step(x, y, lr)
            self.iteration += 1
            self.start_loss = loss if self.start_loss is None else self.start_loss
            try:
                _check_loss(loss, self.start_loss, self.iteration, self.config)
            except DivergenceError as error:
                self._write_checkpoint(self.last_good)
                if self.checkpoint_dir is not None:
                    error.args = (
                        f"{error}; kept the last good checkpoint (iteration "
                        f"{self.last_good[1]['iteration']}) in {self.checkpoint_dir}",
                    )
                raise
            row = self._record(loss, lr)
            bar.update()
            if self.iteration % self.eval_every == 0 or self.iteration == self.total:
                stopped_early = self._evaluate(row)
                self.last_good = self.snapshot()
                if stopped_early:
                    break
            if self.checkpoint_every and self.iteration % self.checkpoint_every == 0:
                self._write_checkpoint()
            if self.dist is None:
                stop = self.should_stop is not None and self.should_stop()
            if stop and self.iteration < self.total:
                self.seconds_before += time.perf_counter() - started
                self._write_checkpoint()
                bar.close()
                where = f" in {self.checkpoint_dir}" if self.checkpoint_dir else ""
                raise Interrupted(
                    f"interrupted at iteration {self.iteration} of {self.total}; saved a checkpoint{where}. "
                    f"Continue with: torchlogreg train --resume {self.checkpoint_dir or 'RUN_DIR'}",
                    iteration=self.iteration,
                )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        train_seconds = time.perf_counter() - started
        bar.close()
        if self.config.patience is not None and self.best[1] is not None:
            self.model.load_state_dict(self.best[1])
        train_seconds += self.seconds_before
        return TrainResult(
            model=self.model.eval(),
            config=self.config,
            class_names=self.data.class_names,
            source_labels=self.data.source_labels,
            image_shape=self.data.image_shape,
            history=self.history,
            metrics=self._final_metrics(train_seconds, stopped_early),
        )

    def _final_metrics(self, train_seconds: float, stopped_early: bool) -> dict:
        splits = {"train": self.data.train, "val": self.data.val, "test": self.data.test}
        metrics = {
            name: self._evaluate_split(split.images, split.labels)
            for name, split in splits.items()
            if split is not None
        }
        metrics.update(
            train_seconds=train_seconds,
            iterations=self.iteration,
            epochs=round(self.iteration / self.steps_per_epoch, 4),
            stopped_early=stopped_early,
            best_iteration=self.best[2] if self.data.val is not None else None,
            device=str(self.device),
            world_size=self.dist.world_size if self.dist else 1,
        )
        return metrics


def train(
    config: TrainConfig, data: Data | None = None, *, verbose: bool = True, progress: bool | None = None
) -> TrainResult:
    """Train a logistic regression as `config` says; load the data too unless given."""
    validate(config)
    if data is None:
        data = load_data(config)
    return Trainer(config, data, verbose=verbose, progress=progress).run()
