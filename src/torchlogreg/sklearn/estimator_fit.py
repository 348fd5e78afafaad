"""How the scikit-learn estimator fits: the exact full-batch solver (solvers.lbfgs on an evaluator of
the loss for the device) and mini-batch sgd/adam epochs on the package's one engine, and the learned
weights kept in step with the estimator's coef_ and intercept_. sklearn/estimator.py holds the estimator.

    FullBatch(estimator).fit(X, targets, weights, warm=False)  # what TorchLogisticRegression.fit runs
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets

from ..base.devices import blas_threads, cpu_threads, outside_threads, resolve_device, threads_for
from ..base.exceptions import counted
from ..core.lbfgs import load_blas
from ..core.model import LogisticRegression
from ..core.objective import Objective
from ..core.optimizers import Proximal, make_optimizer, schedule_lr
from ..core.stopping import EarlyStopping, diverged, divergence
from ..data.batches import MemoryBatches
from ..data.rules import FeatureSample, default_lr, minibatch_epochs
from ..training.engine import Engine, full_objective
from ..training.trainer import Convergence
from .estimator_checks import FULL_BATCH, LBFGS_MAX_ITER, resolve_penalty, sample_weights
from .solvers import (
    DeviceLoss,
    FusedLoss,
    HostLoss,
    Solution,
    feature_curvature,
    feature_mean,
    lbfgs,
)

CHUNK = 8192  # rows per chunk of a full pass (a sparse matrix's: data.batches.DENSE_VALUES at most)
MOMENTUM = 0.9  # sgd's (Nesterov)
EXPLICIT_DECAY_LIMIT = 0.01  # sgd: an L2 shrinking W by more than this per step is a proximal step
DIVERGED = 1.1  # sgd/adam ending above this times max(start, all-zero model's) objective diverged
ADVICE = "lower lr, raise C or scale the features"
SCALE_DATA = "scale the data (e.g. with StandardScaler)"


def to_tensor(block, device, dtype: torch.dtype) -> torch.Tensor:
    """A tensor of a dense NumPy block (sparse rows are SparseRows', taken a batch at a time)."""
    block = np.require(block, requirements=["C", "W"])  # torch wants writable memory (copies if not)
    return torch.as_tensor(block, dtype=dtype, device=device)


class SparseRows:
    """Rows of a SciPy CSR matrix, densified only when taken (one batch at a time)."""

    def __init__(self, matrix, dtype: torch.dtype):
        self.matrix, self.dtype, self.shape = matrix, dtype, matrix.shape

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.matrix[index.numpy()].toarray(), dtype=self.dtype)


class EpochEnd:
    """Engine callback at each epoch's end: the full objective (penalty included), which must stay
    finite; at the run's end with it the objective's largest gradient entry (`gradient`: the
    convergence rule's measure, for the backward half of the same pass); with a validation source,
    early stopping once its loss has not fallen by more than tol for `patience` epochs in a row,
    keeping the best weights."""

    def __init__(
        self, objective: Objective, validation, tol: float, patience: int, verbose: int, measure: bool
    ):
        self.objective, self.validation, self.verbose = objective, validation, verbose
        self.objectives: list[float] = []
        self.measure, self.gradient = measure, None  # measure: whether the end's gradient is wanted
        self.stopping = EarlyStopping(tol, patience)

    def steps_ahead(self, engine: Engine) -> int:
        return engine.total  # it acts at epochs' ends, where the fused kernel's calls end too

    def on_steps(self, engine: Engine, rows: list[dict], shares: list[float]) -> None:
        self.on_step(engine, rows[-1])  # (calls end at epochs' ends: only the last can be one)

    def on_step(self, engine: Engine, row: dict) -> None:
        if engine.iteration % engine.steps_per_epoch:
            return
        with outside_threads():  # full passes, not the mini-batch steps' one thread
            self._check_epoch(engine)

    def _check_epoch(self, engine: Engine) -> None:
        if self.measure and engine.iteration >= engine.total:
            value, self.gradient = engine.measure(self.objective)
        else:
            value = full_objective(engine, None, self.objective)
        if diverged(value):
            where = f"in epoch {len(self.objectives) + 1}"
            raise divergence(value, who="training", what="objective", where=where, advice=ADVICE)
        self.objectives.append(value)
        if self.verbose:
            print(f"epoch {len(self.objectives)}: objective {value:.6f}")
        if self.validation is None:
            return
        val_loss = full_objective(engine, self.validation, Objective())
        if self.stopping.update(val_loss, engine.model, engine.iteration):
            engine.stop_reason = "early stopping"


