"""The fused CPU kernels against the PyTorch path they replace: gradients and losses against autograd
in float64, evaluation sums against `evaluate`'s plain path, the fallbacks, and bad labels."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import torchlogreg as tl
from torchlogreg.base.devices import cpu_threads
from torchlogreg.core import fused
from torchlogreg.core.model import PIXEL_SCALE, LogisticRegression
from torchlogreg.training.evaluation import evaluate

pytestmark = pytest.mark.numerics  # compares floats across code paths: CI reruns it under other MKL paths


@pytest.fixture(autouse=True)
def _built():
    if not fused.available():
        if shutil.which("cc") is None and shutil.which("gcc") is None:
            pytest.skip("no C compiler here, so torchlogreg.core._fused was not built")
        pytest.fail(
            "torchlogreg.core._fused is not built although a C compiler is here: pip install -e . again"
        )


@pytest.fixture(params=["avx512", "avx2", "baseline"])
def isa(request):
    """Each version of the kernels this CPU can run (the others skip), as each CPU picks its own."""
    if request.param not in fused.instruction_sets():
        pytest.skip(f"this CPU cannot run the {request.param} kernels")
    with fused.instruction_set(request.param):
        yield request.param


@pytest.fixture
def plain(monkeypatch):
    """The PyTorch path everywhere, as where the extension is not built."""
    monkeypatch.setattr(fused, "_fused", None)


def _model(features: int, classes: int, seed: int = 0) -> LogisticRegression:
    model = LogisticRegression(features, classes)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def _data(rows: int, features: int, classes: int, dtype: torch.dtype, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (rows, features), generator=generator, dtype=torch.uint8)
    x[:, : features // 3] = 0  # blank chunks, as MNIST's borders: the kernel skips them
    if dtype == torch.float32:
        x = x.float() * PIXEL_SCALE
    labels = torch.randint(0, 2 if classes == 2 else classes, (rows,), generator=generator)
    weights = torch.rand(rows, generator=generator) * 2
    return x, labels, weights


def _autograd(model, x, labels, weights, index):
    """d/d(params) of the weighted mean loss over rows `index`, in float64 with autograd."""
    rows = torch.arange(len(labels)) if index is None else index
    features = x[rows].double() * (PIXEL_SCALE if x.dtype == torch.uint8 else 1.0)
    weight = model.linear.weight.detach().double().requires_grad_()
    bias = model.linear.bias.detach().double().requires_grad_()
    logits = features @ weight.T + bias
    if model.binary:
        losses = F.binary_cross_entropy_with_logits(logits[:, 0], labels[rows].double(), reduction="none")
    else:
        losses = F.cross_entropy(logits, labels[rows], reduction="none")
    w = torch.ones(len(rows), dtype=torch.float64) if weights is None else weights[rows].double()
    loss = (losses * w).sum() / len(rows)
    return (loss.item(), *torch.autograd.grad(loss, [weight, bias]))


def _fused_gradient(model, x, labels, weights, index, factor=1.0):
    assert fused.usable(model.linear.weight, model.linear.bias, x, labels, weights, index)
    with cpu_threads(1):
        return model.accumulate_gradients(x, labels, factor, weights, index=index)


@pytest.mark.parametrize("classes", [2, 3, 10, 13])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("indexed", [False, True])
def test_gradient_matches_autograd(classes, dtype, weighted, indexed, isa):
    features, rows = 37, 23  # neither a multiple of any vector width, nor of the row block
    model = _model(features, classes)
    x, labels, weights = _data(60, features, classes, dtype)
    weights = weights if weighted else None
    index = torch.randperm(60, generator=torch.Generator().manual_seed(1))[:rows] if indexed else None
    if index is None:
        x, labels = x[:rows].contiguous(), labels[:rows].contiguous()
        weights = None if weights is None else weights[:rows].contiguous()
    loss = _fused_gradient(model, x, labels, weights, index)
    expected_loss, expected_weight, expected_bias = _autograd(model, x, labels, weights, index)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(model.linear.weight.grad.double(), expected_weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.linear.bias.grad.double(), expected_bias, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("classes", [3, 17, 40])
def test_the_softmax_holds_over_the_whole_range_of_scores(classes, isa):
    """Scores whose gaps to the top run from 0 to beyond float32's smallest exponential (e^-87), as a
    confident model's do: the kernel's exponentials (a vector at a time) give the float64 loss and
    gradient, the classes far below the top exactly 0, for the gradient and the evaluation's sums."""
    features, rows = 21, 50
    model = _model(features, classes)
    with torch.no_grad():  # gaps of 0 to about 130 between the classes' scores
        model.linear.bias.copy_(-torch.linspace(0.0, 130.0, classes)[torch.randperm(classes)])
    x, labels, weights = _data(rows, features, classes, torch.float32)
    loss = _fused_gradient(model, x, labels, weights, None)
    expected_loss, expected_weight, expected_bias = _autograd(model, x, labels, weights, None)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    torch.testing.assert_close(model.linear.weight.grad.double(), expected_weight, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.linear.bias.grad.double(), expected_bias, rtol=1e-5, atol=1e-7)
    summed, correct = fused.sums(model.linear.weight, model.linear.bias, x, labels, 1.0, weights)
    assert summed / rows == pytest.approx(expected_loss, rel=1e-6)
    assert correct == (model(x).argmax(1) == labels).sum().item()


