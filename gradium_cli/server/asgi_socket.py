"""starlette's WebSocket as the `ws.Socket` that `ws.Connection` serves.

Apart from ws.py so that the built-in engine's process (server/pipe.py), which
serves the same `Connection` over a pipe, never imports starlette.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from websockets.exceptions import InvalidState

from gradium_cli.server.ws import SocketGone

try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # an older uvicorn: every message goes through ASGI on its own
    WebSocketsSansIOProtocol = None  # type: ignore[assignment,misc]

__all__ = ["AsgiSocket"]


class AsgiSocket:
    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws

    @property
    def headers(self) -> Mapping[str, str]:
        return self._ws.headers

    @property
    def query_params(self) -> Mapping[str, str]:
        return self._ws.query_params

    @property
    def connected(self) -> bool:
        return self._ws.application_state is WebSocketState.CONNECTED

    async def accept(self) -> None:
        await self._ws.accept()

    async def receive(self) -> Mapping[str, Any]:
        return await self._ws.receive()

    async def send_texts(self, texts: Sequence[str]) -> None:
        protocol = self._uvicorn_protocol()
        if len(texts) > 1 and WebSocketsSansIOProtocol is not None and isinstance(protocol, WebSocketsSansIOProtocol):
            await self._send_together(protocol, texts)
            return
        for text in texts:
            try:
                await self._ws.send_text(text)
            except WebSocketDisconnect:
                raise SocketGone from None

    async def _send_together(self, protocol: WebSocketsSansIOProtocol, texts: Sequence[str]) -> None:
        """What uvicorn does for one ASGI `websocket.send`, for all of them, then one
        write: a unit's ~20 frames as one loopback send instead of twenty."""
        await protocol.writable.wait()  # uvicorn's flow control, as for any send
        # `disconnected` exists from uvicorn 0.53; 0.50-0.52 serve with this protocol without it.
        gone = getattr(protocol, "disconnected", False) or protocol.transport.is_closing()
        if gone or protocol.close_sent or not self.connected:
            raise SocketGone
        try:
            for text in texts:
                protocol.conn.send_text(text.encode())
        except InvalidState:
            raise SocketGone from None
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))

    async def close(self, code: int = 1000) -> None:
        try:
            await self._ws.close(code)
        except WebSocketDisconnect:  # the client left first: nothing to close
            raise SocketGone from None

    def abort(self) -> bool:
        transport = getattr(self._uvicorn_protocol(), "transport", None)
        if transport is None:
            return False
        transport.abort()
        return True

    def _uvicorn_protocol(self) -> Any:
        # ASGI has no abort and no way to send several messages at once: both reach
        # uvicorn's protocol object through the `receive` callable it hands the app.
        return getattr(self._ws._receive, "__self__", None)
