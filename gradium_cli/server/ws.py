"""The TTS WebSocket endpoint: sessions, multiplexing by client_req_id, pacing.

Follows PROTOCOL.md §2 and §3: `ready` first, text accepted before `ready`,
errors as `error` frames before any close, the socket closed after the
request's `end_of_stream` unless `close_ws_on_eos` is false, and several
requests at once when each message carries a `client_req_id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from gradium_cli.protocol import messages as m
from gradium_cli.server.requests import SetupProblem, resolve_settings, session_too_long, voice_uid
from gradium_cli.server.state import (
    CONCURRENCY_LIMIT_MESSAGE,
    DATA_UNREADABLE,
    NO_SPEECH_TO_TEXT,
    ServerState,
    server_busy_message,
)
from gradium_cli.server.store import CorruptStore
from gradium_cli.server.synth import Renderer, TextBuffer
from gradium_cli.server.textprep import phrase_lengths

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

T = TypeVar("T")

# How far audio may run ahead of the wall clock with --realtime, as a live
# service's jitter buffer would allow.
REALTIME_LEAD_S = 0.2
# How long past its session's end a send may wait on a client's reading: one that is
# reading gets its `session too long` frame from the next check, one that reads
# nothing is dropped this long after the end.
SEND_GRACE_S = 5.0
# Failed multiplexed requests whose late frames are dropped quietly (Connection._failed_ids).
FAILED_IDS_KEPT = 256


@dataclass
class _Eos:
    pass


@dataclass
class _Refused:
    """Queued in place of text the server would not keep: the request fails when it gets here,
    after the audio of the text before it."""

    message: str


def start_in_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> asyncio.Future[T]:
    """`asyncio.to_thread(...)` handed to the thread pool now, not when the event loop next
    runs a task: the sends that follow it may never yield, and the render must not wait
    for them (a 10-word request's second unit did, which cost it its overlap)."""
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
    return asyncio.get_running_loop().run_in_executor(None, call)


class SocketGone(Exception):
    """The client went away while a frame was being sent to it."""


class Socket(Protocol):
    """What `Connection` needs of a WebSocket: starlette's behind `gradium serve`
    (server/asgi_socket.py), a pipe channel in the built-in engine's process
    (server/pipe.py), which must not import starlette (its start-up is a command's)."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def query_params(self) -> Mapping[str, str]: ...

    @property
    def connected(self) -> bool: ...

    async def accept(self) -> None: ...

    async def receive(self) -> Mapping[str, Any]:
        """The next ASGI event: `websocket.receive` (text or bytes) or `websocket.disconnect`."""
        ...

    async def send_texts(self, texts: Sequence[str]) -> None:
        """Send these messages in order, in one write where the transport allows (a
        unit's ~20 frames each cost a loopback send and the client a wake-up otherwise).

        Raises SocketGone (or RuntimeError) when the client is gone."""
        ...

    async def close(self, code: int = 1000) -> None:
        """Raises SocketGone (or RuntimeError) when the client is gone already."""
        ...

    def abort(self) -> bool:
        """Drop the connection with no close frame; False where the transport cannot."""
        ...


class Request:
    """One synthesis request on a socket, fed through a queue and rendered in a task."""

    def __init__(self, conn: Connection, setup: m.Setup, renderer: Renderer, voice_uid: str) -> None:
        self.conn = conn
        self.setup = setup
        self.client_req_id = setup.client_req_id
        self.request_id = str(uuid.uuid4())
        self.renderer = renderer
        self.voice_uid = voice_uid
        self.buffer = TextBuffer([], 0, *phrase_lengths(renderer.settings.dictionary))
        self.queue: asyncio.Queue[str | _Eos | _Refused] = asyncio.Queue()
        self.started = time.monotonic()
        self.first_audio_at: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.input_done = False  # end_of_stream received: what is left is the server's work
        self._released = False
        # Characters of text received, counted as they arrive: the queue is read only between
        # renders, so without this a client could queue text without bound meanwhile. Each is
        # also held against the server's budget for text in progress until the request ends.
        self.received_chars = 0
        self.refused = False  # text was refused (over a limit): what comes after is dropped

    def release(self) -> None:
        """The request is over: its voice is no longer in use, its slot and text no longer
        held. Only the first call counts."""
        if not self._released:
            self._released = True
            self.conn.state.release_voice(self.voice_uid)
            self.conn.state.end_request(self.received_chars)

    def accept_text(self, text: str) -> str | _Refused | None:
        """What to queue for this text as it arrives: the text, a refusal, or None (dropped).

        Past the request's limit only the characters that cross it are kept (the request
        fails with `text too long` when it reaches them): a 1 MiB message beyond the limit
        is not held whole. Text the server's budget has no room for is refused (`busy`)."""
        options = self.conn.state.options
        # Released already: a task cancelled before it ran (its socket closed by another
        # request) leaves the request in `conn.requests`, and a frame the connection had
        # queued was then held against the budget for good, with no end to give it back.
        if self.refused or self._released:
            return None
        crossing = options.max_text_chars + 1 - self.received_chars
        if len(text) >= crossing:
            text, self.refused = text[:crossing], True
        if not self.conn.state.hold_text(len(text)):
            self.refused = True
            return _Refused(server_busy_message(options))
        self.received_chars += len(text)
        return text

    @property
    def closes_socket(self) -> bool:
        return self.setup.close_ws_on_eos is not False

    async def run(self) -> None:
        state = self.conn.state
        error: str | None = None
        self.error_code = 1000
        try:
            while True:
                try:
                    item = await asyncio.wait_for(self.queue.get(), self._session_left())
                except asyncio.TimeoutError:
                    item = None
                if item is None or self._session_left() <= 0:
                    raise self._session_too_long()
                # This item and every one already queued behind it, up to end_of_stream: their
                # units then render back to back, each while the one before is sent (the
                # buffer cuts the same units however the text is grouped).
                while isinstance(item, str):
                    self.buffer.add(item)
                    if self.buffer.total_chars > state.options.max_text_chars:
                        raise SetupProblem(
                            f"text too long: at most {state.options.max_text_chars} characters per request"
                        )
                    item = None if self.queue.empty() else self.queue.get_nowait()
                if isinstance(item, _Refused):
                    raise SetupProblem(item.message)
                final = isinstance(item, _Eos)
                units = self.buffer.take(final=final)
                # Send each unit while the next one renders in a worker thread (eSpeak
                # releases the GIL), so synthesis and sending overlap. Renders stay in order.
                ready: list[m.ServerMessage] | None = None
                for index, (text, flush) in enumerate(units):
                    last = final and index == len(units) - 1
                    if not text:
                        # Nothing for the engine (a flush: padding, stamps, the format's tail):
                        # rendered here and sent with the unit before it, not via a thread.
                        tail = contextvars.copy_context().run(self.renderer.render, text, flush=flush, final=last)
                        ready = [*(ready or []), *tail]
                        continue
                    rendering = start_in_thread(self.renderer.render, text, flush=flush, final=last)
                    if ready is not None:
                        await self._send_paced(ready)
                    ready = await rendering
                if final:
                    ready = [*(ready or []), m.EndOfStream(client_req_id=self.client_req_id)]
                if ready is not None:
                    await self._send_paced(ready)
                if final:
                    break
        except SetupProblem as problem:
            error, self.error_code = problem.message, problem.code
            await self.conn.send_error(problem.message, problem.code, self.client_req_id)
        except Exception as exc:
            error, self.error_code = f"internal error: {exc}", m.INTERNAL_ERROR
            await self.conn.send_error(error, m.INTERNAL_ERROR, self.client_req_id)
        except asyncio.CancelledError:
            # The connection ended under the request (the client left, the server stops):
            # it was logged `status=ok`, as if all its audio had gone out.
            error = "cancelled: the connection closed before the request ended"
            raise
        finally:
            self._log(error)
            await self.conn.request_done(self, failed=error is not None)

    def _session_left(self) -> float:
        return self.started + self.conn.state.options.max_session_s - time.monotonic()

    def _session_too_long(self) -> SetupProblem:
        return session_too_long(self.conn.state.options.max_session_s)

    async def _send_paced(self, out: list[m.ServerMessage]) -> None:
        options = self.conn.state.options
        audio = [msg for msg in out if isinstance(msg, m.Audio)]
        if options.latency_ms and audio:
            await asyncio.sleep(options.latency_ms / 1000)
        if not options.realtime:
            if audio:
                self._audio_due()
            await self._send_in_session(out)
            return
        for message in out:
            if isinstance(message, m.Audio):
                due = self._audio_due() + message.start_s - REALTIME_LEAD_S
                now = time.monotonic()
                if due > now:
                    await asyncio.sleep(due - now)
                    self._audio_due()
            await self._send_in_session([message])

    async def _send_in_session(self, out: list[m.ServerMessage]) -> None:
        """Send, waiting at most until SEND_GRACE_S past the session's end (`send_within`)."""
        if not await self.conn.send_within(out, max(self._session_left(), 0.0) + SEND_GRACE_S):
            raise self._session_too_long()

    def _audio_due(self) -> float:
        """Audio is about to go out: the time the first audio went (now, for the first),
        after checking the session's time limit."""
        if self.first_audio_at is None:
            self.first_audio_at = time.monotonic()
        if self._session_left() <= 0:
            raise self._session_too_long()
        return self.first_audio_at

    def _log(self, error: str | None) -> None:
        state = self.conn.state
        ttfa = None if self.first_audio_at is None else round((self.first_audio_at - self.started) * 1000)
        chars = self.buffer.total_chars
        state.usage.add(consumed_credits=chars, ingress_text_size=chars, audio_s=self.renderer.audio_seconds)
        state.log.request(
            transport="ws",
            request_id=self.request_id,
            client_req_id=self.client_req_id,
            voice=self.voice_uid,
            format=self.renderer.fmt.name,
            chars=self.buffer.total_chars,
            audio_s=round(self.renderer.audio_seconds, 3),
            ttfa_ms=ttfa,
            total_ms=round((time.monotonic() - self.started) * 1000),
            status="error" if error else "ok",
            error=error,
        )


class Connection:
    def __init__(self, ws: Socket, state: ServerState) -> None:
        self.ws = ws
        self.state = state
        self.requests: dict[str | None, Request] = {}
        self.request_count = 0
        # Hashes of the client_req_ids of multiplexed requests that failed or were refused: the
        # client sent their text and end_of_stream before it could know, and those frames must
        # not fail the socket and everything else on it as "before setup". The latest
        # FAILED_IDS_KEPT (an insertion-ordered dict): refused setups are not counted per socket.
        self._failed_ids: dict[int, None] = {}
        self._send_lock = asyncio.Lock()
        self._closing = False
        # Fault injection (ServerOptions.drop_*): the audio message count that aborts this connection.
        self._drop_at = state.options.drop_after_chunks if state.connection_doomed() else None
        self._audio_sent = 0

    # ------------------------------------------------------------------ sending

    async def send(self, message: m.ServerMessage) -> None:
        """A message of the connection's own (`ready`, `error`), with no request's session to
        bound it: it waits no longer than the idle timeout (a flood of refused setups on a kept
        socket, never read, held the slot for good)."""
        await self.send_within([message], self.state.options.idle_timeout_s)

    async def send_within(self, messages: Sequence[m.ServerMessage], seconds: float) -> bool:
        """`send_many`, waiting at most `seconds`: a client that stops reading holds a send on
        the transport's flow control, and with it its connection slot, for as long as it likes.
        Past them the connection is dropped (it reads nothing, so an `error` frame could never
        reach it) and this returns False."""
        try:
            await asyncio.wait_for(self.send_many(messages), seconds)
        except asyncio.TimeoutError:
            await self.abort_transport()
            return False
        return True

    async def send_many(self, messages: Sequence[m.ServerMessage]) -> None:
        """Send in order, together; with fault injection armed, one by one, so the
        connection drops after exactly the chosen audio message."""
        if self._drop_at is not None and len(messages) > 1:
            for message in messages:
                await self.send_many([message])
            return
        if self._closing or not self.ws.connected or not messages:
            return
        async with self._send_lock:
            try:
                await self.ws.send_texts([m.encode(message) for message in messages])
            except (SocketGone, RuntimeError):
                self._closing = True
                return
        self.state.usage.add(egress_messages=len(messages))
        if self._drop_at is not None and isinstance(messages[0], m.Audio):
            self._audio_sent += 1
            if self._audio_sent >= self._drop_at:
                await self.abort_transport()

    async def abort_transport(self) -> None:
        """Drop the connection with no close frame, as a crashed server or a lost network would;
        failing that, close code 1011."""
        if not self.ws.abort():
            await self.close(m.INTERNAL_ERROR)
            return
        self._closing = True
        for request in list(self.requests.values()):
            if request.task is not None and request.task is not asyncio.current_task():
                request.task.cancel()

    async def send_error(self, message: str, code: int, client_req_id: str | None = None) -> None:
        await self.send(m.ErrorMessage(message, code, client_req_id=client_req_id))

    async def close(self, code: int = 1000) -> None:
        if self._closing:
            return
        self._closing = True
        for request in list(self.requests.values()):
            if request.task is not None and request.task is not asyncio.current_task():
                request.task.cancel()
        if self.ws.connected:
            # SocketGone: the client left between the check and the close frame.
            with contextlib.suppress(RuntimeError, SocketGone):
                try:  # the close frame waits on flow control like any send (see `send`)
                    await asyncio.wait_for(self.ws.close(code), self.state.options.idle_timeout_s)
                except asyncio.TimeoutError:
                    self.ws.abort()

    async def fail(self, message: str, code: int = m.POLICY_VIOLATION, client_req_id: str | None = None) -> None:
        """A problem that ends the socket: error frame first, then close (§2.5 rule 7)."""
        await self.send_error(message, code, client_req_id)
        await self.close(code)

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        headers, query = self.ws.headers, self.ws.query_params
        problem = self.state.key_problem(headers.get("x-api-key"), query.get("token"))
        await self.ws.accept()
        self.state.usage.add(sessions=1)
        if problem is not None:
            # The service accepts the upgrade and reports auth failures in band (§11.1).
            await self.fail(problem)
            return
        try:
            while not self._closing:
                try:
                    event = await asyncio.wait_for(self.ws.receive(), self.state.options.idle_timeout_s)
                except asyncio.TimeoutError:
                    if any(request.input_done for request in self.requests.values()):
                        continue  # audio still rendering or paced out: the client is waiting, not idle
                    await self.fail("idle timeout: no request for too long", 1000)
                    break
                if event["type"] == "websocket.disconnect":
                    break
                await self.handle(event.get("text") if event.get("text") is not None else event.get("bytes"))
        except (SocketGone, RuntimeError):
            pass
        finally:
            self._closing = True
            for request in list(self.requests.values()):
                if request.task is not None:
                    request.task.cancel()

    async def handle(self, frame: str | bytes | None) -> None:
        self.state.usage.add(ingress_messages=1)
        if frame is None:
            return
        limit = self.state.options.max_message_bytes
        # A str counts characters: non-ASCII text takes up to 4 bytes each on the wire.
        if len(frame) > limit or (isinstance(frame, str) and not frame.isascii() and len(frame.encode()) > limit):
            await self.fail(f"message too large: at most {self.state.options.max_message_bytes} bytes")
            return
        try:
            message = m.decode_client(frame)
        except m.MessageError as exc:
            await self.fail(exc.message, exc.code)
            return
        if isinstance(message, m.Setup):
            await self.on_setup(message)
        elif isinstance(message, m.TextInput):
            await self.on_input(message.client_req_id, message.text)
        else:
            await self.on_input(message.client_req_id, None)

    async def on_setup(self, setup: m.Setup) -> None:
        req_id = setup.client_req_id
        if req_id in self.requests:
            what = (
                f"client_req_id '{req_id}' is already active"
                if req_id
                else "a request is already active on this socket"
            )
            await self._refuse(f"protocol error: {what}", req_id, keep_socket=req_id is not None)
            return
        if self.request_count >= self.state.options.max_requests_per_socket:
            await self.fail("too many requests on one socket; open a new connection", m.POLICY_VIOLATION, req_id)
            return
        try:
            settings, voice = resolve_settings(self.state, setup)
        except SetupProblem as problem:
            await self._refuse(
                problem.message,
                req_id,
                keep_socket=setup.close_ws_on_eos is False,
                code=problem.code,
            )
            return
        except CorruptStore as exc:
            # A data dir file replaced by one the store cannot read while the server runs (the
            # server processes read it again on every use): the socket was dropped without a
            # close frame, and the log had a traceback. The log names the file; the client gets 1011.
            self.state.log.problem(str(exc))
            await self.fail(DATA_UNREADABLE, m.INTERNAL_ERROR, req_id)
            return
        if not self.state.begin_request():  # released by Request.release
            await self._refuse(CONCURRENCY_LIMIT_MESSAGE, req_id, keep_socket=setup.close_ws_on_eos is False)
            return
        uid = voice_uid(voice)
        self._failed_ids.pop(hash(req_id), None)  # the id is reused: its frames are the new request's
        request = Request(self, setup, Renderer(self.state.engine, settings), uid)
        self.requests[req_id] = request
        self.request_count += 1
        self.state.use_voice(uid)
        fmt = settings.fmt
        ready = m.Ready(
            request_id=request.request_id,
            model_name=setup.model_name or "default",
            model_ext="gradium-local-espeak-ng",
            sample_rate=fmt.sample_rate,
            frame_size=fmt.chunk_samples,
            client_req_id=req_id,
        )
        try:
            await self.send(ready)
        except BaseException:  # cancelled with the connection: no task will release it
            request.release()
            raise
        request.task = asyncio.create_task(request.run())
        # Also when the task is cancelled before it ever ran (the client closed right after its
        # setup): run()'s `finally` then never runs, and the voice stayed in use for good.
        request.task.add_done_callback(lambda _task: request.release())

    def _remember_failed(self, req_id: str | None) -> None:
        if req_id is None:
            return  # an unscoped request's failure closes the socket or ends the sequence
        self._failed_ids[hash(req_id)] = None
        if len(self._failed_ids) > FAILED_IDS_KEPT:
            del self._failed_ids[next(iter(self._failed_ids))]

    async def on_input(self, req_id: str | None, text: str | None) -> None:
        request = self.requests.get(req_id)
        if request is None:
            if req_id is not None and hash(req_id) in self._failed_ids:
                return  # sent before the client could know its request had failed
            if text is None and req_id is None and self.request_count:
                await self.close(1000)  # an unscoped end_of_stream closes a reusable socket (§3)
                return
            what = "text" if text is not None else "end_of_stream"
            target = f" for unknown client_req_id '{req_id}'" if req_id else ""
            await self.fail(
                f"{what}{target} before setup: send a setup message first",
                m.POLICY_VIOLATION,
                req_id,
            )
            return
        # Neither is kept: after its end_of_stream a request takes nothing more (a repeated one
        # was queued, each uncounted, while it rendered), and an empty text adds nothing to speak.
        if request.input_done or text == "":
            return
        if text is None:
            request.input_done = True
            await request.queue.put(_Eos())
        elif (accepted := request.accept_text(text)) is not None:
            await request.queue.put(accepted)

    async def _refuse(
        self, message: str, req_id: str | None, *, keep_socket: bool, code: int = m.POLICY_VIOLATION
    ) -> None:
        if keep_socket:
            if req_id not in self.requests:
                self._remember_failed(req_id)  # its text and end_of_stream may follow
            await self.send_error(message, code, req_id)
        else:
            await self.fail(message, code, req_id)

    async def request_done(self, request: Request, failed: bool) -> None:
        if self.requests.get(request.client_req_id) is request:
            del self.requests[request.client_req_id]
        if failed:
            self._remember_failed(request.client_req_id)
        request.release()
        if request.closes_socket or (failed and request.client_req_id is None and not self.requests):
            await self.close(request.error_code)


async def tts_endpoint(ws: WebSocket) -> None:
    from starlette.websockets import WebSocketDisconnect

    from gradium_cli.server.asgi_socket import AsgiSocket

    state: ServerState = ws.app.state.gradium
    with state.connection_slot() as admitted:
        if admitted:
            await Connection(AsgiSocket(ws), state).run()
            return
        # Over ServerOptions.max_connections: accepted, then refused in band like the service (§11.1).
        await ws.accept()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.send_text(m.encode(m.ErrorMessage(CONCURRENCY_LIMIT_MESSAGE, m.POLICY_VIOLATION)))
            await ws.close(m.POLICY_VIOLATION)


async def speech_to_text_endpoint(ws: WebSocket) -> None:
    """STT and S2S: accepted, then refused in the protocol's shape, not with a bare HTTP 403 (§11.1)."""
    from starlette.websockets import WebSocketDisconnect

    await ws.accept()
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        await ws.send_text(m.encode(m.ErrorMessage(NO_SPEECH_TO_TEXT, m.POLICY_VIOLATION)))
        await ws.close(m.POLICY_VIOLATION)
