"""starlette's WebSocket as the `ws.Socket` that `ws.Connection` serves.

Apart from ws.py so that the built-in engine's process (server/pipe.py), which
serves the same `Connection` over a pipe, never imports starlette.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from gradium_cli.server.ws import SocketGone

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

    async def send_text(self, text: str) -> None:
        try:
            await self._ws.send_text(text)
        except WebSocketDisconnect:
            raise SocketGone from None

    async def close(self, code: int = 1000) -> None:
        await self._ws.close(code)

    def abort(self) -> bool:
        # ASGI has no abort: this reaches uvicorn's protocol object through the
        # `receive` callable it hands the app.
        transport = getattr(getattr(self._ws._receive, "__self__", None), "transport", None)
        if transport is None:
            return False
        transport.abort()
        return True
