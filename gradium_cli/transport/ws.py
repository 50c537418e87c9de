"""Async WebSocket transport for TTS over `websockets`.

One `TtsSocket` carries requests; a reader task routes incoming frames to
each request by `client_req_id` (None for a plain single request), so the
same code path serves one-shot `say`, live `stream` and multiplexed `batch`.
The three SDK shapes map onto `request()`: realtime is feeding an async
iterator while reading, stream is iterating the result, buffered is `collect()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from gradium_cli.errors import (
    AuthError,
    CrossHostRedirect,
    GradiumError,
    NetworkError,
    ProtocolError,
    RateLimited,
    UsageError,
)
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.bounds import MAX_FRAME_BYTES, AudioBudget, Deadline
from gradium_cli.protocol.session import TtsSession, error_from_server
from gradium_cli.retry import parse_retry_after
from gradium_cli.transport.endpoint import Endpoint, masked_url, unresolved_host

if TYPE_CHECKING:
    from gradium_cli.transport.local import LocalSocket

FrameHook = Callable[[str, str], None]  # (direction "<" or ">", frame) for wire logs


class _SameHostConnect(connect):
    """websockets' connect, following redirects only to the host (and port, scheme) it started at.

    websockets strips Authorization and Cookie across hosts but sends every other header,
    `x-api-key` included, to wherever a redirect points.
    """

    def process_redirect(self, exc: Exception) -> Exception | str:
        before = self.ws_uri
        new = super().process_redirect(exc)
        if isinstance(new, str):
            after = parse_uri(new)
            if (after.secure, after.host, after.port) != (before.secure, before.host, before.port):
                return CrossHostRedirect(
                    f"{masked_url(self.uri)} redirected to another host ({masked_url(new)}); "
                    "refusing to send the API key there",
                    hint="use --base-url with the server's real address",
                )
        return new


async def open_websocket(
    url: str,
    headers: dict[str, str],
    timeout: float,
    ssl_context: ssl.SSLContext | None = None,
    *,
    subprotocols: Sequence[str] = (),
    connection_class: type[ClientConnection] | None = None,
) -> ClientConnection:
    """Open a client WebSocket as every command does: bounded frames, no cross-host redirect.

    `subprotocols` and `connection_class` are for `ws-raw` (-s, and watching control frames)."""
    try:
        return await _SameHostConnect(
            url,
            additional_headers=headers,
            ssl=ssl_context,
            open_timeout=timeout,
            max_size=MAX_FRAME_BYTES,
            compression=None,  # frames exactly as a client without permessage-deflate sends them
            ping_interval=None,  # no pings the user did not ask for (ws-raw logs every frame)
            subprotocols=[Subprotocol(name) for name in subprotocols] or None,
            create_connection=connection_class,
        )
    except CrossHostRedirect:
        raise
    except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI, ssl.SSLError) as exc:
        raise connect_error(exc, url) from None


CLOSE_WAIT_CANCELLED_S = 0.25


class _Closed:
    """Queue marker: the socket ended; `error` says how, None for a normal close."""

    def __init__(self, error: GradiumError | None) -> None:
        self.error = error


def connect_error(exc: BaseException, url: str) -> GradiumError:
    where = masked_url(url)
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return AuthError(
                f"server refused the WebSocket at {where} (HTTP {status})", hint="check the URL and the API key"
            )
        message = f"server answered HTTP {status} instead of a WebSocket at {where}"
        retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
        if status == 429 or retry_after is not None:
            return RateLimited(message, retry_after)
        return NetworkError(message)
    if isinstance(exc, InvalidURI):
        return UsageError(f"invalid WebSocket URL {where}", hint="e.g. ws://127.0.0.1:8765/api/speech/tts")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return NetworkError(
            f"TLS certificate of {urlsplit(url).hostname} not trusted: {exc.verify_message}",
            hint="--ca FILE trusts a private CA; --insecure skips the check",
        )
    if isinstance(exc, ssl.SSLError):
        return NetworkError(f"TLS handshake with {where} failed: {exc.reason or exc}")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return NetworkError(f"timed out connecting to {where}")
    if isinstance(exc, InvalidHandshake):
        return NetworkError(f"WebSocket handshake with {where} failed: {exc}")
    unresolved = unresolved_host(exc, url)
    if unresolved is not None:
        return unresolved
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return NetworkError(f"cannot connect to {where}: {reason}", hint="is the server running? see `gradium serve`")


def closed_error(exc: ConnectionClosed) -> GradiumError:
    """Why a socket ended under us: an oversized frame is the server's fault, anything else a drop."""
    if exc.sent is not None and exc.sent.code == 1009:
        return ProtocolError(f"the server sent a frame larger than {MAX_FRAME_BYTES // 2**20} MiB")
    code = exc.rcvd.code if exc.rcvd else 1006
    return NetworkError(f"connection dropped by the server (close code {code})")


