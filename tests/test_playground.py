"""The playground: live trainings (live.py) against `train` bit for bit, pause/step and changes on
the fly; the server's settings, command lines, saves and limits (playground.py) through its
WebSocket; and the page in headless Chromium on real MNIST, as a learner uses it."""

import dataclasses
import json
import math
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import CHROMIUM_FLAGS, running_server, synthetic_data

from torchlogreg import ConfigError, train
from torchlogreg.checkpoints import load_run
from torchlogreg.data import Split
from torchlogreg.evaluation import evaluate
from torchlogreg.live import LiveTraining

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from torchlogreg.playground import create_app  # noqa: E402
from torchlogreg.playground_setup import (  # noqa: E402
    EXPERIMENTS,
    PAGE_FIELDS,
    Catalog,
    command_for,
    config_for,
    save_live,
)

SOCKET = "ws://127.0.0.1:8000/ws"  # a loopback server answers loopback names only
TIMEOUT = 120  # seconds any wait below may take before the test fails (never a sleep)


def _rows(history: list[dict]) -> list[tuple]:
    return [tuple(row.values()) for row in history]


def _run_to_end(live: LiveTraining) -> LiveTraining:
    live.start()
    assert live.wait(TIMEOUT)
    return live


# --- live trainings --------------------------------------------------------------------------------------
@pytest.mark.numerics
def test_an_untouched_live_training_is_train_bit_for_bit(tiny_config):
    data = synthetic_data()
    reference = train(tiny_config, data, verbose=False)
    live = _run_to_end(LiveTraining(tiny_config, data))
    assert live.state == "finished" and not live.changed
    assert _rows(live.result.history) == _rows(reference.history)
    assert torch.equal(live.result.model.linear.weight, reference.model.linear.weight)
    assert live.result.metrics["test"] == reference.metrics["test"]


@pytest.mark.numerics
def test_pausing_and_stepping_change_nothing(tiny_config):
    data = synthetic_data()
    reference = train(tiny_config, data, verbose=False)
    live = LiveTraining(tiny_config, data)
    live.step(3)
    assert live.wait(TIMEOUT) and live.state == "paused" and live.snapshot().iteration == 3
    live.step()
    assert live.wait(TIMEOUT) and live.snapshot().iteration == 4 and len(live.rows(0)) == 4
    _run_to_end(live)
    assert _rows(live.result.history) == _rows(reference.history)


def test_changes_apply_from_the_next_step_and_are_marked(tiny_config):
    data = synthetic_data()
    live = LiveTraining(tiny_config, data)
    live.step(5)
    assert live.wait(TIMEOUT)
    live.change(lr=0.05, weight_decay=0.01, batch_size=32)
    _run_to_end(live)
    assert live.changed and live.changes == [
        {
            "iteration": 5,
            "epoch": live.result.history[4]["epoch"],
            "lr": 0.05,
            "weight_decay": 0.01,
            "batch_size": 32,
        }
    ]
    history = live.result.history
    assert history[4]["lr"] != 0.05 and history[5]["lr"] <= 0.05
    new_steps_per_epoch = math.ceil(len(data.train) / 32)  # the run keeps its length in epochs, to a step
    assert history[-1]["epoch"] == pytest.approx(tiny_config.epochs, abs=1 / new_steps_per_epoch)
    assert history[6]["epoch"] - history[5]["epoch"] == pytest.approx(1 / new_steps_per_epoch)


def test_a_penalty_switched_on_mid_run_takes_effect(tiny_config):
    config = tiny_config.replace(weight_decay=0.0, l1=0.0)  # the engine starts without penalty terms
    reference = train(config, synthetic_data(), verbose=False)
    live = LiveTraining(config, synthetic_data())
    live.step(3)
    live.wait(TIMEOUT)
    live.change(weight_decay=0.05)
    rows = _rows(_run_to_end(live).result.history)
    # step 4 is the first with the penalty: its loss was measured before its update, so row 5 differs
    assert rows[:4] == _rows(reference.history)[:4] and rows[4] != _rows(reference.history)[4]
    assert live.result.model.linear.weight.norm() < reference.model.linear.weight.norm()