class Fit:
    """What every solver needs from an estimator: its penalty (from penalty, l1_ratio and C) and a
    batch source over (X, y, sample weights)."""

    def __init__(self, estimator: BaseEstimator, first: bool = True):
        self.est = estimator
        self.C, self.l1_share = resolve_penalty(estimator, warn=first)

    def penalty(self, weight_total: float) -> Objective:
        """The objective whose penalty makes (weighted loss sum) / weight_total + penalty scikit-learn's."""
        strength = 1.0 / (self.C * weight_total)  # C = inf: 0, no penalty
        return Objective(strength * (1.0 - self.l1_share), strength * self.l1_share)

    def source(self, X, targets, weights, device, batch_size: int) -> MemoryBatches:
        """A batch source over (X, y, sample weights); sparse X is densified a batch at a time."""
        dtype = self.est._torch_dtype
        features = SparseRows(X, dtype) if hasattr(X, "toarray") else to_tensor(X, device, dtype)
        labels = torch.as_tensor(targets, device=device)
        uniform = bool(np.all(weights == 1))  # the plain mean: no weights to gather and multiply each step
        # in the features' dtype, which the losses take them in: float32 weights are the fused kernel's
        sample_weight = None if uniform else torch.as_tensor(weights, device=device, dtype=dtype)
        return MemoryBatches(features, labels, batch_size, sample_weight, device)


