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
SGD_MIN_STEPS = 150  # ... or as many as give this many steps on smaller ones (200 gave the same accuracy)
LBFGS_ITERATIONS = 1000  # L-BFGS's step limit (scikit-learn's fits of MNIST-like sets take 80-400)
SGD_STEP = 4.0  # sgd's lr times the curvature (the centred features' largest eigenvalue, at least 1) ...
BATCH_STEP = 1.0  # ... and at most this / (a batch's mean squared norm / batch_size): normalised LMS's step
OTHER_LR = {"adam": 0.005, "lbfgs": 1.0}  # adam steps in weight units; lbfgs's line search scales its own
# adam moves each weight up to about lr a step, lr x steps / 2 over a cosine run: a shorter run than
# MNIST's 940 steps takes a larger lr, enough to move a weight this far (at 0.005, 216 steps of 8x8
# digits reached 90.0% test accuracy against L-BFGS's 96.4%), up to ADAM_MAX_LR (the one step of
# max_iter=1 at 4 moved iris's weights by 4 and diverged; 0.05 fitted every small set tried)
ADAM_REACH = 2.0
ADAM_MAX_LR = 0.05
CURVATURE_VALUES = 1 << 20  # at most this many feature values sampled for the mean and the curvature
POWER_ITERATIONS = 12

RULES = {
    "val_size": "none: every training row is fitted, as the stopping rule needs no validation set; with "
    f"--patience, a tenth of the dataset's training rows, at most {VALIDATION_ROWS:,} (taken before "
    "--train-size takes its subset: the same validation rows at every training-set size)",
    "optimizer": f"lbfgs (full batch, to convergence) below {LBFGS_BELOW_ROWS:,} training rows, sgd from "
    "there or when --batch-size is given",
    "lr": f"sgd: {SGD_STEP:g} / (the largest eigenvalue of the features' second moments, centred unless "
    f"--no-centred (at least 1), + weight_decay), times batch_size / {BATCH_ROWS} below {BATCH_ROWS} rows "
    f"(the same step per row: a smaller batch takes more, smaller steps), and at most {BATCH_STEP:g} / "
    "(their mean squared norm / batch_size + weight_decay): 0.8 on MNIST at batch 256, 0.0031 at batch 1; "
    f"adam {OTHER_LR['adam']:g}, or {2 * ADAM_REACH:g} / (the run's steps) on shorter runs, at most "
    f"{ADAM_MAX_LR:g} (a weight moves up to about lr a step: the run can move it {ADAM_REACH:g}); "
    f"lbfgs {OTHER_LR['lbfgs']:g}",
    "batch_size": f"{BATCH_ROWS}, or all the training rows when fewer; lbfgs: all rows",
    "epochs": f"sgd/adam: {SGD_EPOCHS}, or as many as give {SGD_MIN_STEPS} steps on smaller sets (sgd: "
    f"steps of {BATCH_ROWS} rows, or of the batch when larger); lbfgs: "
    f"{LBFGS_ITERATIONS} iterations. Training stops sooner once converged (see --tol)",
    "tol": "converged when the objective's largest gradient entry is at most tol (scikit-learn's rule): "
    "lbfgs measures it every iteration; sgd/adam with one pass over the training rows once two epochs in "
    "a row end with a mean objective within tol of the best (after a measure above tol, twice as many "
    "epochs, at most 8). 0: no convergence test (lbfgs still stops where its line search finds no "
    "lower objective)",
    "weight_decay": "1 / (training rows): the objective of scikit-learn's LogisticRegression(C=1)",
    "schedule": "cosine for sgd and adam, none for lbfgs",
}


