"""One playground page on the server: its commands (start, pause, step, change, reset, save, a
drawing to classify), its training (a LiveTraining, holding one of the server's slots), and the
frames it is sent while the run goes on (history rows, the weights as int8, the confusion matrix
and current mistakes of a sample). The server and its WebSocket are in apps/playground.py.
"""

from __future__ import annotations

import asyncio
import base64
import math
import shlex
import threading
import time
from pathlib import Path

import numpy as np
import torch

from ..base.config import TrainConfig
from ..base.exceptions import ConfigError, InputError
from ..core.model import LogisticRegression, decide
from ..data.images import MNIST_STYLE, background_of
from ..data.inmemory import Data
from ..runfolder.checkpoints import Run
from ..runfolder.layout import HISTORY_KEYS
from ..training.evaluation import logits_of
from ..training.live import LIVE_FIELDS, LiveTraining
from .playground_setup import command_for, config_for, save_live

MAX_STEPS = 120_000  # steps in one run (two epochs of batch 1): bounds its history, here and in the page
FRAME_SECONDS = 0.05  # the page gets a frame (rows, weights) this often while a run goes on
MEASURE_SECONDS = 0.2  # and the confusion matrix and mistakes this often: the cores train
SAMPLE_ROWS = 1000  # images of the confusion matrix and the mistakes (the validation set's first)
MISTAKES = 8  # current mistakes shown
FINAL_METRICS = ("train", "val", "test", "train_seconds", "iterations", "epochs", "stopped_early")


# --- what a page is shown --------------------------------------------------------------------------------
def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def weights_message(weight: torch.Tensor) -> bytes:
    """The weights for the templates, compact: a float32 scale, then the weights as int8 (x scale/127)."""
    values = weight.detach().float().cpu()
    values = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)  # (diverging weights: drawn blank)
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
        """Confusion matrix (rows: true class), accuracy and the first mistakes of these weights; none
        where their scores overflow (weights diverging: the run's own check ends it, and says so)."""
        with torch.no_grad():
            self.model.linear.weight.copy_(weight)
            self.model.linear.bias.copy_(bias)
            try:
                predicted = decide(logits_of(self.model, self.images), self.threshold)
            except InputError:  # (an lr of 1e30 had closed the page's connection here)
                return {}
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
        self.outbox = Outbox()

    def notify(self) -> None:
        """From the training thread: something new to show."""
        self.loop.call_soon_threadsafe(self.wake.set)

    # --- commands -----------------------------------------------------------------------------
    async def handle(self, message: dict) -> None:
        kind = message.get("type") if isinstance(message, dict) else None
        kind = kind if isinstance(kind, str) else ascii(kind)[:40]  # (a list is no handler's name)
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
        self.meta = {
            "image_shape": list(data.image_shape),
            "class_names": list(data.class_names),
            "background": background_of(data.train.images),  # the pad draws on the pictures' background
        }
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
        self.outbox = Outbox()

    async def save(self, message: dict) -> None:
        live = self.live
        if live is None or live.state not in ("paused", "finished") or not live.snapshot().iteration:
            raise ConfigError("save needs a run that has taken steps and is paused or finished")
        folder = await asyncio.to_thread(save_live, live, self.state.runs_dir)
        await self.send_text({"type": "saved", "folder": str(folder)})

    async def predict(self, png: bytes) -> None:
        """The drawing pad: the current weights' answer for a drawing (a PNG), as `serve` gives it."""
        from .serving import explain, image_from_upload

        if self.live is None:
            raise InputError("start a run first: the pad asks the model as it trains")
        snap = self.live.snapshot()
        run = _pad_run(snap, self.meta, self.live.config.threshold)
        shape = tuple(self.meta["image_shape"])
        image = await asyncio.to_thread(image_from_upload, png, "drawing.png", shape, self.pictures)
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
        """Send what is new (see Outbox.next); a run that has ended gives its slot back."""
        if self.live is None:
            return
        frame = await self.outbox.next(self.live, self.sample)
        if frame is None:
            return
        message, weights = frame
        if self.live.state in ("finished", "diverged", "closed"):
            self._release()  # its data is gone: another page may train
        if weights is not None:
            await self.send_bytes(weights)
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


def _pad_run(snap, meta: dict, threshold: float) -> Run:
    """The weights of `snap` as a Run, so a drawing is read and answered exactly as `serve` does."""
    shape = tuple(meta["image_shape"])
    model = LogisticRegression(math.prod(shape), len(meta["class_names"]))
    with torch.no_grad():
        model.linear.weight.copy_(snap.weight)
        model.linear.bias.copy_(snap.bias)
    run_meta = {"input_shape": list(shape), "class_names": meta["class_names"], "threshold": threshold}
    return Run(Path("."), model, run_meta, {})


class Outbox:
    """What a page has been sent of its run, so each frame carries only what is new: history rows,
    changes, the state, and (when the weights moved) the weights, with the sample's confusion
    matrix at most every MEASURE_SECONDS while it runs."""

    def __init__(self):
        self.rows = self.changes = 0
        self.version, self.state = -1, None
        self.next_measure = 0.0

    async def next(self, live: LiveTraining, sample: Sample) -> tuple[dict, bytes | None] | None:
        """(the frame, the weights message or None), or None when nothing is new."""
        snap = live.snapshot()
        rows = live.rows(self.rows)
        changes = live.changes[self.changes :]
        fresh = snap.version != self.version
        if not (rows or changes or fresh or live.state != self.state):
            return None
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
            message.update(await asyncio.to_thread(sample.measure, snap.weight, snap.bias))
        message.update(self._ending(live))
        self.rows += len(rows)
        self.changes += len(changes)
        self.state = live.state
        if not fresh:
            return message, None
        self.version = snap.version
        return message, weights_message(snap.weight)

    def _ending(self, live: LiveTraining) -> dict:
        """A diverged run's message; a finished run's final metrics, once."""
        if live.state == "diverged":
            return {"error": live.error}
        if live.state == "finished" and self.state != "finished":
            metrics = {k: v for k, v in live.result.metrics.items() if k in FINAL_METRICS}
            return {"metrics": metrics, "changed": live.changed}
        return {}