def test_the_kernels_count_a_tie_as_the_negative_class():
    """The evaluation's sums use model.decide's rule: one logit, positive where it is above the
    threshold's logit; a tie (logit 0 at 0.5) is negative, scikit-learn's rule."""
    model = _model(4, 2)
    x, labels = torch.rand(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    with torch.no_grad():
        model.linear.weight.zero_()
    _, correct = fused.sums(model.linear.weight, model.linear.bias, x, labels, 1.0)
    assert correct == 3 == (model.predict(x) == labels).sum().item()


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.9])
def test_the_kernels_count_as_decide_next_to_the_threshold(threshold):
    """Logits a float32 step either side of the threshold's logit (the smallest normal ones around 0),
    and on it: the kernel's count of right answers is decide's, at any threshold (it compares the same
    float32 values)."""
    from torchlogreg.core.model import decide, threshold_logit

    at = torch.tensor(threshold_logit(threshold), dtype=torch.float32)
    step = torch.finfo(torch.float32).tiny if at == 0 else 0  # (the kernel flushes subnormals to 0)
    logits = torch.stack([torch.nextafter(at - step, at - 1), at, torch.nextafter(at + step, at + 1)])
    model = _model(1, 2)
    x = torch.ones(3, 1)
    with torch.no_grad():
        model.linear.weight.zero_()
        model.linear.bias.zero_()
    for label in (0, 1):
        labels = torch.full((3,), label)
        expected = (decide(logits[:, None], threshold) == labels).sum().item()
        weight, bias = model.linear.weight.detach().clone(), logits  # (a bias per row: one row at a time)
        counted = sum(
            fused.sums(weight, bias[i : i + 1], x[i : i + 1], labels[i : i + 1], 1.0, threshold=threshold)[1]
            for i in range(3)
        )
        assert counted == expected
    assert decide(logits[:, None], threshold).tolist() == [0, 0, 1]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 19),
    features=st.integers(1, 70),
    classes=st.integers(2, 12),
    dtype=st.sampled_from([torch.uint8, torch.float32]),
    seed=st.integers(0, 2**16),
)
def test_gradient_matches_autograd_for_any_shape(rows, features, classes, dtype, seed):
    for name in fused.instruction_sets():
        with fused.instruction_set(name):
            _check_any_shape(rows, features, classes, dtype, seed)


