"""The client side of the built-in offline engine: WebSocket-like channels to its process.

`LocalEngine` reaches the engine process (`gradium_cli.server.pipe`'s handler
and eSpeak NG, without an HTTP server: a fork of the resident engine, or a
child, see `engine_process.py`) as soon as a command knows it has no key, so
its start-up overlaps the command's own. `connect()` gives an object that
`TtsSocket` uses like a `websockets` client connection: `send`, `close` and
async iteration over text frames, ending with `ConnectionClosed` on an abnormal
close. If the child dies, every open channel gets an `error` frame saying so,
then close 1011: the command fails with one line (exit 6), never a core dump.
The request the engine was rendering is told that it crashed on its text (not
retried); the others that the engine stopped (retried on a new child).

Only the standard library and `websockets`' exception types: the command's
process never imports numpy, the engine or the server stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from websockets.exceptions import ConnectionClosedError
from websockets.frames import Close

from gradium_cli.errors import ConfigError, GradiumError, ServerError
from gradium_cli.server.engine_wire import (
    BODY,
    CLOSE,
    HEADER,
    OPEN,
    READY,
    REQUEST,
    REQUEST_HEAD,
    RESPONSE,
    STREAM_BUFFER,
    TEXT,
    frame,
)
from gradium_cli.transport.engine_process import EngineProcess, ready_timeout_s

if TYPE_CHECKING:
    from gradium_cli.transport.local_http import LocalHttpTransport

__all__ = ["LOCAL_BASE_URL", "HttpCall", "LocalEngine", "LocalSocket"]

# What `Endpoint.ws_url` shows for the built-in engine (logs, -v): not a network address.
LOCAL_BASE_URL = "built-in-engine:/api/"

_INTERNAL_ERROR = 1011
# Set once a resident engine did not answer: every later engine process of this command
# (a retry, `voices preview` speaking) is a child of its own, and the warning is said once.
_resident_unanswered = False


class LocalSocket:
    """One channel: a WebSocket connection to the built-in engine, as `TtsSocket` uses one."""

    def __init__(self, child: _Child, channel: int) -> None:
        self._engine = child
        self.channel = channel
        self.inbox: asyncio.Queue[str | int] = asyncio.Queue()  # frames, then the close code
        self.close_code: int | None = None

    async def send(self, frame: str) -> None:
        if self.close_code is not None:
            raise ConnectionClosedError(Close(self.close_code, ""), None)
        await self._engine.write(self.channel, TEXT, frame.encode("utf-8"))

    async def close(self) -> None:
        if self.close_code is None:
            self.close_code = 1000
            with contextlib.suppress(OSError, RuntimeError):
                await self._engine.write(self.channel, CLOSE, b"1000")
        self._engine.channels.pop(self.channel, None)

    def deliver(self, kind: bytes, payload: bytes) -> None:
        self.inbox.put_nowait(payload.decode("utf-8") if kind == TEXT else int(payload or b"1000"))

    def engine_died(self, crashed: str | None, stopped: str, culprit_id: str | None) -> None:
        """`crashed`: this channel's request was in the engine when it died."""
        if crashed is not None:
            # Scoped to the request the engine was rendering; an unscoped error
            # after it reaches that socket's other requests (or, with no id, this one).
            self.inbox.put_nowait(_error(crashed, culprit_id))
        self.inbox.put_nowait(_error(stopped, None))
        self.inbox.put_nowait(_INTERNAL_ERROR)

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            item = await self.inbox.get()
            if isinstance(item, str):
                yield item
                continue
            self.close_code = item
            self._engine.channels.pop(self.channel, None)
            if item in (1000, 1001):
                return
            raise ConnectionClosedError(Close(item, ""), None)


