"""The scikit-learn estimator: scikit-learn's own estimator checks, its interface and attributes,
input containers, pickling and model selection; agreement with scikit-learn's LogisticRegression
(its optimum for every penalty, its parameters and warnings); stopping and divergence."""

import contextlib
import pickle

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from torchlogreg.sklearn.estimator import NotFittedError, TorchLogisticRegression

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths

# Checks expected to fail, each with its reason (kept short on purpose).

STOCHASTIC = "mini-batch SGD sees a repeated sample in other batches than its weighted twin: close, not equal"


def _expected_failures(estimator):
    if estimator.solver == "lbfgs":
        return {}
    return {f"check_sample_weight_equivalence_on_{kind}_data": STOCHASTIC for kind in ("dense", "sparse")}


# sgd with lr=0.001: several checks fit features at 100 +- 1, unscaled, where the default lr (made for
# features in [0, 1]) diverges, which raises DivergenceError by design. Its 30 epochs end short of
# the optimum, as they are meant to (a quick fit): the ConvergenceWarning that says so is expected.
@pytest.mark.filterwarnings("ignore:sgd failed to converge:sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    [TorchLogisticRegression(), TorchLogisticRegression(solver="sgd", lr=0.001, max_iter=30, random_state=0)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --- behaviour ---------------------------------------------------------------------------------
import pandas as pd  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.exceptions import NotFittedError as SklearnNotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


@pytest.mark.parametrize("C", [1.0, 0.05])
def test_lbfgs_matches_scikit_learn(digits, C):
    X, y = digits
    ours = TorchLogisticRegression(C=C, dtype="float64", tol=1e-6, max_iter=2000).fit(X, y)
    theirs = LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=5e-4)
    assert ours.score(X, y) == pytest.approx(theirs.score(X, y), abs=0.002)


def test_float64_sample_weights_equal_repeated_samples(digits):
    X, y = digits[0][:300], digits[1][:300]
    weights = np.random.default_rng(0).integers(0, 3, len(y))
    # Both fits stop within tol of the one optimum, not at it: at tol 1e-6 their probabilities were
    # 1.2e-5 apart on an AMD EPYC (passed on Intel); at 3e-8, 2.9e-6 on both MKL code paths.
    kwargs = dict(dtype="float64", tol=3e-8, max_iter=3000)
    weighted = TorchLogisticRegression(**kwargs).fit(X, y, sample_weight=weights)
    repeated = TorchLogisticRegression(**kwargs).fit(np.repeat(X, weights, 0), np.repeat(y, weights))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-5)


def test_sgd_is_close_to_scikit_learn(digits):
    X, y = digits
    ours = TorchLogisticRegression(solver="sgd", max_iter=30, random_state=0).fit(X, y)
    theirs = LogisticRegression(max_iter=5000).fit(X, y)
    assert abs(ours.score(X, y) - theirs.score(X, y)) < 0.01


def test_learned_attributes_have_scikit_learns_shapes(digits):
    X, y = digits
    multi = TorchLogisticRegression().fit(X, y)
    assert multi.coef_.shape == (10, 64) and multi.intercept_.shape == (10,)
    assert (
        multi.n_features_in_ == 64 and multi.n_iter_.shape == (1,) and list(multi.classes_) == list(range(10))
    )
    binary = TorchLogisticRegression().fit(X[y < 2], y[y < 2])
    assert binary.coef_.shape == (1, 64) and binary.intercept_.shape == (1,)
    scores = binary.decision_function(X[y < 2])
    assert scores.shape == ((y < 2).sum(),)
    np.testing.assert_allclose(
        scores, X[y < 2] @ binary.coef_[0] + binary.intercept_[0], rtol=1e-4, atol=1e-4
    )


def test_prediction_invariants(digits):
    X, y = digits
    clf = TorchLogisticRegression().fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X), rtol=1e-5, atol=1e-7)
    assert (clf.classes_[proba.argmax(1)] == clf.predict(X)).all()


def test_string_labels(digits):
    X, y = digits
    names = np.array(["zero", "one", "two"])[y[y < 3]]
    clf = TorchLogisticRegression().fit(X[y < 3], names)
    assert set(clf.predict(X[y < 3])) <= set(names) and list(clf.classes_) == ["one", "two", "zero"]


def test_input_containers_agree(digits):
    X, y = digits
    reference = TorchLogisticRegression().fit(X, y).predict_proba(X)
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    from_frame = TorchLogisticRegression().fit(frame, y)
    assert list(from_frame.feature_names_in_) == list(frame.columns)
    np.testing.assert_allclose(from_frame.predict_proba(frame), reference, atol=1e-5)
    from_tensor = TorchLogisticRegression().fit(torch.tensor(X), torch.tensor(y))
    np.testing.assert_allclose(from_tensor.predict_proba(torch.tensor(X)), reference, atol=1e-5)
    from_sparse = TorchLogisticRegression().fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(from_sparse.predict_proba(sp.csr_matrix(X)), reference, atol=1e-5)


def test_sparse_sgd_densifies_only_batches(digits):
    X, y = digits
    clf = TorchLogisticRegression(solver="sgd", max_iter=10, random_state=0).fit(sp.csr_matrix(X), y)
    assert clf.score(X, y) > 0.95


class _Undensifiable(sp.csr_matrix):
    def toarray(self, *args, **kwargs):
        raise AssertionError(f"densified {self.shape}")


def test_wide_sparse_rows_are_densified_a_bounded_chunk_at_a_time(digits):
    """Scores of sparse X are SciPy's product, never a dense block (8,192 rows of 100,000 columns
    were 6.5 GB each); a full pass during sgd densifies chunks of at most DENSE_VALUES values."""
    from torchlogreg.data.batches import DENSE_VALUES, MemoryBatches
    from torchlogreg.sklearn.estimator_fit import SparseRows
    from torchlogreg.sklearn.estimator_predict import logits

    X, y = digits
    clf = TorchLogisticRegression().fit(X, y)
    scores = logits(clf, _Undensifiable(X))
    np.testing.assert_allclose(scores, clf.decision_function(X), rtol=1e-9, atol=1e-12)
    wide = sp.random(30, 500_000, density=1e-5, format="csr", random_state=0)
    source = MemoryBatches(SparseRows(wide, torch.float32), torch.zeros(30, dtype=torch.long), 30)
    chunks = [part.x.shape for part in source.chunks()]
    assert sum(rows for rows, _ in chunks) == 30 and max(rows for rows, _ in chunks) * 500_000 <= DENSE_VALUES


def test_pickle_and_clone(digits):
    X, y = digits
    clf = TorchLogisticRegression().fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert restored.model_.linear.weight.device.type == "cpu"
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "model_")


def test_a_model_fitted_on_another_device_predicts_here(digits):
    """Prediction is NumPy's on the CPU: an estimator fitted with device='cuda' and unpickled where
    there is none (its stored parameter) predicts, as any scikit-learn model; it had refused."""
    X, y = digits
    clf = TorchLogisticRegression().fit(X, y)
    expected = clf.predict_proba(X)
    clf.__dict__["device"] = "cuda:7"
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    assert restored.score(X, y) == clf.score(X, y)