def _check_any_shape(rows, features, classes, dtype, seed):
    model = _model(features, classes, seed)
    x, labels, weights = _data(rows, features, classes, dtype, seed)
    loss = _fused_gradient(model, x, labels, weights, None)
    expected_loss, expected_weight, expected_bias = _autograd(model, x, labels, weights, None)
    assert loss == pytest.approx(expected_loss, rel=1e-5, abs=1e-7)
    torch.testing.assert_close(model.linear.weight.grad.double(), expected_weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.linear.bias.grad.double(), expected_bias, rtol=1e-4, atol=1e-6)


def test_parts_of_a_batch_add_up(plain):
    """Gradients accumulate across calls (chunks, ranks), on either path, to the same values."""
    model = _model(20, 4)
    x, labels, _ = _data(30, 20, 4, torch.uint8)
    results = {}
    for path in ("plain", "fused"):
        if path == "fused":
            fused._fused = pytest.importorskip("torchlogreg.core._fused")
        model.zero_grad(set_to_none=True)
        with cpu_threads(1):
            first = model.accumulate_gradients(x[:11].contiguous(), labels[:11].contiguous(), 11 / 30)
            second = model.accumulate_gradients(x[11:].contiguous(), labels[11:].contiguous(), 19 / 30)
        results[path] = (first * 11 / 30 + second * 19 / 30, model.linear.weight.grad.clone())
    assert results["fused"][0] == pytest.approx(results["plain"][0], rel=1e-5)
    torch.testing.assert_close(results["fused"][1], results["plain"][1], rtol=1e-4, atol=1e-6)


def test_a_rows_contribution_does_not_depend_on_its_batch(isa):
    """Rows are scored one by one in a fixed order, so a batch's gradient is the same bits whether its
    rows are read in place or by index from a larger set (no BLAS kernel chosen by the set's size)."""
    model = _model(784, 10)
    x, labels, _ = _data(64, 784, 10, torch.uint8)
    _fused_gradient(model, x[:8].contiguous(), labels[:8].contiguous(), None, None)
    alone = model.linear.weight.grad.clone()
    model.zero_grad(set_to_none=True)
    _fused_gradient(model, x, labels, None, torch.arange(8))
    assert torch.equal(model.linear.weight.grad, alone)


@pytest.mark.parametrize(
    ("label", "row", "message"),
    [
        (7, 1, "label 7 .*out of range for 3 classes"),
        (-1, 1, "label -1"),
        (0, 5, "row index 5 is out of range for 5 rows"),
        (0, -1, "row index -1"),
        (0, 10**8, "row index 100000000"),
    ],
)
def test_bad_labels_and_rows_are_errors_before_anything_is_written(label, row, message):
    model = _model(8, 3)
    x, labels, _ = _data(5, 8, 3, torch.uint8)
    labels[1] = label
    model.linear.weight.grad = torch.full_like(model.linear.weight, 3.0)
    with pytest.raises(IndexError, match=message):
        _fused_gradient(model, x, labels, None, torch.tensor([0, 1, row, 2]))
    assert torch.equal(model.linear.weight.grad, torch.full_like(model.linear.weight, 3.0))


def test_evaluation_refuses_a_label_out_of_range():
    model = _model(8, 3)
    x, labels, _ = _data(5, 8, 3, torch.uint8)
    labels[4] = 3
    with pytest.raises(IndexError, match="label 3 .*out of range for 3 classes"):
        fused.sums(model.linear.weight, model.linear.bias, x, labels, 1.0)


def test_parameters_and_gradients_of_mismatched_shapes_are_not_covered():
    x, labels = torch.rand(4, 20), torch.randint(0, 3, (4,))
    weight, bias = torch.zeros(3, 20), torch.zeros(3)
    assert fused.usable(weight, bias, x, labels)
    assert not fused.usable(weight, torch.zeros(2), x, labels)
    assert not fused.usable(weight, bias, torch.rand(4, 21), labels)
    assert not fused.usable(weight, bias, x, labels[:3])
    weight.grad = torch.zeros(3, 20)
    weight.grad.set_(torch.zeros(2, 20))  # past .grad's own shape check
    assert not fused.usable(weight, bias, x, labels)