class HttpCall:
    """One REST call on its own channel (engine_wire: REQUEST, then RESPONSE, BODY, CLOSE)."""

    def __init__(self, child: _Child, channel: int) -> None:
        self._engine = child
        self.channel = channel
        self.inbox: asyncio.Queue[tuple[bytes, bytes] | str] = asyncio.Queue()  # frames, or why the engine died
        self.finished = False

    def deliver(self, kind: bytes, payload: bytes) -> None:
        self.inbox.put_nowait((kind, payload))

    def engine_died(self, crashed: str | None, stopped: str, culprit_id: str | None) -> None:
        self.inbox.put_nowait(crashed or stopped)

    async def answer(self, timeout: float) -> dict[str, Any]:
        """The status and headers; raises asyncio.TimeoutError after `timeout` seconds without them."""
        kind, payload = await self._next(timeout)
        if kind != RESPONSE:
            self._done()
            raise ServerError("the built-in engine answered a REST call out of turn")
        head: dict[str, Any] = json.loads(payload)
        return head

    async def body(self, timeout: float) -> AsyncIterator[bytes]:
        """The answer's body; raises asyncio.TimeoutError after `timeout` seconds without a frame."""
        while not self.finished:
            kind, payload = await self._next(timeout)
            if kind == BODY:
                yield payload
            elif kind == CLOSE:
                self._done()
                if payload != b"1000":
                    raise ServerError("the built-in engine broke off its answer")

    async def abandon(self) -> None:
        """Stop the call where it is (the engine stops answering it)."""
        if not self.finished:
            self._done()
            with contextlib.suppress(ConnectionClosedError):
                await self._engine.write(self.channel, CLOSE, b"1000")

    async def _next(self, timeout: float) -> tuple[bytes, bytes]:
        """The next frame's kind and payload; ServerError if the engine died instead."""
        item = await asyncio.wait_for(self.inbox.get(), timeout)
        if isinstance(item, str):
            self._done()
            raise ServerError(item)
        return item

    def _done(self) -> None:
        self.finished = True
        self._engine.channels.pop(self.channel, None)


def _error(message: str, client_req_id: str | None) -> str:
    frame: dict[str, object] = {"type": "error", "message": message, "code": _INTERNAL_ERROR}
    if client_req_id is not None:
        frame["client_req_id"] = client_req_id
    return json.dumps(frame)


class _Child:
    """One run of the engine process: its pipes, its channels, how it ended."""

    def __init__(self, process: EngineProcess) -> None:
        self.engine_process = process
        self.channels: dict[int, LocalSocket | HttpCall] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.attached: asyncio.Future[None] | None = None
        self.ready: asyncio.Future[None] | None = None  # done at READY (or the end)
        self.dead = False

    async def attach(self) -> None:
        """Wrap the engine's socket or pipes in this event loop's streams (on the first connect)."""
        if self.engine_process.sock is not None:
            reader, self.writer = await asyncio.open_unix_connection(sock=self.engine_process.sock, limit=STREAM_BUFFER)
        else:
            process = self.engine_process.process
            assert process is not None and process.stdin is not None and process.stdout is not None
            loop = asyncio.get_running_loop()
            reader = asyncio.StreamReader(limit=STREAM_BUFFER)
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), process.stdout)
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, process.stdin)
            self.writer = asyncio.StreamWriter(transport, protocol, None, loop)
        self.ready = asyncio.get_running_loop().create_future()
        self.reader_task = asyncio.create_task(self._read(reader))

    async def answered(self) -> bool:
        """Whether the engine said READY in time: a resident engine that was running has until
        `ready_by` (milliseconds, normally, long gone by the first request); anything else, always."""
        assert self.ready is not None
        deadline = self.engine_process.ready_by
        if deadline is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self.ready), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return False
        return True

    async def write(self, channel: int, kind: bytes, payload: bytes) -> None:
        if self.dead or self.writer is None:
            raise ConnectionClosedError(Close(_INTERNAL_ERROR, ""), None)
        self.writer.write(frame(channel, kind, payload))
        try:
            await self.writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            raise ConnectionClosedError(Close(_INTERNAL_ERROR, ""), None) from None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size, channel, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
                payload = await reader.readexactly(size)
                if kind == READY:
                    self._set_ready()
                    continue
                sock = self.channels.get(channel)
                if sock is not None:
                    sock.deliver(kind, payload)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        self.dead = True
        self._set_ready()  # what became of it, the channels are told below
        how, culprit, culprit_id = await asyncio.to_thread(self.engine_process.death)
        crashed = f"the speech engine crashed on this text ({how})"
        # Not their text: a retry gets a new engine process.
        stopped = f"the built-in engine stopped while rendering another request ({how})"
        for sock in list(self.channels.values()):
            sock.engine_died(crashed if sock.channel == culprit else None, stopped, culprit_id)

    def _set_ready(self) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)

    def stop(self) -> None:
        """End the child (see `EngineProcess.stop`)."""
        if self.reader_task is not None:
            self.reader_task.cancel()
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        self.engine_process.stop()