def test_a_new_batch_source_starts_a_whole_epoch(tiny_config):
    from torchlogreg.batches import batch_source
    from torchlogreg.training import build

    data = synthetic_data()
    engine = build(tiny_config, data, verbose=False, progress=False).engine
    engine.total = 5  # mid-epoch: 15 steps make one
    engine.run()
    source = batch_source(data.train.images, data.train.labels, 32, "cpu")
    skips, epoch = [], source.epoch
    source.epoch = lambda generator, skip=0: skips.append(skip) or epoch(generator, skip)
    engine.set_source(source)
    engine.total = 5 + 2 * source.steps_per_epoch
    engine.run()
    assert skips == [0, 0] and engine.steps_per_epoch == source.steps_per_epoch == 8


def test_the_same_changes_at_the_same_step_give_the_same_run(tiny_config):
    def changed_run():
        live = LiveTraining(tiny_config, synthetic_data())
        live.step(4)
        live.wait(TIMEOUT)
        live.change(batch_size=8, l1=0.001)
        return _run_to_end(live)

    first, second = changed_run(), changed_run()
    assert _rows(first.result.history) == _rows(second.result.history)


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"lr": -1.0}, "lr must be a number > 0"),
        ({"batch_size": 10_000}, "batch_size must be at most the 240 training samples"),
        ({"momentum": 0.5}, "momentum cannot change during a run"),
        ({"l1": float("nan")}, "l1 must be a finite number"),
    ],
)
def test_changes_are_checked_at_once(tiny_config, change, fragment):
    live = LiveTraining(tiny_config, synthetic_data())
    try:
        with pytest.raises(ConfigError, match=fragment):
            live.change(**change)
    finally:
        live.close()


def test_a_diverging_run_stops_with_the_engines_message(tiny_config):
    data = synthetic_data()
    shuffled = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))
    data = dataclasses.replace(data, train=Split(data.train.images, data.train.labels[shuffled]))  # no fit
    live = _run_to_end(LiveTraining(tiny_config.replace(lr=1e30, weight_decay=0.0), data))
    assert live.state == "diverged" and live.error.startswith("training diverged") and "lower" in live.error
    assert live.rows(0) == live.history[: live.published] and live.training is None
    with pytest.raises(ConfigError, match="the run has ended"):
        live.change(lr=0.1)


def test_a_blank_learning_rate_means_the_one_the_run_started_with(tiny_config):
    live = LiveTraining(tiny_config.replace(lr=0.01), synthetic_data())
    live.change(lr=0.5)
    assert live.change(lr=None)["lr"] == 0.01
    with pytest.raises(ConfigError, match="lbfgs takes the whole training set"):
        LiveTraining(tiny_config.replace(optimizer="lbfgs", epochs=3), synthetic_data()).change(batch_size=8)
    live.close()


def test_lbfgs_runs_live_a_whole_set_step_at_a_time(tiny_config):
    config = tiny_config.replace(optimizer="lbfgs", epochs=5)
    reference = train(config, synthetic_data(), verbose=False)
    live = _run_to_end(LiveTraining(config, synthetic_data()))
    assert _rows(live.result.history) == _rows(reference.history) and live.samples == 5 * 240


@pytest.mark.numerics
def test_a_rerun_from_the_settled_config_is_the_same_run(tiny_config):
    first = _run_to_end(LiveTraining(tiny_config, synthetic_data()))
    again = _run_to_end(LiveTraining(tiny_config, synthetic_data(), settled=first.used))
    assert again.used == first.used and _rows(again.result.history) == _rows(first.result.history)


def test_a_run_over_the_step_limit_is_refused(tiny_config):
    with pytest.raises(ConfigError, match="over the 10 allowed here"):
        LiveTraining(tiny_config, synthetic_data(), max_steps=10)


def test_closing_stops_the_training_thread(tiny_config):
    live = LiveTraining(tiny_config.replace(epochs=None, iters=100_000), synthetic_data())
    live.start()
    live.close()
    assert live.wait(TIMEOUT)
    live._thread.join(TIMEOUT)
    assert not live._thread.is_alive() and live.state == "closed" and live.training is None


