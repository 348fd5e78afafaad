"""A bounded load run against `torchlogreg serve` on loopback: PNG uploads from concurrent clients.

    python -m benchmarks.serve_load RUN_DIR --seconds 20 --clients 16

Starts the server on a free 127.0.0.1 port, runs `--clients` threads, each on its own keep-alive
connection, for `--seconds`, and reports requests per second and latency percentiles. The
clients share the machine with the server (2 cores here), so the figure is a lower bound.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import statistics
import threading
import time
import uuid

from benchmarks.compare import default_data_root
from benchmarks.localserver import local_server


def _payloads(data_root: str, count: int = 64) -> list[tuple[bytes, str]]:
    """Multipart bodies of MNIST test digits drawn as 140x140 dark-on-white PNGs."""
    from PIL import Image

    from torchlogreg.data.inmemory import load_splits

    _, test, _ = load_splits("mnist", data_root, download=False)
    bodies = []
    for image in test.images[:count]:
        buffer = io.BytesIO()
        Image.fromarray(255 - image.numpy()).resize((140, 140)).save(buffer, format="PNG")
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="d.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + buffer.getvalue()
            + f"\r\n--{boundary}--\r\n".encode()
        )
        bodies.append((body, f"multipart/form-data; boundary={boundary}"))
    return bodies


def _client(port: int, payloads, deadline: float, latencies: list[float], errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    index = 0
    while time.perf_counter() < deadline:
        body, content_type = payloads[index % len(payloads)]
        index += 1
        started = time.perf_counter()
        try:
            connection.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                errors.append(str(response.status))
                continue
        except (OSError, http.client.HTTPException) as error:
            errors.append(type(error).__name__)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            continue
        latencies.append(time.perf_counter() - started)


def _load(port: int, payloads: list, seconds: float, clients: int) -> tuple[list[float], list[str], float]:
    """`clients` threads sending requests for `seconds`: their latencies, errors and the wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    end = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=_client, args=(port, payloads, end, latencies, errors))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="server processes")
    parser.add_argument("--data-root", default=default_data_root())
    args = parser.parse_args()
    server = ("serve", args.run_dir, "--workers", str(args.workers))
    with local_server(*server, quiet=True) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        latencies, errors, elapsed = _load(port, _payloads(args.data_root), args.seconds, args.clients)
    latencies.sort()

    def percentile(q: float) -> float:
        return (
            1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else float("nan")
        )

    result = {
        "workers": args.workers,
        "clients": args.clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "errors": len(errors),
        "requests_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(0.50), 2),
        "p99_ms": round(percentile(0.99), 2),
        "mean_ms": round(1000 * statistics.fmean(latencies), 2) if latencies else None,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
