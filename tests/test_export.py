"""Taking a model out of torchlogreg: the ONNX export (run in ONNX Runtime on the whole MNIST test set,
against torchlogreg's own predictions), and the weights read with plain PyTorch + safetensors."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

import torchlogreg as tl
from torchlogreg.apps.export import export_onnx
from torchlogreg.base.exceptions import CheckpointError, ConfigError, DependencyError
from torchlogreg.data.inmemory import prepare
from torchlogreg.runfolder.checkpoints import load_run

onnxruntime = pytest.importorskip("onnxruntime")

# What the README shows: a run's weights in a bare nn.Linear, no torchlogreg. `image` is a 28x28 uint8
# array (white digit on black, like MNIST); `label` is the predicted class index (multiclass runs).
PLAIN_PYTORCH = """\
import torch, safetensors.torch
weights = safetensors.torch.load_file("model.safetensors")
linear = torch.nn.Linear(weights["linear.weight"].shape[1], weights["linear.weight"].shape[0])
linear.load_state_dict({"weight": weights["linear.weight"], "bias": weights["linear.bias"]})
label = linear(torch.as_tensor(image, dtype=torch.float32).reshape(1, -1) / 255).argmax(1).item()
"""


def _train(tmp_path_factory, data_root, name: str, **overrides):
    config = tl.preset("default", data_root=str(data_root), device="cpu", epochs=1, **overrides)
    folder = tmp_path_factory.mktemp(name) / "run"
    tl.train(config, out=folder, verbose=False)
    return load_run(folder)


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, data_root):
    return _train(tmp_path_factory, data_root, "export-mnist")


@pytest.fixture(scope="module")
def mnist_onnx(mnist_run, tmp_path_factory):
    return export_onnx(mnist_run.path, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run_onnx(path, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, labels) from ONNX Runtime for uint8 `images`, given as documented: / 255."""
    probabilities, labels = _session(path).run(
        ["probabilities", "label"], {"images": (images.float() / 255).numpy()}
    )
    return probabilities, labels


def test_graph_signature(mnist_onnx):
    session = _session(mnist_onnx)
    (images,) = session.get_inputs()
    assert (images.name, images.type, images.shape[1:]) == ("images", "tensor(float)", [28, 28])
    assert isinstance(images.shape[0], str)  # the batch size is free
    outputs = {o.name: (o.type, o.shape[1:]) for o in session.get_outputs()}
    assert outputs == {"probabilities": ("tensor(float)", [10]), "label": ("tensor(int64)", [])}


@pytest.mark.numerics
def test_onnx_agrees_with_torchlogreg_on_the_whole_mnist_test_set(mnist_run, mnist_onnx, mnist_splits):
    images = mnist_splits[1].images
    assert images.dtype == torch.uint8 and images.shape == (10_000, 28, 28)
    probabilities, labels = _run_onnx(mnist_onnx, images)
    expected = mnist_run.model.predict(images, mnist_run.threshold)
    assert labels.dtype == np.int64 and labels.shape == (10_000,)
    np.testing.assert_array_equal(labels, expected.numpy())
    np.testing.assert_allclose(
        probabilities, mnist_run.model.predict_proba(images).numpy(), rtol=0, atol=1e-5
    )
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3])
def test_any_batch_size(mnist_run, mnist_onnx, mnist_splits, batch):
    images = mnist_splits[1].images[:batch]
    probabilities, labels = _run_onnx(mnist_onnx, images)
    assert probabilities.shape == (batch, 10)
    np.testing.assert_array_equal(labels, mnist_run.model.predict(images).numpy())


def test_binary_run_follows_its_threshold(tmp_path_factory, data_root, mnist_splits):
    run = _train(tmp_path_factory, data_root, "export-binary", classes=(3, 8), threshold=0.3)
    path = export_onnx(run.path, run.path.parent / "binary.onnx")
    test = prepare(run.config, *mnist_splits).test
    probabilities, labels = _run_onnx(path, test.images)
    assert probabilities.shape == (len(test), 2)
    np.testing.assert_allclose(probabilities, run.model.predict_proba(test.images).numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels, (probabilities[:, 1] >= 0.3).astype(np.int64))
    np.testing.assert_array_equal(labels, run.model.predict(test.images, 0.3).numpy())
    between = (probabilities[:, 1] >= 0.3) & (probabilities[:, 1] < 0.5)
    assert between.any() and labels[between].min() == 1  # where the threshold, not 0.5, decides


