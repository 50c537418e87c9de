"""Where `gradium ws-raw` connects and how: URL, headers (key masked for display), TLS.

The URL is `--url` as given, or the configured base URL (or the built-in
offline engine) plus `--path` (default `speech/tts`). The socket is opened with
`websockets` directly: raw frames are the point of the console.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from gradium_cli.backend import BackendOptions, open_backend
from gradium_cli.config import base_url_problem, mask_secret, resolve
from gradium_cli.errors import UsageError
from gradium_cli.transport.endpoint import TTS_ROUTE, Endpoint, normalise_base_url
from gradium_cli.transport.ws import open_websocket
from gradium_cli.ui.redact import mask_url_passwords

SECRET_HEADERS = ("x-api-key", "authorization", "proxy-authorization", "cookie", "set-cookie")


def is_secret_header(name: str) -> bool:
    lowered = name.lower()
    return lowered in SECRET_HEADERS or any(word in lowered for word in ("key", "token", "secret"))


def mask_header(name: str, value: str) -> str:
    if not is_secret_header(name):
        return value
    scheme, _, credential = value.partition(" ")
    if credential and name.lower() in ("authorization", "proxy-authorization"):
        return f"{scheme} {mask_secret(credential)}"  # keep "Api-Key" / "Bearer" readable
    return mask_secret(value)


def masked_headers(headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, str]:
    items = headers.items() if isinstance(headers, dict) else headers
    return {name: mask_header(name, value) for name, value in items}


def parse_headers(values: list[str]) -> dict[str, str]:
    """`-H 'name: value'` options as a dict."""
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip() or any(ch.isspace() for ch in name.strip()):
            raise UsageError(f"bad header '{mask_header(name, value)}'", hint="use -H 'name: value'")
        headers[name.strip()] = content.strip()
    return headers


def ws_url(url: str) -> str:
    """A full URL as typed: http(s) becomes ws(s), a bare host gets a scheme like the SDK gives one."""
    if url.startswith(("ws://", "wss://")):
        return url
    if url.startswith(("http://", "https://")):
        return "ws" + url[4:]
    return "ws" + normalise_base_url(url)[4:].rstrip("/")


def ssl_context(url: str, insecure: bool, ca: Path | None) -> ssl.SSLContext | None:
    if not url.startswith("wss://"):
        return None
    try:
        context = ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load CA file {ca}: {getattr(exc, 'strerror', None) or exc}") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class Target:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | None = None
    timeout: float = 30.0
    subprotocols: tuple[str, ...] = ()  # offered in Sec-WebSocket-Protocol (-s)

    @property
    def shown_headers(self) -> dict[str, str]:
        return masked_headers(self.headers)

    @property
    def key_note(self) -> str:
        key = next((v for k, v in self.headers.items() if k.lower() == "x-api-key"), None)
        return f"x-api-key {mask_secret(key)}" if key else "no API key"


@contextlib.contextmanager
def open_target(
    url: str | None,
    path: str | None,
    backend: BackendOptions,
    extra_headers: dict[str, str],
    insecure: bool = False,
    ca: Path | None = None,
    subprotocols: tuple[str, ...] = (),
) -> Iterator[Target]:
    """The target for the options; with no server configured the offline engine runs meanwhile."""
    if url is not None:
        if path is not None:
            raise UsageError("give --url or --path, not both", hint="--path is relative to the base URL")
        if backend.local:
            raise UsageError("--local and --url cannot be combined")
        problem = base_url_problem(url)
        if problem is not None:
            raise UsageError(f"--url {mask_url_passwords(url)}: {problem}")
        full = ws_url(url)
        key = resolve("api-key", backend.api_key, backend.profile).value
        headers = Endpoint(full, key, backend.timeout, extra_headers).headers()
        yield Target(full, headers, ssl_context(full, insecure, ca), backend.timeout, subprotocols)
        return
    with open_backend(backend) as endpoint:
        full = endpoint.ws_url(TTS_ROUTE if path is None else path)
        endpoint = Endpoint(endpoint.base_url, endpoint.api_key, endpoint.timeout, extra_headers)
        yield Target(full, endpoint.headers(), ssl_context(full, insecure, ca), backend.timeout, subprotocols)


ControlWatcher = Callable[[str, bytes], None]  # ("ping" | "pong", payload)


class WatchedConnection(ClientConnection):
    """A client connection that reports the control frames it receives (websockets answers pings itself)."""

    on_control: ControlWatcher | None = None

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame) and event.opcode in (Opcode.PING, Opcode.PONG) and self.on_control is not None:
            self.on_control("ping" if event.opcode is Opcode.PING else "pong", bytes(event.data))
        super().process_event(event)


async def open_socket(
    target: Target, url: str | None = None, headers: dict[str, str] | None = None
) -> WatchedConnection:
    url = url or target.url
    ws = await open_websocket(
        url,
        target.headers if headers is None else headers,
        target.timeout,
        target.ssl,
        subprotocols=target.subprotocols,
        connection_class=WatchedConnection,
    )
    assert isinstance(ws, WatchedConnection)
    return ws
