"""TensorBoard logging: the callback's scalars and weight images read back from the event files, resume
hiding what a crashed attempt logged, sweep hyperparameters for the HParams table, and the missing extra."""

from __future__ import annotations

import io
import sys
import types

import numpy as np
import pytest
import torch
from conftest import synthetic_data
from PIL import Image

from torchlogreg import TrainConfig
from torchlogreg.base.exceptions import ConfigError, DependencyError
from torchlogreg.training.tensorboard import TensorBoardLogger, log_sweep_run, weight_images
from torchlogreg.training.trainer import build, finish

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")

EVERYTHING = {"scalars": 0, "images": 0, "tensors": 0}  # keep every event (default: a sample)


def _events(log_dir) -> event_accumulator.EventAccumulator:
    return event_accumulator.EventAccumulator(str(log_dir), size_guidance=EVERYTHING).Reload()


def _scalars(events, tag: str) -> list[tuple[int, float]]:
    return [(event.step, event.value) for event in events.Scalars(tag)]


def _train(log_dir, data, **config):
    logger = TensorBoardLogger(log_dir, image_shape=data.image_shape, class_names=data.class_names)
    settings = {"batch_size": 16, "epochs": 3, "device": "cpu", "val_size": 60, **config}
    training = build(TrainConfig(**settings), data, verbose=False, callbacks=[logger])
    training.engine.run()
    result = finish(training)
    logger.close(result.model)
    return result


def test_scalars_are_the_history_at_evaluation_steps(tmp_path):
    result = _train(tmp_path, synthetic_data(side=4, n_classes=3))
    checks = [row for row in result.history if row["train_accuracy"] is not None]
    assert [row["iteration"] for row in checks] == [15, 30, 45]  # 240 samples / 16 per batch, 3 epochs
    events = _events(tmp_path)
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/accuracy", "val/loss", "val/accuracy", "lr"}
    # train/loss: the mean batch loss since the last check (as the console's), one batch's swinging widely
    means = [
        np.mean([r["loss"] for r in result.history if i - 15 < r["iteration"] <= i]) for i in (15, 30, 45)
    ]
    assert _scalars(events, "train/loss") == [
        (i, pytest.approx(m, rel=1e-6)) for i, m in zip((15, 30, 45), means, strict=True)
    ]
    for tag, key in (
        ("train/accuracy", "train_accuracy"),
        ("val/loss", "val_loss"),
        ("val/accuracy", "val_accuracy"),
        ("lr", "lr"),
    ):
        expected = [(row["iteration"], pytest.approx(row[key], rel=1e-6)) for row in checks]
        assert _scalars(events, tag) == expected, tag


def test_weight_templates_one_image_per_class(tmp_path):
    result = _train(tmp_path, synthetic_data(side=4, n_classes=3))
    events = _events(tmp_path)
    assert events.Tags()["images"] == ["weights/0", "weights/1", "weights/2"]
    image = events.Images("weights/1")[0]
    assert (image.width, image.height) == (4, 4)
    templates = weight_images(result.model.linear.weight, (4, 4))
    pixels = torch.from_numpy(np.array(Image.open(io.BytesIO(image.encoded_image_string)).convert("L")))
    assert (pixels.int() - (templates[1, 0] * 255).int()).abs().max() <= 1  # PNG of uint8 pixels
    assert templates.shape == (3, 1, 4, 4) and templates.min() >= 0 and templates.max() <= 1
    weight = result.model.linear.weight.detach()
    assert torch.equal(templates.flatten(1) > 0.5, weight > 0)  # 0.5 is weight zero
    assert (templates - 0.5).abs().max() == 0.5  # the largest |weight| of all classes is 0 or 1


def test_binary_run_has_one_template_and_no_val_set(tmp_path):
    data = synthetic_data(side=4, n_classes=2, n_val=0)
    _train(tmp_path, data, val_size=0)
    events = _events(tmp_path)
    assert events.Tags()["images"] == ["weights/1"]  # evidence for the positive class
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/accuracy", "lr"}