def test_a_nan_weight_is_not_hidden_by_blank_features(isa, plain):
    """0 x NaN is NaN: a NaN weight over features that are all zero still makes the loss NaN, as in
    PyTorch's products (the engine's divergence check relies on it), though blank chunks are skipped."""
    model = _model(40, 3)
    x, labels, _ = _data(6, 40, 3, torch.float32)
    x[:, :20] = 0.0
    with torch.no_grad():
        model.linear.weight[1, 0] = float("nan")
    plain_loss = model.accumulate_gradients(x, labels)
    fused._fused = pytest.importorskip("torchlogreg.core._fused")
    model.zero_grad(set_to_none=True)
    loss = _fused_gradient(model, x, labels, None, None)
    assert torch.isnan(torch.tensor([loss, plain_loss])).all()
    assert torch.isnan(model.linear.weight.grad).any()
    assert torch.isnan(torch.tensor(evaluate(model, x, labels)["loss"]))


@pytest.mark.parametrize(
    "case",
    ["float64 model", "int32 labels", "float64 weights", "strided rows", "threads"],
)
def test_uncovered_calls_take_the_pytorch_path(case):
    """Calls the kernel does not cover give the same gradient the PyTorch way (and several torch
    threads, which the kernel covers, the same as one)."""
    model = _model(10, 3)
    x, labels, weights = _data(12, 10, 3, torch.float32)
    threads = 1
    if case == "float64 model":
        model = model.double()
        x = x.double()
    elif case == "int32 labels":
        labels = labels.int()
    elif case == "float64 weights":
        weights = weights.double()
    elif case == "strided rows":
        x = torch.cat([x, x], dim=1)[:, ::2]
    elif case == "threads":
        threads = 2
    weight, bias = model.linear.weight, model.linear.bias
    assert case == "threads" or not fused.usable(weight, bias, x, labels, weights)
    with cpu_threads(threads):
        loss = model.accumulate_gradients(x, labels, 1.0, weights)
    expected_loss, expected_weight, _ = _autograd(model.float(), x.float(), labels.long(), weights, None)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(weight.grad.double(), expected_weight, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_evaluation_sums_match_the_pytorch_path(dtype, monkeypatch):
    model = _model(50, 10)
    x, labels, _ = _data(1100, 50, 10, dtype)  # more than one evaluation chunk
    x[5] = 0  # all scores equal the biases: ties go to the first top score, as torch's max
    with torch.no_grad():
        model.linear.bias[:] = 0.0
        model.linear.bias[[4, 7]] = 1.0
    ours = evaluate(model, x, labels)
    monkeypatch.setattr(fused, "_fused", None)
    theirs = evaluate(model, x, labels)
    assert ours["accuracy"] == theirs["accuracy"] and ours["n"] == theirs["n"]
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.9])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_binary_evaluation_sums_match_the_pytorch_path(dtype, threshold, monkeypatch):
    """One logit: the loss is binary cross-entropy, a row is positive where its probability is at
    least the threshold (a logit of exactly 0 against 0.5: positive, as model.decide)."""
    model = _model(50, 2)
    x, labels, _ = _data(1100, 50, 2, dtype)
    x[5], labels[5] = 0, 1
    with torch.no_grad():
        model.linear.bias.zero_()
    assert model.binary and float(model(x[5:6].float())[0, 0].detach()) == 0.0
    ours = evaluate(model, x, labels, threshold)
    monkeypatch.setattr(fused, "_fused", None)
    theirs = evaluate(model, x, labels, threshold)
    assert ours["accuracy"] == theirs["accuracy"] and ours["n"] == theirs["n"]
    assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-6)
    assert 0.3 < ours["accuracy"] < 0.7  # (random labels: both kinds of mistakes are counted)


