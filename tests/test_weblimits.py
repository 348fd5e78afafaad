"""weblimits: the request-header cut applied however the header arrives (the ASGI middleware, and
the real `serve` and `playground` servers given a 40 kB header in one write), and `serve --workers 2`
stopped by a signal reporting it as a one-process server does."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest
from conftest import synthetic_data

pytest.importorskip("fastapi")

from benchmarks.localserver import free_port, local_server, wait_until_up  # noqa: E402
from torchlogreg import TrainConfig, train  # noqa: E402
from torchlogreg.apps.weblimits import MAX_HEADER_BYTES, HeaderLimit, header_bytes  # noqa: E402
from torchlogreg.runfolder.checkpoints import save_run  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run on 4x4 synthetic images, saved: what the servers below serve."""
    config = TrainConfig(epochs=1, device="cpu", batch_size=32)
    return save_run(train(config, synthetic_data(), verbose=False), tmp_path_factory.mktemp("runs") / "tiny")


def _ok_app():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    return Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])


SIZES = [(100, 200), (MAX_HEADER_BYTES - 200, 200), (40_000, 431), (1 << 20, 431)]


@pytest.mark.parametrize("size, status", SIZES)
def test_headers_over_the_limit_are_a_431_whatever_their_size(size, status):
    from starlette.testclient import TestClient

    reply = TestClient(HeaderLimit(_ok_app())).get("/", headers={"x-pad": "a" * size})
    assert reply.status_code == status
    if status == 431:
        assert str(MAX_HEADER_BYTES) in reply.json()["error"]


def test_header_bytes_counts_the_target_and_every_header():
    scope = {"raw_path": b"/abc", "query_string": b"q=1", "headers": [(b"host", b"x"), (b"a", b"bb")]}
    assert header_bytes(scope) == 4 + 3 + (4 + 1 + 4) + (1 + 2 + 4)


def _one_write(port: int, size: int) -> bytes:
    """A GET whose header holds `size` bytes, sent in a single write; the status line answered."""
    request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * size + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        return sock.recv(65536).split(b"\r\n", 1)[0]


@pytest.mark.parametrize("command", ["serve", "playground"])
def test_a_40_kB_header_in_one_packet_is_refused_by_the_real_servers(command, tiny_run, tmp_path):
    # h11 cuts only headers still arriving: 40 kB sent in one write used to be answered 200
    args = ["serve", str(tiny_run)] if command == "serve" else ["playground", "--runs", str(tmp_path)]
    with local_server(*args, quiet=True) as (url, _process):
        port = int(url.rsplit(":", 1)[1])
        assert _one_write(port, 1000) == b"HTTP/1.1 200 OK"
        assert _one_write(port, 40_000).startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_serve_with_workers_stopped_by_a_signal_says_so(signum, code, tiny_run):
    # uvicorn's supervisor kept the signal to itself: Ctrl-C exited 0 without a word
    port = free_port()
    serve = ["serve", str(tiny_run), "--workers", "2", "--port", str(port)]
    command = [sys.executable, "-m", "torchlogreg", *serve]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", process)
        process.send_signal(signum)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == code, err
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err