class FullBatch(Fit):
    """The exact solver: solvers.lbfgs on the whole set, its loss in NumPy on the CPU, else torch."""

    def fit(self, X, targets, weights, warm: bool) -> int:
        """L-BFGS until max |subgradient| <= tol or max_iter iterations; returns iterations."""
        est = self.est
        max_iter = LBFGS_MAX_ITER if est.max_iter is None else est.max_iter
        loss, threads = self._loss(X, targets, weights)
        load_blas()  # (before blas_threads first looks the loaded BLAS libraries up)
        with blas_threads(threads):
            solution = lbfgs(
                loss,
                *start_point(est, warm),
                self.penalty(float(weights.sum())),
                fit_intercept=est.fit_intercept,
                max_iter=max_iter,
                tol=est.tol,
                verbose=est.verbose,
                curvature=feature_curvature(X, weights, est.model_.linear.weight.shape[0]),
                mean=feature_mean(X, weights) if est.fit_intercept else None,
            )
        value = solution.objective if np.isfinite(solution.coef).all() else math.nan
        if diverged(value):
            advice = "scale the features (StandardScaler), so that the logits stay finite"
            raise divergence(value, who="lbfgs", what="objective", where="in its search", advice=advice)
        # n_iter_ is at least 1 (scikit-learn's checks): a first iteration that took no step counts
        n_iter = max(solution.n_iter, 1)
        self._warn_unconverged(solution, n_iter, max_iter, X, warm)
        set_weights(est, solution.coef, solution.intercept)
        return n_iter

    def _loss(self, X, targets, weights) -> tuple[FusedLoss | HostLoss | DeviceLoss, int | None]:
        """The loss evaluator for the device, and the CPU threads for it (None: the libraries' choice)."""
        device = resolve_device(self.est.device)
        n_outputs = self.est.model_.linear.weight.shape[0]
        if device.type == "cpu":
            X = X.astype(self.est._compute_dtype, copy=False)
            threads = threads_for(X.shape[0], X.shape[1], n_outputs, device)
            if FusedLoss.covers(X):  # the fused kernel: one pass over the rows per evaluation, on
                # torch's threads; BLAS has no products left to run: one thread
                return FusedLoss(X, targets, weights, n_outputs), 1
            return HostLoss(X, targets, weights, n_outputs), threads
        model = LogisticRegression(X.shape[1], len(self.est.classes_)).to(device, self.est._torch_dtype)
        source = self.source(X, targets, weights, device, CHUNK)
        return DeviceLoss(model, source, float(weights.sum())), None

    def _warn_unconverged(self, solution: Solution, n_iter: int, max_iter: int, X, warm: bool) -> None:
        """A one-line ConvergenceWarning where lbfgs ended with its max |gradient| above tol: the
        iterations it ran (`n_iter`, as n_iter_ says), why it stopped, and what would help."""
        tol, gradient = self.est.tol, solution.gradient
        if gradient <= tol:
            return
        ran = f"lbfgs failed to converge after {n_iter} iteration(s) (max_iter={max_iter})"
        measure = f"the objective's max |gradient| is {gradient:.3g}, above tol={tol}"
        if solution.reached_max_iter:
            message = f"{ran}: {measure}; raise max_iter or {SCALE_DATA}."
        elif solution.n_iter == 0 and not warm:
            # From the all-zero start, where the objective is smooth and log(classes): the lower
            # objective lies at steps shorter than the line search resolves (features at 1e20, or C
            # at 1e-30), not below float rounding, so a larger tol or dtype would be no remedy.
            message = (
                f"{ran}: it took no step ({solution.message}), so the weights are still zero; "
                f"{measure}. More iterations will not help: the objective is too steep for the steps "
                f"the line search can take, as with features on a huge scale (here up to "
                f"|x| = {_largest(X):.3g}) or a tiny C (here C={self.C:g}): {SCALE_DATA} or raise C."
            )
        else:  # after steps: the objective's rounding or features too steep; nothing here tells which
            dtype = self.est._compute_dtype
            remedy = "a larger tol" if dtype == np.float64 else "dtype='float64' or a larger tol"
            message = (
                f"{ran}: it stopped ({solution.message}); {measure}. More iterations will not help: "
                f"if the features are on a huge scale (here up to |x| = {_largest(X):.3g}), {SCALE_DATA}; "
                f"if the objective no longer falls measurably in {dtype.name} arithmetic, use {remedy}."
            )
        warnings.warn(message, ConvergenceWarning, stacklevel=4)


def _largest(X) -> float:
    """The largest |entry| of dense or CSR X (a CSR matrix's stored values only)."""
    values = X.data if hasattr(X, "toarray") else X
    return float(np.abs(values).max(initial=0.0))


