"""What a fitted linear classifier predicts, in NumPy on the CPU: scores, probabilities and labels
from ``coef_`` and ``intercept_`` (scikit-learn's LinearClassifierMixin's part, with the package's one
decision rule), and ``sparsify``/``densify``. A fitted estimator predicts on any machine, whatever
device it was fitted on, and without torch's kernels.
"""

from __future__ import annotations

import functools

import numpy as np
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

from ..base.exceptions import NotFittedError
from ..core.model import decide

PREDICT_CHUNK = 8192  # rows of X converted to float64 at a time


def _along_rows(ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
    """`ufunc` (np.maximum, np.add) over each row of 2-D `values`, as a column: by hand, a column at a
    time, for the few columns of most models (NumPy's reduction over a short last axis took 0.7 ms on
    20,000 x 3, 25x as long, and made predict_proba slower than torch's had been)."""
    if values.shape[1] > 16:
        return ufunc.reduce(values, axis=1, keepdims=True)
    return functools.reduce(ufunc, values.T)[:, None]


def logits(est, X) -> np.ndarray:
    """float64 logits of validated X, computed by NumPy on the CPU whatever device the model was fitted
    on: a fitted estimator predicts on any machine, as scikit-learn's do (one fitted on a GPU had
    refused to predict where there is none), and a linear model's scores cost a single pass over X,
    which copying X to a device would cost already.

    A float32 dot product's rounding depends on the kernel BLAS picks, which depends on the CPU and
    on how many rows share the call, so in float32 a sample's score would depend on the other
    samples passed with it (by up to ~1e-6). In float64 the same differences are ~1e-13, far below
    anything visible, and scikit-learn's subset-invariance check (rtol 1e-7) holds on any CPU.
    """
    coef = np.asarray(est.coef_.toarray() if hasattr(est.coef_, "toarray") else est.coef_, dtype=np.float64)
    intercept = np.asarray(est.intercept_, dtype=np.float64).reshape(-1)
    if hasattr(X, "toarray"):  # sparse: SciPy's product, never densified (blocks of 8,192 rows of
        # 100,000 tf-idf columns took 6.5 GB each)
        return np.ascontiguousarray(X.astype(np.float64) @ coef.T + intercept)
    scores = np.empty((X.shape[0], coef.shape[0]))
    for start in range(0, X.shape[0], PREDICT_CHUNK):  # (float32 X converted a chunk at a time)
        block = X[start : start + PREDICT_CHUNK].astype(np.float64, copy=False)
        np.matmul(block, coef.T, out=scores[start : start + PREDICT_CHUNK])
    return np.add(scores, intercept, out=scores)


class LinearPrediction:
    """The prediction methods of an estimator with ``coef_``, ``intercept_``, ``classes_``,
    ``threshold``, ``model_.binary`` and ``_validate_X`` (TorchLogisticRegression)."""

    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self)
        except SklearnNotFittedError:
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            ) from None

    def _logits(self, X) -> tuple[np.ndarray, np.dtype]:
        """(float64 logits, the dtype scikit-learn returns scores in: X's and coef_'s common type)."""
        self._check_fitted()
        X = self._validate_X(X, reset=False)
        return logits(self, X), np.result_type(X.dtype, self.coef_.dtype)

    def decision_function(self, X) -> np.ndarray:
        """Scores: shape (n_samples,) for two classes (the logit of ``classes_[1]``), else
        (n_samples, n_classes)."""
        logits, dtype = self._logits(X)
        return (logits[:, 0] if self.model_.binary else logits).astype(dtype, copy=False)

    def predict_log_proba(self, X) -> np.ndarray:
        logits, dtype = self._logits(X)
        return self._log_proba(logits).astype(dtype, copy=False)

    def _shifted(self, logits: np.ndarray) -> np.ndarray:
        """Float64 logits (binary: 0 and the one logit) less each row's largest, in NumPy: prediction
        runs in NumPy alone, as scikit-learn's does (a model fitted on a GPU predicts anywhere)."""
        if self.model_.binary:
            logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
        return logits - _along_rows(np.maximum, logits)

    def _log_proba(self, logits: np.ndarray) -> np.ndarray:
        shifted = self._shifted(logits)
        return shifted - np.log(_along_rows(np.add, np.exp(shifted)))

    def predict_proba(self, X) -> np.ndarray:
        """Probabilities, shape (n_samples, n_classes), columns ordered as ``classes_`` (computed in
        float64, so a sample's row does not depend on the other rows passed with it; returned in
        X's dtype when X and ``coef_`` are float32, as scikit-learn's)."""
        logits, dtype = self._logits(X)
        exponentials = np.exp(self._shifted(logits))
        exponentials /= _along_rows(np.add, exponentials)  # (softmax: one exp, no log)
        return exponentials.astype(dtype, copy=False)

    def predict(self, X) -> np.ndarray:
        """Labels from ``classes_`` by the package's one rule: the argmax, or for two classes
        P(``classes_[1]``) > ``threshold`` (at 0.5 scikit-learn's rule: decision_function > 0)."""
        index = decide(self._logits(X)[0], self.threshold)  # checks fitted state first
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
