"""Connections: those that have not finished their request headers are timed out and
capped, and all of them together stay within the server's descriptor budget.

uvicorn waits forever for the headers of a new connection, so a client that opens
connections and sends headers slowly (or never finishes them) holds a file
descriptor each until the server can accept no one else. Here each connection
must finish its headers within a timeout (408, then closed), and when more than
a cap are still in the middle of theirs, the one waiting longest is dropped for
the newcomer: an attacker cannot keep the slots, while a real client, whose
headers take a millisecond, gets through.

Above the budget (server/descriptors.py), a newcomer also takes the place of the
connection waiting longest for its headers; when none is waiting, the newcomer
is answered 503 once its request arrives, and closed, so the server never runs
out of descriptors. (Answering before the request is read would not do: closing
a socket with unread input sends a reset, which destroys the answer in transit.)

A response, once started, must be complete and read by the client within a time
(the session's 300 s and the WebSocket's 5 s of grace): else the connection is
dropped. uvicorn waits on its flow control for as long as a client that stops
reading likes, and closes a connection only once what it holds is written, so a
client that read nothing of a one-shot TTS stream held its connection, and the
voice it spoke with, for good.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
BUSY_BODY = b"too many connections; try again later\n"
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n"
    b"connection: close\r\n\r\n%s" % (len(BUSY_BODY), BUSY_BODY)
)


def header_limited_protocol(
    timeout_s: float, max_pending: int, max_connections: int, response_s: float
) -> type[H11Protocol]:
    """uvicorn's HTTP/1.1 protocol with the limits; one class per server, which counts its own connections."""
    pending: OrderedDict[HeaderLimitedProtocol, None] = OrderedDict()

    class HeaderLimitedProtocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _response_timer: asyncio.TimerHandle | None = None
        _refused = False  # over the budget: answered 503 when its request comes

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            # uvicorn's own set of the server's open connections, WebSockets included
            # (an upgraded connection's protocol takes this one's place in it).
            if len(self.connections) > max_connections:
                waiting = next((each for each in pending if not each._refused), None)
                if waiting is None:
                    self._refused = True
                else:
                    waiting._drop()
            self._await_headers()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self._headers_done()
                self.transport.write(BUSY_RESPONSE)
                self.transport.close()
                return
            super().data_received(data)
            # IDLE: h11 has not seen a whole request head yet (first request, or the next on
            # a kept-alive connection); anything else, including an upgrade, means it has.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._await_headers()
            else:
                self._headers_done()

        def connection_lost(self, exc: Exception | None) -> None:
            self._headers_done()
            if self._response_timer is not None:
                self._response_timer.cancel()
            super().connection_lost(exc)

        def handle_events(self) -> None:
            super().handle_events()
            # A new request's cycle, its task not started yet: its responses start the deadline.
            cycle = self.cycle
            if cycle is not None and not getattr(cycle, "_deadline_armed", False):
                cycle._deadline_armed = True  # type: ignore[attr-defined]
                send = cycle.send

                async def send_within_deadline(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        self._start_response_deadline(cycle)
                    await send(message)

                cycle.send = send_within_deadline  # type: ignore[method-assign]

        def _start_response_deadline(self, cycle: Any) -> None:
            if self._response_timer is not None:  # a kept-alive connection's earlier response
                self._response_timer.cancel()
            self._response_timer = self.loop.call_later(response_s, self._response_overdue, cycle)

        def _response_overdue(self, cycle: Any) -> None:
            """Drop the connection if this response is unfinished, or what was sent is still
            unread (the bytes held now are this response's, or a later one's not yet due)."""
            self._response_timer = None
            unfinished = cycle is self.cycle and not cycle.response_complete
            if unfinished or self.transport.get_write_buffer_size():
                self.transport.abort()

        def _await_headers(self) -> None:
            if self._header_timer is not None:
                return
            self._header_timer = self.loop.call_later(timeout_s, self._headers_timed_out)
            pending[self] = None
            while len(pending) > max_pending:
                next(iter(pending))._drop()

        def _drop(self) -> None:
            self._headers_done()
            self.transport.abort()

        def _headers_done(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            pending.pop(self, None)

        def _headers_timed_out(self) -> None:
            self._header_timer = None
            pending.pop(self, None)
            if not self.transport.is_closing():
                self.transport.write(TIMEOUT_RESPONSE)
                self.transport.close()

    return HeaderLimitedProtocol