# --- settings, commands and saves ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def catalog(data_root):
    return Catalog(str(data_root))


def test_only_data_sets_found_are_offered_and_no_path_is_taken(catalog, tmp_path):
    assert "mnist" in catalog.paths
    for name in ("../../etc", "/tmp/x", "data/mine", "not-a-dataset"):
        with pytest.raises(ConfigError, match="dataset must be one of"):
            config_for(catalog, {"preset": "default", "dataset": name})
    with pytest.raises(Exception, match="meta.json"):
        Catalog(str(tmp_path), (str(tmp_path),))


def test_a_dataset_folder_given_to_the_server_trains_live(tmp_path, data_root):
    from torchlogreg.ondisk import write_dataset

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
    _run_to_end(live)
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
    from torchlogreg.cli import build_parser, config_from_args

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
    live = _run_to_end(LiveTraining(tiny_config, data))
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


# --- the server, through its WebSocket ----------------------------------------------------------------
@pytest.fixture(scope="module")
def client(data_root, tmp_path_factory):
    app = create_app(str(data_root), runs_dir=tmp_path_factory.mktemp("runs"), max_trainings=1)
    return TestClient(app)


def _until(ws, kind: str, state: str | None = None) -> dict:
    for _ in range(100_000):
        message = ws.receive()
        if message.get("text") is None:
            continue
        body = json.loads(message["text"])
        if body["type"] == "error" and kind != "error":
            raise AssertionError(body["message"])
        if body["type"] == kind and (state is None or body.get("state") == state):
            return body
    raise AssertionError(f"no {kind} message")


def test_hello_offers_presets_experiments_and_found_data_sets(client):
    with client.websocket_connect(SOCKET) as ws:
        hello = ws.receive_json()
    assert hello["type"] == "hello" and "mnist" in hello["datasets"]
    assert set(hello["presets"]) == {"tutorial", "default"} and "data_root" not in hello["presets"]["default"]
    assert [e["name"] for e in hello["experiments"]][:2] == ["learning rate 10", "batch size 1 vs 1,000"]


@pytest.mark.parametrize(
    "headers",
    [
        {"origin": "https://evil.example"},  # another site's page
        {"origin": "http://rebound.example:8000", "host": "rebound.example:8000"},  # DNS rebinding
    ],
)
def test_another_sites_page_is_refused(client, headers):
    from starlette.websockets import WebSocketDisconnect

    with (
        pytest.raises(WebSocketDisconnect),
        client.websocket_connect(SOCKET, headers={"origin": "https://evil.example"}) as ws,
    ):
        ws.receive_json()


def test_bad_messages_are_one_line_errors(client):
    with client.websocket_connect(SOCKET) as ws:
        ws.receive_json()
        ws.send_text("{not json")
        assert _until(ws, "error")["message"] == "messages must be JSON objects"
        ws.send_json({"type": "launch"})
        assert "type must be one of" in _until(ws, "error")["message"]
        ws.send_json({"type": "start", "dataset": "/etc", "settings": {}})
        assert "dataset must be one of" in _until(ws, "error")["message"]
        ws.send_bytes(b"not a png")
        assert "start a run first" in _until(ws, "error")["message"]


def test_the_pad_asks_the_model_as_it_trains(client, mnist_splits):
    import io

    from PIL import Image

    test = mnist_splits[1]
    buffer = io.BytesIO()
    Image.fromarray(255 - test.images[0].numpy()).resize((140, 140)).save(buffer, format="PNG")
    with client.websocket_connect(SOCKET) as ws:
        ws.receive_json()
        ws.send_json({"type": "start", "preset": "default", "dataset": "mnist", "settings": {}, "steps": 200})
        _until(ws, "frame", "paused")
        ws.send_bytes(buffer.getvalue())
        answer = _until(ws, "prediction")
    assert answer["label"] == str(int(test.labels[0])) and answer["iteration"] == 200
    assert answer["top_k"][0]["label"] == answer["label"]


