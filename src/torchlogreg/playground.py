"""The playground: train in the browser and watch logistic regression learn, live, on real data.

    torchlogreg playground --data-root ../shared/data     # then open http://127.0.0.1:8000/

One page (``GET /``, scripts and styles served by the package, no network requests) and one
WebSocket per page (``/ws``). The page sends settings and commands as JSON (start, pause, step,
reset, live changes, save); the server trains with the library's own engine (live.py) on a thread
per page and streams history rows, the weights (int8, one scale) and a confusion matrix about 20
times a second. Settings are checked by `TrainConfig`; data sets are chosen from the list the
server offers (the built-ins found under the data root, and folders given on the command line),
never a path from the browser. Loopback by default; a cap on concurrent trainings; a training
stops when its page goes away.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import math
import shlex
import threading
import time
from pathlib import Path

import numpy as np
import torch

from .checkpoints import Run
from .config import PRESETS, TrainConfig
from .data import Data
from .engine import HISTORY_KEYS
from .evaluation import logits_of
from .exceptions import ConfigError, InputError, TorchLogRegError, require
from .images import MNIST_STYLE
from .live import LIVE_FIELDS, LiveTraining
from .model import LogisticRegression, decide
from .playground_setup import (
    EXPERIMENTS,
    PAGE_FIELDS,
    SHOWN_PRESETS,
    Catalog,
    command_for,
    config_for,
    save_live,
)

STATIC = Path(__file__).resolve().parent / "static"
MAX_STEPS = 120_000  # steps in one run (two epochs of batch 1): bounds its history, here and in the page
FRAME_SECONDS = 0.05  # the page gets a frame (rows, weights) this often while a run goes on
MEASURE_SECONDS = 0.2  # and the confusion matrix and mistakes this often: the cores train
SAMPLE_ROWS = 1000  # images of the confusion matrix and the mistakes (the validation set's first)
MISTAKES = 8  # current mistakes shown
MAX_MESSAGE_BYTES = 1 << 20  # a command or a drawing
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_CONNECTIONS = 32  # open pages; each holds a few KB until it starts a training
logger = logging.getLogger(__name__)


# --- what a page is shown --------------------------------------------------------------------------------
def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def weights_message(weight: torch.Tensor) -> bytes:
    """The weights for the templates, compact: a float32 scale, then the weights as int8 (x scale/127)."""
    values = weight.detach().float().cpu()
    scale = float(values.abs().max()) if values.numel() else 0.0
    quantised = (
        (values * (127 / scale)).round().to(torch.int8)
        if scale > 0
        else torch.zeros_like(values, dtype=torch.int8)
    )
    return np.float32(scale).tobytes() + quantised.numpy().tobytes()


def _row(row: dict) -> list:
    """A history row as the page gets it: its values in HISTORY_KEYS' order (hello names them)."""
    return [row[key] for key in HISTORY_KEYS]


class Sample:
    """The images the confusion matrix and the mistakes are measured on: the validation set's first
    SAMPLE_ROWS (the test set's when there is no validation set)."""

    def __init__(self, data: Data, threshold: float):
        split = data.val if data.val is not None else data.test
        self.name = "validation" if data.val is not None else "test"
        count = min(SAMPLE_ROWS, len(split))
        self.images, self.labels = split.images[:count], split.labels[:count]
        self.threshold, self.n_classes = threshold, data.n_classes
        self.model = LogisticRegression(math.prod(data.image_shape), data.n_classes)

    def measure(self, weight: torch.Tensor, bias: torch.Tensor) -> dict:
        """Confusion matrix (rows: true class), accuracy and the first mistakes of these weights."""
        torch.set_num_threads(1)  # a worker thread of its own: leave the cores to the trainings
        with torch.no_grad():
            self.model.linear.weight.copy_(weight)
            self.model.linear.bias.copy_(bias)
            predicted = decide(logits_of(self.model, self.images), self.threshold)
        k = self.n_classes
        confusion = torch.bincount(self.labels * k + predicted, minlength=k * k).reshape(k, k)
        wrong = torch.nonzero(predicted != self.labels).flatten()[:MISTAKES]
        return {
            "sample": self.name,
            "confusion": confusion.tolist(),
            "accuracy": float((predicted == self.labels).float().mean()),
            "mistakes": [
                {
                    "image": _b64(_bytes(self.images[i])),
                    "label": int(self.labels[i]),
                    "predicted": int(predicted[i]),
                }
                for i in wrong.tolist()
            ],
        }


