"""A scikit-learn classifier with this package's speed and device support.

    from torchlogreg.sklearn.estimator import TorchLogisticRegression
    clf = TorchLogisticRegression(C=1.0).fit(X_train, y_train)   # exact, any penalty (l1_ratio)
    clf = TorchLogisticRegression(solver="sgd").fit(X_big, y_big)  # mini-batch epochs: large data
    clf.predict_proba(X_test)

It follows scikit-learn's estimator contract (parameters only stored in ``__init__``, validated
in ``fit`` from one declarative table, learned attributes ending in ``_``) and LogisticRegression's
parameters and warnings (scikit-learn 1.8's: ``l1_ratio`` and ``C`` choose the penalty), so it works
in ``Pipeline``, ``cross_val_score`` and ``GridSearchCV``. The objective is scikit-learn's: weighted
mean log-loss + penalty / (C * sum of sample weights), the intercept never penalised.

Two ways to minimise it: 'lbfgs' (the default; scikit-learn's other solver names run it too) solves it
exactly for every penalty, full batch, with the package's one L-BFGS (core/lbfgs.py, OWL-QN for L1)
on a loss evaluated on the CPU or by torch on the device (sklearn/solvers.py); 'sgd' and 'adam' run
mini-batch epochs on the package's one training loop (engine.Engine), the fast choice on large data.
This module holds the estimator's contract; sklearn/estimator_checks.py its inputs' rules,
sklearn/estimator_fit.py how each solver is driven, sklearn/estimator_predict.py what a fitted one
predicts.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from ..base.devices import resolve_device
from ..base.exceptions import NotFittedError
from ..core.model import LogisticRegression
from .estimator_checks import FULL_BATCH, MINI_BATCH, check_params, sample_weights
from .estimator_fit import FullBatch, MiniBatch, publish, sync_model
from .estimator_predict import LinearPrediction

__all__ = ["NotFittedError", "TorchLogisticRegression"]  # (NotFittedError: importable from here, as it was)

# what a fit sets: put back as it was when a fit raises
FITTED = ("coef_", "intercept_", "model_", "n_iter_", "optimizer_state_", "lr_", "classes_", "n_features_in_",
          "feature_names_in_", "_coef_dtype", "_stream")  # fmt: skip


class TorchLogisticRegression(LinearPrediction, ClassifierMixin, BaseEstimator):
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
        stop by ``torchlogreg train``'s rule: once epochs end within ``tol`` of the best objective,
        the same measure is taken in a pass over the rows, and at most ``tol`` ends the fit; else they
        run ``max_iter`` epochs (the cosine schedule spans them) and warn if the measure is then above
        ``tol``. With ``early_stopping`` they also stop once the validation loss has not fallen by
        more than ``tol`` for ``n_iter_no_change`` epochs in a row.
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
        mini-batches, steps taken on centred features with an intercept; L1, or an L2 too strong for
        a gradient step, as an exact proximal step) and 'adam' are the fast ones on large data.
    max_iter : int or None, default=None
        lbfgs iterations, or sgd/adam epochs (None: 100 for lbfgs, as scikit-learn; for sgd/adam the
        rule of ``torchlogreg train``: 4 epochs, or as many as give 150 steps of 256 rows on smaller
        sets).
    verbose : int, default=0
        Print the objective per lbfgs iteration or sgd/adam epoch.
    warm_start : bool, default=False
        Start from ``coef_`` and ``intercept_`` as they are (a user may edit them).
    n_jobs : int or None, default=None
        No effect (as in scikit-learn >= 1.8, which warns when it is set).
    lr : float or None, default=None
        sgd/adam learning rate (None: the rule of ``torchlogreg train``, ``rules.RULES['lr']``, read
        from a sample of the rows as weighted: for sgd 4 / (the largest eigenvalue of the features'
        second moments, centred with an intercept, at least 1, + the L2 strength), at most
        1 / (their mean squared norm / batch_size + the L2 strength), and smaller for batches under
        256, so that unscaled features train too; for adam 0.005, or 4 / (the fit's steps) on fits
        of fewer than 800 steps, at most 0.05; partial_fit: 0.005). ``lr_`` holds the value used.
    batch_size : int, default=256
        Samples per step for sgd/adam.
    early_stopping, validation_fraction, n_iter_no_change
        sgd/adam: stop on the loss of a held-out fraction, keeping the best weights (see ``tol``).
    device : {'auto', 'cpu', 'cuda', 'cuda:N', 'mps'}
        Where fitting runs: lbfgs evaluates its loss with NumPy on the CPU and with torch elsewhere.
        Prediction is NumPy's on the CPU, so a fitted model predicts on any machine.
    dtype : {None, 'float32', 'float64'}
        The arithmetic's precision (None: for lbfgs the input's, as scikit-learn; float32 for
        sgd/adam and on MPS); ``coef_`` always has the input's dtype.
    threshold : float in (0, 1), default=0.5
        Two classes: predict ``classes_[1]`` when its probability is above this (the rule the rest
        of the package uses; at 0.5 scikit-learn's, ``decision_function > 0``).

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
    lr_ : float or None
        The learning rate sgd/adam used (``lr``, or its rule's value for the data, its sample weights
        included; ``partial_fit``: the last chunk's, about the stream's running mean); None for
        lbfgs, whose line search sets each step.

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
        with self._restored_if_raised():
            self._fit(X, y, sample_weight)
        return self

    def _fit(self, X, y, sample_weight) -> None:
        """fit's work, in a state `_restored_if_raised` puts back when it raises."""
        adapter = (FullBatch if self.solver in FULL_BATCH else MiniBatch)(self)
        check_params(self)
        X, y = self._validate(X, y, reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data contains "
                f"only one class: {classes[0]!r}"
            )
        weights = sample_weights(self, X, y, sample_weight)
        warm = self.warm_start and hasattr(self, "coef_") and np.array_equal(self.classes_, classes)
        self._coef_dtype = X.dtype
        self.lr_ = None  # (sgd and adam set it)
        self._stream = None  # (a partial_fit after this fit starts its own stream mean)
        if not warm:
            self.classes_ = classes
            self._init_model(X.shape[1])
        else:
            expected = (self.model_.linear.out_features, X.shape[1])
            if np.shape(self.coef_) != expected:
                raise ValueError(
                    f"warm_start: coef_ is of shape {np.shape(self.coef_)}, expected {expected} for X's "
                    f"{X.shape[1]} features; set warm_start=False to start afresh"
                )
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
        first = not hasattr(self, "coef_")
        if first:
            self._validate_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
        adapter = MiniBatch(self, first=first)
        if first:
            check_params(self)
        X, y = self._validate(X, y, reset=first)
        with self._restored_if_raised(first):
            adapter.partial_fit(X, y, classes, sample_weight, first)
        return self

    @contextmanager
    def _restored_if_raised(self, whole: bool = True):
        """A fit (or a stream's first chunk) that raises, Ctrl-C included, leaves the estimator as it
        was before: the previous fit whole, or unfitted (a failed refit on 2 classes left the 10-class
        coef_ beside the new classes_; a first fit that raised left a model_ and no coef_)."""
        before = {name: self.__dict__[name] for name in FITTED if name in self.__dict__}
        try:
            yield
        except BaseException:
            if whole:
                for name in FITTED:
                    self.__dict__.pop(name, None)
                self.__dict__.update(before)  # (model_ is synced from coef_ before it trains again)
            raise

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coef_")  # (set as a fit ends)

    def _init_model(self, n_features: int) -> None:
        self.model_ = LogisticRegression(n_features, len(self.classes_)).to(self._torch_dtype)
        self.optimizer_state_ = None