class MiniBatch(Fit):
    """Mini-batch sgd/adam epochs on the package's one engine, over a batch source of the arrays."""

    def _parameters(self, model: LogisticRegression) -> list[torch.Tensor]:
        if self.est.fit_intercept:
            return list(model.parameters())
        with torch.no_grad():
            model.linear.bias.zero_()
        return [model.linear.weight]

    @staticmethod
    def _proximal(solver: str, lr: float, penalty: Objective) -> bool:
        """Whether sgd takes its penalty as a proximal step: for L1 (exact zeros), and for an L2 strong
        enough that a gradient step on it would be unstable; a weak L2 stays in the gradient, which
        costs one operation per step less."""
        strong = lr / (1 - MOMENTUM) * penalty.weight_decay > EXPLICIT_DECAY_LIMIT
        return solver == "sgd" and (penalty.l1 > 0 or strong)

    def _engine(
        self, X, targets, weights, penalty: Objective, solver: str, total: int, batch_size: int, **kwargs
    ) -> Engine:
        """The shared training engine, set up with this estimator's objective and `solver` at `lr`,
        stepping about `centre` (None: on plain features)."""
        device = resolve_device(self.est.device)
        model = self.est.model_.to(device)
        params = self._parameters(model)
        lr = kwargs.pop("lr")
        optimizer = make_optimizer(params, solver, lr, momentum=MOMENTUM)
        proximal = self._proximal(solver, lr, penalty)
        if proximal:
            optimizer = Proximal(optimizer, params[0], weight_decay=penalty.weight_decay, momentum=MOMENTUM)
        if self.est.optimizer_state_ is not None and self.est.optimizer_state_[0] == solver:
            optimizer.load_state_dict(self.est.optimizer_state_[1])  # (copied to the device's buffers)
        state = self.est.random_state  # an int seeds torch as it is; a RandomState (or None: NumPy's
        # global one) gives a seed drawn from it, as scikit-learn's estimators take them
        seed = state if isinstance(state, Integral) else int(check_random_state(state).randint(2**31))
        generator = torch.Generator().manual_seed(seed)
        return Engine(
            model,
            Objective(0.0, penalty.l1) if proximal else penalty,  # proximal: in its step (L1 handed over)
            optimizer,
            self.source(X, targets, weights, device, batch_size),
            kwargs.pop("schedule"),
            total,
            generator=generator,
            parameters=params,
            advice=ADVICE,
            explosion_factor=None,  # mini-batch losses swing widely; the epoch-end objective is checked
            **kwargs,
        )

    def _finish(self, engine: Engine, solver: str, momentum: bool = True) -> None:
        """The trained model, and the optimizer's state for a warm start (none where the weights were
        put back to an earlier epoch's, which the state no longer describes)."""
        engine.model.zero_grad(set_to_none=True)
        state = {k: v.cpu() for k, v in engine.optimizer.state_dict().items()}
        self.est.optimizer_state_ = (solver, state) if momentum else None
        self.est.model_ = engine.model.cpu()

    def fit(self, X, targets, weights, warm: bool) -> int:
        """max_iter epochs (cosine schedule), or fewer with early stopping, from the model as it is
        (zeros, or warm: synced from coef_); returns the epochs run."""
        epochs = self.est.max_iter
        validation = None
        if self.est.early_stopping:
            from sklearn.model_selection import train_test_split

            index = np.arange(X.shape[0])
            counts = np.bincount(targets)
            held = math.ceil(self.est.validation_fraction * len(index))
            # stratified where each part can hold every class (30 rows of 10 classes: 3 held out)
            stratified = counts.min() >= 2 and min(held, len(index) - held) >= len(counts)
            train_index, val_index = train_test_split(
                index,
                test_size=self.est.validation_fraction,
                random_state=self.est.random_state,
                stratify=targets if stratified else None,
            )
            validation = (X[val_index], targets[val_index], weights[val_index])
            X, targets, weights = X[train_index], targets[train_index], weights[train_index]
        if epochs is None:
            epochs = minibatch_epochs(self.est.solver, X.shape[0], min(self.est.batch_size, X.shape[0]))
        epochs_run = self.run_epochs(X, targets, weights, epochs, self.est.solver, True, validation)
        publish(self.est)
        return epochs_run

    def run_epochs(self, X, targets, weights, epochs, solver, schedule, validation=None, chunk=False) -> int:
        """`epochs` epochs of `solver` (cosine schedule, or a constant lr) unless early stopping ends
        them first; returns the epochs run. A `chunk` of a stream (partial_fit) smaller than
        batch_size is that share of a step (engine.Engine.step), as its rows would be in one fit; a
        whole set smaller than it is one whole step."""
        batch = self.est.batch_size if chunk else min(self.est.batch_size, X.shape[0])
        steps = epochs * math.ceil(X.shape[0] / batch)
        device = resolve_device(self.est.device)
        # The steps see the weights scaled to mean 1, and the penalty scaled to match: the minimiser
        # is scikit-learn's, and lr means the same whatever the weights' scale (class weights of
        # 1000 made lr 0.001 a step of about 1, and the fit's end a matter of rounding).
        penalty = self.penalty(float(weights.sum()))  # the engine's loss: sum(w l) / n, w of mean 1
        mean_weight = float(weights.mean())
        weights = weights / mean_weight
        lr, centre = self._settle(X, weights, solver, penalty.weight_decay, batch, None if chunk else steps)
        if validation is not None:
            validation = (*validation[:2], validation[2] / mean_weight)
        val_source = None if validation is None else self.source(*validation, device, CHUNK)
        cosine = lambda step: schedule_lr("cosine", lr, step, steps)  # noqa: E731
        schedule = cosine if schedule else (lambda step: lr)
        watcher = EpochEnd(  # (a fit's epochs end with the convergence rule's measure; partial_fit's not)
            penalty, val_source, self.est.tol, self.est.n_iter_no_change, self.est.verbose, schedule is cosine
        )
        # a fit stops once converged, by `torchlogreg train`'s rule (first: its stop is the epoch's)
        callbacks = [Convergence(self.est.tol, penalty), watcher] if schedule is cosine else [watcher]
        engine = self._engine(
            X, targets, weights, penalty, solver, steps, batch,
            lr=lr, centre=centre, schedule=schedule, callbacks=callbacks,
        )  # fmt: skip
        zero = math.log(engine.model.n_classes)  # the all-zero model's objective (weights of mean 1)
        start = full_objective(engine, None, penalty) if _has_weights(engine.model) else zero
        model, device = engine.model, engine.parameters[0].device
        with cpu_threads(threads_for(batch, model.n_features, model.linear.out_features, device)):
            engine.run()
        # with early_stopping the best weights by validation loss, however the epochs ended (patience,
        # convergence or the budget), as scikit-learn's MLP keeps them
        best = watcher.stopping
        restored = best.best_iteration != engine.iteration and best.restore(engine.model)
        if restored:
            watcher.objectives.append(full_objective(engine, None, penalty))
        measured = schedule is cosine and engine.stop_reason is None and not restored
        gradient = watcher.gradient if measured else None
        self._check(solver, [start, *watcher.objectives], max(start, zero), epochs, gradient)
        self._finish(engine, solver, momentum=not restored)
        return math.ceil(engine.epochs)

    def _settle(
        self, X, weights, solver: str, weight_decay: float, batch: int, steps: int | None
    ) -> tuple[float, torch.Tensor | None]:
        """(lr_, centre): lr, or the package's rule for the features as weighted (rules.default_lr),
        and the float64 point the steps centre the features on (None: plain steps, without an
        intercept), from a sample of X's rows, as `torchlogreg train` sets them for a run of `steps`
        steps. A fit centres on its rows' mean; a stream's chunk (`steps` None: partial_fit) on the
        running mean of the stream so far, this chunk's rows included (its own mean would leave a
        1-row chunk no weight gradient, and plain steps left features near +100 untrained), with its
        own chunk's lr about it."""
        centred = self.est.fit_intercept
        wanted = centred or (self.est.lr is None and solver == "sgd")
        rows = SparseRows(X, torch.float64) if hasattr(X, "toarray") else X  # (sampled rows densified)
        sample = FeatureSample(rows, weights) if wanted else None
        if centred and steps is None:
            sample.centre = self._stream_mean(sample.mean, X.shape[0])
        lr = self.est.lr
        if lr is None:
            lr = default_lr(solver, sample, weight_decay, batch, X.shape[0], centred, steps)
        self.est.lr_ = lr
        return lr, sample.about if centred else None

    def _stream_mean(self, chunk_mean: torch.Tensor, rows: int) -> torch.Tensor:
        """The mean of the stream's rows so far, `rows` rows of mean `chunk_mean` just added
        (`_stream`: the mean and the rows before; None at a stream's start)."""
        if getattr(self.est, "_stream", None) is None:  # (an estimator pickled before streams had one)
            mean, seen = chunk_mean, rows
        else:
            before, seen = self.est._stream
            seen += rows
            mean = before + (chunk_mean - before) * (rows / seen)
        self.est._stream = (mean, seen)
        return mean

    def partial_fit(self, X, y, classes, sample_weight, first: bool) -> None:
        """One epoch at a constant lr on this chunk; the first call sets classes_ and the model."""
        est = self.est
        check_classification_targets(y)
        if first:
            est.classes_ = np.unique(classes)
            est._coef_dtype = X.dtype
            est._init_model(X.shape[1])
            est.n_iter_ = np.array([0], dtype=np.int32)
            est._stream = None  # (the stream's mean so far: _stream_mean)
        elif classes is not None and not np.array_equal(np.unique(classes), est.classes_):
            raise ValueError(f"classes {np.unique(classes)} differ from the first call's {est.classes_}")
        unknown = np.setdiff1d(y, est.classes_)
        if len(unknown):
            raise ValueError(f"y holds labels {unknown} that are not in classes {est.classes_}")
        weights = sample_weights(self.est, X, y, sample_weight)
        if not first:
            sync_model(est)
        solver = "sgd" if est.solver in FULL_BATCH else est.solver
        targets = np.searchsorted(est.classes_, y)
        self.run_epochs(X, targets, weights, epochs=1, solver=solver, schedule=False, chunk=True)
        est.n_iter_ = est.n_iter_ + 1
        publish(est)

    def _check(
        self, solver: str, history: list[float], ceiling: float, epochs: int, gradient: float | None
    ) -> None:
        """DivergenceError if training ended well above the ceiling (the higher of where it started and
        the all-zero model's objective: its noise at the end is far below the margin); a
        ConvergenceWarning if max_iter epochs ran out with the objective's largest gradient entry
        (`gradient`, None: not measured, as when early stopping ended the epochs) above tol, lbfgs's
        rule. `history`: the objective at the start and after each epoch."""
        if diverged(history[-1], DIVERGED * ceiling):
            raise divergence(
                history[-1],
                who=solver,
                what="objective",
                where="at the end",
                advice=ADVICE,
                ceiling=DIVERGED * ceiling,
                ceiling_is=f" ({DIVERGED}x the higher of where it started and the all-zero model's)",
            )
        if gradient is not None and not gradient <= self.est.tol:  # (a nan gradient is no convergence)
            warnings.warn(
                f"{solver} failed to converge: after {counted(epochs, 'epoch')} "
                f"(max_iter={self.est.max_iter}) the objective's largest gradient entry is "
                f"{gradient:.3g}, above tol={self.est.tol}; raise max_iter above {epochs}, "
                f"{SCALE_DATA}, or use solver='lbfgs', which converges in far fewer passes on sets "
                "that fit in memory.",
                ConvergenceWarning,
                stacklevel=5,
            )


