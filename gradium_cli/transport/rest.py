"""REST calls over httpx (imported lazily), with errors mapped onto the exception tree."""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

from gradium_cli.errors import (
    AuthError,
    CrossHostRedirect,
    GradiumError,
    NetworkError,
    RateLimited,
    RequestError,
    ServerError,
)
from gradium_cli.protocol.bounds import MAX_JSON_BYTES, Deadline
from gradium_cli.retry import parse_retry_after
from gradium_cli.transport.endpoint import Endpoint, masked_url, unresolved_host
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    import httpx


def import_httpx() -> ModuleType:
    """httpx, without its own command-line client.

    `import httpx` also imports `httpx._main`, its CLI, which loads click, rich.console,
    rich.progress, rich.syntax and pygments (~60 ms) whenever click is installed (uvicorn
    brings it). A None entry in sys.modules makes that import fail, so httpx defines the
    stub it uses when those packages are missing; nothing here runs the httpx CLI.
    """
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import httpx

    return httpx


def _reason(response: httpx.Response) -> str:
    """The server's reason, read as the SDK does (§11.2): detail, else error, else text."""
    text = response.text
    try:
        body = response.json()
    except ValueError:
        return text.strip() or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail", body.get("error"))
        if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ...}]
            return "; ".join(
                f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
                for item in detail
                if isinstance(item, dict)
            )
        if detail is not None:
            return str(detail)
    return text.strip()


def http_error(response: httpx.Response) -> GradiumError:
    status = response.status_code
    reason = _reason(response)
    if (status in (401, 403) and "key" in reason.lower()) or status == 401:
        return AuthError(f"server refused the API key: {reason}", hint="check `gradium config get api-key`")
    if status == 500 and reason.startswith("error from server 1008"):
        message = reason.removeprefix("error from server 1008: ")
        if "api key" in message.lower():
            return AuthError(f"server refused the API key: {message}")
        return RequestError(f"server refused the request: {message}")
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429 or (status == 503 and retry_after is not None):
        # Exit 7 as over the WebSocket: "not now", and retried after what the server asked.
        return RateLimited(f"server is rate limiting requests: {reason} (HTTP {status})", retry_after)
    if 400 <= status < 500:
        refused = RequestError(f"{reason} (HTTP {status})")
        refused.status = status
        return refused
    return ServerError(f"server error: {reason} (HTTP {status})")


class RestClient:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._httpx = import_httpx()
        # The built-in engine answers REST calls itself, on its own stream (transport/local_http.py).
        transport = endpoint.local.http_transport(endpoint.timeout) if endpoint.local is not None else None
        self.client: httpx.AsyncClient = self._httpx.AsyncClient(
            transport=transport,
            headers=endpoint.headers(),
            timeout=endpoint.timeout,
            follow_redirects=True,
            event_hooks={"request": [self._same_host_only]},
        )

    async def _same_host_only(self, request: httpx.Request) -> None:
        """Before each request (redirects included): the key goes to the configured host only.

        httpx drops Authorization across hosts but would send `x-api-key` anywhere.
        """
        url = str(request.url)
        if not self.endpoint.same_origin(url):
            raise CrossHostRedirect(
                f"{masked_url(self.endpoint.url(''))} redirected to another host ({masked_url(url)}); "
                "refusing to send the API key there",
                hint="use --base-url with the server's real address",
            )

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def request(self, method: str, route: str, **kwargs: Any) -> httpx.Response:
        """One call, its body read whole but never past MAX_JSON_BYTES nor past --deadline."""
        url = self.endpoint.url(route)
        started = time.monotonic()
        deadline = Deadline(self.endpoint.deadline)
        request: httpx.Request | None = None
        try:
            request = self.client.build_request(method, url, **kwargs)
            streamed = await self.client.send(request, stream=True)
            body = bytearray()
            try:
                async for chunk in streamed.aiter_bytes():
                    body += chunk
                    deadline.check()
                    if len(body) > MAX_JSON_BYTES:
                        raise ServerError(
                            f"the answer to {route} is larger than {MAX_JSON_BYTES // 2**20} MiB; not reading on"
                        )
            finally:
                await streamed.aclose()
            response: httpx.Response = self._httpx.Response(
                streamed.status_code, headers=streamed.headers, content=bytes(body), request=request
            )
        except self._httpx.TimeoutException:
            raise NetworkError(f"timed out talking to {url}", hint="raise --timeout") from None
        except self._httpx.HTTPError as exc:
            raise self._connection_failed(exc, url, request) from None
        # -v: one line per call (the key travels in a header, never in the URL).
        get_env().debug(
            f"{method} {response.url} → HTTP {response.status_code} ({(time.monotonic() - started) * 1000:.0f} ms)"
        )
        if response.status_code >= 400:
            raise http_error(response)
        if response.is_redirect:  # a redirect left unfollowed: no Location, or one httpx cannot use
            raise ServerError(
                f"server answered {route} with a redirect that leads nowhere (HTTP {response.status_code})"
            )
        return response

    def _connection_failed(self, exc: httpx.HTTPError, url: str, request: httpx.Request | None) -> NetworkError:
        """Why a call got no answer, said as what happened: no server, or a connection cut short.

        A server closes on a body over its limit (`gradium serve` answers 413 first, but a
        reset can still beat that answer to a client busy sending), so a cut with a body
        sent says so instead of asking whether the server runs: it does.
        """
        unresolved = unresolved_host(exc, url)
        if unresolved is not None:
            return unresolved
        if isinstance(exc, self._httpx.ConnectError):
            return NetworkError(f"cannot reach {url}: {exc}", hint="is the server running? see `gradium serve`")
        why = str(exc) or "connection reset"
        sent = int(request.headers.get("content-length", "0") or 0) if request is not None else 0
        if sent:
            return NetworkError(
                f"the server at {url} closed the connection without answering a {sent}-byte request ({why})",
                hint="a server may cut a body over its limit: gradium serve --max-upload-bytes",
            )
        return NetworkError(f"the server at {url} closed the connection without answering ({why})")

    async def json(self, method: str, route: str, **kwargs: Any) -> Any:
        response = await self.request(method, route, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past what Python parses
            raise ServerError(f"server sent invalid JSON for {route}") from None

    async def json_records(self, method: str, route: str, **kwargs: Any) -> list[dict[str, Any]]:
        """A JSON list of objects (a listing), or one clear error for any other answer."""
        body = await self.json(method, route, **kwargs)
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            shape = "an empty body" if body is None else f"a JSON {type(body).__name__}"
            raise ServerError(f"server sent {shape} for {route}, not a list of records")
        return body

    async def stream_post(self, route: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        url = self.endpoint.url(route)
        try:
            async with self.client.stream("POST", url, json=body) as response:
                get_env().debug(f"POST {response.url} → HTTP {response.status_code}")
                if response.status_code >= 400:
                    await response.aread()
                    raise http_error(response)
                deadline = Deadline(self.endpoint.deadline)
                async for chunk in response.aiter_bytes():
                    deadline.check()
                    yield chunk
        except self._httpx.TimeoutException:
            raise NetworkError(f"timed out talking to {url}", hint="raise --timeout") from None
        except self._httpx.HTTPError as exc:
            unresolved = unresolved_host(exc, url)
            if unresolved is not None:
                raise unresolved from None
            raise NetworkError(f"connection to {url} failed: {exc}") from None
