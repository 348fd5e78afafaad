"""The playground (playground.py, playground_session.py): the server's settings, limits and pad through
its WebSocket, and the page in headless Chromium on real MNIST, as a learner uses it."""

import json
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import LIVE_TIMEOUT as TIMEOUT
from conftest import browser_or_skip

from benchmarks.localserver import local_server
from torchlogreg.runfolder.checkpoints import load_run

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from torchlogreg.apps.playground import create_app  # noqa: E402

SOCKET = "ws://127.0.0.1:8000/ws"  # a loopback server answers loopback names only


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
        client.websocket_connect(SOCKET, headers=headers) as ws,
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
        ws.send_text("[" * 100_000 + "]" * 100_000)
        assert "nests too deeply" in _until(ws, "error")["message"]
        ws.send_text('{"type": "check", "settings": {"seed": ' + "9" * 5000 + "}}")
        assert _until(ws, "error")["message"] == "messages must be JSON objects"
        ws.send_json({"type": ["start"]})  # (a list or an object where a name belongs)
        assert "type must be one of" in _until(ws, "error")["message"]
        ws.send_json({"type": "check", "dataset": [1]})
        assert "dataset must be one of" in _until(ws, "error")["message"]
        ws.send_json({"type": "check"})
        assert _until(ws, "config")["command"]  # the page is still served


def test_weights_that_overflow_end_the_run_with_the_divergence_message(client):
    """At lr 1e30 the weights overflow before the run's divergence check: the sample's confusion
    matrix had raised, and the page's connection closed with nothing said."""
    settings = {"optimizer": "sgd", "lr": 1e30, "schedule": "none", "epochs": 1, "train_size": 2000}
    with client.websocket_connect(SOCKET) as ws:
        ws.receive_json()
        ws.send_json({"type": "start", "settings": settings})
        frame = _until(ws, "frame", "diverged")
        assert "training diverged" in frame["error"] and "lower the learning rate" in frame["error"]
        ws.send_json({"type": "reset"})
        ws.send_json({"type": "check"})
        assert _until(ws, "config")["command"]  # still connected


def test_a_page_that_goes_away_while_it_is_answered_logs_no_traceback(catalog, tmp_path, caplog):
    import asyncio

    from starlette.websockets import WebSocketDisconnect

    from torchlogreg.apps.playground import AppState, _serve_page
    from torchlogreg.apps.playground_session import Session, Slots

    class GonePage:  # sends one command, and is gone by the time it is answered
        async def receive(self) -> dict:
            return {"type": "websocket.receive", "text": '{"type": "check"}'}

    async def send(message) -> None:
        raise WebSocketDisconnect(code=1006)

    async def serve() -> None:
        state = AppState(catalog, Slots(1), tmp_path)
        session = Session(state, send, send, asyncio.get_running_loop())
        await _serve_page(GonePage(), session, send)

    with pytest.raises(WebSocketDisconnect):
        asyncio.run(serve())
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"


def test_a_loop_that_fails_as_its_page_goes_away_is_collected_not_logged():
    # the frames loop, stopped in the middle of a send, ended in WebSocketDisconnect after the page's
    # other loop had ended: "Task exception was never retrieved" and a traceback in the server's log
    import asyncio
    import gc

    from starlette.websockets import WebSocketDisconnect

    from torchlogreg.apps.playground import _until_one_ends

    async def page_gone() -> None:
        return

    async def sending() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise WebSocketDisconnect(code=1006) from None

    uncollected, ended = [], []

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: uncollected.append(context["message"]))
        try:
            await _until_one_ends(page_gone(), sending())
        except WebSocketDisconnect:
            ended.append(True)  # what the page's socket handler expects: the page went away
        gc.collect()

    asyncio.run(serve())
    assert ended and not uncollected


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
    with local_server("playground", "--data-root", str(data_root), "--runs", str(runs)) as (url, _):
        yield url, runs


@pytest.fixture
def browser(tmp_path):
    driver = browser_or_skip(tmp_path / "profile")
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
    phone = browser_or_skip(tmp_path / "phone", phone=True)
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
