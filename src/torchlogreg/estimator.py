"""A scikit-learn classifier with this package's speed and device support.

    from torchlogreg.estimator import TorchLogisticRegression
    clf = TorchLogisticRegression(C=1.0).fit(X_train, y_train)   # exact, any penalty (l1_ratio)
    clf = TorchLogisticRegression(solver="sgd").fit(X_big, y_big)  # mini-batch epochs: large data
    clf.predict_proba(X_test)

It follows scikit-learn's estimator contract (parameters only stored in ``__init__``, validated
in ``fit`` from one declarative table, learned attributes ending in ``_``) and LogisticRegression's
parameters and warnings (scikit-learn 1.8's: ``l1_ratio`` and ``C`` choose the penalty), so it works
in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``. The objective is scikit-learn's: weighted
mean log-loss + penalty / (C * sum of sample weights), the intercept never penalised.

Two ways to minimise it: 'lbfgs' (the default; scikit-learn's other solver names run it too) solves it
exactly for every penalty, full batch, with SciPy's L-BFGS-B on a loss evaluated in NumPy on the CPU
or by torch on the device (solvers.py); 'sgd' and 'adam' run mini-batch epochs on the package's one
training loop (engine.Engine), the fast choice on large data.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from .batches import MemoryBatches
from .config import DEFAULT_LR
from .devices import cpu_threads, resolve_device, threads_for
from .engine import Engine, full_objective
from .exceptions import NotFittedError
from .model import LogisticRegression, decide
from .objective import Objective
from .optimizers import make_optimizer, schedule_lr
from .solvers import (
    DeviceLoss,
    FusedLoss,
    HostLoss,
    Proximal,
    Solution,
    blas_threads,
    feature_curvature,
    lbfgs,
)
from .stopping import EarlyStopping, diverged, divergence

CHUNK = 8192  # rows per full-pass chunk (and per densified block of a sparse matrix)
DEFAULT_MAX_ITER = {"lbfgs": 100, "sgd": 5, "adam": 5}  # lbfgs: iterations; sgd/adam: epochs
MINI_BATCH = ("sgd", "adam")
FULL_BATCH = ("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga")  # all run lbfgs
MOMENTUM = 0.9  # sgd's (Nesterov)
EXPLICIT_DECAY_LIMIT = 0.01  # sgd: an L2 shrinking W by more than this per step is a proximal step
DIVERGED = 1.1  # sgd/adam ending above this times max(start, all-zero model's) objective diverged
ADVICE = "lower lr, raise C or scale the features"
SCALE_DATA = (
    "You might also want to scale the data as shown in:\n"
    "    https://scikit-learn.org/stable/modules/preprocessing.html"
)
# scikit-learn 1.8's warnings, word for word, so that a user's warning filters match them here too
PENALTY_DEPRECATED = (
    "'penalty' was deprecated in version 1.8 and will be removed in 1.10. To avoid this warning, leave "
    "'penalty' set to its default value and use 'l1_ratio' or 'C' instead. Use l1_ratio=0 instead of "
    "penalty='l2', l1_ratio=1 instead of penalty='l1', l1_ratio set to a float between 0 and 1 instead "
    "of penalty='elasticnet', and C=np.inf instead of penalty=None."
)
L1_RATIO_NONE = (
    "'l1_ratio=None' was deprecated in version 1.8 and will trigger an error in 1.10. Use "
    "0<=l1_ratio<=1 instead."
)


def to_tensor(block, device, dtype: torch.dtype) -> torch.Tensor:
    """A dense tensor from a numpy block or a sparse block (densified here, block by block)."""
    if hasattr(block, "toarray"):
        block = block.toarray()
    block = np.require(block, requirements=["C", "W"])  # torch wants writable memory (copies if not)
    return torch.as_tensor(block, dtype=dtype, device=device)


def resolve_penalty(est: TorchLogisticRegression, warn: bool = True) -> tuple[float, float]:
    """(C, share of L1 in the penalty) from penalty, l1_ratio and C by scikit-learn 1.8's rules
    (penalty deprecated; l1_ratio 0: L2, 1: L1, between: elastic-net; C=inf: none), with its warnings."""
    say = warnings.warn if warn else (lambda *args, **kwargs: None)
    l1_ratio = est.l1_ratio
    if est.penalty == "deprecated":
        if l1_ratio is None:
            say(L1_RATIO_NONE, FutureWarning, stacklevel=4)
        penalty = "l2" if not l1_ratio else "l1" if l1_ratio == 1 else "elasticnet"
        penalty = None if math.isinf(est.C) else penalty
    else:
        penalty = est.penalty
        say(PENALTY_DEPRECATED, FutureWarning, stacklevel=4)
    if penalty != "elasticnet" and l1_ratio is not None and 0 < l1_ratio < 1:
        say(
            f"l1_ratio parameter is only used when penalty is 'elasticnet'. Got (penalty={penalty})",
            stacklevel=4,
        )
    if (est.penalty == "l2" and l1_ratio != 0) or (est.penalty == "l1" and l1_ratio != 1):
        say(
            f"Inconsistent values: penalty={est.penalty} with l1_ratio={l1_ratio}. penalty is deprecated. "
            "Please use l1_ratio only.",
            stacklevel=4,
        )
    if penalty == "elasticnet" and l1_ratio is None:
        raise ValueError("l1_ratio must be specified when penalty is elasticnet.")
    if penalty is None:
        if est.penalty is None and est.C != 1.0:
            say("Setting penalty=None will ignore the C and l1_ratio parameters", stacklevel=4)
        return math.inf, 0.0
    return est.C, {"l2": 0.0, "l1": 1.0}.get(penalty, l1_ratio)


class SparseRows:
    """Rows of a SciPy CSR matrix, densified only when taken (one batch at a time)."""

    def __init__(self, matrix, dtype: torch.dtype):
        self.matrix, self.dtype = matrix, dtype

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.matrix[index.numpy()].toarray(), dtype=self.dtype)


class EpochEnd:
    """Engine callback at each epoch's end: the full objective (penalty included), which must stay
    finite; with a validation source, early stopping once its loss has not fallen by more than tol
    for `patience` epochs in a row, keeping the best weights."""

    def __init__(self, objective: Objective, validation, tol: float, patience: int, verbose: int):
        self.objective, self.validation, self.verbose = objective, validation, verbose
        # The full passes are large products: torch's threads as the fit found them, not the one
        # thread the mini-batch steps run on.
        self.threads = torch.get_num_threads()
        self.objectives: list[float] = []
        self.stopping = EarlyStopping(tol, patience)

    def on_step(self, engine: Engine, row: dict) -> None:
        if engine.iteration % engine.steps_per_epoch:
            return
        with cpu_threads(self.threads):
            self._check_epoch(engine)

    def _check_epoch(self, engine: Engine) -> None:
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


class _Fit:
    """What every solver needs from an estimator: its checked parameters, sample weights, penalty,
    and a batch source over (X, y, sample weights)."""

    def __init__(self, estimator: TorchLogisticRegression, first: bool = True):
        self.est = estimator
        self.C, self.l1_share = resolve_penalty(estimator, warn=first)

    def check_params(self) -> None:
        """Rules that span several parameters (the table checks each alone)."""
        est = self.est
        if est.dual and est.solver != "liblinear":
            raise ValueError(f"Solver {est.solver} supports only dual=False, got dual={est.dual}")
        resolve_device(est.device)  # raises ConfigError (a ValueError) naming the device
        if est.n_jobs is not None:
            warnings.warn(
                "'n_jobs' has no effect since 1.8 and will be removed in 1.10. "
                f"You provided 'n_jobs={est.n_jobs}', please leave it unspecified.",
                FutureWarning,
                stacklevel=3,
            )
        if est.solver == "liblinear" and est.fit_intercept:
            warnings.warn(
                "solver='liblinear' runs the exact full-batch solver (lbfgs) here, which never penalises "
                "the intercept: liblinear does (intercept_scaling), so its coef_ can differ slightly.",
                UserWarning,
                stacklevel=3,
            )

    def sample_weights(self, X, y, classes, sample_weight) -> np.ndarray:
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        if self.est.class_weight is not None:
            if isinstance(self.est.class_weight, dict):
                unknown = set(self.est.class_weight) - set(classes.tolist())
                if unknown:
                    raise ValueError(f"class_weight names classes {sorted(unknown)} not in the data")
            weights = weights * compute_sample_weight(self.est.class_weight, y)
        if not weights.sum() > 0:
            raise ValueError(f"The sample weights must have a positive sum; got {weights.sum()}.")
        return weights

    def penalty(self, weight_total: float) -> Objective:
        """The objective whose penalty makes (weighted loss sum) / weight_total + penalty scikit-learn's."""
        strength = 1.0 / (self.C * weight_total)  # C = inf: 0, no penalty
        return Objective(strength * (1.0 - self.l1_share), strength * self.l1_share)

    def _source(self, X, targets, weights, device, batch_size: int) -> MemoryBatches:
        """A batch source over (X, y, sample weights); sparse X is densified a batch at a time."""
        dtype = self.est._torch_dtype
        features = SparseRows(X, dtype) if hasattr(X, "toarray") else to_tensor(X, device, dtype)
        labels = torch.as_tensor(targets, device=device)
        uniform = bool(np.all(weights == 1))  # the plain mean: no weights to gather and multiply each step
        sample_weight = None if uniform else torch.as_tensor(weights, device=device)
        return MemoryBatches(features, labels, batch_size, sample_weight, device)