def test_training_takes_the_same_path_with_or_without_the_extension(monkeypatch, data_root):
    """The extension changes rounding, not the run: the same seed gives the same run to float32's
    precision, and the same test accuracy to within a few images."""
    config = tl.preset("default", data_root=str(data_root), train_size=6000, epochs=2, val_size=1000)
    ours = tl.train(config)
    monkeypatch.setattr(fused, "_fused", None)
    theirs = tl.train(config)
    assert abs(ours.metrics["test"]["accuracy"] - theirs.metrics["test"]["accuracy"]) <= 0.002
    torch.testing.assert_close(ours.model.linear.weight, theirs.model.linear.weight, rtol=0, atol=2e-4)


# --- the extension's own boundary: arguments checked by name, dtype and shape --------------------


def _call_arguments(rows: int = 6, features: int = 9, classes: int = 3) -> dict:
    x, labels, weights = _data(rows, features, classes, torch.uint8)
    weight, bias = torch.zeros(classes, features), torch.zeros(classes)
    return {
        "x": x.numpy(),
        "labels": labels.numpy(),
        "weight": weight.numpy(),
        "bias": bias.numpy(),
        "grad_weight": torch.full_like(weight, 3.0).numpy(),
        "grad_bias": torch.zeros_like(bias).numpy(),
        "index": None,
        "sample_weight": weights.numpy(),
        "scale": PIXEL_SCALE,
        "share": 1.0,
    }


def test_the_kernels_take_keyword_arguments_only():
    arguments = _call_arguments()
    with pytest.raises(TypeError):
        fused._fused.gradient(*arguments.values())
    del arguments["grad_bias"]
    with pytest.raises(TypeError, match="grad_weight, grad_bias"):
        fused._fused.gradient(**arguments)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("labels", torch.zeros(6, dtype=torch.int32), "labels must be a C-contiguous 1D int64"),
        ("labels", torch.zeros(5, dtype=torch.int64), "labels has 5 rows, expected 6"),
        ("x", torch.zeros(6, 9, dtype=torch.float64), "x must be a C-contiguous 2D uint8 or float32"),
        ("x", torch.zeros(9, 12, dtype=torch.uint8).T, "not contiguous"),
        ("weight", torch.zeros(3, 8), "weight has 8 features, expected 9"),
        ("bias", torch.zeros(4), "bias has 4 classes, expected 3"),
        ("grad_weight", torch.zeros(9, 3), r"grad_weight has shape \(9, 3\), expected weight's \(3, 9\)"),
        ("grad_weight", torch.zeros(3, 10), r"grad_weight has shape \(3, 10\)"),
        ("grad_bias", torch.zeros(3, 1), "grad_bias must be a C-contiguous 1D float32"),
        ("sample_weight", torch.zeros(7), "sample_weight has 7 rows, expected 6"),
        ("index", torch.zeros(2, dtype=torch.int32), "index must be a C-contiguous 1D int64"),
        ("grad_weight", "not an array", "grad_weight must be a writable array"),
    ],
)
def test_a_wrong_argument_is_an_error_before_anything_is_written(name, value, message):
    """A swapped or mis-sized argument is refused by name, not read or written out of bounds."""
    arguments = _call_arguments()
    arguments[name] = value.numpy() if isinstance(value, torch.Tensor) else value
    before = arguments["grad_weight"].copy() if name != "grad_weight" else None
    with pytest.raises(ValueError, match=message):
        fused._fused.gradient(**arguments)
    if before is not None:
        assert (arguments["grad_weight"] == before).all()


def test_a_read_only_gradient_is_refused():
    arguments = _call_arguments()
    arguments["grad_weight"].setflags(write=False)
    with pytest.raises(ValueError, match="grad_weight must be a writable array"):
        fused._fused.gradient(**arguments)


