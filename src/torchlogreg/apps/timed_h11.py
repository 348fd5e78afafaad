"""uvicorn's h11 protocol, with each request's line and headers due within the keep-alive timeout of
the connection's opening or of its last response (weblimits.server_options uses it). uvicorn times
only the wait after a response: 31 connections that sent nothing, or half a header, were held for
good, and every request after them got 503."""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    """H11Protocol whose keep-alive timer also runs before the first request and while a request's
    line and headers arrive, against one deadline (bytes trickling in do not restart it)."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._due = self.loop.time() + self.timeout_keep_alive
        handler = self.timeout_keep_alive_handler
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, handler)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # (arms uvicorn's own timer: the same deadline)
        self._due = self.loop.time() + self.timeout_keep_alive

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # (which cancels the timer at any byte)
        waiting = self.conn.their_state is h11.IDLE and self.timeout_keep_alive_task is None
        ours = self.transport.get_protocol() is self  # (not once upgraded to a WebSocket)
        if waiting and ours and not self.transport.is_closing():  # a request still arriving
            delay = max(0.0, self._due - self.loop.time())
            self.timeout_keep_alive_task = self.loop.call_later(delay, self.timeout_keep_alive_handler)
