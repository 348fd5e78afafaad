"""The one L-BFGS driver (core/lbfgs.py), on its own: scikit-learn's optimum without and with L1
(OWL-QN's exact zeros), a resume from its state that takes the same steps, trial steps whose
objective overflows, and states that do not fit."""

import numpy as np
import pytest
import scipy.optimize
import scipy.special
from sklearn.datasets import load_digits

from torchlogreg.core.lbfgs import HISTORY, LBFGS, MIN_HISTORY, PAIRS_BYTES, history_for


@pytest.fixture(scope="module")
def problem():
    """Softmax regression on 600 of scikit-learn's 8x8 digits, float64: evaluate(x) -> (f, gradient),
    with f the mean log-loss plus l2 / 2 |W|^2 (x = W then b)."""
    X, y = load_digits(return_X_y=True)
    X, y = X[:600] / 16.0, y[:600]
    n, d, k = len(y), X.shape[1], 10
    onehot = np.eye(k)[y]

    def make(l2: float):
        def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
            W, b = x[: k * d].reshape(k, d), x[k * d :]
            logits = X @ W.T + b
            loss = float((scipy.special.logsumexp(logits, axis=1) - logits[np.arange(n), y]).mean())
            residual = (scipy.special.softmax(logits, axis=1) - onehot) / n
            gradient = np.concatenate([(residual.T @ X + l2 * W).ravel(), residual.sum(0)])
            return loss + l2 / 2 * float((W * W).sum()), gradient

        return evaluate

    return make, k * d + k, k * d, n


def _run(driver: LBFGS, evaluate, tol: float, limit: int = 2000) -> LBFGS:
    while driver.gradient_max(evaluate) > tol:
        assert driver.iterations < limit and driver.step(evaluate), driver.stopped
    return driver


def test_reaches_the_optimum_of_scipys_lbfgsb_in_as_many_iterations(problem):
    make, size, _, n = problem
    evaluate = make(1.0 / n)
    driver = _run(LBFGS(np.zeros(size), history=10), evaluate, 1e-6)
    theirs = scipy.optimize.minimize(
        evaluate,
        np.zeros(size),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 5000, "gtol": 1e-6, "ftol": 0.0, "maxls": 50},
    )
    assert driver.gradient_max(evaluate) <= 1e-6
    assert driver.value == pytest.approx(theirs.fun, abs=1e-8)  # both within gtol of the optimum
    assert driver.iterations <= 1.25 * theirs.nit


def test_l1_ends_with_exact_zeros_where_the_subgradient_allows(problem):
    make, size, weights, n = problem
    evaluate, l1 = make(0.0), 10.0 / n
    penalties = np.zeros(size)
    penalties[:weights] = l1
    driver = _run(LBFGS(np.zeros(size), l1=penalties), evaluate, 1e-6)
    x, gradient = driver.x, driver.gradient
    zero = x[:weights] == 0
    assert 0 < int(zero.sum()) < weights  # a sparse model, not a trivial one
    # optimality: |g| <= l1 at the zeros, g = -l1 sign(x) elsewhere, g = 0 on the intercept
    assert np.abs(gradient[:weights][zero]).max() <= l1 + 1e-6
    nonzero = gradient[:weights][~zero] + l1 * np.sign(x[:weights][~zero])
    assert np.abs(nonzero).max() <= 1e-6 and np.abs(gradient[weights:]).max() <= 1e-6
    assert driver.value == pytest.approx(evaluate(x)[0] + l1 * np.abs(x[:weights]).sum(), abs=1e-12)


@pytest.mark.parametrize("l1", [0.0, 0.01])
def test_a_driver_loaded_from_state_takes_the_same_steps(problem, l1):
    make, size, _, n = problem
    evaluate = make(1.0 / n)
    straight, first = LBFGS(np.zeros(size), l1=l1), LBFGS(np.zeros(size), l1=l1)
    for _ in range(12):
        straight.step(evaluate)
        first.step(evaluate)
    state = {name: np.array(value) for name, value in first.state_dict().items()}
    resumed = LBFGS(np.zeros(size), l1=l1)
    resumed.load_state_dict(state)
    for _ in range(12):
        straight.step(evaluate)
        resumed.step(evaluate)
    assert np.array_equal(straight.x, resumed.x) and straight.value == resumed.value
    assert resumed.iterations == 24


def test_a_step_that_overflows_is_backed_off():
    """f = |x - 3|^2 where |x| < 10 and inf beyond: a first trial step of 100 lands in the overflow;
    the search backs off and the minimum is still reached."""

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        if np.abs(x).max() >= 10:
            return float("inf"), np.full_like(x, np.nan)
        return float(((x - 3) ** 2).sum()), 2 * (x - 3)

    driver = LBFGS(np.zeros(4))
    assert driver.step(evaluate, lr=100.0)
    _run(driver, evaluate, 1e-9, limit=50)
    np.testing.assert_allclose(driver.x, 3.0)


@pytest.mark.parametrize("l1", [0.0, 0.1], ids=["wolfe", "owl-qn"])
@pytest.mark.parametrize("lr", [1e12, 1e23, 3.4e38])
def test_a_first_step_far_too_long_is_cut_to_one_that_lowers_the_objective(lr, l1):
    """--lr 1e23 made L-BFGS's first trial step some 1e20 times too long: past float32's overflow, or
    finite but huge. Halving it, the search's 25 evaluations ended near 1e13 times too long, and the
    run stopped at its untrained start. The step is now cut to one that lowers F, with and without
    L1, and every later step (each tried first at lr) too: the minimum is reached. F = |x - 3|^2 (+ l1
    |x|_1), inf beyond |x| = 1e19, where float32's square overflows."""

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        if np.abs(x).max() >= 1e19:
            return float("inf"), np.full_like(x, np.nan)
        return float(((x - 3) ** 2).sum()), 2 * (x - 3)

    driver = LBFGS(np.zeros(4), l1=l1)
    while driver.gradient_max(evaluate) > 1e-9:
        assert driver.iterations < 30 and driver.step(evaluate, lr=lr), driver.stopped
    np.testing.assert_allclose(driver.x, 3.0 - l1 / 2)


