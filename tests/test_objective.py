"""The objective (core/objective.py) and every implementation of it against ONE float64 reference: the
fused C kernel and the PyTorch path through `Objective` (gradients, and the forward-only loss), and
the evaluators of the estimator's L-BFGS (NumPy, the fused kernel, the device) with the penalty
that solvers.SmoothLoss and the L-BFGS driver add, the teaching losses of core/model.py that the
demos use, and its public closed-form gradient (model.loss_gradient). Binary (one logit) and
multiclass, with and without penalties and sample weights. Sample weights have mean 1,
where the engine's sum(s l) / n and scikit-learn's sum(s l) / sum(s) agree (the estimator scales
them so)."""

from collections.abc import Callable

import numpy as np
import pytest
import scipy.special
import torch

from torchlogreg.core import fused
from torchlogreg.core.lbfgs import LBFGS
from torchlogreg.core.model import (
    LogisticRegression,
    binary_cross_entropy_with_logits,
    cross_entropy,
    loss_gradient,
)
from torchlogreg.core.objective import Objective
from torchlogreg.data.batches import MemoryBatches
from torchlogreg.sklearn.solvers import DeviceLoss, FusedLoss, HostLoss, Packing, SmoothLoss

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths

ROWS, FEATURES = 300, 20


def reference(W, b, X, y, sw, objective: Objective) -> tuple[float, np.ndarray, np.ndarray]:
    """The objective and its gradient in (W, b), in float64 NumPy, written from the definition."""
    logits = X @ W.T + b
    if W.shape[0] == 1:
        z = logits[:, 0]
        losses = np.logaddexp(0.0, z) - y * z
        residual = (scipy.special.expit(z) - y)[:, None]
    else:
        log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        losses = -log_p[np.arange(len(y)), y]
        residual = np.exp(log_p)
        residual[np.arange(len(y)), y] -= 1.0
    share = sw / sw.sum()
    penalty = 0.5 * objective.weight_decay * np.sum(W**2) + objective.l1 * np.abs(W).sum()
    gradient = (residual * share[:, None]).T @ X + objective.weight_decay * W + objective.l1 * np.sign(W)
    return float(share @ losses) + penalty, gradient, (residual * share[:, None]).sum(axis=0)


def _model(W, b, dtype) -> LogisticRegression:
    model = LogisticRegression(W.shape[1], max(W.shape[0], 2)).to(dtype)
    with torch.no_grad():
        model.linear.weight.copy_(torch.from_numpy(W))
        model.linear.bias.copy_(torch.from_numpy(b))
    return model


def _tensors(X, y, sw, dtype):
    weights = None if sw is None else torch.from_numpy(sw).to(dtype)
    return torch.from_numpy(X).to(dtype), torch.from_numpy(y), weights


def through_objective(dtype: torch.dtype) -> Callable:
    """Objective.add_data_gradients + the penalty: the engine's step (fused kernel for float32)."""

    def evaluate(W, b, X, y, sw, objective):
        model = _model(W, b, dtype)
        x, labels, weights = _tensors(X, y, sw, dtype)
        loss = Objective.add_data_gradients(model, x, labels, len(y), weights)
        objective.add_penalty_gradients(model.linear.weight)
        grads = (p.grad.double().numpy() for p in (model.linear.weight, model.linear.bias))
        return loss + objective.penalty(model.linear.weight), *grads

    return evaluate


def forward_only(dtype: torch.dtype) -> Callable:
    """Objective.data_loss + the penalty: the value alone (evaluation's and the estimator's epochs)."""

    def evaluate(W, b, X, y, sw, objective):
        model = _model(W, b, dtype)
        x, labels, weights = _tensors(X, y, sw, dtype)
        return Objective.data_loss(model, x, labels, len(y), weights) + objective.penalty(model.linear.weight)

    return evaluate


def through_lbfgs(make_loss: Callable) -> Callable:
    """An evaluator of the estimator's L-BFGS: SmoothLoss's data term and L2 in its centred, scaled
    coordinates, then the driver's L1 (its value, and where W != 0 its subgradient g + l1 sign(W)),
    the gradient taken back to (W, b)."""

    def evaluate(W, b, X, y, sw, objective):
        weights = np.ones(len(y)) if sw is None else sw
        packing = Packing(W.shape, fit_intercept=True)
        scale = np.linspace(0.5, 2.0, packing.length)
        loss = make_loss(X, y, weights, W.shape[0])
        smooth = SmoothLoss(loss, objective, packing, scale, X.mean(axis=0) + 1.0)
        driver = LBFGS(smooth.to_vector(W, b), l1=packing.l1_weights(objective.l1) / scale)
        grad_coef, grad_intercept = smooth.gradients(driver.subgradient(smooth))
        return driver.value, grad_coef, grad_intercept

    return evaluate


def _device_loss(X, y, weights, n_outputs):
    model = LogisticRegression(X.shape[1], max(n_outputs, 2)).double()
    source = MemoryBatches(torch.from_numpy(X), torch.from_numpy(y), 128, torch.from_numpy(weights))
    return DeviceLoss(model, source, float(weights.sum()))


IMPLEMENTATIONS = {  # name: (evaluate, float64?, needs the fused kernel?)
    "fused kernel": (through_objective(torch.float32), False, True),
    "pytorch float64": (through_objective(torch.float64), True, False),
    "forward, fused kernel": (forward_only(torch.float32), False, True),
    "forward, pytorch float64": (forward_only(torch.float64), True, False),
    "lbfgs, numpy float64": (through_lbfgs(HostLoss), True, False),
    "lbfgs, fused kernel": (through_lbfgs(FusedLoss), False, True),
    "lbfgs, device float64": (through_lbfgs(_device_loss), True, False),
}


