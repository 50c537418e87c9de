"""Where the API is and how to authenticate: shared by the WebSocket and REST layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from gradium_cli import __version__
from gradium_cli.config import mask_secret

TTS_ROUTE = "speech/tts"
SECRET_QUERY = ("token", "api_key", "key")


def normalise_base_url(url: str) -> str:
    """As the SDK does (PROTOCOL.md §1.2): add a scheme when missing and a trailing slash."""
    if not url.startswith(("http://", "https://", "ws://", "wss://")):
        url = ("http://" if url.startswith(("127", "local", "[::1]")) else "https://") + url
    url = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    return url if url.endswith("/") else url + "/"


def masked_url(url: str) -> str:
    """The URL with secret query values (a browser `?token=`) masked."""
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

    def url(self, route: str) -> str:
        return normalise_base_url(self.base_url) + route.lstrip("/")

    def ws_url(self, route: str = TTS_ROUTE) -> str:
        # Only the scheme changes: the SDK's replace-every-"http" would also mangle paths.
        url = self.url(route)
        return "ws" + url[4:] if url.startswith("http") else url

    def headers(self) -> dict[str, str]:
        headers = {"x-api-source": f"gradium-cli/{__version__}", **self.extra_headers}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return headers