def test_a_binary_tie_goes_to_the_first_class_as_scikit_learns():
    """Rows scored exactly 0 (empty rows with no intercept) are classes_[0], as LogisticRegression's
    decision_function > 0; predict agrees with predict_proba's argmax."""
    X = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 2.0]])
    y = np.array(["ham", "spam", "ham", "spam"])
    empty = np.zeros((3, 2))
    ours = TorchLogisticRegression(fit_intercept=False).fit(X, y)
    theirs = LogisticRegression(fit_intercept=False).fit(X, y)
    assert (ours.decision_function(empty) == 0).all()
    assert list(ours.predict(empty)) == list(theirs.predict(empty)) == ["ham"] * 3
    assert list(ours.classes_[ours.predict_proba(empty).argmax(1)]) == ["ham"] * 3


def test_pipeline_grid_search_and_cross_validation(digits):
    X, y = digits
    pipeline = make_pipeline(StandardScaler(), TorchLogisticRegression())
    search = GridSearchCV(pipeline, {"torchlogisticregression__C": [0.1, 1.0]}, cv=3, n_jobs=1).fit(X, y)
    assert search.best_score_ > 0.9
    assert cross_val_score(TorchLogisticRegression(), X, y, cv=3).mean() > 0.9


def test_convergence_warning_when_max_iter_is_too_small(digits):
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        TorchLogisticRegression(max_iter=2).fit(*digits)


def test_partial_fit_on_chunks(digits):
    X, y = digits
    clf = TorchLogisticRegression(solver="sgd", lr=0.1, batch_size=100, random_state=0)  # 3 steps a chunk
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X[:100], y[:100])
    for _ in range(5):
        for start in range(0, len(y), 300):
            clf.partial_fit(X[start : start + 300], y[start : start + 300], classes=np.arange(10))
    assert clf.score(X, y) > 0.93 and clf.n_iter_[0] == 5 * 6


@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_sgd_defaults_follow_the_data(digits, scale):
    """solver='sgd' with no lr and no max_iter takes `torchlogreg train`'s rules: an lr from the
    features' curvature, and epochs enough for 150 steps of 256 rows on a small set. A fixed lr of 0.8
    and 5 epochs diverged on the raw 0..16 pixels and stopped 4 points short of lbfgs on the /16 ones."""
    from torchlogreg.data import rules

    X, y = digits[0] * scale, digits[1]
    exact = TorchLogisticRegression(max_iter=1000).fit(X, y).score(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = TorchLogisticRegression(solver="sgd", random_state=0).fit(X, y)
    assert model.score(X, y) >= exact - 0.01
    assert model.n_iter_[0] == rules.minibatch_epochs("sgd", len(y), 256) > 5
    sample = rules.FeatureSample(X)
    expected = rules.default_lr("sgd", sample, 1 / len(y), 256, len(y))
    assert model.lr_ == expected


def test_partial_fit_centres_on_the_streams_running_mean_at_each_chunks_rule(digits):
    """A stream's chunk steps about the running mean of the stream so far, at its own chunk's lr.
    A 1-row first chunk kept as the stream's lr and centre (1.0, that row) diverged on the next
    chunk; plain steps left features near +100 at chance; a centre kept from a fit moved a frozen
    bias after set_params(fit_intercept=False)."""
    X, y = digits[0] * 16, digits[1]  # (raw 0..16 pixels: a fixed lr of 0.8 diverged)
    for offset in (0.0, 100.0):
        clf = TorchLogisticRegression(solver="sgd", random_state=0)
        clf.partial_fit(X[:1] + offset, y[:1], classes=np.arange(10))
        lrs = []
        for _ in range(3):
            for start in range(1, len(y), 300):
                clf.partial_fit(X[start : start + 300] + offset, y[start : start + 300])
                lrs.append(clf.lr_)
        assert clf.score(X + offset, y) > 0.9 and len(set(lrs)) > 1
        mean, seen = clf._stream
        assert seen == 3 * (len(y) - 1) + 1
        streamed = (X[0] + 3 * X[1:].sum(0)) / seen + offset  # (the first row once, the rest thrice)
        np.testing.assert_allclose(mean.numpy(), streamed, rtol=1e-9, atol=1e-9)
    clf.set_params(lr=0.001).partial_fit(X[:300] + offset, y[:300])
    assert clf.lr_ == 0.001
    frozen = TorchLogisticRegression(solver="sgd", random_state=0).fit(X + 3, y)
    frozen.set_params(fit_intercept=False, max_iter=None)
    frozen.intercept_[:] = 0
    for start in range(0, 900, 300):
        frozen.partial_fit(X[start : start + 300] + 3, y[start : start + 300])
    assert not frozen.intercept_.any()


def test_class_weight_balanced_equals_the_sample_weights(digits):
    X, y = digits[0][:400], digits[1][:400] % 2
    from sklearn.utils.class_weight import compute_sample_weight

    by_class = TorchLogisticRegression(class_weight="balanced", dtype="float64").fit(X, y)
    by_sample = TorchLogisticRegression(dtype="float64").fit(
        X, y, sample_weight=compute_sample_weight("balanced", y)
    )
    np.testing.assert_allclose(by_class.coef_, by_sample.coef_, atol=1e-6)


def test_class_weight_balanced_counts_the_rows_by_their_sample_weights(digits):
    """'balanced' with sample weights counts each class's rows by their weights, as scikit-learn's
    LogisticRegression does: a row of weight 3 is three rows (the plain counts gave coef_ 0.38 apart
    from scikit-learn's on iris)."""
    X, y = digits[0][:300], digits[1][:300] % 3
    weights = np.where(y == 0, 3.0, 1.0)
    weighted = TorchLogisticRegression(class_weight="balanced", dtype="float64", tol=1e-8, max_iter=1000)
    weighted.fit(X, y, sample_weight=weights)
    repeats = np.repeat(np.arange(len(y)), weights.astype(int))
    repeated = TorchLogisticRegression(class_weight="balanced", dtype="float64", tol=1e-8, max_iter=1000)
    repeated.fit(X[repeats], y[repeats])
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-4)


def test_l1_penalty_shrinks_weights(digits):
    X, y = digits
    plain = TorchLogisticRegression(solver="sgd", max_iter=10, random_state=0).fit(X, y)
    lasso = TorchLogisticRegression(solver="sgd", l1_ratio=1, C=0.01, max_iter=10, random_state=0).fit(X, y)
    assert np.abs(lasso.coef_).sum() < 0.5 * np.abs(plain.coef_).sum()
    assert (lasso.coef_ == 0).mean() > 0.5  # the proximal step leaves exact zeros