@pytest.mark.parametrize("name", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("outputs", [1, 7], ids=["binary", "multiclass"])
@pytest.mark.parametrize(
    "penalty", [Objective(), Objective(0.3), Objective(0.2, 0.05)], ids=["none", "l2", "l2+l1"]
)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_every_implementation_equals_the_float64_reference(name, outputs, penalty, weighted):
    evaluate, float64, needs_kernel = IMPLEMENTATIONS[name]
    if needs_kernel and not fused.available():
        pytest.skip("the fused extension is not built")
    W, b, X, y, sw = _problem(outputs, weighted, float64)
    _assert_equal(evaluate(W, b, X, y, sw, penalty), reference(W, b, X, y, _ones_or(sw), penalty), float64)


@pytest.mark.parametrize("outputs", [1, 7], ids=["binary", "multiclass"])
@pytest.mark.parametrize("penalty", [Objective(), Objective(0.3, 0.05)], ids=["none", "l2+l1"])
def test_the_teaching_losses_equal_the_float64_reference(outputs, penalty):
    """model.cross_entropy and binary_cross_entropy_with_logits (the demos' from-scratch losses, which
    take no sample weights) + the penalty, gradients by autograd."""
    W, b, X, y, _ = _problem(outputs, weighted=False, float64=True)
    weight, bias = torch.from_numpy(W).requires_grad_(), torch.from_numpy(b).requires_grad_()
    logits = torch.from_numpy(X) @ weight.T + bias
    labels = torch.from_numpy(y)
    if outputs == 1:
        loss = binary_cross_entropy_with_logits(logits[:, 0], labels)
    else:
        loss = cross_entropy(logits, labels)
    objective = loss + 0.5 * penalty.weight_decay * weight.square().sum() + penalty.l1 * weight.abs().sum()
    objective.backward()
    got = float(objective), weight.grad.numpy(), bias.grad.numpy()
    _assert_equal(got, reference(W, b, X, y, np.ones(ROWS), penalty), float64=True)


@pytest.mark.parametrize("outputs", [1, 7], ids=["binary", "multiclass"])
def test_loss_gradient_equals_the_float64_reference(outputs):
    """model.loss_gradient (d mean loss / d logits, the closed form of the tutorial), carried to W and b
    by the chain rule: logits = X W^T + b."""
    W, b, X, y, _ = _problem(outputs, weighted=False, float64=True)
    logits = torch.from_numpy(X @ W.T + b)
    residual = loss_gradient(logits, torch.from_numpy(y)).numpy()
    assert residual.shape == logits.shape
    _, grad_weight, grad_bias = reference(W, b, X, y, np.ones(ROWS), Objective())
    _assert_equal((residual.T @ X, residual.sum(axis=0)), (grad_weight, grad_bias), float64=True)


def _problem(outputs: int, weighted: bool, float64: bool):
    """(W, b, X, y, sample weights or None): X exact in float32; W, b too unless `float64`."""
    rng = np.random.default_rng(outputs + 10 * weighted)
    X = rng.random((ROWS, FEATURES)).astype(np.float32).astype(np.float64)
    y = rng.integers(0, max(outputs, 2), ROWS)
    W, b = rng.normal(size=(outputs, FEATURES)), rng.normal(size=outputs)
    if not float64:  # the float32 implementations see float32 weights: so does the reference
        W, b = W.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    # weights 0.25 and 1.75 half each, in a random order: a mean of exactly 1, exact in float32
    sw = rng.permutation(np.resize([0.25, 1.75], ROWS)) if weighted else None
    return W, b, X, y, sw


def _ones_or(sw: np.ndarray | None) -> np.ndarray:
    return np.ones(ROWS) if sw is None else sw


def _assert_equal(got, expected: tuple, float64: bool) -> None:
    """`got` (the objective, or the objective and its gradients) equals the reference's to float64's
    or float32's precision."""
    got = got if isinstance(got, tuple) else (got,)
    rtol, atol = (1e-10, 1e-12) if float64 else (1e-5, 1e-6)
    for value, wanted in zip(got, expected, strict=False):
        np.testing.assert_allclose(value, wanted, rtol=rtol, atol=atol)


def test_the_penalty_leaves_the_bias_alone_and_its_smooth_part_drops_l1():
    objective = Objective(weight_decay=2.0, l1=0.5)
    weight = torch.tensor([[1.0, -2.0]], requires_grad=True)
    assert objective.penalty(weight) == pytest.approx(0.5 * 2.0 * 5.0 + 0.5 * 3.0)
    weight.grad = torch.zeros_like(weight)
    objective.add_penalty_gradients(weight)
    torch.testing.assert_close(weight.grad, torch.tensor([[2.5, -4.5]]))
    assert objective.smooth == Objective(weight_decay=2.0)


def test_the_penalty_gradient_refuses_a_tensor_and_an_array_mixed():
    """NumPy weights add into a NumPy grad (the estimator's L-BFGS), tensors into tensors; mixed, a
    NumPy weight's `grad +=` would only rebind a name and leave the tensor as it was."""
    objective = Objective(weight_decay=0.5)
    grad = np.zeros(2)
    objective.add_penalty_gradients(np.array([1.0, -2.0]), grad)
    assert grad.tolist() == [0.5, -1.0]
    for weight, grad in ((np.ones(2), torch.zeros(2)), (torch.ones(2), np.zeros(2)), (np.ones(2), None)):
        with pytest.raises(TypeError, match="both be tensors or both NumPy arrays"):
            objective.add_penalty_gradients(weight, grad)
