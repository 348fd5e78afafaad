"""The package's web servers started as a user starts them, for scripts that drive them: the tests,
the benchmarks, a demo recorded in a browser. Tooling beside the package, not in it (the flags below
suit test machines only).

    with local_server("serve", "runs/first") as (url, process):
        urllib.request.urlopen(url + "/api/model")
    browser = chromium("/tmp/profile")          # headless Chromium (selenium), as this machine allows

`local_server` runs `torchlogreg ARGS --port P` in a subprocess on a free port and yields once
/healthz answers (polled, never a guessed sleep); it ends the server after (killed if it will not
stop). `chromium` opens
headless Chromium with CHROMIUM_FLAGS, the flags these machines need (no sandbox as root, no
background network calls).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from torchlogreg.base.exceptions import DependencyError, TorchLogRegError

# Headless Chromium as this machine allows it: no sandbox as root, no background network calls.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
START_SECONDS = 60  # how long a server may take to answer /healthz (a loaded machine, several workers)
STOP_SECONDS = 10  # how long a terminated server may take to exit before it is killed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(
    url: str, process: subprocess.Popen, seconds: float = START_SECONDS, log: IO | None = None
) -> None:
    """Return once `url`/healthz answers; a TorchLogRegError with the server's output (from `log`,
    else its stdout, read once it is killed) if it exits or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise TorchLogRegError(f"the server did not start: {_output(process, log)}") from None
            time.sleep(0.05)


def _output(process: subprocess.Popen, log: IO | None) -> str:
    """What the ended server printed: the file `log` it wrote to, else its stdout pipe."""
    if log is not None:
        log.seek(0)
        return log.read()
    return process.stdout.read() if process.stdout else ""


def stop(process: subprocess.Popen, seconds: float = STOP_SECONDS) -> None:
    """End `process`: SIGTERM, then SIGKILL if it has not exited within `seconds`."""
    process.terminate()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def local_server(*args: str, quiet: bool = False) -> Iterator[tuple[str, subprocess.Popen]]:
    """`torchlogreg ARGS --port P` on a free port, yielded as (its URL, its process) once it answers;
    its output goes to a temporary file (a pipe nobody reads could fill and stall it), shown if it
    does not start (discarded when `quiet`); ended after the block."""
    port = free_port()
    command = [sys.executable, "-m", "torchlogreg", *args, "--port", str(port)]
    with contextlib.ExitStack() as files:
        log = None if quiet else files.enter_context(tempfile.TemporaryFile("w+"))
        output = subprocess.DEVNULL if log is None else log
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, process, log=log)
            yield url, process
        finally:
            stop(process)


def chromium(profile: str | Path, window: str = "1280,1000", phone: bool = False):
    """Headless Chromium driven by selenium, its profile in `profile`; `phone`: a 390x844 viewport
    (a window cannot be made that narrow). A DependencyError names what to install when it is missing."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (binary and driver):
        raise DependencyError("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (*CHROMIUM_FLAGS, f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if phone:
        metrics = {"width": 390, "height": 844, "pixelRatio": 2}
        options.add_experimental_option("mobileEmulation", {"deviceMetrics": metrics})
    return webdriver.Chrome(service=Service(driver), options=options)
