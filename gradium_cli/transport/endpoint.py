"""Where the API is and how to authenticate: shared by the WebSocket and REST layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from gradium_cli import __version__
from gradium_cli.config import mask_secret
from gradium_cli.errors import NetworkError
from gradium_cli.ui.redact import mask_url_passwords, remember_secret

if TYPE_CHECKING:
    from gradium_cli.transport.local import LocalEngine

# The base of the built-in engine's REST calls (transport/local_http.py): httpx needs an
# http URL; that transport never resolves it.
LOCAL_HTTP_BASE_URL = "http://built-in-engine/api/"

TTS_ROUTE = "speech/tts"
SECRET_QUERY = ("token", "api_key", "key")


def normalise_base_url(url: str) -> str:
    """As the SDK does (PROTOCOL.md §1.2): add a scheme when missing and a trailing slash."""
    if not url.startswith(("http://", "https://", "ws://", "wss://")):
        url = ("http://" if url.startswith(("127", "local", "[::1]")) else "https://") + url
    url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    return url if url.endswith("/") else url + "/"


def masked_url(url: str) -> str:
    """The URL with its password (`user:secret@`) and secret query values (a browser `?token=`) masked."""
    url = mask_url_passwords(url)
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = []
    for pair in parts.query.split("&"):
        name, sep, value = pair.partition("=")
        pairs.append(f"{name}={mask_secret(unquote_plus(value))}" if sep and name.lower() in SECRET_QUERY else pair)
    return urlunsplit(parts._replace(query="&".join(pairs)))


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str | None = None
    timeout: float = 30.0
    extra_headers: dict[str, str] = field(default_factory=dict)
    # The built-in offline engine: TTS WebSockets and REST calls go over its pipe.
    local: LocalEngine | None = None
    deadline: float | None = None  # --deadline: seconds for a whole request (None: no bound)

    def url(self, route: str) -> str:
        base = LOCAL_HTTP_BASE_URL if self.local is not None else self.base_url
        return normalise_base_url(base) + route.lstrip("/")

    def ws_url(self, route: str = TTS_ROUTE) -> str:
        if self.local is not None:
            return f"{self.base_url}{route.lstrip('/')}"
        # Only the scheme changes: the SDK's replace-every-"http" would also mangle paths.
        url = self.url(route)
        return "ws" + url[4:] if url.startswith("http") else url

    def __post_init__(self) -> None:
        remember_secret(self.api_key)
        for name, value in self.extra_headers.items():
            if name.lower() == "x-api-key":
                remember_secret(value)

    def headers(self) -> dict[str, str]:
        headers = {"x-api-source": f"gradium-cli/{__version__}", **self.extra_headers}
        # An explicit `-H 'X-Api-Key: …'` replaces the configured key: one key per request.
        if self.api_key and not any(name.lower() == "x-api-key" for name in headers):
            headers["x-api-key"] = self.api_key
        return headers

    def same_origin(self, url: str) -> bool:
        """Whether `url` is on the configured host: the only place the key may go."""
        mine, theirs = urlsplit(self.url("")), urlsplit(url)
        return (mine.scheme.replace("ws", "http"), mine.hostname, mine.port) == (
            theirs.scheme.replace("ws", "http"),
            theirs.hostname,
            theirs.port,
        )


def unresolved_host(exc: BaseException, url: str) -> NetworkError | None:
    """The error to report when `exc` (or what caused it) is a failed host name lookup, else None.

    A name that does not resolve is a typo or a missing network, not a server that is
    down: saying "is the server running? see `gradium serve`" would send people the wrong way.
    """
    import socket

    seen: BaseException | None = exc
    for _ in range(8):  # the library wraps the resolver's error a few levels deep
        if seen is None:
            return None
        if isinstance(seen, socket.gaierror):
            host = urlsplit(url).hostname or url
            return NetworkError(
                f"cannot resolve the host name '{host}': {seen.strerror or seen}",
                hint="check the spelling in --base-url or the base-url setting, and the network",
            )
        seen = seen.__cause__ or seen.__context__
    return None
