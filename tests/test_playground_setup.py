"""The playground's choices (apps/playground_setup.py): the data sets offered, settings checked by the
config, experiments, the command line that trains the same, and saving a live run as a run folder."""

import json

import pytest
from conftest import LIVE_TIMEOUT as TIMEOUT
from conftest import run_to_end, synthetic_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torchlogreg import ConfigError
from torchlogreg.apps.playground_setup import (
    EXPERIMENTS,
    PAGE_FIELDS,
    Catalog,
    command_for,
    config_for,
    save_live,
)
from torchlogreg.runfolder.checkpoints import load_run
from torchlogreg.training.evaluation import evaluate
from torchlogreg.training.live import LiveTraining


def test_only_data_sets_found_are_offered_and_no_path_is_taken(catalog, tmp_path):
    assert "mnist" in catalog.paths
    for name in ("../../etc", "/tmp/x", "data/mine", "not-a-dataset"):
        with pytest.raises(ConfigError, match="dataset must be one of"):
            config_for(catalog, {"preset": "default", "dataset": name})
    with pytest.raises(Exception, match="meta.json"):
        Catalog(str(tmp_path), (str(tmp_path),))


def test_a_dataset_folder_given_to_the_server_trains_live(tmp_path, data_root):
    from torchlogreg.data.ondisk import write_dataset

    data = synthetic_data(n_train=300, n_val=0, side=6)
    folder = write_dataset(tmp_path / "mine", data.train, data.test, data.class_names)
    catalog = Catalog(str(data_root), (str(folder),))
    assert "mine" in catalog.paths and catalog.paths["mine"] == str(folder.resolve())
    settings_ = {"val_size": 60, "batch_size": 20, "lr": 0.1, "epochs": 2}
    config = config_for(catalog, {"preset": "default", "dataset": "mine", "settings": settings_})
    live = LiveTraining(config, catalog.data(config))
    live.step(3)
    live.wait(TIMEOUT)
    live.change(batch_size=50)  # batches read from disk, in a new size
    run_to_end(live)
    assert live.state == "finished" and live.result.image_shape == (6, 6)
    assert live.result.history[-1]["epoch"] == pytest.approx(2, abs=1 / 5)


@pytest.mark.parametrize(
    "request_,fragment",
    [
        ({"settings": {"lr": 0}}, "lr must be a number > 0"),
        ({"settings": {"learning_rate": 0.1}}, "unknown setting 'learning_rate'"),
        ({"settings": {"data_root": "/"}}, "unknown setting 'data_root'"),
        ({"settings": {"device": "cuda"}}, "unknown setting 'device'"),
        ({"settings": {"batch_size": "10"}}, "batch_size must be an integer"),
        ({"preset": "lbfgs"}, "preset must be one of tutorial, default"),
        ({"settings": [1]}, "settings must be a JSON object"),
    ],
)
def test_settings_are_checked_by_the_config(catalog, request_, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config_for(catalog, {"dataset": "mnist", **request_})


def test_every_experiment_is_a_valid_config_and_a_command(catalog):
    for experiment in EXPERIMENTS:
        for settings_ in [experiment["settings"], {**experiment["settings"], **experiment.get("then", {})}]:
            config = config_for(
                catalog, {"preset": experiment["preset"], "dataset": "mnist", "settings": settings_}
            )
            assert command_for(config) is not None
        assert experiment["look"].count(". ") == 0 and experiment["look"].endswith(".")  # one sentence


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from(["default", "tutorial"]),
    lr=st.none() | st.floats(1e-6, 100, allow_nan=False),
    batch_size=st.none() | st.integers(1, 4096),
    weight_decay=st.none() | st.floats(0, 1),
    optimizer=st.none() | st.sampled_from(["sgd", "adam"]),
    length=st.none() | st.tuples(st.sampled_from(["epochs", "iters"]), st.integers(1, 10_000)),
    nesterov=st.none() | st.booleans(),
    train_size=st.none() | st.integers(1, 50_000),
    seed=st.none() | st.integers(0, 2**63 - 1),
)
def test_the_command_trains_exactly_the_config(
    catalog, name, lr, batch_size, weight_decay, optimizer, length, nesterov, train_size, seed
):
    from torchlogreg.apps.cli import build_parser, config_from_args

    chosen = {
        "lr": lr,
        "batch_size": batch_size,
        "weight_decay": weight_decay,
        "optimizer": optimizer,
        "nesterov": nesterov,
        "train_size": train_size,
        "seed": seed,
    }
    if length is not None:
        chosen[length[0]] = length[1]
    config = config_for(
        catalog,
        {"preset": name, "dataset": "mnist", "settings": {k: v for k, v in chosen.items() if v is not None}},
    )
    command = command_for(config)
    assert command is not None and command[:2] == ["torchlogreg", "train"]
    assert config_from_args(build_parser().parse_args(command[1:])) == config


def test_page_fields_leave_the_server_its_own():
    assert not {"dataset", "data_root", "device"} & set(PAGE_FIELDS)


def test_a_saved_live_run_is_an_ordinary_run_folder(tiny_config, tmp_path):
    data = synthetic_data()
    live = run_to_end(LiveTraining(tiny_config, data))
    out = save_live(live, tmp_path)
    run = load_run(out)
    metrics = evaluate(run.model, data.test.images, data.test.labels)
    assert metrics["accuracy"] == live.result.metrics["test"]["accuracy"]
    notes = json.loads((out / "playground.json").read_text())
    assert notes["changes"] == [] and notes["equivalent_command"] == run.meta["command"]
    assert run.meta["command"][:2] == ["torchlogreg", "train"]


def test_a_changed_or_paused_run_says_so_when_saved(tiny_config, tmp_path):
    live = LiveTraining(tiny_config, synthetic_data())
    live.step(3)
    live.wait(TIMEOUT)
    live.change(lr=0.01)
    live.step(2)
    live.wait(TIMEOUT)
    out = save_live(live, tmp_path)
    notes = json.loads((out / "playground.json").read_text())
    assert notes["equivalent_command"] is None and notes["changes"][0]["lr"] == 0.01
    assert any("changed" in note for note in notes["notes"]) and any(
        "paused" in note for note in notes["notes"]
    )
    assert load_run(out).metrics["iterations"] == 5
    live.close()