ChannelT = TypeVar("ChannelT", LocalSocket, HttpCall)


class LocalEngine:
    """The built-in engine of one command: a child process, replaced if it dies.

    `started`: its first process, when the command started one ahead (cli/entry.py).
    `warn`: says a line to the user (the fallback from a resident engine that does not answer).
    """

    def __init__(
        self, data_dir: Path, started: EngineProcess | None = None, warn: Callable[[str], None] | None = None
    ) -> None:
        self.data_dir = data_dir
        # Started now at the latest: its start-up overlaps the command's.
        self._child = _Child(started or EngineProcess(data_dir, resident=not _resident_unanswered))
        self._next_channel = 0
        self._warn = warn

    def http_transport(self, timeout: float) -> LocalHttpTransport:
        """REST calls for httpx, answered by the engine process (transport/local_http.py)."""
        from gradium_cli.transport.local_http import LocalHttpTransport

        return LocalHttpTransport(self, timeout)

    async def connect(self) -> LocalSocket:
        return await self._open(LocalSocket, OPEN, b"")

    async def call(self, head: dict[str, Any], body: bytes) -> HttpCall:
        """Send one REST call (method, path, query, headers; body) on a channel of its own."""
        encoded = json.dumps(head).encode()
        return await self._open(HttpCall, REQUEST, REQUEST_HEAD.pack(len(encoded)) + encoded + body)

    async def _open(self, make: Callable[[_Child, int], ChannelT], kind: bytes, payload: bytes) -> ChannelT:
        # A channel that could not even be opened carried nothing yet: one more engine
        # process is tried before the command fails (one line, exit 6).
        failed: _Child | None = None
        for _ in range(2):
            child = await self._serving_child(failed)
            self._next_channel += 1
            channel = make(child, self._next_channel)
            child.channels[channel.channel] = channel
            try:
                await child.write(channel.channel, kind, payload)
            except ConnectionClosedError:
                child.channels.pop(channel.channel, None)
                failed = child
                continue
            return channel
        raise self._start_failure()

    async def _serving_child(self, failed: _Child | None) -> _Child:
        """The engine process to open a channel on: the current one, or a new one if it died,
        could not take a channel (`failed`) or, being a resident engine's, did not answer.

        Channels opened at the same moment (a batch) see the same failure: the first to see
        it replaces the process, the others take that replacement.
        """
        global _resident_unanswered
        for _ in range(4):
            child = self._child
            if child.dead or child is failed:
                self._replace(child)
                continue
            await self._attached(child)
            if not await child.answered():
                # A resident engine that accepts but never answers (stopped with SIGSTOP, or
                # wedged): this command's own engine, as with GRADIUM_ENGINE_LINGER_S=0.
                if not _resident_unanswered and self._warn is not None:
                    self._warn(
                        f"the resident engine did not answer in {ready_timeout_s():g} s; "
                        "this command starts an engine of its own (see `gradium doctor`)"
                    )
                _resident_unanswered = True
                self._replace(child)
                continue
            if self._child is child:
                return child
        raise self._start_failure()

    def _start_failure(self) -> GradiumError:
        """Why no engine process could serve: a data dir file it cannot read (which running
        the command again would not fix), or else a failure to start that may pass."""
        from gradium_cli.server.store import CorruptStore, check_data_dir

        try:
            check_data_dir(self.data_dir)
        except CorruptStore as exc:
            return ConfigError(f"the built-in engine cannot start: {exc}")
        return ServerError("the built-in engine stopped as it started; run the command again")

    def _replace(self, child: _Child) -> None:
        """A new engine process in place of `child`, unless another caller replaced it already."""
        if self._child is child:
            child.stop()
            self._child = _Child(EngineProcess(self.data_dir, resident=not _resident_unanswered))

    @staticmethod
    async def _attached(child: _Child) -> None:
        if child.attached is None:  # once, however many connect at the same moment
            child.attached = asyncio.ensure_future(child.attach())
        await asyncio.shield(child.attached)

    def stop(self) -> None:
        self._child.stop()
