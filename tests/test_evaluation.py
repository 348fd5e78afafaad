"""Metrics: exact mean loss and accuracy whatever the chunking, binary thresholds, top-k, and
evaluation straight from an on-disk split."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import matmul_rounding_bound

from torchlogreg.base.exceptions import ConfigError
from torchlogreg.core.model import EVAL_BATCH, LogisticRegression
from torchlogreg.data.ondisk import DiskImages
from torchlogreg.training.evaluation import PASS_BYTES, _pass_rows, evaluate, logits_of, predict_proba, top_k

pytestmark = pytest.mark.numerics  # compares floats across batchings: CI reruns it under other MKL code paths


def _model(n_classes: int, seed: int = 0) -> LogisticRegression:
    model = LogisticRegression(16, n_classes)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        model.linear.weight.copy_(torch.randn(model.linear.weight.shape, generator=generator))
        model.linear.bias.copy_(torch.randn(model.linear.bias.shape, generator=generator))
    return model


@pytest.fixture
def samples():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (50, 4, 4), generator=generator, dtype=torch.uint8)
    return images, torch.randint(0, 3, (50,), generator=generator)


@pytest.mark.parametrize("chunk", [1, 7, 50, 8192])
def test_metrics_do_not_depend_on_the_chunking(samples, monkeypatch, chunk):
    """Chunks change which float32 kernel computes a row, so the logits agree to the rounding bound of
    the product, and the loss to the bound's effect on cross-entropy (|d loss / d logit|_1 <= 2)."""
    monkeypatch.setattr("torchlogreg.core.model.EVAL_BATCH", chunk)  # logits_of's chunks
    monkeypatch.setattr("torchlogreg.training.evaluation.EVAL_BATCH", chunk)  # evaluate's
    images, labels = samples
    flat = images.reshape(50, -1)
    model = _model(3)
    exact = flat.double() / 255 @ model.linear.weight.double().T + model.linear.bias.double()
    bound = matmul_rounding_bound(flat, model.linear.weight, model.linear.bias)
    top2 = exact.topk(2, dim=1).values
    assert ((top2[:, 0] - top2[:, 1]) > 2 * bound.max(dim=1).values).all()  # so argmax cannot flip
    metrics = evaluate(model, flat, labels)
    assert metrics["n"] == 50
    exact_loss = F.cross_entropy(exact, labels).item()
    loss_bound = 2 * bound.max().item() + 64 * torch.finfo(torch.float32).eps * exact_loss
    assert abs(metrics["loss"] - exact_loss) <= loss_bound
    assert metrics["accuracy"] == (exact.argmax(1) == labels).sum().item() / 50
    assert ((logits_of(model, flat).double() - exact).abs() <= bound).all()


def test_binary_threshold_moves_the_predictions(samples):
    images, labels = samples
    images, labels = images.reshape(50, -1), (labels == 1).long()
    model = _model(2)
    probability = torch.sigmoid(model(images)).squeeze(-1).detach()
    for threshold in (0.1, 0.5, 0.9):
        expected = ((probability > threshold).long() == labels).float().mean().item()
        assert evaluate(model, images, labels, threshold)["accuracy"] == pytest.approx(expected)
    assert predict_proba(model, images).shape == (50, 2)


def test_a_binary_model_decides_at_its_own_threshold_by_default(samples, tmp_path):
    """A run trained with --threshold 0.3 and loaded with tl.load_run had been evaluated and ranked at
    0.5 by tl.evaluate and tl.top_k (0.9682 where evaluate's CLI said 0.9652; '3' where predict said 8)."""
    import pickle

    images, labels = samples
    images, labels = images.reshape(50, -1), (labels == 1).long()
    model = _model(2)
    probability = torch.sigmoid(model(images)).squeeze(-1).detach()
    model.threshold = 0.9
    expected = ((probability > 0.9).long() == labels).float().mean().item()
    assert evaluate(model, images, labels)["accuracy"] == pytest.approx(expected)
    assert evaluate(model, images, labels, 0.9) == evaluate(model, images, labels)
    assert torch.equal(model.predict(images), (probability > 0.9).long())
    assert not torch.equal(model.predict(images, 0.5), model.predict(images))
    ranked = [row["index"] for row in top_k(model, images, ("0", "1"), k=1)]
    assert ranked == (probability > 0.9).long().tolist()
    del model._threshold  # pickled before models held a threshold: 0.5, as they decided then
    assert pickle.loads(pickle.dumps(model)).threshold == 0.5
    with pytest.raises(ConfigError, match=r"threshold must be a number in \(0, 1\), got 1"):
        LogisticRegression(16, 2, threshold=1)
    with pytest.raises(ConfigError, match=r"threshold must be a number in \(0, 1\), got True"):
        model.threshold = True
    model.threshold = np.float32(0.25)  # (any real number)
    assert model.threshold == 0.25 and type(model.threshold) is float