class _FullBatch(_Fit):
    """The exact solver: solvers.lbfgs on the whole set, its loss in NumPy on the CPU, else torch."""

    def fit(self, X, targets, weights, warm: bool) -> int:
        """L-BFGS-B until max |projected gradient| <= tol or max_iter iterations; returns iterations."""
        est = self.est
        max_iter = DEFAULT_MAX_ITER["lbfgs"] if est.max_iter is None else est.max_iter
        loss, threads = self._loss(X, targets, weights)
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
            )
        value = solution.objective if np.isfinite(solution.coef).all() else math.nan
        if diverged(value):
            advice = "scale the features (StandardScaler), so that the logits stay finite"
            raise divergence(value, who="lbfgs", what="objective", where="in its search", advice=advice)
        self._warn_unconverged(solution, max_iter)
        set_weights(est, solution.coef, solution.intercept)
        return max(solution.n_iter, 1)

    def _loss(self, X, targets, weights) -> tuple[FusedLoss | HostLoss | DeviceLoss, int | None]:
        """The loss evaluator for the device, and the CPU threads for it (None: the libraries' choice)."""
        device = resolve_device(self.est.device)
        n_outputs = self.est.model_.linear.weight.shape[0]
        if device.type == "cpu":
            X = X.astype(self.est._compute_dtype, copy=False)
            threads = threads_for(X.shape[0], X.shape[1], device)
            if FusedLoss.covers(X):  # the fused kernel: one pass over the rows per evaluation, on
                # torch's threads; BLAS then serves only L-BFGS-B's own small products: one thread
                return FusedLoss(X, targets, weights, n_outputs), 1
            return HostLoss(X, targets, weights, n_outputs), threads
        model = LogisticRegression(X.shape[1], len(self.est.classes_)).to(device, self.est._torch_dtype)
        source = self._source(X, targets, weights, device, CHUNK)
        return DeviceLoss(model, source, float(weights.sum())), None

    def _warn_unconverged(self, solution: Solution, max_iter: int) -> None:
        tol, gradient = self.est.tol, solution.gradient
        if gradient <= tol:
            return
        if solution.reached_max_iter:
            message = (
                f"lbfgs failed to converge after {solution.n_iter} iteration(s): the objective's max "
                f"|projected gradient| is {gradient:.3g}, above tol={tol}.\nIncrease the number of "
                f"iterations to improve the convergence (max_iter={max_iter}).\n{SCALE_DATA}"
            )
        else:
            dtype = self.est._compute_dtype
            remedy = "a larger tol" if dtype == np.float64 else "dtype='float64' or a larger tol"
            message = (
                f"lbfgs failed to converge after {solution.n_iter} iteration(s): it stopped "
                f"({solution.message}) with the objective's max |projected gradient| at {gradient:.3g}, "
                f"above tol={tol}: the objective no longer falls measurably in {dtype.name} arithmetic. "
                f"Use {remedy}.\n{SCALE_DATA}"
            )
        warnings.warn(message, ConvergenceWarning, stacklevel=4)