def _bytes(image: torch.Tensor) -> np.ndarray:
    """An image's pixels as bytes 0..255 (a dataset folder may hold floats in [0, 1])."""
    if image.dtype != torch.uint8:
        image = (image.float() * 255).round().clamp(0, 255).to(torch.uint8)
    return image.numpy()


def _steps(message: dict) -> int | None:
    steps = message.get("steps")
    if steps is not None and not (type(steps) is int and steps >= 1):
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    return steps


# --- one page --------------------------------------------------------------------------------------
class Slots:
    """The cap on trainings held at once (running, paused or not yet started), over all pages."""

    def __init__(self, limit: int):
        self.limit, self.used, self._lock = limit, 0, threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.used >= self.limit:
                raise ConfigError(
                    f"the server is running {self.used} trainings, its limit (--max-trainings {self.limit}): "
                    "wait for one to finish, or reset one in another tab"
                )
            self.used += 1

    def give(self) -> None:
        with self._lock:
            self.used -= 1


class Session:
    """One page: its training (at most one), what it has been sent, and its commands."""

    def __init__(self, app_state, send_text, send_bytes, loop):
        self.state, self.send_text, self.send_bytes, self.loop = app_state, send_text, send_bytes, loop
        self.live: LiveTraining | None = None
        self.sample: Sample | None = None
        self.meta: dict = {}
        self.pictures = MNIST_STYLE
        self.holds_slot = False
        self.wake = asyncio.Event()
        self.sent_rows = self.sent_changes = 0
        self.sent_version, self.sent_state = -1, None
        self.next_measure = 0.0

    def notify(self) -> None:
        """From the training thread: something new to show."""
        self.loop.call_soon_threadsafe(self.wake.set)

    # --- commands -----------------------------------------------------------------------------
    async def handle(self, message: dict) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        handlers = {
            "check": self.check,
            "start": self.start,
            "pause": self.pause,
            "step": self.step,
            "reset": self.reset,
            "change": self.change,
            "save": self.save,
        }
        if kind not in handlers:
            raise ConfigError(f"type must be one of {', '.join(handlers)}, got {kind!r}")
        await handlers[kind](message)

    async def check(self, message: dict) -> TrainConfig:
        """The config for these settings, and its command line, sent back (nothing starts)."""
        config = config_for(self.state.catalog, message)
        command = command_for(config)
        await self.send_text(
            {
                "type": "config",
                "config": {**config.to_dict(), "data_root": None, "learning_rate": config.learning_rate},
                "command": shlex.join(command) if command else None,
            }
        )
        return config

    async def start(self, message: dict) -> None:
        steps = _steps(message)
        if self.live is not None and self.live.state in ("ready", "paused"):
            self._go(steps)
            return
        if self.live is not None and self.live.state == "running":
            raise ConfigError("a run is going on: pause or reset it first")
        await self.reset(message)  # the last run has ended: this one replaces it
        config = await self.check(message)
        self.state.slots.take()
        self.holds_slot = True
        try:
            data = await asyncio.to_thread(self.state.catalog.data, config)
            self.live = LiveTraining(
                config,
                data,
                max_steps=MAX_STEPS,
                snapshot_seconds=FRAME_SECONDS,
                notify=self.notify,
                settled=self.state.catalog.settled(config),  # a rerun skips working out the data's rules
            )
            self.state.catalog.remember(config, self.live.used)
        except BaseException:
            self._release()
            raise
        self.sample = Sample(data, config.threshold)
        self.meta = {"image_shape": list(data.image_shape), "class_names": list(data.class_names)}
        self.pictures = data.pictures  # how the pad's drawing becomes pixels: as the data's pictures did
        engine = self.live.engine
        await self.send_text(
            {
                "type": "run",
                **self.meta,
                "n_train": len(data.train),
                "total": engine.total,
                "steps_per_epoch": engine.steps_per_epoch,
                "sample": self.sample.name,
                "used": {**self.live.used.to_dict(), "data_root": None},  # a field left None: its value
            }
        )
        self._go(steps)

    def _go(self, steps: int | None) -> None:
        self.live.step(steps) if steps else self.live.start()

    async def pause(self, message: dict) -> None:
        if self.live is not None:
            self.live.pause()

    async def step(self, message: dict) -> None:
        """`steps` steps (default 1) of the paused run, then paused again."""
        if self.live is None:
            raise ConfigError("start a run first")
        self.live.step(_steps(message) or 1)

    async def change(self, message: dict) -> None:
        if self.live is None:
            raise ConfigError("start a run first; then changes apply between steps")
        settings = message.get("settings")
        if not isinstance(settings, dict):
            raise ConfigError("change needs settings: {name: value} of " + ", ".join(LIVE_FIELDS))
        values = self.live.change(**settings)
        await self.send_text({"type": "changing", "settings": values})

    async def reset(self, message: dict) -> None:
        self.close()
        self.live, self.sample = None, None
        self.sent_rows = self.sent_changes = 0
        self.sent_version, self.sent_state = -1, None

    async def save(self, message: dict) -> None:
        live = self.live
        if live is None or live.state not in ("paused", "finished") or not live.snapshot().iteration:
            raise ConfigError("save needs a run that has taken steps and is paused or finished")
        folder = await asyncio.to_thread(save_live, live, self.state.runs_dir)
        await self.send_text({"type": "saved", "folder": str(folder)})

    async def predict(self, png: bytes) -> None:
        """The drawing pad: the current weights' answer for a drawing (a PNG), as `serve` gives it."""
        from .serving import _image_from_upload, explain

        if self.live is None:
            raise InputError("start a run first: the pad asks the model as it trains")
        snap = self.live.snapshot()
        shape = tuple(self.meta["image_shape"])
        model = LogisticRegression(math.prod(shape), len(self.meta["class_names"]))
        with torch.no_grad():
            model.linear.weight.copy_(snap.weight)
            model.linear.bias.copy_(snap.bias)
        run = Run(
            Path("."),
            model,
            {
                "input_shape": list(shape),
                "class_names": self.meta["class_names"],
                "threshold": self.live.config.threshold,
            },
            {},
        )
        image = await asyncio.to_thread(_image_from_upload, png, "drawing.png", shape, self.pictures)
        answer = explain(run, image)
        await self.send_text(
            {
                "type": "prediction",
                "label": answer["label"],
                "top_k": answer["top_k"],
                "iteration": snap.iteration,
            }
        )

    # --- frames -------------------------------------------------------------------------------
    async def frame(self) -> None:
        """Send what is new: history rows, changes, the state, the weights and their confusion."""
        live = self.live
        if live is None:
            return
        snap = live.snapshot()
        rows = live.rows(self.sent_rows)
        changes = live.changes[self.sent_changes :]
        fresh = snap.version != self.sent_version
        if not (rows or changes or fresh or live.state != self.sent_state):
            return
        message = {
            "type": "frame",
            "state": live.state,
            "iteration": snap.iteration,
            "epoch": snap.epoch,
            "samples": snap.samples,
            "lr": snap.lr,
            "total": live.engine.total if live.engine is not None else snap.iteration,
            "rows": [_row(row) for row in rows],
            "changes": changes,
            "settings": live.settings,
        }
        now = time.monotonic()
        if fresh and (now >= self.next_measure or live.state != "running"):
            self.next_measure = now + MEASURE_SECONDS
            message.update(await asyncio.to_thread(self.sample.measure, snap.weight, snap.bias))
        if live.state == "diverged":
            message["error"] = live.error
        if live.state == "finished" and self.sent_state != "finished":
            metrics = live.result.metrics
            message["metrics"] = {
                k: v
                for k, v in metrics.items()
                if k in ("train", "val", "test", "train_seconds", "iterations", "epochs", "stopped_early")
            }
            message["changed"] = live.changed
        if live.state in ("finished", "diverged", "closed"):
            self._release()  # its data is gone: another page may train
        self.sent_rows += len(rows)
        self.sent_changes += len(changes)
        self.sent_state = live.state
        if fresh:
            self.sent_version = snap.version
            await self.send_bytes(weights_message(snap.weight))
        await self.send_text(message)

    # --- the end --------------------------------------------------------------------------------------
    def _release(self) -> None:
        if self.holds_slot:
            self.holds_slot = False
            self.state.slots.give()

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
        self._release()