@pytest.mark.parametrize("opset", [19, 23])
def test_other_opsets_run_alike(mnist_run, mnist_onnx, mnist_splits, tmp_path, opset):
    """The graph is written for the opset asked, in the oldest file format that holds it."""
    import onnx

    path = export_onnx(mnist_run.path, tmp_path / "model.onnx", opset=opset)
    model = onnx.load(path)
    assert [o.version for o in model.opset_import if o.domain == ""] == [opset]
    images = mnist_splits[1].images[:500]
    for got, expected in zip(_run_onnx(path, images), _run_onnx(mnist_onnx, images), strict=True):
        np.testing.assert_array_equal(got, expected)


def test_metadata_round_trips(mnist_run, mnist_onnx):
    meta = _session(mnist_onnx).get_modelmeta().custom_metadata_map
    assert json.loads(meta["class_names"]) == list(mnist_run.class_names)
    assert json.loads(meta["input_shape"]) == [28, 28]
    assert json.loads(meta["preprocessing"]) == mnist_run.meta["preprocessing"]
    assert "divide by 255" in meta["input"]
    assert json.loads(meta["binary"]) is False and json.loads(meta["threshold"]) == mnist_run.threshold
    digest = hashlib.sha256((mnist_run.path / "model.safetensors").read_bytes()).hexdigest()
    assert meta["weights_sha256"] == digest == mnist_run.meta["weights_sha256"]
    assert meta["torchlogreg_version"] == tl.__version__


def test_refuses_to_overwrite_unless_asked(mnist_run, mnist_onnx):
    before = mnist_onnx.read_bytes()
    with pytest.raises(ConfigError, match="already exists.*overwrite=True") as error:
        export_onnx(mnist_run.path, mnist_onnx)
    assert str(mnist_onnx) in str(error.value)
    assert export_onnx(mnist_run.path, mnist_onnx, overwrite=True) == mnist_onnx
    assert mnist_onnx.read_bytes() == before  # the same run exports to the same bytes
    assert not list(mnist_onnx.parent.glob(".*.tmp"))  # the atomic write left nothing behind


@pytest.mark.parametrize("opset", [17, 24, "18", 18.0, True])
def test_bad_opset(mnist_run, tmp_path, opset):
    with pytest.raises(ConfigError, match="opset must be an integer from 18 to 23"):
        export_onnx(mnist_run.path, tmp_path / "model.onnx", opset=opset)


@pytest.mark.parametrize("name", ["model.pt", "model", "model.onnx.bak"])
def test_a_name_for_another_format_is_refused(mnist_run, tmp_path, name):
    """ONNX in a file named model.pt would fail in torch.load: the name must say what it holds."""
    with pytest.raises(ConfigError, match=r"does not end in \.onnx.*model\.safetensors"):
        export_onnx(mnist_run.path, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_not_a_run_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not a folder"):
        export_onnx(tmp_path / "missing", tmp_path / "model.onnx")


def test_missing_extra_is_one_line(mnist_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails
    with pytest.raises(DependencyError) as error:
        export_onnx(mnist_run.path, tmp_path / "model.onnx")
    assert str(error.value) == "this needs onnx: pip install 'torchlogreg[export]'"
    assert not (tmp_path / "model.onnx").exists()


def test_plain_pytorch_lines_reproduce_predict(mnist_run, mnist_splits, monkeypatch):
    assert len(PLAIN_PYTORCH.splitlines()) == 5 and "torchlogreg" not in PLAIN_PYTORCH
    monkeypatch.chdir(mnist_run.path)
    code = compile(PLAIN_PYTORCH, "PLAIN_PYTORCH", "exec")
    images = mnist_splits[1].images[:300]
    labels = []
    for image in images.numpy():
        namespace = {"image": image}
        exec(code, namespace)
        labels.append(namespace["label"])
    assert labels == mnist_run.model.predict(images).tolist()
