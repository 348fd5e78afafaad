"""A scikit-learn classifier with this package's speed and device support.

    from torchlogreg.estimator import TorchLogisticRegression
    clf = TorchLogisticRegression(C=1.0, solver="sgd").fit(X_train, y_train)
    clf.predict_proba(X_test)

It follows scikit-learn's estimator contract (parameters only stored in ``__init__``, validated
in ``fit`` from one declarative table, learned attributes ending in ``_``), so it works in
``Pipeline``, ``cross_val_score`` and ``GridSearchCV``. The objective is scikit-learn's:
mean (weighted) log-loss + penalty / (C * n_samples), the intercept never penalised.
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
from sklearn.utils._param_validation import Interval, StrOptions
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

CHUNK = 8192  # rows per full-pass chunk (and per densified block of a sparse matrix)
DEFAULT_MAX_ITER = {"lbfgs": 100, "sgd": 5, "adam": 5}  # lbfgs: iterations; sgd/adam: epochs


def to_tensor(block, device, dtype: torch.dtype) -> torch.Tensor:
    """A dense tensor from a numpy block or a sparse block (densified here, block by block)."""
    if hasattr(block, "toarray"):
        block = block.toarray()
    block = np.require(block, requirements=["C", "W"])  # torch wants writable memory (copies if not)
    return torch.as_tensor(block, dtype=dtype, device=device)


class SparseRows:
    """Rows of a SciPy CSR matrix, densified only when taken (one batch at a time)."""

    def __init__(self, matrix, dtype: torch.dtype):
        self.matrix, self.dtype = matrix, dtype

    def __len__(self) -> int:
        return self.matrix.shape[0]

    def take(self, index: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.matrix[index.numpy()].toarray(), dtype=self.dtype)


class EpochEnd:
    """Engine callback: at each epoch's end, the full objective (for the convergence warning and
    verbose output) and, with a validation source, early stopping on its loss, keeping the best."""

    def __init__(self, validation: MemoryBatches | None, tol: float, patience: int, verbose: int):
        self.validation, self.tol, self.patience, self.verbose = validation, tol, patience, verbose
        self.objectives: list[float] = []
        self.best_loss, self.best_state, self.bad_epochs = math.inf, None, 0

    def on_step(self, engine: Engine, row: dict) -> None:
        if engine.iteration % engine.steps_per_epoch:
            return
        self.objectives.append(full_objective(engine))
        if self.verbose:
            print(f"epoch {len(self.objectives)}: objective {self.objectives[-1]:.6f}")
        if self.validation is None:
            return
        val_loss = full_objective(engine, self.validation, Objective())
        if val_loss < self.best_loss - self.tol:
            self.best_loss, self.bad_epochs = val_loss, 0
            self.best_state = {k: v.clone() for k, v in engine.model.state_dict().items()}
        else:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            engine.stop_reason = "early stopping"


class _EngineAdapter:
    """Turns an estimator's arrays and parameters into runs of the package's one engine: a batch
    source over (X, y, sample weights), its objective and solver, and the learned model back."""

    def __init__(self, estimator: TorchLogisticRegression):
        self.est = estimator

    def check_params(self) -> None:
        """Rules that span several parameters (the table checks each alone)."""
        if self.est.penalty == "elasticnet" and self.est.l1_ratio is None:
            raise ValueError("penalty='elasticnet' needs l1_ratio, a float in [0, 1]; got None.")
        if self.est.penalty in ("l1", "elasticnet") and self.est.solver == "lbfgs":
            raise ValueError(
                f"penalty={self.est.penalty!r} is not supported by solver='lbfgs' (the L1 term is not "
                "smooth); use solver='sgd' or 'adam'."
            )
        resolve_device(self.est.device)  # raises ConfigError (a ValueError) naming the device
        if self.est.penalty is None and (self.est.C != 1.0 or self.est.l1_ratio is not None):
            warnings.warn(
                "Setting penalty=None will ignore the C and l1_ratio parameters", UserWarning, stacklevel=4
            )

    def sample_weights(self, X, y, classes, sample_weight) -> np.ndarray:
        weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
        if self.est.class_weight is not None:
            if isinstance(self.est.class_weight, dict):
                unknown = set(self.est.class_weight) - set(classes.tolist())
                if unknown:
                    raise ValueError(f"class_weight names classes {sorted(unknown)} not in the data")
            weights = weights * compute_sample_weight(self.est.class_weight, y)
        return weights

    def penalties(self, n_samples: int) -> tuple[float, float]:
        """(weight_decay, l1) such that mean loss + penalty matches scikit-learn's objective."""
        if self.est.penalty is None:
            return 0.0, 0.0
        strength = 1.0 / (self.est.C * n_samples)  # C = inf: 0, no penalty
        l1_share = {"l2": 0.0, "l1": 1.0}.get(self.est.penalty, self.est.l1_ratio)
        return strength * (1.0 - l1_share), strength * l1_share

    def _parameters(self, model: LogisticRegression) -> list[torch.Tensor]:
        if self.est.fit_intercept:
            return list(model.parameters())
        with torch.no_grad():
            model.linear.bias.zero_()
        return [model.linear.weight]

    def _source(self, X, targets, weights, device, batch_size: int) -> MemoryBatches:
        """The engine's batch source over (X, y, sample weights); sparse X is densified per batch."""
        dtype = self.est._torch_dtype
        features = SparseRows(X, dtype) if hasattr(X, "toarray") else to_tensor(X, device, dtype)
        labels = torch.as_tensor(targets, device=device)
        sample_weight = torch.as_tensor(weights, device=device)
        return MemoryBatches(features, labels, batch_size, sample_weight, device)

    def _engine(self, X, targets, weights, solver: str, total: int, batch_size: int, **kwargs) -> Engine:
        """The shared training engine, set up with this estimator's objective and `solver`."""
        device = resolve_device(self.est.device)
        model = self.est.model_.to(device)
        params = self._parameters(model)
        lr = self.est.lr or DEFAULT_LR[solver]
        lbfgs_iterations = kwargs.pop("lbfgs_iterations", 1)
        optimizer = make_optimizer(
            params, solver, lr, tolerance_grad=self.est.tol, lbfgs_iterations=lbfgs_iterations
        )
        if self.est.optimizer_state_ is not None and self.est.optimizer_state_[0] == solver:
            optimizer.load_state_dict({k: v.to(device) for k, v in self.est.optimizer_state_[1].items()})
        seed = self.est.random_state if isinstance(self.est.random_state, Integral) else None
        generator = torch.Generator().manual_seed(seed if seed is not None else int(np.random.randint(2**31)))
        return Engine(
            model,
            Objective(*self.penalties(X.shape[0])),
            optimizer,
            self._source(X, targets, weights, device, batch_size),
            kwargs.pop("schedule", lambda step: lr),
            total,
            generator=generator,
            parameters=params,
            advice="lower lr, raise C or scale the features",
            explosion_factor=None,  # mini-batch losses on unscaled features swing widely; NaN/inf only
            **kwargs,
        )

    def _finish(self, engine: Engine, solver: str) -> None:
        engine.model.zero_grad(set_to_none=True)
        state = {k: v.cpu() for k, v in engine.optimizer.state_dict().items()}
        self.est.optimizer_state_ = (solver, state)
        self.est.model_ = engine.model.cpu()

    def fit_lbfgs(self, X, targets, weights) -> int:
        """One engine step of up to max_iter L-BFGS iterations on the full batch."""
        max_iter = self.est.max_iter or DEFAULT_MAX_ITER["lbfgs"]
        engine = self._engine(
            X, targets, weights, "lbfgs", 1, X.shape[0], full_batch=True, lbfgs_iterations=max_iter
        )
        engine.run()
        iterations = engine.optimizer.iterations
        full_objective(engine)  # the gradient where L-BFGS stopped
        gradient = max(float(p.grad.abs().max()) for p in engine.parameters)
        if gradient > self.est.tol:
            warnings.warn(
                f"lbfgs failed to converge after {iterations} iterations (max_iter={max_iter}): the "
                f"gradient's max-norm is {gradient:.3g}, above tol={self.est.tol}; raise max_iter or scale "
                "the features.",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._finish(engine, "lbfgs")
        return max(iterations, 1)

    def fit_minibatch(self, X, targets, weights) -> int:
        epochs = self.est.max_iter or DEFAULT_MAX_ITER[self.est.solver]
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
        return self.run_epochs(X, targets, weights, epochs, self.est.solver, True, validation)

    def run_epochs(self, X, targets, weights, epochs, solver, schedule, validation=None) -> int:
        batch = min(self.est.batch_size, X.shape[0])
        steps = epochs * math.ceil(X.shape[0] / batch)
        lr = self.est.lr or DEFAULT_LR[solver]
        device = resolve_device(self.est.device)
        val_source = None if validation is None else self._source(*validation, device, CHUNK)
        watcher = EpochEnd(val_source, self.est.tol, self.est.n_iter_no_change, self.est.verbose)
        engine = self._engine(
            X,
            targets,
            weights,
            solver,
            steps,
            batch,
            schedule=(lambda step: schedule_lr("cosine", lr, step, steps)) if schedule else (lambda step: lr),
            callbacks=[watcher],
        )
        with cpu_threads(threads_for(batch, engine.model.n_features, engine.parameters[0].device)):
            engine.run()
        if watcher.best_state is not None and engine.stop_reason == "early stopping":
            engine.model.load_state_dict(watcher.best_state)
        history = watcher.objectives
        tol = self.est.tol
        still_falling = len(history) >= 2 and history[-2] - history[-1] > tol * max(abs(history[-1]), 1)
        if schedule and engine.stop_reason is None and still_falling:
            warnings.warn(
                f"{solver} failed to converge: it ran max_iter={epochs} epochs and the objective was still "
                f"falling by more than tol={self.est.tol} per epoch; raise max_iter.",
                ConvergenceWarning,
                stacklevel=4,
            )
        self._finish(engine, solver)
        return math.ceil(engine.epochs)

    def publish(self) -> None:
        """coef_ and intercept_ from the trained model, in the input's float dtype. They are plain
        attributes: prediction reads them, so editing them (or sparsify()) changes predictions."""
        dtype = getattr(self.est, "_coef_dtype", np.float64)
        self.est.coef_ = self.est.model_.linear.weight.detach().cpu().numpy().astype(dtype)
        self.est.intercept_ = self.est.model_.linear.bias.detach().cpu().numpy().astype(dtype)

    def sync_model(self) -> None:
        """The model's weights from coef_ and intercept_ (which a user may have edited)."""
        if not hasattr(self.est, "coef_"):
            return
        coef = self.est.coef_.toarray() if hasattr(self.est.coef_, "toarray") else np.asarray(self.est.coef_)
        with torch.no_grad():
            self.est.model_.linear.weight.copy_(
                torch.as_tensor(coef.reshape(self.est.model_.linear.weight.shape))
            )
            self.est.model_.linear.bias.copy_(torch.as_tensor(np.asarray(self.est.intercept_).reshape(-1)))

    def logits(self, X) -> torch.Tensor:
        """float64 logits of validated X, whatever `dtype` the model was trained in.

        A float32 dot product's rounding depends on the kernel BLAS picks, which depends on the CPU and
        on how many rows share the call, so in float32 a sample's score would depend on the other
        samples passed with it (by up to ~1e-6). In float64 the same differences are ~1e-13, far below
        anything visible, and scikit-learn's subset-invariance check (rtol 1e-7) holds on any CPU.
        """
        device = resolve_device(self.est.device)
        coef = self.est.coef_.toarray() if hasattr(self.est.coef_, "toarray") else self.est.coef_
        weight = torch.as_tensor(np.asarray(coef, dtype=np.float64), device=device)
        bias = torch.as_tensor(np.asarray(self.est.intercept_, dtype=np.float64).reshape(-1), device=device)
        blocks = (X[start : start + CHUNK] for start in range(0, X.shape[0], CHUNK))
        logits = [torch.addmm(bias, to_tensor(b, device, torch.float64), weight.T) for b in blocks]
        return torch.cat(logits).cpu()


class TorchLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression (multinomial, or one sigmoid logit for two classes) trained with PyTorch.

    Parameters
    ----------
    penalty : {'l2', 'l1', 'elasticnet'} or None, default='l2'
    C : float, default=1.0 -- inverse regularisation strength, as in scikit-learn.
    l1_ratio : float in [0, 1] or None -- the L1 share of 'elasticnet'.
    solver : {'lbfgs', 'sgd', 'adam'}, default='lbfgs' -- 'lbfgs' is full batch and exact;
        'sgd' (Nesterov momentum 0.9, cosine schedule, mini-batches) is the fast one on large data.
    lr : float or None -- learning rate (None: 1.0 lbfgs, 0.5 sgd, 0.005 adam).
    batch_size : int, default=128 -- samples per step for sgd/adam.
    max_iter : int or None -- lbfgs iterations, or sgd/adam epochs (None: 100, 5, 5).
    tol : float, default=1e-4 -- lbfgs stops when the gradient's max-norm is below it; sgd/adam
        warn (ConvergenceWarning) when the last epoch still lowered the objective by more than it.
    early_stopping, validation_fraction, n_iter_no_change -- sgd/adam: stop when the loss on a
        held-out fraction has not improved for n_iter_no_change epochs, keeping the best weights.
    class_weight : dict, 'balanced' or None; fit_intercept : bool; warm_start : bool;
    device : 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; dtype : 'float32' or 'float64';
    random_state : int or None; verbose : int.
    dual, intercept_scaling, n_jobs -- accepted as LogisticRegression accepts them; they change nothing here.
    threshold : float in (0, 1), default=0.5 -- two classes: predict classes_[1] when its probability
        is at least this (the rule the rest of the package uses).
    """

    _parameter_constraints: dict = {
        "penalty": [StrOptions({"l2", "l1", "elasticnet"}), None],
        "C": [Interval(Real, 0, None, closed="right")],  # up to and including inf: no penalty
        "l1_ratio": [Interval(Real, 0, 1, closed="both"), None],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "lr": [Interval(Real, 0, None, closed="neither"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left"), None],
        "tol": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "fit_intercept": ["boolean"],
        "warm_start": ["boolean"],
        "device": [str],
        "dtype": [StrOptions({"float32", "float64"})],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "threshold": [Interval(Real, 0, 1, closed="neither")],
        "dual": ["boolean"],
        "intercept_scaling": [Interval(Real, 0, None, closed="neither")],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        *,
        penalty="l2",
        C=1.0,
        l1_ratio=None,
        solver="lbfgs",
        lr=None,
        batch_size=128,
        max_iter=None,
        tol=1e-4,
        early_stopping=False,
        validation_fraction=0.1,
        n_iter_no_change=5,
        class_weight=None,
        fit_intercept=True,
        warm_start=False,
        device="cpu",
        dtype="float32",
        random_state=None,
        verbose=0,
        threshold=0.5,
        dual=False,
        intercept_scaling=1.0,
        n_jobs=None,
    ):
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.solver = solver
        self.lr = lr
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.fit_intercept = fit_intercept
        self.warm_start = warm_start
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.verbose = verbose
        self.threshold = threshold
        self.dual = dual  # accepted for LogisticRegression's signature; no effect (no dual solver here)
        self.intercept_scaling = intercept_scaling  # liblinear's; no effect (the intercept is not penalised)
        self.n_jobs = n_jobs  # no effect: torch's threads do the work

    # --- scikit-learn plumbing -----------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    @property
    def _torch_dtype(self) -> torch.dtype:
        return torch.float64 if self.dtype == "float64" else torch.float32

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
        """Fit on (X, y); `sample_weight` scales each sample's loss."""
        self._validate_params()
        _EngineAdapter(self).check_params()
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                f"This solver needs samples of at least 2 classes in the data, but the data contains only "
                f"one class: {classes[0]!r}"
            )
        weights = _EngineAdapter(self).sample_weights(X, y, classes, sample_weight)
        if not (self.warm_start and hasattr(self, "model_") and np.array_equal(self.classes_, classes)):
            self.classes_ = classes
            self._init_model(X.shape[1])
        else:
            _EngineAdapter(
                self
            ).sync_model()  # warm start from coef_ / intercept_ as they are now (a user may edit them)
        targets = np.searchsorted(self.classes_, y)
        self._coef_dtype = X.dtype
        if self.max_iter == 0:  # initialised, not trained, as scikit-learn does
            warnings.warn(
                "max_iter=0: the model is initialised, not fitted; failed to converge.",
                ConvergenceWarning,
                stacklevel=2,
            )
            self.n_iter_ = np.array([0])
        elif self.solver == "lbfgs":
            self.n_iter_ = np.array([_EngineAdapter(self).fit_lbfgs(X, targets, weights)])
        else:
            self.n_iter_ = np.array([_EngineAdapter(self).fit_minibatch(X, targets, weights)])
        _EngineAdapter(self).publish()
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch of sgd/adam (constant lr) on this chunk; give `classes` on the first call."""
        first = not hasattr(self, "model_")
        if first:
            self._validate_params()
            _EngineAdapter(self).check_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        X, y = self._validate(X, y, reset=first)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(classes)
            self._init_model(X.shape[1])
            self.n_iter_ = np.array([0])
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes {np.unique(classes)} differ from the first call's {self.classes_}")
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y holds labels {unknown} that are not in classes {self.classes_}")
        weights = _EngineAdapter(self).sample_weights(X, y, self.classes_, sample_weight)
        targets = np.searchsorted(self.classes_, y)
        solver = "sgd" if self.solver == "lbfgs" else self.solver
        if first:
            self._coef_dtype = X.dtype
        else:
            _EngineAdapter(self).sync_model()
        _EngineAdapter(self).run_epochs(X, targets, weights, epochs=1, solver=solver, schedule=False)
        self.n_iter_ = self.n_iter_ + 1
        _EngineAdapter(self).publish()
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
        return _EngineAdapter(self).logits(self._validate_X(X, reset=False))

    def decision_function(self, X) -> np.ndarray:
        """Scores: (n_samples,) for two classes (the logit of classes_[1]), else (n_samples, n_classes)."""
        logits = self._logits(X)
        return logits.squeeze(1).numpy() if self.model_.binary else logits.numpy()

    def predict_log_proba(self, X) -> np.ndarray:
        logits = self._logits(X)
        if self.model_.binary:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        return torch.log_softmax(logits, dim=1).numpy()

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities, columns ordered as classes_."""
        return np.exp(self.predict_log_proba(X))

    def predict(self, X) -> np.ndarray:
        """classes_ by the package's one rule: argmax, or P(classes_[1]) >= threshold for two."""
        index = decide(self._logits(X), self.threshold).numpy()  # checks fitted state first
        return self.classes_[index]

    # --- learned attributes with scikit-learn's names ------------------------------------------
    def densify(self):
        """coef_ as a dense array (after sparsify); returns self."""
        self._check_fitted()
        if hasattr(self.coef_, "toarray"):
            self.coef_ = self.coef_.toarray()
        return self

    def sparsify(self):
        """coef_ as a SciPy CSR matrix, worth it when L1 made most weights zero; returns self."""
        import scipy.sparse

        self._check_fitted()
        self.coef_ = scipy.sparse.csr_matrix(self.coef_)
        return self
