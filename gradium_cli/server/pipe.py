"""The built-in offline engine's process: `gradium serve`'s WebSocket handler over a pipe.

Commands with no API key start this module as a child process (see
`transport/local.py`) instead of an HTTP server in their own process: no
uvicorn or starlette routing to import, no server thread to join, and an engine
crash cannot take the command down with it. Each client "socket" is a channel
multiplexed on the child's stdin/stdout and served by the same `ws.Connection`
as a real WebSocket, so both paths speak exactly the same protocol messages.

eSpeak NG runs in this process (one more process would cost a command as much
start-up again). Before each engine call the channel rendering is written to the
marker file the client handed over (its fd is the second argument) with the
request's client_req_id, and 0 after: if the engine kills this process, the
client knows which request it was rendering, fails that one and retries the
others on a new child.

The frames and the marker file are described in `engine_wire.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import os
import resource
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradium_cli.server.engine_wire import (
    BODY,
    CLOSE,
    FRAME_LIMIT,
    HEADER,
    MARKER,
    MARKER_ID_BYTES,
    OPEN,
    READY,
    REQUEST,
    REQUEST_HEAD,
    RESPONSE,
    STREAM_BUFFER,
    TEXT,
    frame,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from gradium_cli.server.engine import EngineVoice, EspeakVoiceInfo, SpeechEngine, Synthesis
    from gradium_cli.server.state import ServerState

__all__ = ["MarkedEngine", "PipeSocket", "main", "serve"]

# The channel a task serves; asyncio.to_thread carries it into the render threads.
_channel: contextvars.ContextVar[int] = contextvars.ContextVar("channel", default=0)


class MarkedEngine:
    """The in-process engine, recording in the marker file which channel is inside it."""

    def __init__(self, engine: SpeechEngine, marker_fd: int) -> None:
        from gradium_cli.server.engine import engine_lock

        self._engine = engine
        self._marker_fd = marker_fd
        self._lock = engine_lock()
        self.sample_rate = engine.sample_rate

    def synthesize(self, text: str, voice: EngineVoice, *, phonemes: bool = True) -> Synthesis:
        # Under the engine's own (reentrant) lock, so the marker names the one caller inside.
        from gradium_cli.server.synth import rendering_request

        request = rendering_request.get()
        request_id = (request or "").encode("utf-8", "replace")[:MARKER_ID_BYTES]
        with self._lock:
            marker = MARKER.pack(_channel.get(), len(request_id), request is not None) + request_id
            os.pwrite(self._marker_fd, marker, 0)
            try:
                return self._engine.synthesize(text, voice, phonemes=phonemes)
            finally:
                os.pwrite(self._marker_fd, MARKER.pack(0, 0, 0), 0)

    def list_voices(self) -> list[EspeakVoiceInfo]:
        return self._engine.list_voices()

    def has_voice(self, name: str) -> bool:
        return self._engine.has_voice(name)

    def close(self) -> None:
        self._engine.close()


class PipeSocket:
    """One pipe channel as the `ws.Socket` that `ws.Connection` serves."""

    def __init__(self, channel: int, out: asyncio.StreamWriter) -> None:
        self.channel = channel
        self.out = out
        self.headers: Mapping[str, str] = {}
        self.query_params: Mapping[str, str] = {}
        self.connected = False
        self.closed = False
        self.inbox: asyncio.Queue[str | None] = asyncio.Queue()

    async def accept(self) -> None:
        self.connected = True

    async def receive(self) -> Mapping[str, Any]:
        text = await self.inbox.get()
        if text is None:
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "text": text}

    async def send_texts(self, texts: Sequence[str]) -> None:
        if not self.connected:
            from gradium_cli.server.ws import SocketGone

            raise SocketGone
        self.out.write(b"".join(frame(self.channel, TEXT, text.encode("utf-8")) for text in texts))
        await self.out.drain()

    async def close(self, code: int = 1000) -> None:
        if self.closed:
            return
        self.connected, self.closed = False, True
        self.out.write(frame(self.channel, CLOSE, str(code).encode()))
        await self.out.drain()

    def abort(self) -> bool:
        return False  # fault injection is for `gradium serve`; a channel closes instead


def forget(calls: dict[int, asyncio.Task[None]], channel: int, _: object) -> None:
    calls.pop(channel, None)


class RestCalls:
    """REST calls over the stream (engine_wire: REQUEST, RESPONSE, BODY), answered by the
    app `gradium serve` runs, sharing this process's state: the same answers, no HTTP server."""

    def __init__(self, state: ServerState, out: asyncio.StreamWriter, app: ASGIApp | None = None) -> None:
        self.state = state
        self.out = out
        self._app = app  # `gradium serve`'s, made on the first call

    async def answer(self, channel: int, payload: bytes) -> None:
        _channel.set(channel)  # an engine crash during the call names it
        started = ended = False
        try:
            (head_size,) = REQUEST_HEAD.unpack_from(payload)
            head = json.loads(payload[REQUEST_HEAD.size : REQUEST_HEAD.size + head_size])
            body = payload[REQUEST_HEAD.size + head_size :]
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": head["method"],
                "scheme": "http",
                "path": head["path"],
                "raw_path": head["path"].encode("utf-8"),
                "query_string": head["query"].encode("latin-1"),
                "root_path": "",
                "headers": [
                    (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in head["headers"]
                ],
                "client": ("127.0.0.1", 0),
                "server": ("localhost", 80),
                "state": {},
            }
            delivered = False

            async def receive() -> dict[str, Any]:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Future()  # no disconnect to report: a CLOSE cancels the call
                raise AssertionError("unreachable")

            async def send(message: Mapping[str, Any]) -> None:
                nonlocal started, ended
                if message["type"] == "http.response.start":
                    started = True
                    headers = [[bytes(k).decode("latin-1"), bytes(v).decode("latin-1")] for k, v in message["headers"]]
                    answer = json.dumps({"status": message["status"], "headers": headers}).encode()
                    self.out.write(frame(channel, RESPONSE, answer))
                elif message["type"] == "http.response.body":
                    if message.get("body"):
                        self.out.write(frame(channel, BODY, bytes(message["body"])))
                    ended = not message.get("more_body", False)
                    await self.out.drain()

            await self.app()(scope, receive, send)  # type: ignore[arg-type]
            self.out.write(frame(channel, CLOSE, b"1000"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call fails, never the command's engine
            if not started:
                detail = json.dumps({"detail": f"internal error: {exc}"}).encode()
                head_json = {"status": 500, "headers": [["content-type", "application/json"]]}
                self.out.write(frame(channel, RESPONSE, json.dumps(head_json).encode()))
                self.out.write(frame(channel, BODY, detail))
            # starlette's ServerErrorMiddleware sends a whole 500, then raises: that answer is complete.
            self.out.write(frame(channel, CLOSE, b"1011" if started and not ended else b"1000"))
        await self.out.drain()

    def app(self) -> ASGIApp:
        if self._app is None:
            # Here, not at the top: a command that only speaks never loads starlette.
            from gradium_cli.server.app import create_app

            self._app = create_app(self.state.options, self.state)
        return self._app


async def serve_pipes(data_dir: Path, marker_fd: int) -> None:
    """Serve the command that started this process, on its stdin and stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STREAM_BUFFER)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout.buffer)
    out = asyncio.StreamWriter(transport, protocol, None, loop)
    await serve(data_dir, marker_fd, reader, out, preload=True)


async def serve(
    data_dir: Path, marker_fd: int, reader: asyncio.StreamReader, out: asyncio.StreamWriter, *, preload: bool
) -> None:
    """Serve one command's channels until it closes its end of the stream.

    `preload`: load the default voice's data in the background while the command is
    still starting up, instead of inside its first request (the resident engine
    has it loaded already).
    """
    from gradium_cli.server.catalog import DEFAULT_VOICE
    from gradium_cli.server.engine import get_engine
    from gradium_cli.server.state import ServerOptions, ServerState
    from gradium_cli.server.ws import Connection

    state = ServerState(ServerOptions(data_dir=data_dir, quiet=True))  # workers=0: get_engine()'s engine
    if preload:
        asyncio.get_running_loop().run_in_executor(None, get_engine().preload, DEFAULT_VOICE.engine_voice)
    state.engine = MarkedEngine(state.engine, marker_fd)
    sockets: dict[int, PipeSocket] = {}
    calls: dict[int, asyncio.Task[None]] = {}  # REST calls by channel
    tasks: set[asyncio.Task[None]] = set()
    out.write(frame(0, READY, b""))  # a resident engine's command waits for it (transport/local.py)
    rest = RestCalls(state, out)

    async def run(sock: PipeSocket) -> None:
        _channel.set(sock.channel)
        with state.connection_slot():
            await Connection(sock, state).run()
        await sock.close(1000)
        sockets.pop(sock.channel, None)

    try:
        while True:
            try:
                size, channel, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
                if size > FRAME_LIMIT:
                    break  # not a command of ours: nothing more is read from it
                payload = await reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionResetError):
                break  # the client is gone
            if kind == OPEN:
                sock = sockets[channel] = PipeSocket(channel, out)
                task = asyncio.create_task(run(sock))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif kind == REQUEST:
                call = calls[channel] = asyncio.create_task(rest.answer(channel, payload))
                tasks.add(call)
                call.add_done_callback(tasks.discard)
                call.add_done_callback(functools.partial(forget, calls, channel))
            elif kind == CLOSE and channel in calls:
                calls[channel].cancel()  # the command stopped reading the answer
            elif (sock_or_none := sockets.get(channel)) is not None:
                sock_or_none.inbox.put_nowait(payload.decode("utf-8", "replace") if kind == TEXT else None)
    finally:
        for task in tasks:
            task.cancel()
        state.close()


def main() -> None:
    # A crash here is expected to happen, and must not leave a core file behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    data_dir, marker_fd = Path(sys.argv[1]), int(sys.argv[2])
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_pipes(data_dir, marker_fd))


if __name__ == "__main__":
    main()
