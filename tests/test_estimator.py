"""The scikit-learn estimator: scikit-learn's own estimator checks, its interface and attributes,
input containers, pickling and model selection, and agreement with scikit-learn's LogisticRegression."""

import pickle

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.estimator_checks import parametrize_with_checks

from torchlogreg.estimator import NotFittedError, TorchLogisticRegression

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths

# Checks expected to fail, each with its reason (kept short on purpose).

FLOAT32 = "float32 arithmetic agrees to ~1e-6; the check asks 1e-7 (dtype='float64' passes, tested below)"
STOCHASTIC = "mini-batch SGD sees a repeated sample in other batches than its weighted twin: close, not equal"


def _expected_failures(estimator):
    reason = STOCHASTIC if estimator.solver != "lbfgs" else FLOAT32
    return {f"check_sample_weight_equivalence_on_{kind}_data": reason for kind in ("dense", "sparse")}


@parametrize_with_checks(
    [TorchLogisticRegression(), TorchLogisticRegression(solver="sgd", max_iter=30, random_state=0)],
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
    kwargs = dict(dtype="float64", tol=1e-6, max_iter=3000)
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
    multi = TorchLogisticRegression(max_iter=50).fit(X, y)
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
    clf = TorchLogisticRegression(max_iter=50).fit(X, y)
    proba = clf.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-6)
    np.testing.assert_allclose(np.log(proba), clf.predict_log_proba(X), rtol=1e-5, atol=1e-8)
    assert (clf.classes_[proba.argmax(1)] == clf.predict(X)).all()


def test_string_labels(digits):
    X, y = digits
    names = np.array(["zero", "one", "two"])[y[y < 3]]
    clf = TorchLogisticRegression().fit(X[y < 3], names)
    assert set(clf.predict(X[y < 3])) <= set(names) and list(clf.classes_) == ["one", "two", "zero"]


def test_input_containers_agree(digits):
    X, y = digits
    reference = TorchLogisticRegression(max_iter=30).fit(X, y).predict_proba(X)
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    from_frame = TorchLogisticRegression(max_iter=30).fit(frame, y)
    assert list(from_frame.feature_names_in_) == list(frame.columns)
    np.testing.assert_allclose(from_frame.predict_proba(frame), reference, atol=1e-5)
    from_tensor = TorchLogisticRegression(max_iter=30).fit(torch.tensor(X), torch.tensor(y))
    np.testing.assert_allclose(from_tensor.predict_proba(torch.tensor(X)), reference, atol=1e-5)
    from_sparse = TorchLogisticRegression(max_iter=30).fit(sp.csr_matrix(X), y)
    np.testing.assert_allclose(from_sparse.predict_proba(sp.csr_matrix(X)), reference, atol=1e-5)


def test_sparse_sgd_densifies_only_batches(digits):
    X, y = digits
    clf = TorchLogisticRegression(solver="sgd", max_iter=10, random_state=0).fit(sp.csr_matrix(X), y)
    assert clf.score(X, y) > 0.95


def test_pickle_and_clone(digits):
    X, y = digits
    clf = TorchLogisticRegression(max_iter=30).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    assert restored.model_.linear.weight.device.type == "cpu"
    fresh = clone(clf)
    assert fresh.get_params() == clf.get_params() and not hasattr(fresh, "model_")


def test_pipeline_grid_search_and_cross_validation(digits):
    X, y = digits
    pipeline = make_pipeline(StandardScaler(), TorchLogisticRegression(max_iter=50))
    search = GridSearchCV(pipeline, {"torchlogisticregression__C": [0.1, 1.0]}, cv=3, n_jobs=1).fit(X, y)
    assert search.best_score_ > 0.9
    assert cross_val_score(TorchLogisticRegression(max_iter=50), X, y, cv=3).mean() > 0.9


def test_convergence_warning_when_max_iter_is_too_small(digits):
    with pytest.warns(ConvergenceWarning, match="max_iter=2"):
        TorchLogisticRegression(max_iter=2).fit(*digits)


def test_partial_fit_on_chunks(digits):
    X, y = digits
    clf = TorchLogisticRegression(solver="sgd", lr=0.1, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X[:100], y[:100])
    for _ in range(5):
        for start in range(0, len(y), 300):
            clf.partial_fit(X[start : start + 300], y[start : start + 300], classes=np.arange(10))
    assert clf.score(X, y) > 0.93 and clf.n_iter_[0] == 5 * 6


def test_class_weight_balanced_equals_the_sample_weights(digits):
    X, y = digits[0][:400], digits[1][:400] % 2
    from sklearn.utils.class_weight import compute_sample_weight

    by_class = TorchLogisticRegression(class_weight="balanced", dtype="float64").fit(X, y)
    by_sample = TorchLogisticRegression(dtype="float64").fit(
        X, y, sample_weight=compute_sample_weight("balanced", y)
    )
    np.testing.assert_allclose(by_class.coef_, by_sample.coef_, atol=1e-6)


def test_l1_penalty_shrinks_weights(digits):
    X, y = digits
    plain = TorchLogisticRegression(solver="sgd", max_iter=10, random_state=0).fit(X, y)
    lasso = TorchLogisticRegression(solver="sgd", penalty="l1", C=0.01, max_iter=10, random_state=0).fit(X, y)
    assert np.abs(lasso.coef_).sum() < 0.5 * np.abs(plain.coef_).sum()


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
        ({"penalty": "elasticnet"}, "penalty='elasticnet' needs l1_ratio"),
        ({"penalty": "l1"}, "penalty='l1' is not supported by solver='lbfgs'"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda, cuda:N or mps"),
    ],
)
def test_parameter_errors_name_the_parameter(digits, params, fragment):
    with pytest.raises(ValueError) as error:
        TorchLogisticRegression(**params).fit(*digits)
    assert fragment in str(error.value)


def test_bad_arrays_are_refused(digits):
    X, y = digits
    clf = TorchLogisticRegression(max_iter=10).fit(X, y)
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
    model = TorchLogisticRegression(max_iter=30).fit(X, y)
    model.coef_[:] = 0
    model.intercept_[:] = 0
    model.intercept_[3] = 1.0
    assert (model.predict(X) == 3).all()
    model.sparsify()
    assert sp.issparse(model.coef_) and (model.predict(X) == 3).all()
    assert isinstance(model.densify().coef_, np.ndarray)


def test_coef_has_the_inputs_float_dtype(digits):
    X, y = digits
    assert TorchLogisticRegression(max_iter=5).fit(X.astype(np.float32), y).coef_.dtype == np.float32
    assert TorchLogisticRegression(max_iter=5).fit(X, y).coef_.dtype == np.float64


def test_logistic_regressions_other_parameters_are_accepted(digits):
    X, y = digits
    model = TorchLogisticRegression(C=np.inf, max_iter=20, n_jobs=2, dual=False, intercept_scaling=2.0)
    assert model.fit(X[:200], y[:200]).score(X[:200], y[:200]) > 0.9
    with pytest.warns(ConvergenceWarning, match="failed to converge"):
        untrained = TorchLogisticRegression(max_iter=0).fit(X, y)
    assert untrained.n_iter_[0] == 0 and not untrained.coef_.any()
    with pytest.warns(UserWarning, match="penalty=None will ignore the C"):
        TorchLogisticRegression(penalty=None, C=0.1, max_iter=5).fit(X, y)