def test_early_stopping_stops_before_max_iter(digits):
    clf = TorchLogisticRegression(
        solver="sgd", max_iter=200, early_stopping=True, n_iter_no_change=2, random_state=0, tol=1e-3
    ).fit(*digits)
    assert clf.n_iter_[0] < 200


def test_not_fitted_error_says_what_to_call(digits):
    with pytest.raises(NotFittedError, match="Call 'fit'") as error:
        TorchLogisticRegression().predict(digits[0])
    assert isinstance(error.value, SklearnNotFittedError)


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"C": -1}, "The 'C' parameter of TorchLogisticRegression must be a float in the range (0.0, inf]"),
        ({"solver": "newton"}, "The 'solver' parameter of TorchLogisticRegression must be a str among"),
        (
            {"penalty": "elasticnet", "l1_ratio": None},
            "l1_ratio must be specified when penalty is elasticnet",
        ),
        ({"dual": True}, "Solver lbfgs supports only dual=False, got dual=True"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda, cuda:N or mps"),
    ],
)
@pytest.mark.filterwarnings("ignore:'penalty' was deprecated:FutureWarning")
def test_parameter_errors_name_the_parameter(digits, params, fragment):
    with pytest.raises(ValueError) as error:
        TorchLogisticRegression(**params).fit(*digits)
    assert fragment in str(error.value)


def test_bad_arrays_are_refused(digits):
    X, y = digits
    clf = TorchLogisticRegression().fit(X, y)
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(np.full((2, 64), np.nan))
    with pytest.raises(ValueError, match="X has 3 features, but TorchLogisticRegression is expecting 64"):
        clf.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict(np.zeros((0, 64)))


def test_warm_start_continues(digits):
    X, y = digits
    clf = TorchLogisticRegression(warm_start=True, max_iter=3)
    with pytest.warns(ConvergenceWarning):
        first = clf.fit(X, y).score(X, y)
    with pytest.warns(ConvergenceWarning):
        second = clf.fit(X, y).score(X, y)
    assert second >= first


def test_make_classification_binary():
    X, y = make_classification(n_samples=400, n_features=20, random_state=0)
    assert TorchLogisticRegression().fit(X, y).score(X, y) > 0.85


# --- LogisticRegression's contract: the parts a user touches ---------------------------------------
def test_coef_and_intercept_are_writable_and_used_by_prediction(digits):
    X, y = digits
    model = TorchLogisticRegression().fit(X, y)
    model.coef_[:] = 0
    model.intercept_[:] = 0
    model.intercept_[3] = 1.0
    assert (model.predict(X) == 3).all()
    model.sparsify()
    assert sp.issparse(model.coef_) and (model.predict(X) == 3).all()
    assert isinstance(model.densify().coef_, np.ndarray)


def test_coef_has_the_inputs_float_dtype(digits):
    X, y = digits
    assert TorchLogisticRegression().fit(X.astype(np.float32), y).coef_.dtype == np.float32
    assert TorchLogisticRegression().fit(X, y).coef_.dtype == np.float64


@pytest.mark.parametrize("fit_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("predict_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("classes", [2, 10])
def test_scores_come_in_scikit_learns_dtype(digits, fit_dtype, predict_dtype, classes):
    """float32 X and coef_ give float32 scores, as scikit-learn's (they were float64 whatever X)."""
    X, y = digits[0][:300], digits[1][:300] % classes
    ours = TorchLogisticRegression().fit(X.astype(fit_dtype), y)
    theirs = LogisticRegression().fit(X.astype(fit_dtype), y)
    new = X[:20].astype(predict_dtype)
    for method in ("decision_function", "predict_proba", "predict_log_proba"):
        mine, sklearns = getattr(ours, method)(new), getattr(theirs, method)(new)
        assert mine.dtype == sklearns.dtype and mine.shape == sklearns.shape, method


def test_a_class_weight_may_name_classes_a_fit_does_not_see(digits):
    """A dict naming every class of the problem fits a part that lacks some (a CV fold, one of
    OneVsRest's binary problems), as scikit-learn's; one leaving out a class it sees and naming
    another is refused, by scikit-learn's rule."""
    from sklearn.multiclass import OneVsRestClassifier

    X, y = digits[0][:300], digits[1][:300] % 3
    weights = {0: 1.0, 1: 2.0, 2: 3.0}
    assert TorchLogisticRegression(class_weight=weights).fit(X[y < 2], y[y < 2]).classes_.tolist() == [0, 1]
    assert OneVsRestClassifier(TorchLogisticRegression(class_weight=weights)).fit(X, y).score(X, y) > 0.5
    with pytest.raises(ValueError, match=r"The classes, \[1\], are not in class_weight"):
        TorchLogisticRegression(class_weight={0: 1.0, 5: 2.0}).fit(X[y < 2], y[y < 2])


def test_a_warm_start_on_other_features_is_refused_by_shape(digits):
    X, y = digits
    model = TorchLogisticRegression(warm_start=True, max_iter=500).fit(X, y)
    with pytest.raises(ValueError, match=r"warm_start: coef_ is of shape \(10, 64\), expected \(10, 63\)"):
        model.fit(X[:, 1:], y)
    assert model.coef_.shape == (10, 64) and model.n_features_in_ == 64  # the fit it had


def test_adams_default_lr_takes_a_single_step_safely():
    """One epoch of one batch: 4 / steps would be a step of 4 in every weight (it diverged)."""
    X, y = load_iris(return_X_y=True)
    model = TorchLogisticRegression(solver="adam", max_iter=1, random_state=0)
    with pytest.warns(ConvergenceWarning):
        model.fit(StandardScaler().fit_transform(X), y)
    assert model.lr_ == 0.05


def test_a_read_only_float32_array_fits_without_torchs_warning(tmp_path):
    """A memmapped float32 X (np.load(mmap_mode='r')) is read in place, without PyTorch's warning
    about writing to it (once per process: checked in a fresh one)."""
    import subprocess
    import sys

    X, y = load_digits(return_X_y=True)
    np.save(tmp_path / "X.npy", X.astype(np.float32))
    code = (
        "import warnings, numpy as np; from sklearn.datasets import load_digits;"
        "from torchlogreg import TorchLogisticRegression;"
        "warnings.simplefilter('error', UserWarning);"
        f"X = np.load({str(tmp_path / 'X.npy')!r}, mmap_mode='r'); y = load_digits().target;"
        "print(TorchLogisticRegression(max_iter=500).fit(X, y).score(X, y))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 0.99


def test_logistic_regressions_other_parameters_are_accepted(digits):
    X, y = digits
    model = TorchLogisticRegression(C=np.inf, max_iter=300, n_jobs=2, dual=False, intercept_scaling=2.0)
    with pytest.warns(FutureWarning, match="'n_jobs' has no effect since 1.8"):
        assert model.fit(X[:200], y[:200]).score(X[:200], y[:200]) > 0.9
    with pytest.warns(ConvergenceWarning, match="failed to converge"):
        untrained = TorchLogisticRegression(max_iter=0).fit(X, y)
    assert untrained.n_iter_[0] == 0 and not untrained.coef_.any()
    with (
        pytest.warns(UserWarning, match="penalty=None will ignore the C"),
        pytest.warns(FutureWarning, match="'penalty' was deprecated"),
    ):
        TorchLogisticRegression(penalty=None, C=0.1).fit(X, y)


# --- every penalty, solved exactly: scikit-learn's optimum ---------------------------------------
import inspect  # noqa: E402
import warnings  # noqa: E402

import sklearn  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402

from torchlogreg.base.exceptions import DivergenceError  # noqa: E402
from torchlogreg.core import fused  # noqa: E402
from torchlogreg.core.objective import Objective  # noqa: E402
from torchlogreg.sklearn.estimator_fit import Fit  # noqa: E402
from torchlogreg.sklearn.solvers import (  # noqa: E402
    DeviceLoss,
    FusedLoss,
    HostLoss,
    feature_curvature,
    feature_mean,
    lbfgs,
)

SKLEARN_1_8 = tuple(int(part) for part in sklearn.__version__.split(".")[:2]) >= (1, 8)


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def _objective(model, X, y, C: float, l1_ratio: float) -> float:
    """scikit-learn's objective at a model's coef_ and intercept_, in float64."""
    coef, intercept = (
        np.asarray(model.coef_, dtype=np.float64),
        np.asarray(model.intercept_, dtype=np.float64),
    )
    loss = HostLoss(X, np.searchsorted(np.unique(y), y), np.ones(len(y)), coef.shape[0])(coef, intercept)[0]
    penalty = l1_ratio * np.abs(coef).sum() + (1 - l1_ratio) / 2 * np.square(coef).sum()
    return loss + penalty / (C * len(y))


@pytest.mark.parametrize("classes", ["binary", "multinomial"])
@pytest.mark.parametrize("l1_ratio", [1.0, 0.5, 0.0])
def test_every_penalty_reaches_sagas_optimum(iris, classes, l1_ratio):
    X, y = iris
    if classes == "binary":
        X, y = X[y > 0], y[y > 0]  # versicolor vs virginica: not separable
    C = 0.5
    ours = TorchLogisticRegression(C=C, l1_ratio=l1_ratio, tol=1e-7, max_iter=5000).fit(X, y)
    theirs = LogisticRegression(C=C, l1_ratio=l1_ratio, solver="saga", tol=1e-10, max_iter=100_000).fit(X, y)
    assert _objective(ours, X, y, C, l1_ratio) == pytest.approx(
        _objective(theirs, X, y, C, l1_ratio), abs=1e-10
    )
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, atol=1e-4)
    np.testing.assert_array_equal(ours.coef_ == 0, theirs.coef_ == 0)  # the same exact zeros
    assert (ours.coef_ == 0).any() == (l1_ratio > 0)


def test_l1_matches_liblinear(iris):
    X, y = iris[0][iris[1] > 0], iris[1][iris[1] > 0]
    # without an intercept liblinear's objective is this one (it would penalise an intercept)
    ours = TorchLogisticRegression(C=0.2, l1_ratio=1, fit_intercept=False, tol=1e-7, max_iter=5000).fit(X, y)
    theirs = LogisticRegression(C=0.2, l1_ratio=1, solver="liblinear", fit_intercept=False, tol=1e-10).fit(
        X, y
    )
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-4)
    np.testing.assert_array_equal(ours.coef_ == 0, theirs.coef_ == 0)