class _EngineAdapter(_Fit):
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
        costs one operation per step less (about 8% of a step on MNIST)."""
        strong = lr / (1 - MOMENTUM) * penalty.weight_decay > EXPLICIT_DECAY_LIMIT
        return solver == "sgd" and (penalty.l1 > 0 or strong)

    def _engine(
        self, X, targets, weights, penalty: Objective, solver: str, total: int, batch_size: int, **kwargs
    ) -> Engine:
        """The shared training engine, set up with this estimator's objective and `solver`."""
        device = resolve_device(self.est.device)
        model = self.est.model_.to(device)
        params = self._parameters(model)
        lr = self.est.lr or DEFAULT_LR[solver]
        optimizer = make_optimizer(params, solver, lr, momentum=MOMENTUM)
        proximal = self._proximal(solver, lr, penalty)
        if proximal:
            optimizer = Proximal(optimizer, params[0], penalty, MOMENTUM)
        if self.est.optimizer_state_ is not None and self.est.optimizer_state_[0] == solver:
            optimizer.load_state_dict({k: v.to(device) for k, v in self.est.optimizer_state_[1].items()})
        seed = self.est.random_state if isinstance(self.est.random_state, Integral) else None
        generator = torch.Generator().manual_seed(seed if seed is not None else int(np.random.randint(2**31)))
        return Engine(
            model,
            Objective() if proximal else penalty,  # proximal: in its step
            optimizer,
            self._source(X, targets, weights, device, batch_size),
            kwargs.pop("schedule"),
            total,
            generator=generator,
            parameters=params,
            advice=ADVICE,
            explosion_factor=None,  # mini-batch losses swing widely; the epoch-end objective is checked
            **kwargs,
        )

    def _finish(self, engine: Engine, solver: str) -> None:
        engine.model.zero_grad(set_to_none=True)
        state = {k: v.cpu() for k, v in engine.optimizer.state_dict().items()}
        self.est.optimizer_state_ = (solver, state)
        self.est.model_ = engine.model.cpu()

    def fit(self, X, targets, weights, warm: bool) -> int:
        """max_iter epochs (cosine schedule), or fewer with early stopping, from the model as it is
        (zeros, or warm: synced from coef_); returns the epochs run."""
        epochs = self.est.max_iter if self.est.max_iter is not None else DEFAULT_MAX_ITER[self.est.solver]
        validation = None
        if self.est.early_stopping:
            from sklearn.model_selection import train_test_split

            index = np.arange(X.shape[0])
            train_index, val_index = train_test_split(
                index,
                test_size=self.est.validation_fraction,
                random_state=self.est.random_state,
                stratify=targets if np.bincount(targets).min() >= 2 else None,
            )
            validation = (X[val_index], targets[val_index], weights[val_index])
            X, targets, weights = X[train_index], targets[train_index], weights[train_index]
        epochs_run = self.run_epochs(X, targets, weights, epochs, self.est.solver, True, validation)
        publish(self.est)
        return epochs_run

    def run_epochs(self, X, targets, weights, epochs, solver, schedule, validation=None) -> int:
        """`epochs` epochs of `solver` (cosine schedule, or a constant lr) unless early stopping ends
        them first; returns the epochs run."""
        batch = min(self.est.batch_size, X.shape[0])
        steps = epochs * math.ceil(X.shape[0] / batch)
        lr = self.est.lr or DEFAULT_LR[solver]
        device = resolve_device(self.est.device)
        # The steps see the weights scaled to mean 1, and the penalty scaled to match: the minimiser
        # is scikit-learn's, and lr means the same whatever the weights' scale (class weights of
        # 1000 made lr 0.001 a step of about 1, and the fit's end a matter of rounding).
        penalty = self.penalty(float(weights.sum()))  # the engine's loss: sum(w l) / n, w of mean 1
        mean_weight = float(weights.mean())
        weights = weights / mean_weight
        if validation is not None:
            validation = (*validation[:2], validation[2] / mean_weight)
        val_source = None if validation is None else self._source(*validation, device, CHUNK)
        watcher = EpochEnd(penalty, val_source, self.est.tol, self.est.n_iter_no_change, self.est.verbose)
        cosine = lambda step: schedule_lr("cosine", lr, step, steps)  # noqa: E731
        schedule = cosine if schedule else (lambda step: lr)
        engine = self._engine(
            X, targets, weights, penalty, solver, steps, batch, schedule=schedule, callbacks=[watcher]
        )
        zero = math.log(engine.model.n_classes)  # the all-zero model's objective (weights of mean 1)
        start = full_objective(engine, None, penalty) if _has_weights(engine.model) else zero
        with cpu_threads(threads_for(batch, engine.model.n_features, engine.parameters[0].device)):
            engine.run()
        if engine.stop_reason == "early stopping" and watcher.stopping.restore(engine.model):
            watcher.objectives.append(full_objective(engine, None, penalty))
        ran_out = schedule is cosine and engine.stop_reason is None
        self._check(solver, [start, *watcher.objectives], max(start, zero), epochs, ran_out)
        self._finish(engine, solver)
        return math.ceil(engine.epochs)

    def partial_fit(self, X, y, classes, sample_weight, first: bool) -> None:
        """One epoch at a constant lr on this chunk; the first call sets classes_ and the model."""
        est = self.est
        check_classification_targets(y)
        if first:
            est.classes_ = np.unique(classes)
            est._coef_dtype = X.dtype
            est._init_model(X.shape[1])
            est.n_iter_ = np.array([0], dtype=np.int32)
        elif classes is not None and not np.array_equal(np.unique(classes), est.classes_):
            raise ValueError(f"classes {np.unique(classes)} differ from the first call's {est.classes_}")
        unknown = np.setdiff1d(y, est.classes_)
        if len(unknown):
            raise ValueError(f"y holds labels {unknown} that are not in classes {est.classes_}")
        weights = self.sample_weights(X, y, est.classes_, sample_weight)
        if not first:
            sync_model(est)
        solver = "sgd" if est.solver in FULL_BATCH else est.solver
        self.run_epochs(X, np.searchsorted(est.classes_, y), weights, epochs=1, solver=solver, schedule=False)
        est.n_iter_ = est.n_iter_ + 1
        publish(est)

    def _check(self, solver: str, history: list[float], ceiling: float, epochs: int, ran_out: bool) -> None:
        """DivergenceError if training ended well above the ceiling (the higher of where it started and
        the all-zero model's objective: its noise at the end is far below the margin); a
        ConvergenceWarning if max_iter epochs ran out while the last one still lowered the objective by
        more than tol. `history`: the objective at the start and after each epoch."""
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
        if ran_out and history[-2] - history[-1] > self.est.tol:
            warnings.warn(
                f"{solver} failed to converge: it ran max_iter={epochs} epochs and the last one lowered the "
                f"objective by more than tol={self.est.tol}; raise max_iter.",
                ConvergenceWarning,
                stacklevel=5,
            )