# --- the learned weights: coef_ and intercept_, and the model_ they mirror --------------------------
def _has_weights(model: LogisticRegression) -> bool:
    return bool(model.linear.weight.any() or model.linear.bias.any())


def start_point(est: BaseEstimator, warm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Zeros, or (warm start) coef_ and intercept_ as they are now (a user may have edited them)."""
    shape = tuple(est.model_.linear.weight.shape)
    if not warm:
        return np.zeros(shape), np.zeros(shape[0])
    coef = est.coef_.toarray() if hasattr(est.coef_, "toarray") else est.coef_
    intercept = np.asarray(est.intercept_, dtype=np.float64).reshape(-1)
    return np.asarray(coef, dtype=np.float64).reshape(shape), intercept


def set_weights(est: BaseEstimator, coef: np.ndarray, intercept: np.ndarray) -> None:
    """The model's weights and coef_ / intercept_ (plain arrays in the input's float dtype, which
    prediction reads: editing them, or sparsify(), changes predictions)."""
    with torch.no_grad():
        est.model_.linear.weight.copy_(torch.as_tensor(coef))
        est.model_.linear.bias.copy_(torch.as_tensor(intercept))
    dtype = getattr(est, "_coef_dtype", np.float64)
    est.coef_ = np.array(coef, dtype=dtype)
    est.intercept_ = np.array(intercept, dtype=dtype).reshape(-1)


def publish(est: BaseEstimator) -> None:
    """coef_ and intercept_ from the trained model."""
    linear = est.model_.linear
    set_weights(
        est, linear.weight.detach().cpu().double().numpy(), linear.bias.detach().cpu().double().numpy()
    )


def sync_model(est: BaseEstimator) -> None:
    """The model's weights from coef_ and intercept_ (which a user may have edited)."""
    if hasattr(est, "coef_"):
        set_weights(est, *start_point(est, warm=True))