@pytest.mark.parametrize("l1_ratio", [0.0, 1.0])
def test_tol_bounds_the_projected_gradient(digits, l1_ratio):
    """lbfgs stops when the objective's max |projected gradient| (for L1: its smallest subgradient) <= tol."""
    X, y = digits
    C, tol = 0.5, 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = TorchLogisticRegression(C=C, l1_ratio=l1_ratio, tol=tol, max_iter=10_000).fit(X, y)
    coef, intercept = model.coef_, model.intercept_
    _, grad_coef, grad_intercept = HostLoss(X, y, np.ones(len(y)), 10)(coef, intercept)
    strength = 1 / (C * len(y))
    grad_coef += strength * (1 - l1_ratio) * coef
    l1 = strength * l1_ratio
    smallest = np.where(coef != 0, grad_coef + l1 * np.sign(coef), np.maximum(np.abs(grad_coef) - l1, 0))
    assert np.abs(smallest).max() <= tol and np.abs(grad_intercept).max() <= tol


def test_l1_ratio_alone_selects_the_penalty(iris):
    X, y = iris
    fits = {r: TorchLogisticRegression(C=0.1, l1_ratio=r).fit(X, y).coef_ for r in (0.0, 0.5, 1.0)}
    zeros = {r: int((coef == 0).sum()) for r, coef in fits.items()}
    assert zeros[0.0] == 0 < zeros[0.5] <= zeros[1.0]
    with pytest.warns(FutureWarning, match="'penalty' was deprecated in version 1.8"):
        lasso = TorchLogisticRegression(penalty="l1", l1_ratio=1.0, C=0.1).fit(X, y)
    np.testing.assert_array_equal(lasso.coef_, fits[1.0])
    unpenalised = TorchLogisticRegression(C=np.inf, l1_ratio=1.0, tol=1e-7, max_iter=1000).fit(X, y)
    with pytest.warns(FutureWarning):
        none = TorchLogisticRegression(penalty=None, tol=1e-7, max_iter=1000).fit(X, y)
    np.testing.assert_array_equal(unpenalised.coef_, none.coef_)


def test_grid_search_over_l1_ratio_changes_the_model(iris):
    X, y = iris
    grid = {"l1_ratio": [0.0, 0.5, 1.0]}
    search = GridSearchCV(TorchLogisticRegression(C=0.05), grid, cv=3, n_jobs=1).fit(X, y)
    assert len(set(np.round(search.cv_results_["mean_test_score"], 6))) > 1
    models = [clone(search.estimator).set_params(l1_ratio=r).fit(X, y).coef_ for r in grid["l1_ratio"]]
    assert not np.allclose(models[0], models[1]) and not np.allclose(models[1], models[2])


def test_sparse_input_gives_the_dense_solution(iris):
    X, y = iris
    dense = TorchLogisticRegression(l1_ratio=1, tol=1e-7, max_iter=1000).fit(X, y)
    sparse = TorchLogisticRegression(l1_ratio=1, tol=1e-7, max_iter=1000).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-6)


def test_float32_input_converges_in_float32(iris):
    X, y = iris
    # In float32 the objective is known to about 1e-8, so whether L-BFGS reaches |pg| <= 1e-5 before
    # its steps fall below that noise depends on the CPU's rounding (yes on an Intel Xeon, |pg| 1.8e-5
    # on an AMD EPYC). Either way the fit must be as good as float32 allows, and the only warning
    # allowed is the one that says so.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = TorchLogisticRegression(l1_ratio=0.5, tol=1e-5).fit(X.astype(np.float32), y)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert all("no longer falls measurably in float32 arithmetic" in m for m in messages), messages
    reference = TorchLogisticRegression(l1_ratio=0.5, tol=1e-7, max_iter=1000).fit(X, y)
    assert model.coef_.dtype == np.float32
    assert _objective(model, X, y, 1.0, 0.5) == pytest.approx(_objective(reference, X, y, 1.0, 0.5), abs=1e-7)