def test_top_k_and_empty_sets(samples):
    images, _ = samples
    model = _model(3)
    rows = top_k(model, images[:2].reshape(2, -1), ("a", "b", "c"), k=2)
    assert [len(row["top_k"]) for row in rows] == [2, 2]
    assert rows[0]["top_k"][0]["label"] == rows[0]["label"]
    empty = evaluate(model, images[:0].reshape(0, 16), torch.zeros(0, dtype=torch.long))
    assert empty["n"] == 0 and empty["accuracy"] == 0 and np.isnan(empty["loss"])


def test_evaluates_a_split_on_disk_like_in_memory(samples, tmp_path, monkeypatch):
    monkeypatch.setattr("torchlogreg.core.model.EVAL_BATCH", 9)
    monkeypatch.setattr("torchlogreg.training.evaluation.EVAL_BATCH", 9)
    images, labels = samples
    np.save(tmp_path / "images.npy", images.numpy())
    model = _model(3)
    on_disk = evaluate(model, DiskImages(tmp_path / "images.npy"), labels)
    in_memory = evaluate(model, images.reshape(50, -1), labels)
    assert on_disk == pytest.approx(in_memory)


@pytest.mark.parametrize("container", [np.asarray, lambda t: t.tolist()], ids=["numpy", "list"])
def test_arrays_and_lists_predict_as_tensors_do(samples, container):
    model, (images, labels) = _model(3), samples
    for pixels in (images, images.float() / 255):
        given = container(pixels.numpy())
        if isinstance(given, list) and pixels.dtype == torch.uint8:
            continue  # a list of ints has no uint8 dtype: refused below
        assert torch.allclose(predict_proba(model, given), predict_proba(model, pixels))
        assert torch.equal(model.predict(given), model.predict(pixels))
        assert torch.allclose(model.predict_proba(given), model.predict_proba(pixels))
        assert top_k(model, given, ("a", "b", "c")) == top_k(model, pixels, ("a", "b", "c"))
    assert evaluate(model, images.numpy(), labels.tolist()) == evaluate(model, images, labels)


@pytest.mark.parametrize(
    "images, fragment",
    [
        ([[0, 255] * 8], "must hold uint8 pixels (0..255) or floats in [0, 1], got int64"),
        ("pixels", "must be a tensor, a NumPy array or a list, got str"),
        ([[0.0] * 16, [0.0]], "must be a tensor, an array or a list of equal rows"),
    ],
)
def test_other_inputs_are_refused_by_name(images, fragment):
    from torchlogreg import InputError

    for predict in (_model(3).predict_proba, lambda x: predict_proba(_model(3), x)):
        with pytest.raises(InputError, match=re.escape(fragment)) as error:
            predict(images)
        assert len(str(error.value).splitlines()) == 1


def test_top_k_needs_a_name_per_class(samples):
    from torchlogreg import ConfigError

    with pytest.raises(ConfigError, match="class_names must name the model's 3 classes, got 2 names"):
        top_k(_model(3), samples[0], ("a", "b"))


def test_a_pass_reads_a_bounded_number_of_bytes():
    """The fused kernel scores PASS_BYTES of pixels per call whatever the image size, for a binary
    model too; never fewer than EVAL_BATCH rows."""
    wide = torch.zeros(3, 128, 128, dtype=torch.uint8)
    assert _pass_rows(LogisticRegression(128 * 128, 10), wide) == PASS_BYTES // (128 * 128)
    assert _pass_rows(LogisticRegression(784, 10), torch.zeros(3, 28, 28)) == PASS_BYTES // (784 * 4)
    assert _pass_rows(LogisticRegression(128 * 128, 2), wide) == PASS_BYTES // (128 * 128)
    assert _pass_rows(LogisticRegression(512 * 512, 10), torch.zeros(3, 512, 512)) == EVAL_BATCH


@pytest.mark.parametrize("classes", [2, 3])
def test_inputs_whose_scores_overflow_are_refused_not_scored_nan(classes):
    """Finite features near float32's limit overflow the logits: the same line as predict's."""
    from torchlogreg import InputError

    model = LogisticRegression(16, classes)
    with torch.no_grad():
        model.linear.weight.copy_(
            torch.linspace(0.5, 1, model.linear.weight.numel()).view_as(model.linear.weight)
        )
    x = np.full((3, 16), 7.368382e37, np.float32)
    with pytest.raises(InputError, match="images is too large for the model, its scores overflow"):
        evaluate(model, x, [0, 1, 1])
