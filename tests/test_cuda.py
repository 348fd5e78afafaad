"""The CUDA path end to end, where a GPU is present (skipped elsewhere): the presets train on the GPU to
the CPU's accuracy, the defaults' rules and centred steps run there, the estimator reaches the CPU's
optimum, and a run saved from the GPU is read back, evaluated and used for prediction on either device."""

import numpy as np
import pytest
import torch

from torchlogreg import preset, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ["default", "tutorial"])
def test_presets_train_on_the_gpu_to_the_cpu_accuracy(name, mnist_data, data_root):
    on_gpu = train(preset(name, data_root=str(data_root), device="cuda"), mnist_data, verbose=False)
    on_cpu = train(preset(name, data_root=str(data_root), device="cpu"), mnist_data, verbose=False)
    assert on_gpu.metrics["device"].startswith("cuda") and on_gpu.config.device.startswith("cuda")
    gap = abs(on_gpu.metrics["test"]["accuracy"] - on_cpu.metrics["test"]["accuracy"])
    assert gap <= 0.003, (on_gpu.metrics["test"], on_cpu.metrics["test"])


def test_small_set_converges_by_lbfgs_on_the_gpu(mnist_splits, data_root):
    config = preset("default", data_root=str(data_root), device="cuda", train_size=2000)
    from torchlogreg.data.inmemory import prepare

    result = train(config, prepare(config, *mnist_splits), verbose=False)
    assert result.config.optimizer == "lbfgs" and result.metrics["stop_reason"] == "converged"
    assert result.metrics["test"]["accuracy"] >= 0.87


def test_a_gpu_run_is_read_evaluated_and_used_on_either_device(mnist_data, data_root, tmp_path):
    from torchlogreg.runfolder.checkpoints import load_run
    from torchlogreg.training.evaluation import evaluate

    config = preset("default", data_root=str(data_root), device="cuda")
    result = train(config, mnist_data, verbose=False, out=tmp_path / "r")
    for device in ("cpu", "cuda"):
        run = load_run(tmp_path / "r", device=device)
        metrics = evaluate(run.model, mnist_data.test.images, mnist_data.test.labels)
        assert metrics["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=2e-4)


def test_estimator_on_the_gpu_reaches_the_cpu_optimum(mnist_splits):
    pytest.importorskip("sklearn")
    from torchlogreg.sklearn.estimator import TorchLogisticRegression

    train_split, test_split, _ = mnist_splits
    X = train_split.images[:5000].reshape(5000, -1).numpy().astype(np.float32) / 255
    y = train_split.labels[:5000].numpy()
    on_gpu = TorchLogisticRegression(device="cuda", max_iter=1000).fit(X, y)
    on_cpu = TorchLogisticRegression(device="cpu", max_iter=1000).fit(X, y)
    X_test = test_split.images.reshape(len(test_split.images), -1).numpy().astype(np.float32) / 255
    # Both stop within tol of the optimum, not at the same point: the same answers, close probabilities
    y_test = test_split.labels.numpy()
    assert abs(on_gpu.score(X_test, y_test) - on_cpu.score(X_test, y_test)) < 2e-3
    assert np.abs(on_gpu.predict_proba(X_test) - on_cpu.predict_proba(X_test)).mean() < 2e-3
