"""The web demo's API with FastAPI's TestClient: predictions and every error case, on 28x28 and
32x32 runs. The real server in a subprocess, and its page in Chromium: test_serving_server.py."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from corpus.hostile import memory_cap, npy_with_header, npz_bomb
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from torchlogreg.apps.serving import create_app  # noqa: E402

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
    assert info["dataset"] == "mnist" and info["metrics"]["test"]["accuracy"] > 0.92
    assert info["input_shape"] == [28, 28] and info["class_names"] == list("0123456789")
    assert info["binary"] is False and info["threshold"] is None
    assert "20x20" in info["preprocessing"] and info["limits"]["upload_bytes"] == 200_000


def test_model_info_leaks_no_paths_or_versions(client, default_run):
    # only what a client needs: no data_root, run folder, command line or exact library versions
    import platform

    import torch

    text = client.get("/api/model").text
    for secret in (str(default_run), str(Path.home()), "data_root", "command", torch.__version__):
        assert secret not in text
    assert "versions" not in text and platform.python_version() not in text
    assert client.get("/openapi.json").json()["info"]["version"] == "1"


def test_head_and_unknown_routes(client):
    for path in ("/", "/healthz"):
        assert client.head(path).status_code == 200
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    response = client.get("/api/predict")
    assert response.status_code == 405 and response.json() == {"error": "Method Not Allowed"}


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
    # a binarized digit as JavaScript writes it (1.0 as 1) reads as fractions, as floats do: as
    # integers 0..255 it was nearly black, and a 7 read as a 5
    for image in test.images[:20]:
        binary = (image.numpy() > 127).astype(int)
        as_ints = client.post("/api/predict", json={"pixels": binary.tolist()}).json()
        as_floats = client.post("/api/predict", json={"pixels": binary.astype(float).tolist()}).json()
        assert as_ints["probabilities"] == as_floats["probabilities"]
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
        ({"json": {"pixels": "abc"}}, 422, "array of numbers"),
        ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "multipart"),
        ({"content": b"{}", "headers": {"content-type": "application/jsonfoo"}}, 415, "multipart"),
        ({"content": b"{}", "headers": {"content-type": "Application/JSON; charset=utf-8"}}, 422, '"pixels"'),
    ],
)
def test_errors_are_json_4xx(client, kwargs, status, fragment):
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == status
    body = response.json()
    assert fragment in body["error"] and "Traceback" not in json.dumps(body)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _json(text: bytes) -> dict:
    return {"content": text, "headers": {"content-type": "application/json"}}


def _file(name: str, data: bytes) -> dict:
    return {"files": {"file": (name, data, "application/octet-stream")}}


NOISE = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
GRADIENT = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (64, 1))

# Each gets a 422 JSON naming the problem; most used to get a plain-text 500 (a number or booleans for
# pixels, a noise PNG, an object .npz, a 0-d or huge-shape .npy) or a wrong answer (booleans, a gradient).
HOSTILE = {
    "a number for pixels": ({"json": {"pixels": 5}}, '"pixels" must be a 28x28 (or 784) array'),
    "booleans for pixels": ({"json": {"pixels": [True] * 784}}, "true/false"),
    "nulls for pixels": ({"json": {"pixels": [None] * 784}}, "true/false, null"),
    "mixed numbers and lists": ({"json": {"pixels": [[0] * 28] * 27 + [0]}}, "as JSON lists"),
    "ragged rows": ({"json": {"pixels": [[0] * 28] * 27 + [[0] * 27]}}, "rows differ in length"),
    "4 levels of lists": ({"json": {"pixels": [[[[0] * 28] * 28]]}}, "as JSON lists"),
    "huge integers": ({"json": {"pixels": [10**30] * 784}}, "far out of range"),
    "an integer of 5000 digits": (_json(b'{"pixels": [' + b"9" * 5000 + b"]}"), "not valid JSON"),
    "5k-deep JSON": (_json(b'{"pixels": ' + b"[" * 5000 + b"]" * 5000 + b"}"), "nests too deeply"),
    "4k-deep objects": (_json(b'{"a": ' * 4000 + b"1" + b"}" * 4000), "nests too deeply"),
    "a JSON list": ({"json": [0] * 784}, 'needs "pixels"'),
    "two images": ({"json": {"pixels": [[0] * 784] * 2}}, "one image at a time, got 2"),
    "a noise PNG": (_file("noise.png", _png(NOISE)), "noise.png: no digit found"),
    "a blank gradient": (_file("gradient.png", _png(GRADIENT)), "gradient.png: no digit found"),
    "an object .npz": (_file("o.npz", _npz(images=np.array([{}], dtype=object))), "without pickles"),
    "a 0-d .npy": (_file("z.npy", _npy(np.array(3.0))), "a single value (a 0-d array)"),
    "a huge-shape .npy header": (
        _file("h.npy", npy_with_header((100_000_000, 784))),
        "h.npy: its array of shape (100000000, 784) (uint8) would decode to 73 GiB, "
        "over the limit of 76.2 KiB",
    ),
    "a truncated .npy": (_file("t.npy", _npy(np.zeros((1, 784), np.uint8))[:-10]), "truncated"),
    "a .npz of two images": (_file("two.npz", _npz(images=np.zeros((2, 784), np.uint8))), "got 2"),
    "a PNG named .npy": (_file("p.npy", _png(GRADIENT)), "not a readable NumPy file"),
    "a filename with a path": (_file("../../etc/x.png", b"junk"), "x.png: not an image"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_inputs_are_json_422(client, case):
    kwargs, fragment = HOSTILE[case]
    response = client.post("/api/predict", **kwargs)
    assert response.status_code == 422, response.text
    message = response.json()["error"]
    assert fragment in message and "\n" not in message and "Traceback" not in message
    assert "../" not in message


def test_upload_names_in_messages_are_one_short_line(client):
    long = client.post("/api/predict", **_file("n" * 500 + ".npy", b"junk")).json()["error"]
    assert long.startswith("...nnn") and long.index(".npy: not a readable NumPy file") == 76  # 80 in all
    body = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a\tb.png"\r\n\r\njunk\r\n--x--\r\n'
    headers = {"content-type": "multipart/form-data; boundary=x"}
    tabbed = client.post("/api/predict", content=body, headers=headers).json()["error"]
    assert tabbed.startswith("a\\tb.png: not an image")


def test_an_npz_bomb_is_refused_before_decoding(default_run):
    # ~440 kB of deflated zeros, 100 MB decoded: under the 2 MB upload limit, over the 8 MiB decoded one
    bomb = io.BytesIO()
    npz_bomb(bomb, 130_000)
    client = TestClient(create_app(default_run))
    response = client.post("/api/predict", **_file("bomb.npz", bomb.getvalue()))
    assert response.status_code == 422
    assert "would decode to 97.2 MiB, over the limit of 76.2 KiB" in response.json()["error"]


def test_malformed_multipart_is_json_422(client, caplog):
    for headers, body in [
        ({"content-type": "multipart/form-data"}, b"--x\r\n"),  # no boundary
        ({"content-type": "multipart/form-data; boundary=x"}, b"--x\r\nContent-Disposition: bad\r\n\r\n"),
        ({"content-type": "multipart/form-data; boundary=x"}, b"\x00\x01\x02" * 100),
    ]:
        response = client.post("/api/predict", content=body, headers=headers)
        assert response.status_code == 422 and "malformed multipart upload" in response.json()["error"]
    assert not caplog.records  # the answer says it; the server's log stays clean
    two = {"file": ("a.png", b"x", "image/png"), "other": ("b.png", b"y", "image/png")}
    response = client.post("/api/predict", files=two)
    assert response.status_code == 422 and "malformed multipart upload" in response.json()["error"]


def test_unexpected_errors_are_a_json_500_logged_here(default_run, monkeypatch, caplog):
    import logging

    from torchlogreg.apps import serving

    def broken(*args, **kwargs):
        raise RuntimeError("detail for the log only")

    monkeypatch.setattr(serving, "explain", broken)
    client = TestClient(create_app(default_run), raise_server_exceptions=False)
    with caplog.at_level(logging.ERROR, logger="torchlogreg.apps.serving"):
        response = client.post("/api/predict", json={"pixels": [0] * 784})
    assert response.status_code == 500 and response.json() == {"error": "internal error"}
    assert "detail for the log only" in caplog.text and "Traceback" in caplog.text


def _post_long_body(
    app, content_type: str, total: int = 256 << 20, chunk: int = 64 << 10
) -> tuple[dict, int]:
    """Send `app` a chunked POST /api/predict of `total` bytes; (its reply, the bytes it read)."""
    import anyio

    read = 0
    messages = []

    async def receive():
        nonlocal read
        read += chunk
        return {"type": "http.request", "body": bytes(chunk), "more_body": read < total}

    async def send(message):
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "root_path": "",
        "server": ("testserver", 80),
        "client": ("testclient", 50000),
        "headers": [(b"content-type", content_type.encode()), (b"transfer-encoding", b"chunked")],
    }
    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return {"status": messages[0]["status"], "json": json.loads(body)}, read


@pytest.mark.parametrize("content_type", ["application/json", "multipart/form-data; boundary=x"])
def test_a_chunked_body_is_cut_at_the_limit(default_run, content_type):
    # no Content-Length to check up front: the body is counted as it arrives and cut at the limit
    app = create_app(default_run, max_upload_bytes=200_000)
    with memory_cap():  # a server that read it all would hold 256 MB (and once took 3.6 GB for 1.5)
        reply, read = _post_long_body(app, content_type)
    limit = 200_000 if content_type.startswith("multipart") else 29_184  # a JSON 28x28 image's most
    assert reply["status"] == 413 and f"over the limit of {limit} bytes" in reply["json"]["error"]
    assert read <= 200_000 + 64 * 1024


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
    from torchlogreg.runfolder.checkpoints import save_run

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


@pytest.mark.parametrize("workers", [1, 3])
def test_serve_reads_the_run_once_before_its_workers(default_run, monkeypatch, workers):
    # `torchlogreg serve` read and SHA-checked the run three times before answering
    import uvicorn

    from benchmarks.localserver import free_port
    from torchlogreg.apps import serving
    from torchlogreg.apps.cli import main
    from torchlogreg.runfolder import checkpoints

    reads, served = [], []

    def counted(run_dir):
        reads.append(run_dir)
        return real_load(run_dir)

    real_load = checkpoints.load_run
    monkeypatch.setattr(checkpoints, "load_run", counted)
    monkeypatch.setattr(serving, "load_run", counted)
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(app))
    monkeypatch.setattr(serving, "_run_workers", lambda config: served.append(config.app))
    monkeypatch.setenv(serving.RUN_ENV, "")  # put back after: serve names the run there for workers
    assert main(["serve", str(default_run), "--port", str(free_port()), "--workers", str(workers)]) == 0
    assert len(reads) == 1
    if workers == 1:  # this process serves the app made from that read
        assert TestClient(served[0]).get("/api/model").status_code == 200
    else:  # each worker process reads the run for itself
        assert served == ["torchlogreg.apps.serving:app_from_environment"]