def validation_rows(rows: int, patience: int | None) -> int:
    """How many of `rows` training rows to hold out for validation when val_size is None: only early
    stopping needs them (held-out rows cost accuracy, most on small sets)."""
    if patience is None:
        return 0
    return max(1, min(VALIDATION_ROWS, rows // VALIDATION_SHARE))


def _sample(images) -> tuple[torch.Tensor, torch.Tensor]:
    """(index, rows): up to CURVATURE_VALUES feature values' worth of rows spread evenly over `images`
    (a tensor, the estimator's NumPy array, or anything with `take`: images on disk, the estimator's
    SparseRows), flattened, as stored (uint8 pixels or float features)."""
    import numpy as np
    import torch

    count = images.shape[0]
    rows = max(2, CURVATURE_VALUES // math.prod(images.shape[1:]))
    index = torch.linspace(0, count - 1, min(rows, count)).round().long().unique()
    if isinstance(images, torch.Tensor):
        raw = images[index]
    elif isinstance(images, np.ndarray):  # (these rows alone converted)
        raw = torch.from_numpy(np.ascontiguousarray(images[index.numpy()]))
    else:
        raw = images.take(index)
    return index, raw.reshape(len(index), -1)


class FeatureSample:
    """Rows spread over the training set, taken once, and what training needs of them: the features'
    mean, on which training centres them (gradient.Centring: the objective as it is, the bias taking up
    w . mean, the mean's curvature gone), and the curvature that sets sgd's step.

    Computed in float64 (the same values whatever the threads) on one CPU thread: a sample's products
    are too small to split, and where another program held the second core, each waited for it (the
    curvature took 0.6 s instead of 15 ms). The rows are converted only for sgd's step (L-BFGS needs
    the mean alone), once for each look (centred, or plain).

    With `weights` (the estimator's sample weights, one per row), each is the objective's as
    weighted: the weighted mean, and the second moments of the rows scaled by sqrt(weight), the
    sampled rows' weights taken to mean 1 (all zero: as unweighted). A stream's chunk is centred on
    the stream's running mean instead of its own (`centre`)."""

    def __init__(self, images, weights=None):
        import numpy as np
        import torch

        from ..base.devices import cpu_threads
        from ..core.model import pixel_scale

        with cpu_threads(1):
            index, self.raw = _sample(images)
        self.scale = pixel_scale(self.raw)
        self.weights = None  # (None: every row weighs 1)
        self.centre = None  # what the centred look subtracts (None: the mean; set before any look)
        if weights is not None and not np.all(np.asarray(weights) == 1):
            sampled = torch.as_tensor(np.asarray(weights)[index.numpy()], dtype=torch.float64)
            if sampled.sum() > 0:
                self.weights = sampled / sampled.mean()
        self._curvatures: dict[bool, float] = {}

    @cached_property
    def _mean(self) -> torch.Tensor:
        """The features' mean, in float64 (summed from the stored values: no converted copy)."""
        import numpy as np
        import torch

        from ..base.devices import cpu_threads

        if self.weights is not None:
            with cpu_threads(1):
                total = self.weights @ self.raw.to(torch.float64)
            return total.mul_(self.scale / float(self.weights.sum()))
        if self.raw.dtype == torch.uint8:  # exact in integers, and NumPy's sum of them is the fastest
            total = torch.from_numpy(self.raw.numpy().sum(0, dtype=np.int64)).to(torch.float64)
        else:
            with cpu_threads(1):
                total = self.raw.sum(0, dtype=torch.float64)
        return total.mul_(self.scale / len(self.raw))

    @property
    def about(self) -> torch.Tensor:
        """The point the centred look subtracts and training steps about: `centre`, else the mean."""
        return self._mean if self.centre is None else self.centre

    @property
    def mean(self) -> torch.Tensor:
        """The features' mean in float64 (the centre training steps about: Centring casts it to the
        model's dtype; a float64 model keeps it whole, as features far from zero need)."""
        return self._mean

    def rows(self, centred: bool = True) -> torch.Tensor:
        """The sample as float64 features, less their mean when `centred` (formed outright: features
        far from zero, a timestamp's, would lose their spread to cancellation in any shortcut), each
        row times sqrt(its weight) where rows are weighted."""
        import torch

        from ..base.devices import cpu_threads

        key = "_centred" if centred else "_plain"
        if key not in self.__dict__:
            with cpu_threads(1):
                x = self.raw.to(torch.float64, copy=True).mul_(self.scale)  # (raw stays as stored)
                x = x.sub_(self.about) if centred else x
                self.__dict__[key] = x if self.weights is None else x.mul_(self.weights.sqrt()[:, None])
        return self.__dict__[key]

    def curvature(self, centred: bool = True) -> float:
        """The largest eigenvalue of the (centred) features' second moments, at least 1 (the bias's):
        the log-loss's curvature in the coordinates training steps in, so a step of SGD_STEP /
        curvature is equally bold on MNIST, on dark-on-light pictures or on 8x8 images. Power
        iteration. Uncentred, the mean's direction is most of it (MNIST: about 37 against 5)."""
        from ..base.devices import cpu_threads

        if centred not in self._curvatures:
            rows = self.rows(centred)
            with cpu_threads(1):
                self._curvatures[centred] = self._power_iteration(rows)
        return self._curvatures[centred]

    def spread(self, centred: bool = True) -> float:
        """The (centred) rows' mean squared norm (the second moments' trace): the curvature one row
        brings."""
        import torch

        from ..base.devices import cpu_threads

        rows = self.rows(centred)
        with cpu_threads(1):
            return float(torch.linalg.vector_norm(rows).square()) / len(rows)

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
    """FeatureSample(images).curvature(): the curvature of `images` as training sees them."""
    return FeatureSample(images).curvature()


def sgd_step(curvature: float, spread: float, weight_decay: float, batch: int, rows: int) -> float:
    """sgd's step for batches of `batch` of `rows` training rows, from the features' `curvature` and
    `spread` (FeatureSample's, in the coordinates training steps in). The whole set's curvature bounds
    the step; below BATCH_ROWS a batch's gradient is noisier, and the step shrinks with the batch (the
    same step per row, so an epoch moves as far: on MNIST batches 1 to 256 then reach the same test
    loss in the same epochs, where 4 / (the batch's curvature) left batch 1 at 1.2 against 0.27). A
    batch drawn without replacement is less noisy the more of the set it holds: all of it, none."""
    step = SGD_STEP / (curvature + weight_decay) * batch_share(batch, rows)
    per_batch = spread / batch + weight_decay  # 0 only for rows all alike with no penalty: no bound
    return min(step, BATCH_STEP / per_batch) if per_batch > 0 else step  # normalised LMS: no overshoot


def batch_share(batch: int, rows: int) -> float:
    """The share of the whole set's step that batches of `batch` of `rows` rows take: batch / BATCH_ROWS
    below BATCH_ROWS rows (a batch drawn without replacement is as noisy as one of batch x rows / (rows
    - batch) drawn with it), 1 from there and for the whole set."""
    noise_batch = math.inf if batch >= rows else batch * rows / (rows - batch)
    return min(1.0, noise_batch / BATCH_ROWS)


def _optimizer(config: TrainConfig, rows: int) -> str:
    if config.optimizer is not None:
        return config.optimizer
    return "lbfgs" if rows < LBFGS_BELOW_ROWS and config.batch_size is None else "sgd"


def default_lr(
    optimizer: str,
    sample: FeatureSample | None,
    weight_decay: float,
    batch: int,
    rows: int,
    centred: bool = True,
    steps: int | None = None,
) -> float:
    """The lr rule (RULES["lr"]) for `optimizer`: sgd's `sgd_step` for the features as training sees
    them (centred, or not) in batches of `batch` of `rows` rows; adam's for a run of `steps` steps
    (None: not known, as a stream's); lbfgs's fixed value."""
    if optimizer == "adam" and steps:
        return float(f"{min(ADAM_MAX_LR, max(OTHER_LR['adam'], 2 * ADAM_REACH / steps)):.3g}")
    if optimizer != "sgd":
        return OTHER_LR[optimizer]
    curvature, spread = sample.curvature(centred), sample.spread(centred)
    step = sgd_step(curvature, spread, weight_decay, batch, rows)
    return float(f"{step:.3g}")  # 3 digits: readable in the run, the same on every rank


def minibatch_epochs(optimizer: str, rows: int, batch: int) -> int:
    """The epochs rule (RULES["epochs"]) for mini-batch `optimizer` (sgd, adam) over `rows` rows in
    batches of `batch`: SGD_EPOCHS, or as many as give SGD_MIN_STEPS steps on smaller sets."""
    # sgd: steps of BATCH_ROWS rows at least, as a smaller batch takes the same step per row
    # (batch_share) and so runs the epochs the default batch would, in more, smaller steps
    counted = max(batch, BATCH_ROWS) if optimizer == "sgd" else batch
    # rows / counted steps an epoch: a short last batch is that fraction of a step (engine.Engine.step)
    return max(SGD_EPOCHS, math.ceil(SGD_MIN_STEPS * counted / rows))


def _lr(
    config: TrainConfig, optimizer: str, data, sample: FeatureSample | None, weight_decay: float
) -> float:
    """`config`'s lr, or the rule's for the run `config` (its batch and budget settled) makes."""
    if config.lr is not None:
        return config.lr
    if optimizer == "sgd":
        sample = sample or FeatureSample(data.train.images)
    rows, batch = len(data.train), config.batch_size
    steps = config.iters or config.epochs * math.ceil(rows / batch)
    return default_lr(optimizer, sample, weight_decay, batch, rows, config.centred, steps)


def _budget(config: TrainConfig, optimizer: str, rows: int, batch: int) -> dict:
    if config.epochs is not None or config.iters is not None:
        return {}
    if optimizer == "lbfgs":
        return {"epochs": LBFGS_ITERATIONS}
    return {"epochs": minibatch_epochs(optimizer, rows, batch)}


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
        batch_size=batch,
        weight_decay=weight_decay,
        schedule=config.schedule or ("none" if optimizer == "lbfgs" else "cosine"),
        momentum=config.momentum if optimizer == "sgd" else 0.0,  # (adam and lbfgs have none)
        nesterov=config.nesterov and optimizer == "sgd" and config.momentum > 0,
    )
    settled = settled.replace(**_budget(config, optimizer, rows, batch))
    return settled.replace(lr=_lr(settled, optimizer, data, sample, weight_decay))
