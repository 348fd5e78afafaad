"""The scikit-learn estimator's inputs: its solver names and defaults, the rules that span several
parameters (scikit-learn's declarative table checks each alone), the penalty that `penalty`,
`l1_ratio` and `C` choose with scikit-learn 1.8's warnings, and the sample weights.

    from torchlogreg.sklearn.estimator_checks import resolve_penalty
    C, l1_share = resolve_penalty(TorchLogisticRegression(l1_ratio=0.5))
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.validation import _check_sample_weight

from ..base.devices import resolve_device

LBFGS_MAX_ITER = 100  # scikit-learn's default (sgd/adam: rules.minibatch_epochs)
MINI_BATCH = ("sgd", "adam")
FULL_BATCH = ("lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga")  # all run lbfgs

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


def resolve_penalty(est, warn: bool = True) -> tuple[float, float]:
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


def check_params(est) -> None:
    """Rules that span several parameters of the estimator `est` (the table checks each alone)."""
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


def sample_weights(est, X, y, sample_weight) -> np.ndarray:
    """`sample_weight` (default 1) times the class weights, checked: non-negative, a positive sum."""
    weights = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
    if est.class_weight is not None:
        present, index = np.unique(y, return_inverse=True)
        if isinstance(est.class_weight, str):  # 'balanced': each class's rows counted by their sample
            # weights, as scikit-learn's LogisticRegression counts them (weights and repeats fit alike;
            # compute_class_weight takes sample_weight only from scikit-learn 1.7, and 1.6 is supported)
            counts = np.bincount(index, weights=weights, minlength=len(present))
            per_class = np.divide(  # (a class whose rows all weigh 0 stays at 0)
                weights.sum(), len(present) * counts, out=np.zeros_like(counts), where=counts > 0
            )
        else:  # a dict: classes it leaves out weigh 1; it may name classes not in y (a CV fold, one
            # of OneVsRest's problems) where it covers those in y, as scikit-learn's rule says
            per_class = compute_class_weight(est.class_weight, classes=present, y=y)
        weights = weights * per_class[index]
    if not weights.sum() > 0:
        raise ValueError(f"The sample weights must have a positive sum; got {weights.sum()}.")
    return weights
