"""The defaults that follow from the data. A TrainConfig field left None gets its value here, from the
training set's size and features, and `settle` returns the config that training really uses (a run
records it). `RULES` states each rule in words for `train --help`.

The objective is scikit-learn's `LogisticRegression(C=1)`: the mean log-loss plus |w|^2 / (2 n) for n
training rows, so "converged" means the same optimum. Small sets are fitted full-batch by L-BFGS to
scikit-learn's tolerance; large ones by mini-batch SGD, whose step follows the features' scale.
`python -m benchmarks.defaults` measures these rules against scikit-learn on sets of many kinds.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING

from ..base.config import TrainConfig

if TYPE_CHECKING:  # imported where used: `train --help` reads RULES without loading torch
    import torch

LBFGS_BELOW_ROWS = 10_000  # full-batch L-BFGS below this many training rows, mini-batch SGD from it
VALIDATION_ROWS = 5_000  # with patience (early stopping), a tenth of the rows is held out, at most this many
VALIDATION_SHARE = 10
BATCH_ROWS = 256  # mini-batch size (or all the rows, when fewer)
SGD_EPOCHS = 4  # mini-batch passes over large sets ...
SGD_MIN_STEPS = 200  # ... or as many as give this many steps on smaller ones (sgd on a small set)
LBFGS_ITERATIONS = 1000  # L-BFGS's step limit (scikit-learn's fits of MNIST-like sets take 80-400)
SGD_STEP = 4.0  # sgd's lr times the curvature (the centred features' largest eigenvalue, at least 1) ...
BATCH_STEP = 1.0  # ... and at most this / (a batch's mean squared norm / batch_size): normalised LMS's step
OTHER_LR = {"adam": 0.005, "lbfgs": 1.0}  # adam steps in weight units; lbfgs's line search scales its own
CURVATURE_VALUES = 1 << 20  # at most this many feature values sampled for the mean and the curvature
POWER_ITERATIONS = 12

RULES = {
    "val_size": "none: every training row is fitted, as the stopping rule needs no validation set; with "
    f"--patience, a tenth of the rows, at most {VALIDATION_ROWS:,}",
    "optimizer": f"lbfgs (full batch, to convergence) below {LBFGS_BELOW_ROWS:,} training rows, sgd from "
    "there or when --batch-size is given",
    "lr": f"sgd: {SGD_STEP:g} / (the larger of the largest eigenvalue of the centred features' covariance "
    f"(at least 1) and {SGD_STEP / BATCH_STEP:g} x their mean squared norm / batch_size, + weight_decay): "
    "0.8 on MNIST at batch 256, 0.019 at batch 1; "
    f"adam {OTHER_LR['adam']:g}; lbfgs {OTHER_LR['lbfgs']:g}",
    "batch_size": f"{BATCH_ROWS}, or all the training rows when fewer; lbfgs: all rows",
    "epochs": f"sgd/adam: {SGD_EPOCHS}, or as many as give {SGD_MIN_STEPS} steps on smaller sets; lbfgs: "
    f"{LBFGS_ITERATIONS} iterations. Training stops sooner once converged (see --tol)",
    "tol": "lbfgs: converged when the objective's largest gradient entry is at most tol (scikit-learn's "
    "rule); sgd/adam: when two epochs in a row lower the mean objective by less than tol. 0: no "
    "convergence test (lbfgs still stops where its line search finds no lower objective)",
    "weight_decay": "1 / (training rows): the objective of scikit-learn's LogisticRegression(C=1)",
    "schedule": "cosine for sgd and adam, none for lbfgs",
}


def validation_rows(rows: int, patience: int | None) -> int:
    """How many of `rows` training rows to hold out for validation when val_size is None: only early
    stopping needs them (held-out rows cost accuracy, most on small sets)."""
    if patience is None:
        return 0
    return max(1, min(VALIDATION_ROWS, rows // VALIDATION_SHARE))


def _sample(images) -> torch.Tensor:
    """Up to CURVATURE_VALUES feature values' worth of rows spread evenly over `images` (in memory or
    on disk), as float features."""
    import torch

    from ..core.model import pixel_scale

    rows = max(2, CURVATURE_VALUES // math.prod(images.shape[1:]))
    index = torch.linspace(0, len(images) - 1, min(rows, len(images))).round().long().unique()
    raw = images[index] if isinstance(images, torch.Tensor) else images.take(index)
    raw = raw.reshape(len(index), -1)
    return raw.to(torch.float64) * pixel_scale(raw)  # float64: the same values whatever the threads


class FeatureSample:
    """Rows spread over the training set, taken once, and what training needs of them: the features'
    mean, on which training centres them (engine.Centring: the objective as it is, the bias taking up
    w . mean, the mean's curvature gone), and the curvature that sets sgd's step.

    Computed on one CPU thread: a sample's products are too small to split, and where another program
    held the second core, each waited for it (the curvature took 0.6 s instead of 15 ms)."""

    def __init__(self, images):
        from ..base.devices import cpu_threads

        with cpu_threads(1):
            self.x = _sample(images)
            self._mean = self.x.mean(0)  # float64

    @cached_property
    def mean(self) -> torch.Tensor:
        import torch

        return self._mean.to(torch.float32)

    @cached_property
    def curvature(self) -> float:
        """The largest eigenvalue of the centred features' second moments, at least 1 (the bias's):
        the log-loss's curvature in the coordinates training steps in, so a step of SGD_STEP /
        curvature is equally bold on MNIST, on dark-on-light pictures or on 8x8 images. Power
        iteration."""
        from ..base.devices import cpu_threads

        with cpu_threads(1):
            return self._power_iteration(self.x - self._mean)

    @cached_property
    def spread(self) -> float:
        """The centred rows' mean squared norm (the covariance's trace): the curvature one row brings."""
        centred = self.x - self._mean
        return float(centred.square().sum(1).mean())

    @staticmethod
    def _power_iteration(x: torch.Tensor) -> float:
        """The largest eigenvalue of x.T @ x / len(x), at least 1."""
        import torch

        vector = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        value = 0.0
        for _ in range(POWER_ITERATIONS):
            norm = vector.norm()
            if not norm > 0:
                break
            vector = vector / norm
            product = x.T @ (x @ vector) / len(x)
            value = float(vector @ product)
            vector = product
        return max(value, 1.0)


def curvature(images) -> float:
    """FeatureSample(images).curvature: the curvature of `images` as training sees them."""
    return FeatureSample(images).curvature


def _optimizer(config: TrainConfig, rows: int) -> str:
    if config.optimizer is not None:
        return config.optimizer
    return "lbfgs" if rows < LBFGS_BELOW_ROWS and config.batch_size is None else "sgd"


def _lr(
    config: TrainConfig, optimizer: str, data, sample: FeatureSample | None, weight_decay: float, batch: int
) -> float:
    """The step size: sgd's from the curvature a step meets, the data's plus the L2 penalty's. The
    whole set's is its largest eigenvalue; a batch of a few rows meets about their squared norm
    divided by the batch (one row: all of it), which the mean can far exceed: MNIST's rows have
    about 53 against 5. There the step is at most BATCH_STEP / that (normalised LMS's: a batch's
    step moves its own rows' logits by about their residual): batch 1 diverged at the whole set's
    step, and at 4 / 53 it left the logits so large that the test loss was 1.2 (diverging in the
    fourth epoch of MNIST); at 1 / 53 it is 0.33, near the default batch's."""
    if config.lr is not None:
        return config.lr
    if optimizer == "sgd":
        sample = sample or FeatureSample(data.train.images)
        noise = SGD_STEP / BATCH_STEP * sample.spread / batch
        step = SGD_STEP / (max(sample.curvature, noise) + weight_decay)
        return float(f"{step:.3g}")  # 3 digits: readable in the run, the same on every rank
    return OTHER_LR[optimizer]


def _budget(config: TrainConfig, optimizer: str, rows: int, batch: int) -> dict:
    if config.epochs is not None or config.iters is not None:
        return {}
    if optimizer == "lbfgs":
        return {"epochs": LBFGS_ITERATIONS}
    return {"epochs": max(SGD_EPOCHS, math.ceil(SGD_MIN_STEPS / math.ceil(rows / batch)))}


def settle(config: TrainConfig, data, sample: FeatureSample | None = None) -> TrainConfig:
    """`config` with every field left None set by its rule for `data` (a data.Data, whose validation
    split is already made; `sample`: of its training rows, when the caller has one): the settings
    training uses and the run records."""
    rows = len(data.train)
    optimizer = _optimizer(config, rows)
    batch = rows if optimizer == "lbfgs" else config.batch_size or min(BATCH_ROWS, rows)
    weight_decay = config.weight_decay if config.weight_decay is not None else 1.0 / rows
    settled = config.replace(
        val_size=len(data.val) if data.val is not None else 0,
        optimizer=optimizer,
        lr=_lr(config, optimizer, data, sample, weight_decay, batch),
        batch_size=batch,
        weight_decay=weight_decay,
        schedule=config.schedule or ("none" if optimizer == "lbfgs" else "cosine"),
    )
    return settled.replace(**_budget(config, optimizer, rows, batch))
