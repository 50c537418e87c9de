"""REST calls to the built-in engine as an httpx transport: no HTTP server, no socket.

`RestClient` sends the calls of a command with no key (voice and dictionary names
resolved to ids, `voices`, `pronounce`) through this transport to the engine process
that also speaks its TTS (transport/local.py), which answers them with the app
`gradium serve` runs (server/pipe.py). A resident engine has that app loaded
already; starting an HTTP server in the command cost it about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gradium_cli.transport.endpoint import LOCAL_HTTP_BASE_URL
from gradium_cli.transport.rest import import_httpx

import_httpx()  # first: httpx then comes without its command-line client

import httpx  # noqa: E402

if TYPE_CHECKING:
    from gradium_cli.transport.local import HttpCall, LocalEngine

__all__ = ["LocalHttpTransport"]

_APP_HOST = "localhost"
_APP_ORIGIN = f"http://{_APP_HOST}/"
_ENGINE_ORIGIN = LOCAL_HTTP_BASE_URL.removesuffix("api/")


class _Body(httpx.AsyncByteStream):
    def __init__(self, call: HttpCall, timeout: float, request: httpx.Request) -> None:
        self._call = call
        self._timeout = timeout
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # As httpx's own read timeout: the engine stopped (SIGSTOP) mid-answer ends the call.
        try:
            async for chunk in self._call.body(self._timeout):
                yield chunk
        except asyncio.TimeoutError:
            await self._call.abandon()
            raise httpx.ReadTimeout(f"no data in {self._timeout:g} s", request=self._request) from None

    async def aclose(self) -> None:
        await self._call.abandon()


class LocalHttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, engine: LocalEngine, timeout: float) -> None:
        self._engine = engine
        self._timeout = timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        # The app checks the Host header against the names of loopback (DNS rebinding).
        headers = [[name, value] for name, value in request.headers.multi_items() if name.lower() != "host"]
        headers.append(["host", _APP_HOST])
        head = {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query.decode("latin-1"),
            "headers": headers,
        }
        call = await self._engine.call(head, body)
        try:
            answer = await call.answer(self._timeout)
        except asyncio.TimeoutError:  # not the builtin on Python 3.10
            await call.abandon()
            raise httpx.ReadTimeout(f"no answer in {self._timeout:g} s", request=request) from None
        body_stream = _Body(call, self._timeout, request)
        # A redirect names the Host the app was given; the client must see the engine's URL,
        # or it takes it for another host.
        answered = [
            (name, value.replace(_APP_ORIGIN, _ENGINE_ORIGIN, 1) if name.lower() == "location" else value)
            for name, value in answer["headers"]
        ]
        return httpx.Response(answer["status"], headers=answered, stream=body_stream, request=request)
