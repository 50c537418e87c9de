"""What every request to `gradium serve` passes before its route: host names, browser origins and body sizes.

- A request whose `Host` header names a host the server does not answer to (on
  loopback: localhost, 127.0.0.1, ::1 and `serve --allow-host` names) is refused
  with 403, the WebSocket upgrade included. This stops DNS rebinding: a page whose
  own name is made to resolve to 127.0.0.1 is same-origin to the browser, and a GET
  from it carries no `Origin`, but its `Host` is still the page's name.

- A request with an `Origin` header comes from a web page. Unless that origin was
  allowed (`serve --allow-origin`), it is refused with 403 on every route, the
  WebSocket upgrade included: a page must not drive a server that answers any key.
- A request body is counted while it is read. A declared `Content-Length` above
  the limit is refused before reading anything; a body that grows past it (chunked)
  is cut as soon as it does. Either way the answer is 413 and the connection closes.
  A client that leaves mid-body is no error.
- A request body must keep coming: it has the header timeout (`serve --header-timeout`,
  10 s) to start, and each chunk extends its time by the chunk's size at the options'
  `min_body_rate` (4 KiB/s: Apache's mod_reqtimeout takes the same shape; 32 kbit/s is
  slower than any uplink a real upload comes over).
  A body slower than that on average (one byte a second kept a connection for ever)
  gets 408 and the connection closes, as for headers that do not arrive.
- A refused body is not simply left unread: closing a socket with unread data sends
  a TCP reset, and a client still sending its body (as httpx, the SDK and `gradium`
  do, reading the answer only once all is sent) loses the 413 to it and sees
  "connection reset" instead of why. So after the whole 413 is sent, the rest of the
  body is read and dropped ("lingering close", as Apache and nginx do) until it ends
  or LINGER_BYTES more have come or LINGER_S have passed, whichever is first; only
  then does the connection close. Nothing read is kept. At most MAX_LINGERING
  connections linger at once: beyond that a refused one closes at once (its sender
  may see the reset), so refused uploads can never hold more than a few file
  descriptors, whatever an attacker sends.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gradium_cli.server.state import ServerOptions

VOICE_UPLOAD_PATH = "/api/voices/"

# Lingering close of a refused body (see above): how long, how much, how many at once.
LINGER_S = 3.0
LINGER_BYTES = 32 << 20
MAX_LINGERING = 8


class BodyTooSlow(Exception):
    def __init__(self, seconds: float, received: int) -> None:
        super().__init__(f"request body too slow: {received} bytes in {seconds:.1f} s")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body too large: at most {limit} bytes")
        self.limit = limit


def normalise_origin(origin: str) -> str | None:
    """`scheme://host[:port]` in lower case, as browsers send it; None when it is not an origin."""
    parts = urlsplit(origin.strip().lower())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    try:
        port = parts.port
    except ValueError:
        return None
    return f"{parts.scheme}://{parts.hostname}" + (f":{port}" if port is not None else "")


def host_name(host: str) -> str:
    """The name in a Host header, without port, brackets or trailing dot, in lower case."""
    host = host.strip().lower()
    if host.startswith("["):  # [v6 address]:port
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def not_allowed(header: str, value: str, option: str) -> str:
    return f"{header} {json.dumps(value[:200])} is not allowed: start gradium serve with {option} to allow it"


def body_limit(options: ServerOptions, scope: Scope) -> int:
    if scope["method"] == "POST" and scope["path"] == VOICE_UPLOAD_PATH:
        return options.max_upload_bytes
    return options.max_message_bytes


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _refuse(send: Send, status: int, message: str, *, more_body: bool = False) -> None:
    """The whole answer; with `more_body` the response stays open (its body is complete by its
    Content-Length, so the client can read it) until a last empty body message ends it."""
    body = json.dumps({"detail": message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        # The rest of the request is not read: the connection cannot be reused.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": more_body})


async def _discard_rest(receive: Receive) -> None:
    """Read and drop what is left of a request body, within LINGER_BYTES and LINGER_S."""
    budget = LINGER_BYTES
    deadline = time.monotonic() + LINGER_S
    while budget > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":  # http.disconnect: the client hung up
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class Guard:
    """ASGI middleware around the whole app."""

    def __init__(self, app: ASGIApp, options: ServerOptions) -> None:
        self.app = app
        self.options = options
        self.allowed_origins = {normalise_origin(origin) for origin in options.allowed_origins} - {None}
        hosts = options.allowed_hosts
        self.allowed_hosts = None if hosts is None else {host_name(host) for host in hosts}
        self.lingering = 0  # refused bodies being read and dropped now (at most MAX_LINGERING)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and self.allowed_hosts is not None and host_name(host) not in self.allowed_hosts:
            await self._refuse_page(scope, receive, send, not_allowed("Host", host, "--allow-host"))
            return
        origin = _header(scope, b"origin")
        if origin is not None and normalise_origin(origin) not in self.allowed_origins:
            await self._refuse_page(scope, receive, send, not_allowed("Origin", origin, "--allow-origin"))
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)  # frames have their own limit (ws.py)
            return
        limit = body_limit(self.options, scope)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse_body(receive, send, BodyTooLarge(limit), body_done=False)
            return
        received = 0
        body_done = False
        started = False
        begun = time.monotonic()
        deadline = begun + self.options.header_timeout_s

        async def counting_receive() -> Message:
            nonlocal received, body_done, deadline
            if body_done:
                return await receive()  # after the body: the route waits for a disconnect
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise BodyTooSlow(time.monotonic() - begun, received) from None
            if message["type"] == "http.request":
                size = len(message.get("body", b""))
                deadline += size / self.options.min_body_rate
                received += size
                body_done = not message.get("more_body", False)
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge as exc:
            if not started:  # routes read their whole body before answering, so this always holds
                await self._refuse_body(receive, send, exc, body_done=body_done)
        except BodyTooSlow as exc:
            if not started:
                await _refuse(send, 408, str(exc))  # `connection: close`: the rest is never read
        except ClientDisconnect:
            pass  # the client left in the middle of its body: no one to answer, nothing to log

    async def _refuse_body(self, receive: Receive, send: Send, exc: BodyTooLarge, *, body_done: bool) -> None:
        """413, then a lingering close (see the module's docstring) while a slot is free."""
        if body_done or self.lingering >= MAX_LINGERING:
            await _refuse(send, 413, str(exc))
            return
        self.lingering += 1
        try:
            await _refuse(send, 413, str(exc), more_body=True)
            await _discard_rest(receive)
        finally:
            self.lingering -= 1
        await send({"type": "http.response.body", "body": b""})  # uvicorn closes the connection now

    async def _refuse_page(self, scope: Scope, receive: Receive, send: Send, message: str) -> None:
        if scope["type"] == "websocket":
            await receive()  # websocket.connect
            # Closing before accepting makes uvicorn answer the upgrade with HTTP 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        await _refuse(send, 403, message)
