"""The model's math: from-scratch softmax/cross-entropy against torch, closed-form gradients
against autograd, and the prediction invariants (the objective against its float64 reference:
test_objective.py)."""

import pytest
import torch
import torch.nn.functional as F

from torchlogreg.core.model import (
    LogisticRegression,
    binary_cross_entropy_with_logits,
    cross_entropy,
    log_softmax,
    softmax,
)

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths

@pytest.mark.parametrize("scale", [1.0, 100.0, 1e4])
def test_softmax_and_cross_entropy_equal_torch(scale):
    logits = torch.randn(32, 10, dtype=torch.float64) * scale
    targets = torch.randint(0, 10, (32,))
    torch.testing.assert_close(softmax(logits), F.softmax(logits, dim=1))
    torch.testing.assert_close(log_softmax(logits), F.log_softmax(logits, dim=1))
    torch.testing.assert_close(cross_entropy(logits, targets), F.cross_entropy(logits, targets))
    assert torch.isfinite(cross_entropy(logits, targets))


def test_binary_cross_entropy_equals_torch():
    logit = torch.randn(50, dtype=torch.float64) * 30
    target = torch.randint(0, 2, (50,)).double()
    torch.testing.assert_close(
        binary_cross_entropy_with_logits(logit, target), F.binary_cross_entropy_with_logits(logit, target)
    )


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_accumulated_gradients_match_autograd(n_classes, dtype):
    model = LogisticRegression(12, n_classes)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()
    x = torch.randint(0, 256, (20, 3, 4)).to(torch.uint8) if dtype == torch.uint8 else torch.rand(20, 3, 4)
    y = torch.randint(0, n_classes, (20,))
    loss = model.loss(model(x), y)
    expected = torch.autograd.grad(0.5 * loss, list(model.parameters()))
    value = model.accumulate_gradients(x, y, factor=0.25)
    model.accumulate_gradients(x, y, factor=0.25)  # accumulates: 0.25 + 0.25
    assert value == pytest.approx(loss.item(), rel=1e-6)
    for param, grad in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6)


def test_uint8_input_is_scaled_like_to_tensor():
    model = LogisticRegression(16, 3)
    with torch.no_grad():
        model.linear.weight.normal_()
    pixels = torch.randint(0, 256, (5, 4, 4), dtype=torch.uint8)
    torch.testing.assert_close(model(pixels), model(pixels.float() / 255))


@pytest.mark.parametrize("n_classes", [2, 4])
def test_prediction_invariants(n_classes):
    model = LogisticRegression(6, n_classes)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_()
    x = torch.rand(30, 6)
    proba = model.predict_proba(x)
    assert proba.shape == (30, n_classes)
    torch.testing.assert_close(proba.sum(1), torch.ones(30))
    assert torch.equal(model.predict(x), proba.argmax(1))


def test_binary_threshold_moves_decisions():
    model = LogisticRegression(3, 2)
    x = torch.rand(100, 3)
    with torch.no_grad():
        model.linear.weight.normal_()
    low, high = model.predict(x, threshold=0.05), model.predict(x, threshold=0.95)
    assert low.sum() >= high.sum()
    assert torch.equal(model.predict(x, 0.5), (model.predict_proba(x)[:, 1] > 0.5).long())


def test_a_tie_goes_to_the_negative_class_as_scikit_learns():
    """P(positive) > threshold, compared as logits: at 0.5, logit > 0 (scikit-learn's decision_function
    > 0). `sigmoid >= 0.5` had called an all-zero model's rows, and logits within ~1e-8 of 0 (which the
    float32 sigmoid rounds to 0.5), positive."""
    model = LogisticRegression(3, 2)
    x = torch.rand(4, 3)
    assert not model.predict(x).any()  # zero weights: every logit 0, P exactly 0.5
    from torchlogreg.core.model import decide

    logits = torch.tensor([[-1e-9], [0.0], [1e-9]])
    assert decide(logits).tolist() == [0, 0, 1]
    assert decide(torch.tensor([[0.0], [1.0]]), threshold=0.7310585786300049).tolist() == [0, 0]


def test_zero_initialised_and_binary_has_one_logit():
    assert LogisticRegression(784, 2).linear.out_features == 1
    model = LogisticRegression(784, 10)
    assert model.linear.out_features == 10
    assert not model.linear.weight.any() and not model.linear.bias.any()


def test_zero_rows_give_zero_logits():
    """A rank's part of a short last batch can be empty under torchrun."""
    model = LogisticRegression(784, 10)
    assert model(torch.zeros(0, 28, 28, dtype=torch.uint8)).shape == (0, 10)
    assert model(torch.zeros(0, 784)).shape == (0, 10)
