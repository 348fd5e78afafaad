"""The package's web servers started as a user starts them, for scripts that drive them: the tests,
the benchmarks, a demo recorded in a browser.

    with local_server("serve", "runs/first") as (url, process):
        urllib.request.urlopen(url + "/api/model")
    browser = chromium("/tmp/profile")          # headless Chromium (selenium), as this machine allows

`local_server` runs `torchlogreg ARGS --port P` in a subprocess on a free port and yields once
/healthz answers (polled, never a guessed sleep); it ends the server after. `chromium` opens
headless Chromium with CHROMIUM_FLAGS, the flags these machines need (no sandbox as root, no
background network calls).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..base.exceptions import DependencyError, TorchLogRegError

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = START_SECONDS) -> None:
    """Return once `url`/healthz answers; a TorchLogRegError with the server's output if it exits
    or stays silent for `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1)
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                output = process.stdout.read() if process.stdout else ""
                raise TorchLogRegError(f"the server did not start: {output}") from None
            time.sleep(0.05)


@contextmanager
def local_server(*args: str, quiet: bool = False) -> Iterator[tuple[str, subprocess.Popen]]:
    """`torchlogreg ARGS --port P` on a free port, yielded as (its URL, its process) once it answers;
    its output is kept in the process's stdout (discarded when `quiet`); ended after the block."""
    port = free_port()
    command = [sys.executable, "-m", "torchlogreg", *args, "--port", str(port)]
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=10)


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
