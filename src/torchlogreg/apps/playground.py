"""The playground: train in the browser and watch logistic regression learn, live, on real data.

    torchlogreg playground --data-root ../shared/data     # then open http://127.0.0.1:8000/

One page (``GET /``, scripts and styles served by the package, no network requests) and one
WebSocket per page (``/ws``). The page sends settings and commands as JSON (start, pause, step,
reset, live changes, save); the server trains with the library's own engine (training/live.py) on a thread
per page and streams history rows, the weights (int8, one scale) and a confusion matrix about 20
times a second. Settings are checked by `TrainConfig`; data sets are chosen from the list the
server offers (the built-ins found under the data root, and folders given on the command line),
never a path from the browser. Loopback by default; a cap on concurrent trainings; a training
stops when its page goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from pathlib import Path

from ..base.config import PRESETS
from ..base.exceptions import ConfigError, InputError, TorchLogRegError, require
from ..base.storage import json_safe
from ..runfolder.layout import HISTORY_KEYS
from ..training.live import LIVE_FIELDS
from .playground_session import MAX_STEPS, Session, Slots
from .playground_setup import EXPERIMENTS, PAGE_FIELDS, SHOWN_PRESETS, Catalog
from .weblimits import HeaderLimit, server_options

STATIC = Path(__file__).resolve().parent / "static"
MAX_MESSAGE_BYTES = 1 << 20  # a command or a drawing
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_CONNECTIONS = 32  # open pages; each holds a few KB until it starts a training
logger = logging.getLogger(__name__)


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

    if not (isinstance(max_trainings, int) and max_trainings >= 1):
        raise ConfigError(f"max_trainings must be an integer >= 1, got {max_trainings!r}")
    state = AppState(Catalog(data_root, tuple(folders)), Slots(max_trainings), Path(runs_dir))
    app = FastAPI(title="torchlogreg playground", description="Train logistic regression live", version="1")
    app.add_middleware(HeaderLimit)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    def page():
        return FileResponse(STATIC / "playground.html")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    async def socket(ws) -> None:
        await _page_socket(ws, state, local_only)

    app.router.add_websocket_route("/ws", socket)  # Starlette's route: no annotation to resolve
    return app


async def _page_socket(ws, state: AppState, local_only: bool) -> None:
    """One page's WebSocket: refused from another site or over MAX_CONNECTIONS pages; otherwise
    hello, then the page's commands and frames until it goes away, which ends its training."""
    from starlette.websockets import WebSocketDisconnect

    if not _same_origin(ws.headers, local_only):
        await ws.close(code=1008, reason="another site's page may not use this server")
        return
    await ws.accept()
    if state.connections >= MAX_CONNECTIONS:
        await ws.send_text(json.dumps({"type": "error", "message": f"over {MAX_CONNECTIONS} pages are open"}))
        await ws.close(code=1013)
        return
    state.connections += 1
    sending = asyncio.Lock()

    async def send_text(message: dict) -> None:
        async with sending:
            await ws.send_text(json.dumps(json_safe(message), allow_nan=False))

    async def send_bytes(data: bytes) -> None:
        async with sending:
            await ws.send_bytes(data)

    session = Session(state, send_text, send_bytes, asyncio.get_running_loop())
    try:
        await send_text(hello(state))
        await _serve_page(ws, session, send_text)
    except WebSocketDisconnect:
        pass  # the page went away, maybe while it was being answered: nothing to log
    finally:
        session.close()
        state.connections -= 1


def _command(text: str | None) -> dict:
    """A page's text message as JSON; one InputError line for anything else (never a traceback)."""
    try:
        return json.loads(text or "")
    except RecursionError:
        raise InputError("messages must be JSON objects (this one nests too deeply)") from None
    except ValueError:  # not JSON, bad UTF-8, an integer of over 4,300 digits
        raise InputError("messages must be JSON objects") from None


async def _serve_page(ws, session: Session, send_text) -> None:
    """Two loops until the page goes away: its messages in, frames out."""
    from starlette.websockets import WebSocketDisconnect

    async def guarded(work, said: list[str] | None = None) -> None:
        """`work`, its failure said to the page in one line; with `said` (a loop's last failure), one
        failing again as it did is not said again (a frame failing at every tick)."""
        try:
            await work
        except WebSocketDisconnect:
            raise  # the page went away while it was answered: not a failure of the command
        except Exception as error:
            known = isinstance(error, TorchLogRegError)
            message = str(error) if known else "internal error (logged by the server)"
            if said is not None and said == [message]:
                return
            if not known:
                logger.exception("playground: a command failed")
            if said is not None:
                said[:] = [message]
            await send_text({"type": "error", "message": message})
        else:
            if said is not None:
                said.clear()

    async def receive() -> None:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data, text = message.get("bytes"), message.get("text")
            await guarded(session.predict(data) if data is not None else _handle(session, text))

    async def pump() -> None:
        said: list[str] = []
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.wake.wait(), timeout=1.0)
            session.wake.clear()
            await guarded(session.frame(), said)  # (a frame that fails says so; the page stays connected)

    await _until_one_ends(receive(), pump())


async def _until_one_ends(*loops) -> None:
    """Run `loops` until one ends; then cancel the others and collect every one's exception (one
    left uncollected is logged as a traceback when it is freed), raising the first that is not
    the connection's end (OSError, RuntimeError)."""
    tasks = [asyncio.create_task(loop) for loop in loops]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        ended = isinstance(outcome, (OSError, RuntimeError, asyncio.CancelledError))
        if isinstance(outcome, BaseException) and not ended:
            raise outcome


async def _handle(session: Session, text: str | None) -> None:
    """A text message: parsed here, inside `guarded`, so a bad one is answered like a bad command."""
    await session.handle(_command(text))


def serve_playground(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server (one process: the trainings live in it)."""
    require("uvicorn", "serve")
    import uvicorn

    # the limits `serve` applies: a loopback server is still reachable from any page the browser opens
    # connections: each page's socket and its page loads, so a page over MAX_CONNECTIONS is told why
    options = {**server_options(), "limit_concurrency": 2 * MAX_CONNECTIONS, "ws_max_size": MAX_MESSAGE_BYTES}
    uvicorn.run(app, host=host, port=port, log_level="warning", **options)