def test_default_dtype_is_the_inputs_for_lbfgs_and_float32_for_sgd(digits):
    X, y = digits
    assert TorchLogisticRegression().fit(X, y).model_.linear.weight.dtype == torch.float64
    sgd = TorchLogisticRegression(solver="sgd", max_iter=2, random_state=0).fit(X, y)
    assert sgd.model_.linear.weight.dtype == torch.float32 and sgd.coef_.dtype == np.float64


def test_the_device_loss_equals_the_host_loss(digits):
    """The torch evaluator (used on GPUs) and the NumPy one (CPU) compute the same loss and gradient,
    and L-BFGS reaches the same optimum with either."""
    X, y = digits[0][:500], digits[1][:500]
    weights = np.random.default_rng(0).uniform(0.5, 2, len(y))
    coef, intercept = np.random.default_rng(1).normal(size=(10, 64)), np.arange(10.0) / 10
    model = TorchLogisticRegression(dtype="float64").fit(X, y)  # for a batch source and a model
    source = Fit(model).source(X, y, weights, torch.device("cpu"), 128)
    on_device, on_host = DeviceLoss(model.model_, source, weights.sum()), HostLoss(X, y, weights, 10)
    for host, device in zip(on_host(coef, intercept), on_device(coef, intercept), strict=True):
        np.testing.assert_allclose(device, host, rtol=1e-10, atol=1e-12)
    start, penalty = (np.zeros((10, 64)), np.zeros(10)), Objective(0.01, 0.005)
    solutions = [
        lbfgs(loss, *start, penalty, fit_intercept=True, max_iter=500, tol=1e-6)
        for loss in (on_host, on_device)
    ]
    assert solutions[1].objective == pytest.approx(solutions[0].objective, abs=1e-11)
    np.testing.assert_allclose(solutions[1].coef, solutions[0].coef, atol=1e-4)  # tol / l2
    np.testing.assert_array_equal(solutions[1].coef == 0, solutions[0].coef == 0)


@pytest.mark.numerics
@pytest.mark.skipif(not fused.available(), reason="torchlogreg.core._fused is not built")
@pytest.mark.parametrize("classes", [2, 10])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_fused_loss_equals_the_host_loss(digits, classes, weighted):
    """The fused kernel's evaluator (dense float32 X on the CPU) computes the host's loss and gradient
    to float32's precision, one logit (binary) or several."""
    X, y = digits[0][:700].astype(np.float32) / 16, digits[1][:700] % classes
    outputs = 1 if classes == 2 else classes
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.5, 2, len(y)) if weighted else np.full(len(y), 3.0)
    coef, intercept = rng.normal(size=(outputs, 64)) * 0.3, np.arange(outputs) / 10
    fused_parts, host_parts = (
        FusedLoss(X, y, weights, outputs)(coef, intercept),
        HostLoss(X, y, weights, outputs)(coef, intercept),
    )
    assert fused_parts[0] == pytest.approx(host_parts[0], rel=1e-6)
    for got, expected in zip(fused_parts[1:], host_parts[1:], strict=True):
        assert got.dtype == np.float64 and got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("l1", [0.0, 1e-3], ids=["l2", "l2+l1"])
def test_scaled_lbfgs_reaches_the_same_optimum_in_fewer_iterations(l1):
    """Stepping in weights scaled by the Hessian's diagonal (with L1, its weights divided by the same
    scales) changes the path, not the minimiser, and the stopping rule stays on the unscaled
    (sub)gradient."""
    X, y = make_classification(600, 30, n_informative=10, n_classes=3, random_state=0)
    X = X * np.logspace(-2, 1, 30)  # features on very different scales
    weights, penalty = np.ones(len(y)), Objective(weight_decay=1e-3, l1=l1)
    loss = HostLoss(X, y, weights, 3)
    start = (np.zeros((3, 30)), np.zeros(3))
    plain = lbfgs(loss, *start, penalty, fit_intercept=True, max_iter=5000, tol=1e-6)
    curvature = feature_curvature(X, weights, 3)
    scaled = lbfgs(loss, *start, penalty, fit_intercept=True, max_iter=5000, tol=1e-6, curvature=curvature)
    assert scaled.gradient <= 1e-6 and plain.gradient <= 1e-6
    assert scaled.objective == pytest.approx(plain.objective, rel=0, abs=1e-8)  # (tol^2 / l2)
    np.testing.assert_allclose(scaled.coef, plain.coef, rtol=0, atol=1e-3)  # tol / l2
    assert scaled.n_iter < plain.n_iter


@pytest.mark.parametrize("l1", [0.0, 1e-3], ids=["l2", "l2+l1"])
def test_centred_lbfgs_reaches_the_same_optimum_in_fewer_iterations(l1):
    """Stepping the intercept as b + W @ mean (features centred) changes the path, not the minimiser,
    and the stopping rule stays on the (sub)gradient in the ordinary (W, b)."""
    X, y = make_classification(600, 30, n_informative=10, n_classes=3, random_state=0)
    X = X + 4.0  # features far from mean 0, as pixels are
    weights, penalty = np.ones(len(y)), Objective(weight_decay=1e-3, l1=l1)
    loss = HostLoss(X, y, weights, 3)
    start = (np.zeros((3, 30)), np.zeros(3))
    curvature = feature_curvature(X, weights, 3)
    settings = dict(fit_intercept=True, max_iter=5000, tol=1e-6, curvature=curvature)
    plain = lbfgs(loss, *start, penalty, **settings)
    centred = lbfgs(loss, *start, penalty, **settings, mean=feature_mean(X, weights))
    assert centred.gradient <= 1e-6 and centred.n_iter < plain.n_iter
    # uncentred OWL-QN stalls here, where the last bit of rounding decides (1e-5 to 1e-4 after its
    # 5,000 iterations); the centred answer meets its stopping rule all the same
    assert plain.gradient <= (1e-6 if l1 == 0 else 1e-3)
    assert lbfgs(loss, centred.coef, centred.intercept, penalty, **settings).n_iter == 0
    assert centred.objective <= plain.objective + 1e-9
    # as far apart as the plain run's own gradient g allows (l2-strongly convex: g^2 / l2, g / l2 twice)
    reached = max(1e-6, plain.gradient)
    assert centred.objective == pytest.approx(plain.objective, rel=0, abs=max(1e-7, reached**2 / 1e-3))
    np.testing.assert_allclose(centred.coef, plain.coef, rtol=0, atol=2 * reached / 1e-3)
    np.testing.assert_allclose(centred.intercept, plain.intercept, rtol=0, atol=4 * 30 * 2 * reached / 1e-3)
    again = lbfgs(loss, centred.coef, centred.intercept, penalty, **settings, mean=feature_mean(X, weights))
    assert again.n_iter == 0  # a start within tol in (W, b) is one in the centred coordinates too