def test_trainings_over_the_cap_get_a_clear_message_and_a_closed_page_frees_its_slot(client):
    start = {"type": "start", "preset": "default", "dataset": "mnist", "settings": {"epochs": 1}, "steps": 1}
    with client.websocket_connect(SOCKET) as first:
        first.receive_json()
        first.send_json(start)
        _until(first, "frame", "paused")
        with client.websocket_connect(SOCKET) as second:
            second.receive_json()
            second.send_json(start)
            assert "its limit (--max-trainings 1)" in _until(second, "error")["message"]
    with client.websocket_connect(SOCKET) as third:  # the first page went away: its training stopped
        third.receive_json()
        third.send_json(start)
        assert _until(third, "frame", "paused")["iteration"] == 1


# --- the page, in Chromium ---------------------------------------------------------------------------

def _evaluate(folder: Path, data_root) -> dict:
    """`torchlogreg evaluate FOLDER --json` in a fresh process: what a user gets for a saved run."""
    command = [sys.executable, "-m", "torchlogreg", "evaluate", str(folder), "--data-root", str(data_root)]
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def _saved_folder(browser) -> Path:
    """The run folder the page says it saved, once it says so."""
    from selenium.webdriver.common.by import By

    _wait(browser, "return document.getElementById('status').textContent.startsWith('Saved the run in')")
    return Path(browser.find_element(By.ID, "status").text.removeprefix("Saved the run in ").strip())


@pytest.fixture(scope="module")
def server(data_root, tmp_path_factory):
    """The real server (a subprocess) on real MNIST: (its URL, the folder saves go to)."""
    runs = tmp_path_factory.mktemp("saved")
    with running_server("playground", "--data-root", str(data_root), "--runs", str(runs)) as (url, _):
        yield url, runs


def _chromium(profile: Path, phone: bool = False):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, "--window-size=1280,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if phone:  # a 390x844 viewport (a window cannot be made that narrow)
        metrics = {"width": 390, "height": 844, "pixelRatio": 2}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    return webdriver.Chrome(service=Service(driver_path), options=options)


@pytest.fixture
def browser(tmp_path):
    driver = _chromium(tmp_path / "profile")
    yield driver
    driver.quit()


def _wait(browser, script: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, TIMEOUT, poll_frequency=0.02).until(
        lambda _: browser.execute_script(script)
    )


def _open(browser, url: str) -> None:
    browser.get(url)
    _wait(browser, "return window.playground.hello !== null && window.playground.command !== null")


def _templates(browser) -> list[str]:
    return browser.execute_script(
        "return [...document.querySelectorAll('#templates canvas')].map((c) => c.toDataURL())"
    )


def test_a_learner_starts_watches_changes_pauses_and_saves(server, browser, data_root):
    from selenium.webdriver.common.by import By

    url, runs = server
    _open(browser, url + "/?preset=default&dataset=mnist&batch_size=1&epochs=1")
    click = lambda name: browser.find_element(By.ID, name).click()  # noqa: E731
    click("step")  # one step, then paused
    _wait(
        browser,
        "return window.playground.run && window.playground.run.state === 'paused' && "
        "window.playground.run.measure !== null && window.playground.weights !== null",
    )
    first_templates = _templates(browser)
    assert browser.execute_script("return window.playground.run.rows.length") == 1
    lr = browser.find_element(By.NAME, "lr")  # the learning rate, changed while the run is paused mid-way
    lr.clear()
    lr.send_keys("0.05")
    browser.execute_script(
        "document.querySelector('[name=lr]').dispatchEvent(new Event('change', {bubbles: true}))"
    )
    _wait(browser, "return document.getElementById('status').textContent.includes('next step')")
    click("start")  # resume
    _wait(
        browser, "return window.playground.run.rows.length > 1 && window.playground.run.changes.length === 1"
    )
    grown = browser.execute_script("return window.playground.run.rows.length")
    click("start")  # pause: 55,000 steps of one image take seconds
    _wait(browser, "return window.playground.run.state === 'paused'")
    run = browser.execute_script("return window.playground.run")
    assert 1 < grown <= len(run["rows"]) < run["total"], "the curve grew, and the run paused before its end"
    assert run["changes"][0]["lr"] == 0.05 and run["changes"][0]["iteration"] == 1
    assert run["rows"][0][2] != 0.05 and all(0 < row[2] <= 0.05 for row in run["rows"][1:])  # the new base lr
    assert browser.find_element(By.ID, "changed-note").is_displayed()
    assert _templates(browser) != first_templates
    click("save")
    folder = _saved_folder(browser)
    assert folder.parent == runs and load_run(folder).metrics["iterations"] == len(run["rows"])
    notes = json.loads((folder / "playground.json").read_text())
    assert notes["changes"][0]["lr"] == 0.05 and notes["equivalent_command"] is None
    assert _evaluate(folder, data_root)["n"] == 10_000


