"""Limits every web server of this package applies, whatever it serves: what one client can make
the server hold or wait for.

    import uvicorn
    from torchlogreg.apps.weblimits import WorkLimit, read_body, server_options

    work = WorkLimit()                                   # one per application

    async def handler(request):
        body = await read_body(request, 2 * 1024 * 1024)   # None: over the limit, answer 413
        answer = await work.run(decode_and_classify, body) # in a worker thread, two at a time
        ...

    app.add_middleware(HeaderLimit)                      # headers over MAX_HEADER_BYTES: 431
    uvicorn.run(app, host="127.0.0.1", port=8000, **server_options())

`server_options()` gives uvicorn's h11 parser with the request line and headers cut at
MAX_HEADER_BYTES (uvicorn's default parser, httptools, buffers headers of any size: a 256 MB header
took 94 s and 511 MB), at most MAX_CONNECTIONS connections (503 beyond) and a connection closed that
has not sent a request's line and headers KEEP_ALIVE_SECONDS after it opened or after its last
answer. h11 applies its cut only to a header still arriving: one that comes whole in a single read
is parsed at any size, so `HeaderLimit` refuses, with 431, a request whose line and headers pass
MAX_HEADER_BYTES however they arrived. `read_body` reads a body as it streams in and stops at its
limit (chunked bodies too), and within `body_seconds` of the headers. `WorkLimit` runs decoding and
model work in worker threads, MAX_ACTIVE_REQUESTS at a time, so the event loop keeps answering other
clients and memory holds a bounded number of requests' work.
"""

from __future__ import annotations

MAX_HEADER_BYTES = 32 * 1024  # request line and headers; browsers send under 8 kB, nginx allows 8-32 kB
MAX_CONNECTIONS = 32  # served at once, each holding at most the body its server allows
MAX_ACTIVE_REQUESTS = 2  # requests decoding and classifying at once (each up to ~100 MB for a photo)
KEEP_ALIVE_SECONDS = 5  # a connection that sends no request this long after it opened or was answered closes
BODY_SECONDS = 10  # a request's body is whole this long after its headers, or 408 ...
BODY_BYTES_PER_SECOND = 64 * 1024  # ... plus a second per this many bytes it declares (2 MiB: 42 s)


def server_options() -> dict:
    """uvicorn.run's keyword arguments that bound what a client can make the server hold: h11's
    parser with the request line and headers cut at MAX_HEADER_BYTES (httptools, uvicorn's default,
    buffers headers of any size), MAX_CONNECTIONS at once (uvicorn counts the one it answers 503),
    and a connection's request line and headers due within KEEP_ALIVE_SECONDS (`timed_h11`)."""
    return {
        "http": timed_h11(),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "limit_concurrency": MAX_CONNECTIONS + 1,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }


def timed_h11() -> type:
    """uvicorn's h11 protocol with each request's line and headers due in time (apps/timed_h11.py,
    a module of its own: it imports uvicorn, and worker processes import the class by name)."""
    from .timed_h11 import TimedH11Protocol

    return TimedH11Protocol


def body_seconds(declared: int) -> float:
    """How long a body of `declared` bytes may take to arrive: BODY_SECONDS, and a second for every
    BODY_BYTES_PER_SECOND (a photo from a phone on a slow uplink arrives; a trickle is cut off)."""
    return BODY_SECONDS + declared / BODY_BYTES_PER_SECOND


async def read_body(request, limit: int) -> bytes | None:
    """The request body read as it streams in (chunked or not); None as soon as it passes `limit`
    bytes (or declares more in Content-Length), so a huge body is never held in memory. TimeoutError
    when it is not whole within `body_seconds` of its declared size (chunked: of `limit`): 33
    connections each sending a byte of body now and then had held every connection the server
    allows, for as long as they liked."""
    from contextlib import aclosing

    import anyio

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    with anyio.fail_after(body_seconds(int(declared) if declared.isdigit() else limit)):
        async with aclosing(request.stream()) as stream:
            async for chunk in stream:
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
    return b"".join(chunks)


def media_type(content_type: str) -> str:
    """A Content-Type's media type, as compared: without parameters, in lower case (RFC 9110)."""
    return content_type.split(";", 1)[0].strip().lower()


class WorkLimit:
    """Heavy per-request work (decoding, classifying) run in worker threads, at most `slots` at once:
    the event loop stays free for other clients, and memory holds `slots` requests' work at most
    however many arrive. One per application; `await limit.run(func, *args)`."""

    def __init__(self, slots: int = MAX_ACTIVE_REQUESTS):
        self.slots = slots
        self._limiter = None  # made on first use, inside the event loop that uses it

    async def run(self, func, *args):
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)


def header_bytes(scope: dict) -> int:
    """The size of a request's target and headers as sent ("name: value\\r\\n" per header)."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
    return target + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ()))


class HeaderLimit:
    """ASGI middleware: a request (or WebSocket handshake) whose target and headers pass `limit`
    bytes is answered 431 (a WebSocket is closed) before the application sees it."""

    def __init__(self, app, limit: int = MAX_HEADER_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket") or header_bytes(scope) <= self.limit:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1009})
            return
        body = f'{{"error": "request headers are over the limit of {self.limit} bytes"}}'.encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 431, "headers": headers})
        await send({"type": "http.response.body", "body": body})