def test_sums_need_a_class_and_a_thread():
    arguments = _call_arguments(classes=1)
    plain_arguments = {k: arguments[k] for k in ("x", "labels")}
    with pytest.raises(ValueError, match="weight has 0 classes, expected 1"):
        fused._fused.sums(
            **plain_arguments, **{"weight": torch.zeros(0, 9).numpy(), "bias": torch.zeros(0).numpy()}
        )
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        fused._fused.gradient(**arguments, threads=0)


@pytest.fixture
def torch_threads():
    """Sets torch's threads (which the kernels share a batch over) for a test, then restores them."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(
    "shape",
    [(9000, 100, 10), (400, 1000, 100), (256, 784, 10), (2000, 784, 2)],
    ids=["many rows", "wide rows", "a mini-batch step", "binary"],
)
def test_threads_share_a_batch_to_the_same_bits(dtype, shape, isa, torch_threads):
    """A batch is cut into parts by its size and width alone (many rows, a few hundred rows of a
    100-class model, or a mini-batch step) and their gradients added in order, so any number of
    threads gives the same bits, whichever thread took a part; the parts add up to the unsplit
    gradient to rounding. Inside a one-thread block (a mini-batch's torch operations) the kernels
    still share a batch over torch's threads outside it."""
    rows, features, classes = shape
    model = _model(features, classes)
    x, labels, weights = _data(rows, features, classes, dtype)
    results = []
    for threads in (1, 2, 3, 2):
        model.zero_grad(set_to_none=True)
        torch_threads(threads)
        with cpu_threads(1):
            assert fused.threads() == threads
            loss = model.accumulate_gradients(x, labels, 1.0, weights)
        results.append((loss, model.linear.weight.grad.clone(), model.linear.bias.grad.clone()))
    for loss, *grads in results[1:]:
        assert loss == results[0][0]
        assert all(torch.equal(a, b) for a, b in zip(grads, results[0][1:], strict=True))
    expected_loss, expected_weight, expected_bias = _autograd(model, x, labels, weights, None)
    assert results[0][0] == pytest.approx(expected_loss, rel=1e-6)
    torch.testing.assert_close(results[0][1].double(), expected_weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(results[0][2].double(), expected_bias, rtol=1e-4, atol=1e-6)


def _step_gradient(x, labels, weight, bias, threads=2) -> tuple[float, np.ndarray, np.ndarray]:
    grad_weight, grad_bias = np.empty_like(weight), np.empty_like(bias)
    loss = fused._fused.gradient(
        x=x, labels=labels, weight=weight, bias=bias, grad_weight=grad_weight, grad_bias=grad_bias,
        scale=1 / 255, share=1 / len(x), threads=threads,
    )  # fmt: skip
    return loss, grad_weight, grad_bias


def _same(a, b) -> bool:
    """Two (loss, weight gradient, bias gradient) to the bit."""
    return a[0] == b[0] and all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))


def _a_step(rows=256):
    generator = np.random.default_rng(0)
    x = (generator.random((rows, 784)) * 255 * (generator.random((rows, 784)) < 0.2)).astype(np.uint8)
    labels = generator.integers(0, 10, rows)
    weight = (generator.standard_normal((10, 784)) * 0.01).astype(np.float32)
    return x, labels, weight, np.zeros(10, np.float32)


