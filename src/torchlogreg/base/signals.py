"""Interrupted means interrupted: SIGINT and SIGTERM stop a command at once, with every `finally`
block run (so `storage.atomic_output` removes its temporary files), and the command says so.

Python's default SIGTERM kills the process without running any cleanup, and a KeyboardInterrupt
raised inside a library's import or call may come out as another exception (torch's ONNX exporter
reports it as a half-imported module). So the CLI runs under `interruptible()`, which turns both
signals into KeyboardInterrupt and remembers which arrived: whatever exception then reaches the top
is reported as the interruption it is, exit 128 + the signal's number (130, 143).

Training installs its own handlers for the time it trains (`StopFlag`: stop after the step,
checkpoint); they are put back afterwards, so these apply again.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from .exceptions import ConfigError

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # the signals that arrived while interruptible() was in force, in order


def _handle(signum: int, frame) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """For the block: SIGINT and SIGTERM raise KeyboardInterrupt in the main thread and are recorded
    (see `received`); the handlers before are put back afterwards. Elsewhere than in the main thread
    (where Python cannot install handlers) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def received() -> int | None:
    """The first signal that arrived under `interruptible()`, or None."""
    return _received[0] if _received else None


def exit_code(signum: int) -> int:
    """The shell's exit status for a command stopped by `signum`: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def name(signum: int) -> str:
    return signal.Signals(signum).name


class StopFlag:
    """Set by the first SIGINT/SIGTERM (or SIGHUP: the terminal or SSH session went away) so
    training stops after the current step and checkpoints; a second SIGINT interrupts at once. A
    SIGHUP that the process ignores (`nohup`) stays ignored."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None  # the first signal's (the exit code follows it)
        self.previous = {}

    def __call__(self) -> bool:
        return self.requested

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise ConfigError("handle_signals needs the main thread (Python delivers signals there only)")

        def handle(signum, frame):
            if self.requested and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.requested, self.signum = True, self.signum or signum

        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, handle)
        hangup = getattr(signal, "SIGHUP", None)  # (not on Windows)
        if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
            self.previous[hangup] = signal.signal(hangup, handle)

    def uninstall(self) -> None:
        """Put back the handlers that were there before install()."""
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def __enter__(self) -> StopFlag:
        self.install()
        return self

    def __exit__(self, *exc_info) -> None:
        self.uninstall()