def test_a_start_within_tol_takes_no_iteration(digits):
    X, y = digits[0][:300], digits[1][:300]
    loss, penalty = HostLoss(X, y, np.ones(len(y)), 10), Objective(weight_decay=0.01)
    curvature = feature_curvature(X, np.ones(len(y)), 10)
    first = lbfgs(
        loss,
        np.zeros((10, 64)),
        np.zeros(10),
        penalty,
        fit_intercept=True,
        max_iter=500,
        tol=1e-6,
        curvature=curvature,
    )
    again = lbfgs(
        loss,
        first.coef,
        first.intercept,
        penalty,
        fit_intercept=True,
        max_iter=500,
        tol=1e-6,
        curvature=curvature,
    )
    assert first.n_iter > 0 and again.n_iter == 0 and again.objective == pytest.approx(first.objective)


def test_feature_curvature_and_mean_are_the_same_for_dense_and_sparse_rows(digits):
    X, weights = digits[0][:200], np.random.default_rng(0).uniform(0.5, 2, 200)
    np.testing.assert_allclose(
        feature_curvature(sp.csr_matrix(X), weights, 10), feature_curvature(X, weights, 10)
    )
    np.testing.assert_allclose(feature_mean(sp.csr_matrix(X), weights), feature_mean(X, weights))
    np.testing.assert_allclose(feature_mean(X, weights), np.average(X, axis=0, weights=weights))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_reaches_the_cpu_optimum(digits):
    X, y = digits
    kwargs = dict(l1_ratio=0.5, tol=1e-6, max_iter=2000, dtype="float64")
    on_cpu = TorchLogisticRegression(**kwargs).fit(X, y)
    on_gpu = TorchLogisticRegression(device="cuda", **kwargs).fit(X, y)
    np.testing.assert_allclose(on_gpu.coef_, on_cpu.coef_, atol=1e-4)
    np.testing.assert_array_equal(on_gpu.coef_ == 0, on_cpu.coef_ == 0)


# --- scikit-learn's parameters and warnings --------------------------------------------------------
def test_every_logistic_regression_parameter_is_accepted():
    theirs = inspect.signature(LogisticRegression.__init__).parameters
    ours = inspect.signature(TorchLogisticRegression.__init__).parameters
    assert set(theirs) <= set(ours)
    different = {name for name in theirs if theirs[name].default != ours[name].default}
    assert different <= {"max_iter"}  # None: 100 lbfgs iterations, or 5 sgd/adam epochs
    model = TorchLogisticRegression().set_params(
        **{name: p.default for name, p in theirs.items() if name != "self"}
    )
    assert model.get_params()["penalty"] == "deprecated"