@pytest.mark.numerics
def test_a_settings_url_gives_the_same_curves_as_train_and_the_copied_command(
    server, browser, data_root, tmp_path
):
    from selenium.webdriver.common.by import By

    url, runs = server
    address = url + "/?preset=default&dataset=mnist&lr=0.4375&epochs=2&eval_every=100"
    curves = []
    for _ in range(2):  # the same URL opened twice
        _open(browser, address)
        browser.find_element(By.ID, "start").click()
        _wait(browser, "return window.playground.run && window.playground.run.state === 'finished'")
        curves.append(browser.execute_script("return window.playground.run"))
    first, second = curves
    assert first["rows"] == second["rows"] and first["rows"][-1][1] == 2.0  # two epochs, row for row
    command = browser.execute_script("return window.playground.command")
    assert command.startswith(f"torchlogreg train --data-root {data_root} --lr 0.4375 ")
    assert command.endswith("--eval-every 100")
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "torchlogreg",
            *shlex.split(command)[1:],
            "--out",
            str(tmp_path / "cli"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "test accuracy" in cli.stdout
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert first["metrics"]["test"]["accuracy"] == cli_metrics["test"]["accuracy"]
    history = (tmp_path / "cli" / "history.csv").read_text().splitlines()[1:]
    assert [float(line.split(",")[3]) for line in history] == [
        row[3] for row in first["rows"]
    ]  # batch losses
    browser.find_element(By.ID, "save").click()
    folder = _saved_folder(browser)
    assert _evaluate(folder, data_root)["accuracy"] == first["metrics"]["test"]["accuracy"]
    assert load_run(folder).meta["command"] == command.split()


def test_the_page_loads_nothing_from_elsewhere(server):
    url, _ = server
    page = urllib.request.urlopen(url + "/").read().decode()
    assert "http" not in page.replace("http-equiv", "")
    for asset in ("/static/playground.js", "/static/playground.css"):
        text = urllib.request.urlopen(url + asset).read().decode()
        assert "https://" not in text and "http://" not in text


def test_a_phone_sized_page_is_usable_from_the_keyboard(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    url, _ = server
    phone = _chromium(tmp_path / "phone", phone=True)
    try:
        _open(phone, url + "/?preset=default&dataset=mnist&epochs=1")
        assert phone.execute_script("return [innerWidth, document.documentElement.scrollWidth]") == [390, 390]
        start = phone.find_element(By.ID, "start")
        start.send_keys(Keys.ENTER)  # Start from the keyboard
        _wait(phone, "return window.playground.run && window.playground.run.state === 'finished'")
        phone.execute_script("window.scrollTo(0, document.body.scrollHeight)")
        box = phone.execute_script("return document.getElementById('start').getBoundingClientRect().toJSON()")
        assert box["top"] >= 0 and box["bottom"] <= 844, "Start/Pause stays at hand at the foot of the screen"
        chart = phone.find_element(By.ID, "loss-chart")
        chart.send_keys(Keys.END, Keys.ARROW_LEFT)  # exact values from the keyboard
        readout = phone.find_element(By.ID, "loss-readout")
        _wait(phone, "return document.getElementById('loss-readout').textContent.includes('batch loss')")
        rows = phone.execute_script("return window.playground.run.rows")
        assert readout.text.startswith(f"iteration {rows[-2][0]} ") and repr(rows[-2][3]) in readout.text
    finally:
        phone.quit()