def test_resume_hides_steps_logged_after_the_checkpoint(tmp_path):
    first = TensorBoardLogger(tmp_path)
    for step in (10, 20, 30):  # the crashed attempt: it got past the checkpoint at 20
        first.on_step(_ENGINE, {"iteration": step, "loss": 1.0, "train_accuracy": 0.5, "lr": 0.1} | _no_val())
    first.close()
    # TensorBoard reads event files in name order (time, host, pid, a per-process counter compared as
    # text); a real resume starts later in another process. Date the crashed attempt's file back so the
    # order is that one, whatever the counter reached in this test process.
    (crashed,) = tmp_path.glob("events.out.tfevents.*")
    crashed.rename(tmp_path / ("events.out.tfevents.0000000001." + crashed.name.split(".", 4)[4]))
    second = TensorBoardLogger(tmp_path)
    second.load_state_dict({}, {"iteration": 20})
    second.on_step(_ENGINE, {"iteration": 30, "loss": 2.0, "train_accuracy": 0.7, "lr": 0.1} | _no_val())
    second.close()
    assert _scalars(_events(tmp_path), "train/loss") == [(10, 1.0), (20, 1.0), (30, 2.0)]


_ENGINE = types.SimpleNamespace(step_share=1.0, full_batch=False)  # what the logger reads of an engine


def _no_val() -> dict:
    return {"val_loss": None, "val_accuracy": None}


def test_steps_without_evaluation_write_nothing(tmp_path):
    logger = TensorBoardLogger(tmp_path)
    logger.on_step(_ENGINE, {"iteration": 1, "loss": 1.0, "lr": 0.1, "train_accuracy": None} | _no_val())
    logger.close()
    logger.close()  # twice is harmless
    assert _events(tmp_path).Tags()["scalars"] == []


def test_weights_need_an_image_shape(tmp_path):
    result = _train(tmp_path / "run", synthetic_data(side=4, n_classes=3))
    logger = TensorBoardLogger(tmp_path / "other")
    with pytest.raises(ConfigError, match="needs image_shape"):
        logger.close(result.model)
    with pytest.raises(ConfigError, match=r"image_shape \(5, 5\) does not hold the model's 16 inputs"):
        logger.close(result.model, (5, 5))


def test_sweep_run_hparams(tmp_path):
    from tensorboard.plugins.hparams import metadata

    options = {"lr": 0.01, "batch_size": 32, "optimizer": "sgd", "weight_decay": None, "nesterov": True}
    metrics = {"val_accuracy": "0.91", "test_accuracy": 0.9, "train_seconds": 1.5, "missing": ""}
    log_sweep_run(tmp_path, options, metrics)
    events = _events(tmp_path)
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    assert set(content) == {
        metadata.EXPERIMENT_TAG,
        metadata.SESSION_START_INFO_TAG,
        metadata.SESSION_END_INFO_TAG,
    }
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert {k: v.WhichOneof("kind") for k, v in start.hparams.items()} == {
        "lr": "number_value",
        "batch_size": "number_value",
        "optimizer": "string_value",
        "weight_decay": "string_value",
        "nesterov": "string_value",
    }
    assert start.hparams["lr"].number_value == 0.01 and start.hparams["weight_decay"].string_value == "None"
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    tags = {info.name.tag for info in experiment.metric_infos}
    assert tags == {"final/val_accuracy", "final/test_accuracy", "final/train_seconds"}
    assert _scalars(events, "final/val_accuracy") == [(0, pytest.approx(0.91))]


def test_missing_extra_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    message = "this needs tensorboard: pip install 'torchlogreg[tensorboard]'"
    with pytest.raises(DependencyError, match=message.replace("[", r"\[")):
        TensorBoardLogger(tmp_path)
    with pytest.raises(DependencyError, match=r"torchlogreg\[tensorboard\]"):
        log_sweep_run(tmp_path, {"lr": 0.1}, {"val_accuracy": 0.9})
    assert not list(tmp_path.iterdir())


def test_importing_the_package_does_not_import_tensorboard():
    import subprocess

    code = "import torchlogreg, torchlogreg.training.tensorboard, sys; print('tensorboard' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


@pytest.mark.parametrize("where", ["/dev/null/x", "file"])
def test_a_log_folder_that_cannot_be_made_is_one_line(tmp_path, where):
    # --tensorboard /dev/null/x ended in a NotADirectoryError traceback
    pytest.importorskip("tensorboard")
    from torchlogreg import OutputError, train

    if where == "file":
        (tmp_path / "file").write_text("")
        where = str(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot write .*(is a file|a part of the path is a file)"):
        train(
            TrainConfig(batch_size=16, epochs=1, device="cpu"),
            synthetic_data(),
            verbose=False,
            tensorboard=where,
        )