# --- the learned weights: coef_ and intercept_, and the model_ they mirror --------------------------
def _has_weights(model: LogisticRegression) -> bool:
    return bool(model.linear.weight.any() or model.linear.bias.any())


def start_point(est: TorchLogisticRegression, warm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Zeros, or (warm start) coef_ and intercept_ as they are now (a user may have edited them)."""
    shape = tuple(est.model_.linear.weight.shape)
    if not warm:
        return np.zeros(shape), np.zeros(shape[0])
    coef = est.coef_.toarray() if hasattr(est.coef_, "toarray") else est.coef_
    intercept = np.asarray(est.intercept_, dtype=np.float64).reshape(-1)
    return np.asarray(coef, dtype=np.float64).reshape(shape), intercept


def set_weights(est: TorchLogisticRegression, coef: np.ndarray, intercept: np.ndarray) -> None:
    """The model's weights and coef_ / intercept_ (plain arrays in the input's float dtype, which
    prediction reads: editing them, or sparsify(), changes predictions)."""
    with torch.no_grad():
        est.model_.linear.weight.copy_(torch.as_tensor(coef))
        est.model_.linear.bias.copy_(torch.as_tensor(intercept))
    dtype = getattr(est, "_coef_dtype", np.float64)
    est.coef_ = np.array(coef, dtype=dtype)
    est.intercept_ = np.array(intercept, dtype=dtype).reshape(-1)


def publish(est: TorchLogisticRegression) -> None:
    """coef_ and intercept_ from the trained model."""
    linear = est.model_.linear
    set_weights(
        est, linear.weight.detach().cpu().double().numpy(), linear.bias.detach().cpu().double().numpy()
    )


def sync_model(est: TorchLogisticRegression) -> None:
    """The model's weights from coef_ and intercept_ (which a user may have edited)."""
    if hasattr(est, "coef_"):
        set_weights(est, *start_point(est, warm=True))