def test_calls_from_two_python_threads_share_nothing():
    """The kernels release the GIL: a call made while another has the helper threads runs its parts on
    its own thread, and each gets its own batch's bits."""
    import threading

    steps = [_a_step(rows) for rows in (256, 200)]
    expected = [_step_gradient(*step, threads=1) for step in steps]
    failures = []

    def run(step, want):
        for _ in range(200):
            got = _step_gradient(*step)
            if not _same(got, want):
                failures.append(got[0])

    workers = [threading.Thread(target=run, args=pair) for pair in zip(steps, expected, strict=True)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures


def test_a_forked_child_starts_its_own_helpers():
    """A process forked after the helpers started has none of their threads: its calls start their
    own, and neither hangs nor differs."""
    import multiprocessing

    step = _a_step()
    expected = _step_gradient(*step)  # (starts the helpers here)
    with multiprocessing.get_context("fork").Pool(1) as child:
        got = child.apply_async(_step_gradient, step).get(timeout=60)
    assert _same(got, expected)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("shape", [(64, 784, 10), (64, 1000, 100)], ids=["MNIST", "wide rows"])
def test_a_step_is_cut_into_parts_by_its_work(dtype, shape, isa):
    """64 rows of MNIST's size (or wider) are two parts of 32 rows (their multiply-adds, not their
    count), and 32 are one: the gradient is bit for bit the two halves' gradients, each summed on its
    own, added; summed as one part the rows' order of addition differs."""
    rows, features, classes = shape
    model = _model(features, classes)
    x, labels, _ = _data(rows, features, classes, dtype)
    arguments = dict(x=fused._view(x), labels=fused._view(labels), sample_weight=None, scale=1.0,
                     share=1 / rows, accumulate=False, threads=2)  # fmt: skip
    weight, bias = model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()
    grads = []
    for index in (None, np.arange(rows // 2), np.arange(rows // 2, rows)):
        grad_weight, grad_bias = np.empty_like(weight), np.empty_like(bias)
        fused._fused.gradient(**arguments, weight=weight, bias=bias, grad_weight=grad_weight,
                              grad_bias=grad_bias, index=index)  # fmt: skip
        grads.append(grad_weight)
    halves = (torch.from_numpy(grads[1]) + torch.from_numpy(grads[2])).numpy()
    assert np.array_equal(grads[0], halves)


def _python_with(variable: str | None, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TORCHLOGREG_CPU_CAPABILITY"}
    if variable is not None:
        env["TORCHLOGREG_CPU_CAPABILITY"] = variable
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)


@pytest.mark.parametrize("name", ["avx512", "avx2", "baseline"])
def test_the_environment_variable_forces_a_version(name):
    if name not in fused.instruction_sets():
        pytest.skip(f"this CPU cannot run the {name} kernels")
    run = _python_with(name, "from torchlogreg.core import _fused; print(_fused.instruction_set_in_use())")
    assert run.stdout.strip() == name


def test_a_version_this_cpu_lacks_is_a_warning_and_the_best_runs():
    code = (
        "import warnings; warnings.simplefilter('always')\n"
        "from torchlogreg.core import _fused; print(_fused.instruction_set_in_use())"
    )
    run = _python_with("neon", code)
    assert run.stdout.strip() == fused.instruction_sets()[0]
    assert "TORCHLOGREG_CPU_CAPABILITY=neon is not a version this CPU can run" in run.stderr


def _compile(*defines: str) -> subprocess.CompletedProcess:
    compiler = shutil.which("cc") or shutil.which("gcc")
    source = Path(fused.__file__).with_name("_fused.c")
    include = sysconfig.get_paths()["include"]
    command = [compiler, "-fsyntax-only", "-Wno-psabi", f"-I{include}", *defines, str(source)]
    return subprocess.run(command, capture_output=True, text=True)


@pytest.mark.parametrize(
    ("define", "message"),
    [
        ("-DBLOCK_ROWS=30", "a block is whole groups of ROWS rows"),
        ("-DMAX_ROWS=2", "sized for MAX_ROWS"),
    ],
)
def test_the_block_constants_are_checked_when_compiled(define, message):
    """The constants the kernels' buffers depend on are checked by the compiler (_Static_assert)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    assert _compile().returncode == 0, _compile().stderr
    failed = _compile(define)
    assert failed.returncode != 0 and message in failed.stderr
