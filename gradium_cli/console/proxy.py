"""`gradium ws-raw --listen PORT`: a logging proxy between any client and the server.

Each client connection gets its own upstream connection; frames pass through
unchanged, in both directions, and each is shown (tagged `#1`, `#2`, ...) and
recorded on the way. The client's own `x-api-key` (or `?token=`) is passed on,
else the configured key is added. Client frames are checked like typed ones,
but always forwarded: the proxy only reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from http import HTTPStatus
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gradium_cli.config import mask_secret
from gradium_cli.console.checker import Checker, server_error
from gradium_cli.console.commands import SENDABLE_CLOSE_CODES
from gradium_cli.console.connection import Target, masked_headers, open_socket
from gradium_cli.console.display import Display
from gradium_cli.console.listener import serve_links
from gradium_cli.console.recorder import Recorder
from gradium_cli.errors import GradiumError, NetworkError, ProtocolError
from gradium_cli.protocol import messages as m
from gradium_cli.transport.endpoint import masked_url

# Headers a client chooses that travel on to the server (the rest are per hop).
FORWARDED_HEADERS = ("x-api-key", "x-api-source", "authorization", "user-agent")


class ProxiedConnection:
    def __init__(
        self,
        number: int,
        client: ServerConnection,
        target: Target,
        display: Display,
        recorder: Recorder | None,
        check: bool,
    ) -> None:
        self.number = number
        self.tag = f"#{number}"
        self.client = client
        self.target = target
        self.display = display
        self.recorder = recorder
        self.check = check
        self.checker = Checker()
        self.t0 = time.monotonic()
        self.close_shown = False
        self.error: GradiumError | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _upstream(self) -> tuple[str, dict[str, str]]:
        headers = dict(self.target.headers)
        for name in FORWARDED_HEADERS:
            value = self.client.request.headers.get(name) if self.client.request else None
            if value is not None:
                headers = {k: v for k, v in headers.items() if k.lower() != name}
                headers[name] = value
        url = self.target.url
        query = urlsplit(self.client.request.path).query if self.client.request else ""
        if query and not urlsplit(url).query:
            url = urlunsplit(urlsplit(url)._replace(query=query))  # a browser ?token= travels on
        return url, headers

    async def run(self) -> None:
        request = self.client.request
        path = masked_url(request.path) if request else "?"
        key = request.headers.get("x-api-key") if request else None
        who = ":".join(str(part) for part in self.client.remote_address[:2])
        self.display.note(
            f"client {who} connected to {path} ({'x-api-key ' + mask_secret(key) if key else 'no API key'})",
            0.0,
            self.tag,
        )
        url, headers = self._upstream()
        if self.recorder is not None:
            self.recorder.start(masked_url(url), masked_headers(headers), conn=self.number, client=path)
        try:
            upstream = await open_socket(self.target, url, headers)
        except GradiumError as error:
            self.error = error
            self.display.warning(f"upstream: {error.message}", self.now(), self.tag, blocked=True)
            await self.client.close(1011, "ws-raw proxy: upstream unreachable")
            return
        self.display.note(f"upstream {masked_url(url)} connected", self.now(), self.tag)
        pumps = [
            asyncio.create_task(self._pump(self.client, upstream, "send")),
            asyncio.create_task(self._pump(upstream, self.client, "recv")),
        ]
        try:
            await asyncio.gather(*pumps)
        finally:
            for pump in pumps:
                pump.cancel()
            with contextlib.suppress(Exception):
                await upstream.close()

    async def _pump(
        self, source: ServerConnection | ClientConnection, sink: ServerConnection | ClientConnection, direction: str
    ) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in source:
                self._show(frame, direction)
                try:
                    await sink.send(frame)
                except ConnectionClosed:
                    break
        if self.close_shown:
            return
        # The first side to close: show it and close the other side the same way.
        self.close_shown = True
        code, reason = source.close_code, source.close_reason or ""
        first = source.protocol.close_rcvd_then_sent
        side = "client" if direction == "send" else "server"
        by = side if first is not None else None
        t = self.now()
        if self.recorder is not None:
            self.recorder.event("close", t, conn=self.number, code=code, reason=reason, by=by)
        self.display.closed(code, reason, by, t, self.tag)
        if by is None and self.error is None and not self.checker.errors:
            self.error = NetworkError(f"the {side} dropped the connection (close code {code})")
        await sink.close(code if code is not None and code in SENDABLE_CLOSE_CODES else 1000, reason)

    def _show(self, frame: str | bytes, direction: str) -> None:
        t = self.now()
        if self.recorder is not None:
            self.recorder.event(direction, t, frame, conn=self.number)
        if direction == "send":
            problems = self.checker.check(frame) if self.check and isinstance(frame, str) else []
            if isinstance(frame, str):
                self.checker.sent(frame)
            self.display.sent(frame, t, self.tag, self.number)
            for problem in problems:
                self.display.warning(f"client: {problem}", t, self.tag)
            return
        message, violations = self.checker.received(frame)
        req = message.client_req_id if message is not None else None
        self.display.received(frame, t, self.checker.output_format(req), self.tag, self.number)
        for violation in violations:
            self.display.warning(f"the server broke the protocol: {violation}", t, self.tag)
        if isinstance(message, m.ErrorMessage) and self.error is None:
            self.error = server_error(message)
        elif violations and self.error is None:
            self.error = ProtocolError(f"the server broke the protocol: {violations[0]}")


async def run_proxy(
    target: Target,
    host: str,
    port: int,
    display: Display,
    recorder: Recorder | None = None,
    check: bool = True,
    once: bool = False,
    allow_origins: tuple[str, ...] = (),
) -> GradiumError | None:
    """Serve until Ctrl-C (or, with `once`, the end of the first connection); returns that connection's error.

    The proxy spends the configured key for whoever connects: a web page the user visits
    could connect too (browsers send `Origin`; other clients do not). A request with an
    Origin not in `allow_origins` gets 403 and never reaches the server.
    """

    def refuse_browsers(connection: ServerConnection, request: Request) -> Response | None:
        origin = request.headers.get("Origin")
        if origin is None or origin in allow_origins:
            return None
        display.warning(f"refused a connection from Origin {origin} (--allow-origin {origin} accepts it)")
        return connection.respond(HTTPStatus.FORBIDDEN, "Origin not allowed by ws-raw --listen\n")

    def link(number: int, client: ServerConnection) -> ProxiedConnection:
        return ProxiedConnection(number, client, target, display, recorder, check)

    finished = await serve_links(
        link,
        host,
        port,
        display,
        once=once,
        name="proxy",
        port_option="--listen port",
        headline=lambda url: f"listening on {url} → {masked_url(target.url)}",
        max_size=None,
        process_request=refuse_browsers,
    )
    errors = [link.error for link in finished if link.error is not None]
    return errors[0] if once and errors else None