def _finite(value):
    """`value` with NaN and infinities as None, all the way down (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _same_origin(headers, local_only: bool) -> bool:
    """Whether a WebSocket comes from this server's own page. Browsers send Origin with every
    WebSocket and apply no same-origin rule to them, so any web page could otherwise drive this
    server; clients without an Origin (scripts, tests) are not browsers. A loopback server also
    wants a loopback Host: a page whose name was made to point at 127.0.0.1 (DNS rebinding) has
    Origin and Host alike, but not this name."""
    from urllib.parse import urlsplit

    host = headers.get("host") or ""
    if local_only and urlsplit(f"//{host}").hostname not in LOOPBACK_NAMES:
        return False
    origin = headers.get("origin")
    return origin is None or urlsplit(origin).netloc == host


@dataclasses.dataclass
class AppState:
    catalog: Catalog
    slots: Slots
    runs_dir: Path
    connections: int = 0


def hello(state: AppState) -> dict:
    """What a page needs before it trains: data sets, presets, experiments, the live settings."""
    presets = {
        name: {**PRESETS[name].to_dict(), "learning_rate": PRESETS[name].learning_rate}
        for name in SHOWN_PRESETS
    }
    for values in presets.values():
        values.pop("data_root")
    return {
        "type": "hello",
        "datasets": list(state.catalog.paths),
        "presets": presets,
        "experiments": list(EXPERIMENTS),
        "page_fields": list(PAGE_FIELDS),
        "columns": list(HISTORY_KEYS),  # of each history row a frame carries
        "live_fields": list(LIVE_FIELDS),
        "max_steps": MAX_STEPS,
        "max_trainings": state.slots.limit,
    }


def create_app(
    data_root: str | None = None,
    folders: tuple[str, ...] = (),
    runs_dir: str | Path = "runs",
    max_trainings: int = 2,
    local_only: bool = True,
):
    """The FastAPI application: the page at /, its assets under /static, one WebSocket per page at /ws.
    `local_only` (a loopback server) refuses WebSockets addressed to any other host name."""
    require("fastapi", "serve")
    from fastapi import FastAPI
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.websockets import WebSocketDisconnect

    if not (isinstance(max_trainings, int) and max_trainings >= 1):
        raise ConfigError(f"max_trainings must be an integer >= 1, got {max_trainings!r}")
    state = AppState(Catalog(data_root, tuple(folders)), Slots(max_trainings), Path(runs_dir))
    app = FastAPI(title="torchlogreg playground", description="Train logistic regression live", version="1")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page():
        return FileResponse(STATIC / "playground.html")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    async def socket(ws):
        if not _same_origin(ws.headers, local_only):
            await ws.close(code=1008, reason="another site's page may not use this server")
            return
        await ws.accept()
        if state.connections >= MAX_CONNECTIONS:
            await ws.send_text(
                json.dumps({"type": "error", "message": f"over {MAX_CONNECTIONS} pages are open"})
            )
            await ws.close(code=1013)
            return
        state.connections += 1
        sending = asyncio.Lock()

        async def send_text(message: dict) -> None:
            async with sending:
                await ws.send_text(json.dumps(_finite(message), allow_nan=False))

        async def send_bytes(data: bytes) -> None:
            async with sending:
                await ws.send_bytes(data)

        session = Session(state, send_text, send_bytes, asyncio.get_running_loop())
        try:
            await send_text(hello(state))
            await _serve_page(ws, session, send_text)
        except WebSocketDisconnect:
            pass
        finally:
            session.close()
            state.connections -= 1

    app.router.add_websocket_route("/ws", socket)  # Starlette's route: no annotation to resolve
    return app


async def _serve_page(ws, session: Session, send_text) -> None:
    """Two loops until the page goes away: its messages in, frames out."""

    async def guarded(work) -> None:
        try:
            await work
        except TorchLogRegError as error:
            await send_text({"type": "error", "message": str(error)})
        except Exception:
            logger.exception("playground: a command failed")
            await send_text({"type": "error", "message": "internal error (logged by the server)"})

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            if data is not None:
                await guarded(session.predict(data))
                continue
            try:
                command = json.loads(text or "")
            except ValueError:
                await send_text({"type": "error", "message": "messages must be JSON objects"})
                continue
            await guarded(session.handle(command))

    async def pump() -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wake.wait(), timeout=1.0)
            session.wake.clear()
            await session.frame()

    tasks = [asyncio.create_task(receive()), asyncio.create_task(pump())]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task.exception() is not None and not isinstance(task.exception(), (OSError, RuntimeError)):
                raise task.exception()
    finally:
        for task in tasks:
            task.cancel()


def serve_playground(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server (one process: the trainings live in it)."""
    require("uvicorn", "serve")
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", ws_max_size=MAX_MESSAGE_BYTES)