def test_a_non_finite_start_is_refused_with_its_reason():
    driver = LBFGS(np.zeros(3))
    assert not driver.step(lambda x: (float("nan"), np.zeros_like(x)))
    assert driver.stopped == "the objective is nan where the search starts"


def test_arithmetic_is_in_the_dtype_of_the_start():
    driver = LBFGS(np.zeros(3, dtype=np.float32))
    assert driver.step(lambda x: (float(((x - 1) ** 2).sum()), 2 * (x - 1)))
    assert driver.x.dtype == driver.gradient.dtype == driver.steps_kept.dtype == np.float32


@pytest.mark.parametrize(
    "change,named",
    [
        (lambda state: state.pop("steps_grads"), "expected the entries"),
        (lambda state: state.update(x=np.zeros(5)), "'x' should have shape (4,)"),
        (lambda state: state.update(counts=np.array([11, 0, 3])), "counts [11, 0, 3]"),
        (lambda state: state["gradient"].fill(np.nan), "'gradient' holds a value that is not finite"),
    ],
)
def test_a_state_that_does_not_fit_is_refused_by_name(change, named):
    driver = LBFGS(np.zeros(4))
    driver.step(lambda x: (float(((x - 1) ** 2).sum()), 2 * (x - 1)))
    state = {name: np.array(value) for name, value in driver.state_dict().items()}
    change(state)
    with pytest.raises(ValueError) as raised:
        LBFGS(np.zeros(4)).load_state_dict(state)
    assert named in str(raised.value)


def test_a_gradient_that_is_not_finite_is_named_not_taken_for_zero():
    driver = LBFGS(np.zeros(3))
    assert not driver.step(lambda x: (1.0, np.full_like(x, np.nan)))
    assert driver.stopped == "the gradient is not finite where the search starts"


def test_history_keeps_the_pairs_that_fit_in_memory():
    """MNIST's 7,850 weights keep HISTORY pairs; a model too wide for them keeps as many as fit in
    PAIRS_BYTES, never fewer than scikit-learn's 10."""
    assert history_for(7_850) == HISTORY
    wide = PAIRS_BYTES // (2 * 8 * 20)  # 20 pairs of float64 vectors fit
    assert history_for(wide) == 20 and history_for(wide, itemsize=4) == HISTORY
    assert history_for(10**9) == MIN_HISTORY == 10
    assert history_for(7_850, l1=True) == MIN_HISTORY  # OWL-QN: scikit-learn's 10


def test_history_must_keep_a_pair():
    with pytest.raises(ValueError, match="history must be at least 1, got 0"):
        LBFGS(np.zeros(3), history=0)


def _random_objective(kind: int, A: np.ndarray, c: np.ndarray):
    """A log-sum-exp (kind 0), a non-convex (1) or a quadratic (2) objective in 5 variables."""

    def objective(x: np.ndarray) -> tuple[float, np.ndarray]:
        if kind == 0:
            z = A @ x + c
            return float(scipy.special.logsumexp(z) + 0.01 * x @ x), A.T @ scipy.special.softmax(z) + 0.02 * x
        if kind == 1:
            return float(np.sin(x).sum() + 0.1 * x @ x), np.cos(x) + 0.2 * x
        return float(((A @ x - c) ** 2).sum()), 2 * A.T @ (A @ x - c)

    return objective


@pytest.mark.parametrize("trial", range(60))
def test_the_line_search_tries_the_steps_torchs_tries(trial):
    """The ported strong-Wolfe search against torch's own on a random search: the same trial steps (to
    rounding: x + t d is formed in another order) and the same answer."""
    import torch
    from torch.optim.lbfgs import _strong_wolfe as torchs

    from torchlogreg.core.lbfgs import _strong_wolfe as ours

    rng = np.random.default_rng(trial)
    objective = _random_objective(trial % 3, rng.normal(size=(5, 5)), 3 * rng.normal(size=5))
    x, first = rng.normal(size=5), float(rng.choice([1.0, 0.1, 10.0, 1e-3]))
    f, g = objective(x)
    d = -g * rng.uniform(0.01, 5)
    our_steps, their_steps = [], []

    def along(t: float):
        our_steps.append(t)
        return objective(x + t * d)

    def their_along(x_t: torch.Tensor, t, d_t: torch.Tensor):
        their_steps.append(float(t))
        value, gradient = objective(x_t.numpy() + float(t) * d_t.numpy())
        return value, torch.from_numpy(gradient)

    value, _, step = ours(along, d, first, f, g, float(g @ d), 25)
    tensor = torch.from_numpy
    their_value, _, their_step, _ = torchs(
        their_along,
        tensor(x),
        first,
        tensor(d),
        f,
        tensor(g),
        torch.tensor(float(g @ d), dtype=torch.float64),
        max_ls=25,
    )
    np.testing.assert_allclose(our_steps, their_steps, rtol=1e-9)
    assert value == pytest.approx(float(their_value), rel=1e-12)
    assert step == pytest.approx(float(their_step), rel=1e-9)