class TtsSocket:
    def __init__(self, endpoint: Endpoint, on_frame: FrameHook | None = None) -> None:
        self.endpoint = endpoint
        self.on_frame = on_frame
        self._ws: ClientConnection | LocalSocket | None = None
        self._routes: dict[str | None, asyncio.Queue[m.ServerMessage | _Closed]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._closed: _Closed | None = None

    async def __aenter__(self) -> TtsSocket:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        if self.endpoint.local is not None:
            self._ws = await self.endpoint.local.connect()
        else:
            self._ws = await open_websocket(self.endpoint.ws_url(), self.endpoint.headers(), self.endpoint.timeout)
        self._reader = asyncio.create_task(self._read())

    async def close(self, hurry: bool = False) -> None:
        """Close politely; `hurry` (or a cancelled caller) waits CLOSE_WAIT_CANCELLED_S at most for the server."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            # A polite close waits for the server's answer; when the run is being cancelled
            # (Ctrl-C, SIGTERM) a server that never answers must not hold the exit for long.
            task = asyncio.current_task()
            cancelling = hurry or bool(task is not None and getattr(task, "cancelling", lambda: 0)())
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), CLOSE_WAIT_CANCELLED_S if cancelling else 2)

    @property
    def is_closed(self) -> bool:
        """The connection has ended: every later request on it fails at once."""
        return self._closed is not None

    async def send(self, frame: str) -> None:
        assert self._ws is not None, "socket not open"
        if self._closed is not None:
            raise self._closed.error or NetworkError("connection closed by the server")
        if self.on_frame:
            self.on_frame(">", frame)
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise NetworkError(f"connection closed while sending ({exc.rcvd.code if exc.rcvd else 1006})") from None

    async def _read(self) -> None:
        assert self._ws is not None
        ending: _Closed
        unscoped: GradiumError | None = None
        try:
            async for frame in self._ws:
                if self.on_frame:
                    self.on_frame("<", frame if isinstance(frame, str) else f"<{len(frame)} binary bytes>")
                try:
                    message = m.decode_server(frame)
                except m.MessageError as exc:
                    raise ProtocolError(f"malformed frame from server: {exc.message}") from None
                queue = self._routes.get(message.client_req_id)
                if queue is None and len(self._routes) == 1 and None in self._routes:
                    queue = self._routes[None]  # a server may echo ids we did not ask for
                if queue is not None:
                    queue.put_nowait(message)
                    # Let the consumer take it now: in a burst of frames the reader would
                    # otherwise decode the whole burst first, delaying audio to the sinks.
                    await asyncio.sleep(0)
                elif isinstance(message, m.ErrorMessage) and message.client_req_id is None:
                    # An unscoped error (a refused key, §11.1) concerns every request on the
                    # socket, even one not yet started: it is also why the socket closes.
                    unscoped = error_from_server(message)
                    for other in self._routes.values():
                        other.put_nowait(message)
            ending = _Closed(unscoped)
        except ConnectionClosed as exc:
            ending = _Closed(unscoped or closed_error(exc))
        except GradiumError as exc:
            ending = _Closed(exc)
        except asyncio.CancelledError:
            ending = _Closed(NetworkError("connection closed"))
            raise
        self._closed = ending
        for queue in self._routes.values():
            queue.put_nowait(ending)

    async def request(
        self,
        setup: m.Setup,
        texts: str | Iterable[str] | AsyncIterable[str],
        client_req_id: str | None = None,
        send_eos: bool = True,
    ) -> AsyncIterator[m.ServerMessage]:
        """Run one request: send setup and texts (concurrently with reading), yield replies.

        Yields every server message up to and including `end_of_stream`; raises
        the mapped GradiumError on an error frame, a drop or a silent server.
        """
        if client_req_id in self._routes:
            raise ProtocolError(f"client_req_id {client_req_id!r} already in use")
        queue: asyncio.Queue[m.ServerMessage | _Closed] = asyncio.Queue()
        self._routes[client_req_id] = queue
        session = TtsSession(client_req_id)
        budget = AudioBudget(setup.output_format)
        deadline = Deadline(self.endpoint.deadline)
        sender = asyncio.create_task(self._send_texts(session, setup, texts, send_eos, budget))
        try:
            while True:
                item = await self._next(queue, sender, deadline)
                if isinstance(item, _Closed):
                    if sender.done() and sender.exception() is not None:
                        raise sender.exception()  # type: ignore[misc]
                    raise item.error or NetworkError("server closed the connection before end_of_stream")
                if isinstance(item, m.Audio):
                    budget.add_audio(len(item.audio), speech=item.stop_s > item.start_s, whole_samples=True)
                elif isinstance(item, m.EndOfStream):
                    budget.check_complete()
                yield session.receive_message(item)
                if session.done:
                    return
        finally:
            self._routes.pop(client_req_id, None)
            if not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            elif not sender.cancelled():
                # Retrieve it even when the reply side already failed for the same reason,
                # else asyncio prints "Task exception was never retrieved" on stderr.
                sender.exception()

    async def _next(
        self, queue: asyncio.Queue[m.ServerMessage | _Closed], sender: asyncio.Task[None], deadline: Deadline
    ) -> m.ServerMessage | _Closed:
        """The next frame for a request; a server silent for `timeout` seconds, or a request
        running past --deadline, is an error."""
        deadline.check()
        if not queue.empty():  # the common case mid-stream: no futures, no waiting
            return queue.get_nowait()
        getter = asyncio.ensure_future(queue.get())
        waiting: set[asyncio.Future[Any]] = {getter}
        if not sender.done():
            waiting.add(sender)
        elif not sender.cancelled() and sender.exception() is not None:
            # It failed while the last reply was handled (bad input): say so now, not
            # after `timeout` seconds of waiting for a server that has nothing to say.
            getter.cancel()
            raise sender.exception()  # type: ignore[misc]
        while True:
            # While text is still being fed (a person typing, an LLM thinking) silence is
            # normal; once everything is sent, a silent server is a stalled one.
            timeout = deadline.cap(self.endpoint.timeout if sender.done() else None)
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                return getter.result()
            if not done:
                getter.cancel()
                deadline.check()
                raise NetworkError(
                    f"no reply from the server for {self.endpoint.timeout:g} s",
                    hint="raise --timeout",
                )
            # The sender finished: surface its failure, else keep waiting for replies.
            waiting.discard(sender)
            if sender.exception() is not None:
                getter.cancel()
                raise sender.exception()  # type: ignore[misc]

    async def _send_texts(
        self,
        session: TtsSession,
        setup: m.Setup,
        texts: str | Iterable[str] | AsyncIterable[str],
        send_eos: bool,
        budget: AudioBudget,
    ) -> None:
        await self.send(session.setup(setup))
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, AsyncIterable):
            async for text in texts:
                budget.add_text(text)
                await self.send(session.text(text))
        else:
            for text in texts:
                budget.add_text(text)
                await self.send(session.text(text))
        if send_eos:
            await self.send(session.end_of_stream())


async def collect(messages: AsyncIterator[m.ServerMessage]) -> list[m.ServerMessage]:
    """The buffered shape: every message of a request."""
    return [message async for message in messages]


__all__ = ["TtsSocket", "collect", "websockets"]
