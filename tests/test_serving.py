"""The web demo: the API with FastAPI's TestClient (predictions and every error case), and the
page in headless Chromium, where a stroke drawn with pointer events must be classified."""

import io
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CHROMIUM_FLAGS
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from torchlogreg.serving import create_app  # noqa: E402

CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.fixture(scope="module")
def client(default_run):
    return TestClient(create_app(default_run, max_upload_bytes=200_000))


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_health_and_model(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    info = client.get("/api/model").json()
    assert info["meta"]["dataset"] == "mnist" and info["metrics"]["test"]["accuracy"] > 0.92
    assert info["input_shape"] == [28, 28]


def test_page_and_assets_are_served_locally(client):
    page = client.get("/").text
    assert '<canvas id="pad"' in page and "http" not in page.replace("http-equiv", "")
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200 and "https://" not in response.text


def test_predicts_test_digits_sent_as_png(client, mnist_splits, default_result):
    test = mnist_splits[1]
    expected = default_result.model.predict(test.images[:40]).tolist()
    for image, label in zip(test.images[:40], expected, strict=True):  # noqa: B007
        # as a user would send it: dark ink on white paper, larger than 28x28
        png = _png(np.asarray(Image.fromarray(255 - image.numpy()).resize((140, 140))))
        response = client.post("/api/predict", files={"file": ("digit.png", png, "image/png")})
        assert response.status_code == 200
        body = response.json()
        assert set(body) >= {"label", "probabilities", "top_k", "image", "evidence"}
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-5 and len(body["image"]) == 28
        agree = body["label"] == str(label)
        assert agree or body["probability"] < 0.9  # a confident disagreement would be a preprocessing bug
    hits = sum(
        client.post("/api/predict", files={"file": ("d.png", _png(255 - im.numpy()), "image/png")}).json()[
            "label"
        ]
        == str(int(lab))
        for im, lab in zip(test.images[:100], test.labels[:100], strict=True)
    )
    assert hits >= 85


def test_predicts_arrays_sent_as_json(client, mnist_splits, default_result):
    test = mnist_splits[1]
    for image in test.images[:20]:
        expected = default_result.model.predict(image[None]).item()
        as_grid = client.post("/api/predict", json={"pixels": (image.numpy() / 255).tolist()}).json()
        as_flat = client.post("/api/predict", json={"pixels": image.numpy().reshape(-1).tolist()}).json()
        assert as_grid["label"] == as_flat["label"] == str(expected)
    # the evidence maps add up to the logits' difference that decided
    body = client.post("/api/predict", json={"pixels": (test.images[0].numpy() / 255).tolist()}).json()
    assert np.array(body["evidence"]["predicted"]).sum() > np.array(body["evidence"]["runner_up"]).sum() - 5


@pytest.mark.parametrize(
    "kwargs,status,fragment",
    [
        ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * 300_000, "image/png")}}, 413, "over the limit"),
        ({"files": {"file": ("t.png", b"not an image", "image/png")}}, 422, "not an image"),
        ({"files": {"file": ("e.png", b"", "image/png")}}, 422, "empty"),
        ({"files": {"other": ("t.png", b"x", "image/png")}}, 422, "field 'file'"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "not valid JSON"),
        ({"json": {"pixels": [[1, 2], [3, 4]]}}, 422, "does not hold 28x28"),
        (
            {
                "content": b'{"pixels": [' + b", ".join([b"NaN"] * 784) + b"]}",
                "headers": {"content-type": "application/json"},
            },
            422,
            "NaN",
        ),
        ({"json": {"other": 1}}, 422, '"pixels"'),
        ({"json": {"pixels": "abc"}}, 422, "must hold numbers"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
    ],
)
def test_errors_are_json_4xx(client, kwargs, status, fragment):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status
    body = response.json()
    assert fragment in body["error"] and "Traceback" not in json.dumps(body)


def test_images_over_the_pixel_limit_are_refused(client):
    response = client.post(
        "/api/predict", files={"file": ("bomb.png", (CORPUS / "bomb.png").read_bytes(), "image/png")}
    )
    assert response.status_code == 422 and "larger than the limit" in response.json()["error"]


