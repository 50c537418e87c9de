"""uvicorn's WebSocket protocol with its pongs bounded by what the client reads.

websockets answers every ping with a pong, and uvicorn writes each one to the
transport at once, whatever its write buffer already holds: a client that sent
pings and read nothing grew the server's memory by the size of its pings (160 MB
in 20 s from one socket) until the idle timeout closed it. Here, while the write
buffer is over its high-water mark (the client has stopped reading), a ping's pong
is dropped instead. RFC 6455 §5.5.3 allows it: an endpoint may answer only the
most recent of several pings; the client learns nothing by a pong it never reads.
"""

from __future__ import annotations

from typing import Any

from websockets.protocol import State

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # an older uvicorn serves with its own protocols, whose pongs wait on flow control
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

__all__ = ["websocket_protocol"]


def websocket_protocol() -> Any:
    """The `ws` setting of uvicorn's Config: this module's protocol, else uvicorn's choice."""
    return PongBoundedProtocol if PongBoundedProtocol is not None else "auto"


if WebSocketsSansIOProtocol is not None:

    class _PongBoundedProtocol(WebSocketsSansIOProtocol):
        def handle_ping(self) -> None:
            # Only pongs are pending here unless a close frame came in the same read
            # (websockets queues its reply then): that one still goes out.
            if self.writable.is_set() or self.conn.state is not State.OPEN:
                super().handle_ping()
                return
            self.conn.data_to_send()  # the pong, taken from websockets' queue and dropped

    PongBoundedProtocol: type[WebSocketsSansIOProtocol] | None = _PongBoundedProtocol
else:
    PongBoundedProtocol = None