def _warnings_of(estimator, X, y) -> set[tuple[type, str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(X, y)
    return {(w.category, str(w.message)) for w in caught if not issubclass(w.category, ConvergenceWarning)}


@pytest.mark.skipif(not SKLEARN_1_8, reason="scikit-learn 1.8 introduced these warnings")
@pytest.mark.parametrize(
    "params",
    [
        {},
        {"penalty": "l2"},
        {"penalty": "l1", "solver": "saga"},
        {"penalty": "elasticnet", "l1_ratio": 0.5, "solver": "saga"},
        {"l1_ratio": None},
        {"penalty": "l2", "l1_ratio": 0.5},
        {"penalty": None, "C": 0.5},
        {"C": np.inf, "l1_ratio": 0.5, "solver": "saga"},
        {"n_jobs": 2},
    ],
)
def test_warnings_are_scikit_learns(iris, params):
    X, y = iris
    ours = _warnings_of(TorchLogisticRegression(max_iter=200, **params), X, y)
    assert ours == _warnings_of(LogisticRegression(max_iter=200, **params), X, y)


def test_dual_is_refused_as_scikit_learn_does(iris):
    for estimator in (TorchLogisticRegression(dual=True), LogisticRegression(dual=True)):
        with pytest.raises(ValueError, match="Solver lbfgs supports only dual=False, got dual=True"):
            estimator.fit(*iris)


def test_scikit_learns_other_solvers_run_the_exact_solver(iris):
    X, y = iris
    reference = TorchLogisticRegression(l1_ratio=1).fit(X, y).coef_
    for solver in ("saga", "sag", "newton-cg", "newton-cholesky"):
        np.testing.assert_array_equal(
            TorchLogisticRegression(solver=solver, l1_ratio=1).fit(X, y).coef_, reference
        )
    with pytest.warns(UserWarning, match="never penalises the intercept"):
        TorchLogisticRegression(solver="liblinear").fit(X[y > 0], y[y > 0])


def test_n_iter_and_verbose(iris, capsys):
    model = TorchLogisticRegression(verbose=1).fit(*iris)
    assert model.n_iter_.dtype == np.int32 and model.n_iter_[0] > 1
    assert f"lbfgs iteration {model.n_iter_[0]}: objective" in capsys.readouterr().out


# --- mini-batch solvers: stable penalty steps, divergence ------------------------------------------
@pytest.fixture(scope="module")
def small():
    return make_classification(n_samples=100, n_features=20, random_state=0)


def test_sgd_with_a_strong_penalty_is_stable(small):
    X, y = small
    sgd = TorchLogisticRegression(solver="sgd", C=0.001, max_iter=30, random_state=0).fit(X, y)
    exact = TorchLogisticRegression(C=0.001, tol=1e-7).fit(X, y)
    assert _objective(sgd, X, y, 0.001, 0.0) == pytest.approx(_objective(exact, X, y, 0.001, 0.0), abs=1e-3)
    np.testing.assert_allclose(sgd.coef_, exact.coef_, atol=5e-3)


def test_sgd_l1_approaches_the_exact_solution(small):
    X, y = small
    sgd = TorchLogisticRegression(solver="sgd", C=0.05, l1_ratio=1, lr=0.1, max_iter=100, random_state=0).fit(
        X, y
    )
    exact = TorchLogisticRegression(C=0.05, l1_ratio=1, tol=1e-7, max_iter=1000).fit(X, y)
    assert _objective(sgd, X, y, 0.05, 1.0) == pytest.approx(_objective(exact, X, y, 0.05, 1.0), abs=2e-3)
    assert (sgd.coef_ == 0).sum() >= 0.8 * (exact.coef_ == 0).sum() > 0


def test_sgd_steps_follow_the_features_and_a_diverging_lr_raises_with_advice():
    """sgd's default lr is the package's rule for the features (rules.default_lr, in centred
    coordinates): features far from zero and unscaled train as they are (a fixed lr of 0.8 diverged
    on them). A user's lr too bold for them still raises, saying what to change."""
    rng = np.random.default_rng(0)
    X = rng.normal(loc=100, size=(200, 2))  # far from centred and unscaled
    y = (X[:, 0] > 100).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # (10 epochs: not yet to tol)
        model = TorchLogisticRegression(solver="sgd", max_iter=10, random_state=0).fit(X, y)
    assert model.score(X, y) > 0.9 and model.lr_ > 1  # centred, the features' curvature is about 1
    with pytest.raises(DivergenceError, match="lower lr, raise C or scale the features"):
        TorchLogisticRegression(solver="sgd", max_iter=10, lr=1e4, random_state=0).fit(X, y)
    with pytest.raises(DivergenceError, match="became nan .*scale the features"):  # (was a TypeError)
        TorchLogisticRegression(solver="sgd", max_iter=10, random_state=0).fit(X * 1e150, y)


def test_lbfgs_on_features_near_the_float64_limit_warns_to_scale_them():
    """Every step along such a feature overflows the objective; the line search backs off from each, so
    the fit ends finite, with a ConvergenceWarning that says to scale the data (scikit-learn: ABNORMAL)."""
    X = np.array([[1e300, 1.0], [-1e300, 2.0], [1e300, 0.5], [-1e300, 0.1]])
    with pytest.warns(ConvergenceWarning, match="scale the data"):
        model = TorchLogisticRegression(C=np.inf).fit(X, [0, 1, 1, 0])
    assert np.isfinite(model.coef_).all() and np.isfinite(model.predict_proba(X)).all()


_UNIT = np.random.default_rng(0).random((200, 5)), np.arange(200) % 3
_NEAR_LIMIT = np.array([[1e300, 1.0], [-1e300, 2.0], [1e300, 0.5], [-1e300, 0.1]]), np.array([0, 1, 1, 0])


@pytest.mark.parametrize(
    "scale, classes, params",
    [(1e20, 2, {}), (1e20, 3, {}), (1e30, 3, {"dtype": "float32"}), (1.0, 3, {"C": 1e-30})],
)
def test_lbfgs_that_takes_no_step_warns_the_iterations_n_iter_says(scale, classes, params):
    """Features scaled by 1e20 (or C=1e-30): from the all-zero start the line search finds no lower
    objective, so lbfgs takes no step. The warning said "after 0 iteration(s)" where n_iter_ said 1,
    over three lines, and advised a larger tol (the gradient was 2e18); a newcomer's finding."""
    X, y = _UNIT[0] * scale, np.arange(200) % classes
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = TorchLogisticRegression(**params).fit(X, y)
    [message] = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert model.n_iter_[0] == 1 and not model.coef_.any()
    assert message.startswith("lbfgs failed to converge after 1 iteration(s) (max_iter=100): it took no step")
    assert "More iterations will not help" in message and "with StandardScaler" in message
    assert "larger tol" not in message and "\n" not in message


@pytest.mark.parametrize(
    "solver, data, params",
    [
        ("lbfgs", _UNIT, {"max_iter": 2}),
        ("lbfgs", _NEAR_LIMIT, {"C": np.inf}),
        ("adam", (_UNIT[0] * 1e30, _UNIT[1]), {"max_iter": 3, "random_state": 0}),
        ("sgd", (_UNIT[0] * 1e-20, _UNIT[1]), {"max_iter": 3, "random_state": 0}),
    ],
    ids=["max_iter", "near-float64-limit", "adam-1e30", "sgd-1e-20"],
)
def test_convergence_warnings_count_as_n_iter_does_and_say_to_scale(solver, data, params):
    """Every ConvergenceWarning of a fit is one line, counts the iterations (epochs) n_iter_ holds and
    says to scale the data: adam at 1e30 said only "raise max_iter" (its weights never move there)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = TorchLogisticRegression(solver=solver, **params).fit(*data)
    [message] = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    n_iter = model.n_iter_[0]
    count = f"after {n_iter} iteration(s)" if solver == "lbfgs" else f"after {n_iter} epochs (max_iter="
    assert count in message and "scale the data (e.g. with StandardScaler)" in message and "\n" not in message


def test_lbfgs_on_tiny_features_or_a_constant_column_converges_without_a_warning():
    """The extremes beside the 1e20 one: features scaled by 1e-20 (all but the intercepts vanish), and
    a constant column, converge in a few iterations, quietly."""
    X, y = _UNIT
    constant = X.copy()
    constant[:, 2] = 7.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for features in (X * 1e-20, constant):
            assert 1 <= TorchLogisticRegression().fit(features, y).n_iter_[0] < 20


def test_lbfgs_raises_on_a_non_finite_start():
    X, y = np.array([[1.0, 2.0], [2.0, 1.0], [0.5, 3.0]]), [0, 1, 0]
    model = TorchLogisticRegression(warm_start=True).fit(X, y)
    model.coef_ = np.full_like(model.coef_, 1e308)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # NumPy's overflow warnings stay inside the solver
        with pytest.raises(DivergenceError, match="scale the features"):
            model.fit(X * 1e10, y)


def test_a_warm_start_without_intercept_keeps_it_zero(digits):
    """The multinomial intercepts' sum is kept only where there is an intercept to fit."""
    X, y = digits[0][:300], digits[1][:300] % 3
    model = TorchLogisticRegression(fit_intercept=False, warm_start=True).fit(X, y)
    model.intercept_ = np.array([5.0, 1.0, 0.0])
    np.testing.assert_array_equal(model.fit(X, y).intercept_, 0.0)


def test_sgd_warns_only_when_max_iter_ran_out_first():
    """sgd and adam warn unless the objective's largest gradient entry ended within tol, lbfgs's rule:
    Adam's 50 epochs of standardized wine ended at an objective 7 times the optimum without a warning,
    when the rule was the last epoch's fall, which a cosine schedule's last steps keep small."""
    from sklearn.datasets import load_wine
    from sklearn.preprocessing import StandardScaler

    X, y = load_wine(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        TorchLogisticRegression(solver="sgd", max_iter=1000, random_state=0).fit(X, y)
    expected = r"after 50 epochs \(max_iter=50\) the objective.s largest gradient entry is"
    with pytest.warns(ConvergenceWarning, match=expected):
        TorchLogisticRegression(solver="adam", max_iter=50, random_state=0).fit(X, y)
    with pytest.warns(ConvergenceWarning, match=r"after 1 epoch \(max_iter=1\)"):
        TorchLogisticRegression(solver="sgd", max_iter=1, lr=0.05, random_state=0).fit(X, y)


def test_a_partial_fit_chunk_smaller_than_a_batch_is_a_fraction_of_a_step(digits):
    """A chunk of 5 rows at batch_size 256 is 5/256 of a step, as those rows would be in one fit (a
    hostile helper found each pass's 5-row chunk stepped as a whole batch)."""
    X, y = digits[0][:5], digits[1][:5]
    moves = []
    for batch_size in (256, 5):
        clf = TorchLogisticRegression(solver="sgd", batch_size=batch_size, lr=0.1, random_state=0)
        clf.partial_fit(X, y, classes=np.arange(10))
        moves.append(np.abs(clf.coef_).sum())
    assert 0 < moves[0] < 5 / 256 * moves[1]


def test_a_random_state_instance_seeds_the_batches_as_scikit_learn_does(digits):
    """A RandomState gives the seed (it was ignored, NumPy's global state drawn instead): two
    estimators given RandomState(3) fit alike; one instance fitted twice moves on, as scikit-learn's."""
    X, y = digits
    fit = lambda state: TorchLogisticRegression(solver="sgd", max_iter=1, random_state=state).fit(X, y)  # noqa: E731
    state = np.random.get_state()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            np.random.seed(0)
            first = fit(np.random.RandomState(3)).coef_
            np.random.seed(1)
            assert np.array_equal(first, fit(np.random.RandomState(3)).coef_)
            shared = np.random.RandomState(3)
            assert not np.array_equal(fit(shared).coef_, fit(shared).coef_)
    finally:
        np.random.set_state(state)


def test_a_fit_that_raised_leaves_the_estimator_as_it_was(digits):
    """A fit or a stream's first chunk that raises, Ctrl-C included, leaves the estimator as before:
    unfitted after a first fit (predict said "no attribute coef_"), the previous fit whole after a
    refit (a failed refit on 2 classes kept the 10-class coef_ beside 2 classes_: IndexError; a
    warm start went on from the diverged weights)."""
    from sklearn.utils.validation import check_is_fitted

    X, y = digits
    bold = {"solver": "sgd", "lr": 1e6, "max_iter": 2, "random_state": 0}
    model = TorchLogisticRegression(**bold)
    with pytest.raises(DivergenceError):
        model.fit(X * 1e3, y)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        model.predict(X)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(model)
    assert not [name for name in vars(model) if name.endswith("_") and not name.startswith("__")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(lr=None).partial_fit(X[:300], y[:300], classes=np.arange(10))  # a new stream
        assert model.n_iter_[0] == 1
        good = TorchLogisticRegression(warm_start=True, random_state=0).fit(X, y)
        kept = {name: value for name, value in vars(good).items() if name.endswith("_")}
        with pytest.raises(DivergenceError):
            good.set_params(**bold).fit(X * 1e3, y % 2)
        assert {name: value for name, value in vars(good).items() if name.endswith("_")} == kept
        assert good.score(X, y) > 0.95 and list(good.classes_) == list(range(10))
        good.set_params(solver="lbfgs", lr=None, max_iter=100)
        with pytest.raises(KeyboardInterrupt), _interrupted_runs():
            good.fit(X, y)  # (warm: from the kept fit, interrupted)
        assert good.coef_ is kept["coef_"] and good.fit(X, y).score(X, y) > 0.95


@contextlib.contextmanager
def _interrupted_runs():
    """Every solver's run raises KeyboardInterrupt, as Ctrl-C would."""
    from torchlogreg.sklearn import estimator_fit

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    real = estimator_fit.lbfgs
    estimator_fit.lbfgs = interrupt
    try:
        yield
    finally:
        estimator_fit.lbfgs = real


def test_sgd_stops_once_converged_by_the_clis_rule():
    """A fit ends at the convergence rule's measure (trainer.Convergence), not after every epoch of
    the budget: a few separable rows, whose budget is thousands of full-batch epochs, stop within a
    hundred, quietly; with tol=0 every epoch runs."""
    from torchlogreg.data import rules

    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 0, 0, 1, 1, 1])
    budget = rules.minibatch_epochs("sgd", 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        model = TorchLogisticRegression(solver="sgd", random_state=0).fit(X, y)
    assert model.n_iter_[0] < min(100, budget) and model.score(X, y) == 1.0
    every = TorchLogisticRegression(solver="sgd", tol=0, max_iter=150, random_state=0).fit(X, y)
    assert every.n_iter_[0] == 150


def test_float64_sgd_centres_features_far_from_zero_exactly():
    """The centre is the sample's float64 mean (rounded to float32 it was off by 16 at 1.7e9, and
    that error's curvature made the default lr diverge)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 2)) + 1.7e9 + 50
    y = (X[:, 0] > np.median(X[:, 0])).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = TorchLogisticRegression(solver="sgd", dtype="float64", random_state=0).fit(X, y)
    assert model.score(X, y) > 0.95


def test_weights_that_are_zero_on_every_sampled_row_fall_back_to_unweighted():
    """The sample's weights are taken to mean 1 over the rows it holds; all zero there, the sample
    is read unweighted (it divided by their sum, zero)."""
    from torchlogreg.data import rules

    X = np.random.default_rng(0).normal(size=(4 * rules.CURVATURE_VALUES // 64, 64))
    index, _ = rules._sample(X)
    weights = np.ones(len(X))
    weights[index.numpy()] = 0  # (weight only on rows the sample misses)
    weighted = rules.FeatureSample(X, weights)
    assert weighted.weights is None and weighted.curvature() == rules.FeatureSample(X).curvature()
    weights[index.numpy()] = 2.0
    assert rules.FeatureSample(X, weights).weights.mean() == pytest.approx(1.0)


def test_early_stopping_on_a_set_too_small_to_stratify_its_split(digits):
    """30 rows of 10 classes hold out 3: too few for a stratified split (scikit-learn's "test_size = 3
    should be greater or equal to the number of classes"); the split is then a plain one."""
    X, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = TorchLogisticRegression(solver="sgd", early_stopping=True, random_state=0).fit(X[:30], y[:30])
    assert model.n_iter_[0] >= 1 and model.score(X[:30], y[:30]) > 0.5


def test_early_stopping_keeps_the_best_weights_however_the_epochs_end(monkeypatch):
    """The best weights by validation loss come back when convergence or the budget ends the epochs
    too, not only when patience runs out (here the convergence rule stopped at epoch 51 with the
    validation loss 1.017, its best 0.958 at epoch 12)."""
    from sklearn.datasets import make_classification
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split

    from torchlogreg.core.stopping import EarlyStopping

    X, y = make_classification(400, 20, n_informative=5, n_classes=3, flip_y=0.3, random_state=1)
    losses = []
    real = EarlyStopping.update
    record = lambda self, loss, *args: losses.append(loss) or real(self, loss, *args)  # noqa: E731
    monkeypatch.setattr(EarlyStopping, "update", record)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        settings = {"n_iter_no_change": 100, "max_iter": 60, "tol": 1e-2, "C": 1e4, "random_state": 0}
        model = TorchLogisticRegression(solver="sgd", early_stopping=True, **settings).fit(X, y)
    _, val = train_test_split(np.arange(400), test_size=0.1, random_state=0, stratify=y)  # (the fit's split)
    assert min(losses) < losses[-1] - 0.01  # (the last epoch was not the best)
    assert log_loss(y[val], model.predict_proba(X[val])) == pytest.approx(min(losses), abs=1e-5)
    assert model.optimizer_state_ is None  # (the momentum was the last epoch's)