def test_blank_drawing_says_no_digit(client):
    blank = _png(np.full((280, 280), 255, np.uint8))
    response = client.post("/api/predict", files={"file": ("drawing.png", blank, "image/png")})
    assert response.status_code == 422 and "no digit found" in response.json()["error"]


# --- a run on 32x32 images -----------------------------------------------------------------


@pytest.fixture(scope="module")
def data_32():
    from conftest import synthetic_data

    return synthetic_data(side=32)


@pytest.fixture(scope="module")
def client_32(data_32, tmp_path_factory):
    """A client serving a tiny run trained on synthetic 32x32 images."""
    from torchlogreg import TrainConfig, train
    from torchlogreg.checkpoints import save_run

    result = train(TrainConfig(batch_size=16, epochs=2, device="cpu", val_size=60), data_32, verbose=False)
    run = save_run(result, tmp_path_factory.mktemp("runs") / "side32")
    return TestClient(create_app(run))


def test_a_32x32_run_reports_its_shape(client_32):
    assert client_32.get("/api/model").json()["input_shape"] == [32, 32]


def test_a_32x32_run_classifies_pngs_and_pixels(client_32, data_32):
    drawing = np.full((150, 150), 255, np.uint8)
    drawing[30:120, 60:85] = 0  # a dark bar on white paper
    sent = [
        {"files": {"file": ("bar.png", _png(drawing), "image/png")}},
        {"json": {"pixels": data_32.test.images[0].tolist()}},
        {"json": {"pixels": (data_32.test.images[1].numpy().reshape(-1) / 255).tolist()}},
    ]
    bodies = []
    for kwargs in sent:
        response = client_32.post("/api/predict", **kwargs)
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    for body in bodies:
        assert body["label"] in {"0", "1", "2"}
        for grid in (body["image"], body["evidence"]["predicted"], body["evidence"]["runner_up"]):
            assert np.array(grid).shape == (32, 32)
    rows = np.flatnonzero(np.array(bodies[0]["image"]).any(axis=1))
    assert rows[-1] - rows[0] + 1 == round(32 * 20 / 28)  # the bar fills MNIST's box, scaled to 32x32


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"pixels": np.zeros((28, 28)).tolist()}},
        {"json": {"pixels": [0] * 784}},
        {"files": {"file": ("a.npy", _npy(np.zeros((28, 28), np.uint8)), "application/octet-stream")}},
    ],
)
def test_a_32x32_run_refuses_28x28_arrays(client_32, kwargs):
    response = client_32.post("/api/predict", **kwargs)
    assert response.status_code == 422
    assert "does not hold 32x32 images" in response.json()["error"]


# --- the page in a real browser ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(default_run):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "torchlogreg", "serve", str(default_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    import urllib.request

    deadline = time.monotonic() + 60
    while True:  # poll until the server answers (bounded), rather than sleeping a guessed time
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"server did not start: {process.stdout.read()}")
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


def test_drawing_a_one_in_chromium(server, tmp_path):
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        *CHROMIUM_FLAGS,
        "--window-size=1000,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        browser.get(server + "/")
        pad = browser.find_element(By.ID, "pad")
        size = pad.size
        # a vertical stroke down the middle: a "1"
        actions = ActionChains(browser)
        actions.move_to_element_with_offset(pad, 0, -int(size["height"] * 0.35)).click_and_hold()
        for _ in range(14):
            actions.move_by_offset(0, int(size["height"] * 0.05))
        actions.release().perform()
        label = browser.find_element(By.ID, "label")
        WebDriverWait(browser, 20).until(lambda _: label.get_attribute("data-label"))
        WebDriverWait(browser, 20).until(
            lambda _: "Loading" not in browser.find_element(By.ID, "model-info").text
        )
        assert label.get_attribute("data-label") == "1"
        assert browser.find_elements(By.CSS_SELECTOR, "#bars li")
        browser.save_screenshot(str(tmp_path / "serve.png"))
        shutil.copy(
            tmp_path / "serve.png", Path(server.split("//")[0] or ".").parent / "serve_screenshot.png"
        ) if False else None
        assert (tmp_path / "serve.png").stat().st_size > 10_000
    finally:
        browser.quit()