def logits(est: TorchLogisticRegression, X) -> torch.Tensor:
    """float64 logits of validated X, whatever `dtype` the model was trained in.

    A float32 dot product's rounding depends on the kernel BLAS picks, which depends on the CPU and
    on how many rows share the call, so in float32 a sample's score would depend on the other
    samples passed with it (by up to ~1e-6). In float64 the same differences are ~1e-13, far below
    anything visible, and scikit-learn's subset-invariance check (rtol 1e-7) holds on any CPU.
    """
    device = resolve_device(est.device)
    device = torch.device("cpu") if device.type == "mps" else device  # MPS has no float64
    coef = est.coef_.toarray() if hasattr(est.coef_, "toarray") else est.coef_
    weight = torch.as_tensor(np.asarray(coef, dtype=np.float64), device=device)
    bias = torch.as_tensor(np.asarray(est.intercept_, dtype=np.float64).reshape(-1), device=device)
    blocks = (X[start : start + CHUNK] for start in range(0, X.shape[0], CHUNK))
    return torch.cat([torch.addmm(bias, to_tensor(b, device, torch.float64), weight.T) for b in blocks]).cpu()


class TorchLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression (multinomial, or one sigmoid logit for two classes) trained with PyTorch.

    A drop-in for :class:`sklearn.linear_model.LogisticRegression` that follows scikit-learn's
    estimator contract. It minimises scikit-learn's objective,
    ``sum_i s_i loss_i / sum_i s_i + (l1_ratio * |W|_1 + (1 - l1_ratio) / 2 * |W|^2) / (C * sum_i s_i)``,
    the intercept never penalised. The parameters are scikit-learn's, in its order, then this
    package's (``lr`` onwards).

    Parameters
    ----------
    penalty : {'l2', 'l1', 'elasticnet'} or None, deprecated
        As in scikit-learn 1.8: still works, with its FutureWarning; use ``l1_ratio`` and ``C``.
    C : float in (0, inf], default=1.0
        Inverse regularisation strength; ``np.inf``: no penalty.
    l1_ratio : float in [0, 1], default=0.0
        0: L2, 1: L1 (exact zeros), between: elastic-net.
    dual : bool, default=False
        True only with ``solver='liblinear'``, where the primal problem solved here has the same
        optimum (scikit-learn refuses it for every other solver, as here).
    tol : float, default=1e-4
        lbfgs: stop once the objective's largest absolute projected gradient (for L1, its minimal-norm
        subgradient) is at most ``tol``, as scikit-learn's lbfgs (SciPy's pgtol), with a
        ``ConvergenceWarning`` if ``max_iter`` (or the arithmetic's precision) ends it first. sgd/adam
        run ``max_iter`` epochs (the cosine schedule spans them) and warn if the last one still lowered
        the objective by more than ``tol``; with ``early_stopping`` they stop once the validation loss
        has not fallen by more than ``tol`` for ``n_iter_no_change`` epochs in a row.
    fit_intercept : bool, default=True
        Whether to learn an intercept.
    intercept_scaling : float, default=1
        liblinear's; no effect here (the intercept is not penalised).
    class_weight : dict, 'balanced' or None, default=None
        Multiplies the sample weights.
    random_state : int, RandomState or None, default=None
        sgd/adam: the batch order and the validation split.
    solver : {'lbfgs', 'sgd', 'adam'} or a scikit-learn solver name, default='lbfgs'
        'lbfgs' is full batch and exact for every penalty; 'liblinear', 'newton-cg',
        'newton-cholesky', 'sag' and 'saga' reach the same optimum in scikit-learn (liblinear: up to
        its penalised intercept) and run 'lbfgs' here. 'sgd' (Nesterov momentum 0.9, cosine schedule,
        mini-batches; L1, or an L2 too strong for a gradient step, as an exact proximal step) and
        'adam' are the fast ones on large data.
    max_iter : int or None, default=None
        lbfgs iterations, or sgd/adam epochs (None: 100, 5, 5).
    verbose : int, default=0
        Print the objective per lbfgs iteration or sgd/adam epoch.
    warm_start : bool, default=False
        Start from ``coef_`` and ``intercept_`` as they are (a user may edit them).
    n_jobs : int or None, default=None
        No effect (as in scikit-learn >= 1.8, which warns when it is set).
    lr : float or None, default=None
        sgd/adam learning rate (None: 0.8 for sgd, 0.005 for adam).
    batch_size : int, default=256
        Samples per step for sgd/adam.
    early_stopping, validation_fraction, n_iter_no_change
        sgd/adam: stop on the loss of a held-out fraction, keeping the best weights (see ``tol``).
    device : {'auto', 'cpu', 'cuda', 'cuda:N', 'mps'}
        lbfgs evaluates its loss with NumPy on the CPU and with torch elsewhere.
    dtype : {None, 'float32', 'float64'}
        The arithmetic's precision (None: for lbfgs the input's, as scikit-learn; float32 for
        sgd/adam and on MPS); ``coef_`` always has the input's dtype.
    threshold : float in (0, 1), default=0.5
        Two classes: predict ``classes_[1]`` when its probability is at least this (the rule the
        rest of the package uses).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels seen in ``fit``, of any type; columns of ``predict_proba`` follow this order.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        The weights, in the input's float dtype; prediction reads them, so editing them changes it.
    intercept_ : ndarray of shape (1,) or (n_classes,)
        The intercepts.
    n_features_in_ : int
        Number of features seen in ``fit``.
    feature_names_in_ : ndarray of shape (n_features,)
        Column names, when ``X`` had string column names (a pandas DataFrame).
    n_iter_ : ndarray of shape (1,)
        lbfgs iterations or sgd/adam epochs run (at least 1).

    Raises
    ------
    DivergenceError
        When the objective becomes non-finite or (sgd/adam) ends 10% above both its start and the
        all-zero model's; scikit-learn would return such a model silently.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from torchlogreg import TorchLogisticRegression
    >>> X, y = load_digits(return_X_y=True)
    >>> model = TorchLogisticRegression(C=0.1, max_iter=200).fit(X / 16, y)
    >>> model.predict(X[:5] / 16)
    array([0, 1, 2, 3, 4])
    """

    _parameter_constraints: dict = {
        "penalty": [StrOptions({"l2", "l1", "elasticnet"}), None, Hidden(StrOptions({"deprecated"}))],
        "C": [Interval(Real, 0, None, closed="right")],  # up to and including inf: no penalty
        "l1_ratio": [Interval(Real, 0, 1, closed="both"), None],
        "dual": ["boolean"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "fit_intercept": ["boolean"],
        "intercept_scaling": [Interval(Real, 0, None, closed="neither")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "random_state": ["random_state"],
        "solver": [StrOptions(set(FULL_BATCH + MINI_BATCH))],
        "max_iter": [Interval(Integral, 0, None, closed="left"), None],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "n_jobs": [None, Integral],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "device": [str],
        "dtype": [StrOptions({"float32", "float64"}), None],
        "threshold": [Interval(Real, 0, 1, closed="neither")],
    }

    def __init__(
        self,
        penalty="deprecated",
        *,
        C=1.0,
        l1_ratio=0.0,
        dual=False,
        tol=1e-4,
        fit_intercept=True,
        intercept_scaling=1,
        class_weight=None,
        random_state=None,
        solver="lbfgs",
        max_iter=None,
        verbose=0,
        warm_start=False,
        n_jobs=None,
        lr=None,
        batch_size=256,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        device="cpu",
        dtype=None,
        threshold=0.5,
    ):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.dual = dual  # the primal problem is solved; dual=True only with 'liblinear' (same optimum)
        self.tol = tol
        self.fit_intercept = fit_intercept
        self.intercept_scaling = intercept_scaling  # liblinear's; no effect (the intercept is not penalised)
        self.class_weight = class_weight
        self.random_state = random_state
        self.solver = solver
        self.max_iter = max_iter
        self.verbose = verbose
        self.warm_start = warm_start
        self.n_jobs = n_jobs  # no effect, as in scikit-learn >= 1.8
        self.lr = lr
        self.batch_size = batch_size
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.dtype = dtype
        self.threshold = threshold

    # --- scikit-learn plumbing -----------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @property
    def _compute_dtype(self) -> np.dtype:
        """The arithmetic's precision: `dtype`; or (None) for lbfgs the input's float dtype, as
        scikit-learn; float32 for sgd/adam, whose sampling noise is far above float32's rounding, and
        on MPS, which has no float64."""
        if self.dtype is None and (self.solver in MINI_BATCH or resolve_device(self.device).type == "mps"):
            return np.dtype(np.float32)
        return np.dtype(self.dtype or getattr(self, "_coef_dtype", np.float64))

    @property
    def _torch_dtype(self) -> torch.dtype:
        return torch.float64 if self._compute_dtype == np.float64 else torch.float32

    def _validate_X(self, X, reset: bool):
        return self._validate(X, "no_validation", reset)

    def _validate(self, X, y, reset: bool):
        """scikit-learn's checks of X (and of y, unless y is "no_validation"); tensors become arrays."""
        X, y = (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v for v in (X, y))
        kwargs = {"reset": reset, "accept_sparse": "csr", "dtype": [np.float64, np.float32]}
        if isinstance(y, str) and y == "no_validation":
            return validate_data(self, X, ensure_min_samples=1, **kwargs)
        return validate_data(self, X, y, y_numeric=False, **kwargs)

    # --- fitting -------------------------------------------------------------------------------
    def fit(self, X, y, sample_weight=None):
        """Fit the model on (X, y).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            NumPy arrays, pandas DataFrames, torch tensors or SciPy CSR matrices (never densified whole).
        y : array-like of shape (n_samples,)
            Labels of any type; at least two classes.
        sample_weight : array-like of shape (n_samples,), default=None
            Scales each sample's loss.

        Returns
        -------
        self
        """
        self._validate_params()
        adapter = (_FullBatch if self.solver in FULL_BATCH else _EngineAdapter)(self)
        adapter.check_params()
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"This solver needs samples of at least 2 classes in the data, but the data contains only "
                f"one class: {classes[0]!r}"
            )
        weights = adapter.sample_weights(X, y, classes, sample_weight)
        warm = self.warm_start and hasattr(self, "model_") and np.array_equal(self.classes_, classes)
        self._coef_dtype = X.dtype
        if not warm:
            self.classes_ = classes
            self._init_model(X.shape[1])
        else:
            self.model_.to(self._torch_dtype)
            sync_model(self)  # from coef_ / intercept_ as they are now (a user may edit them)
        targets = np.searchsorted(self.classes_, y)
        if self.max_iter == 0:  # initialised, not trained, as scikit-learn does
            warnings.warn(
                "max_iter=0: the model is initialised, not fitted; failed to converge.",
                ConvergenceWarning,
                stacklevel=2,
            )
            n_iter = 0
            publish(self)
        else:
            n_iter = adapter.fit(X, targets, weights, warm)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch of sgd/adam (constant learning rate) on this chunk of the data.

        Parameters
        ----------
        X, y, sample_weight
            As in ``fit``.
        classes : array-like, default=None
            Every label the model will see; required on the first call.

        Returns
        -------
        self
        """
        first = not hasattr(self, "model_")
        if first:
            self._validate_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        adapter = _EngineAdapter(self, first=first)
        if first:
            adapter.check_params()
        X, y = self._validate(X, y, reset=first)
        adapter.partial_fit(X, y, classes, sample_weight, first)
        return self

    def _init_model(self, n_features: int) -> None:
        self.model_ = LogisticRegression(n_features, len(self.classes_)).to(self._torch_dtype)
        self.optimizer_state_ = None

    # --- prediction ----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, "model_")
        except SklearnNotFittedError:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            ) from None

    def _logits(self, X) -> torch.Tensor:
        self._check_fitted()
        return logits(self, self._validate_X(X, reset=False))

    def decision_function(self, X) -> np.ndarray:
        """Scores: shape (n_samples,) for two classes (the logit of ``classes_[1]``), else
        (n_samples, n_classes)."""
        logits = self._logits(X)
        return logits.squeeze(1).numpy() if self.model_.binary else logits.numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        logits = self._logits(X)
        if self.model_.binary:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return torch.log_softmax(logits, dim=1).numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities, shape (n_samples, n_classes), columns ordered as ``classes_`` (computed in
        float64, so a sample's row does not depend on the other rows passed with it)."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X) -> np.ndarray:
        """Labels from ``classes_`` by the package's one rule: the argmax, or for two classes
        P(``classes_[1]``) >= ``threshold``."""
        index = decide(self._logits(X), self.threshold).numpy()  # checks fitted state first
        return self.classes_[index]

    # --- learned attributes with scikit-learn's names ------------------------------------------
    def densify(self):
        """``coef_`` as a dense array (after ``sparsify``); returns self."""
        self._check_fitted()
        if hasattr(self.coef_, "toarray"):
            self.coef_ = self.coef_.toarray()
        return self

    def sparsify(self):
        """``coef_`` as a SciPy CSR matrix, worth it when L1 made most weights zero; returns self."""
        import scipy.sparse

        self._check_fitted()
        self.coef_ = scipy.sparse.csr_matrix(self.coef_)
        return self
