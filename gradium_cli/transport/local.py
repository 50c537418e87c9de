"""The client side of the built-in offline engine: WebSocket-like channels to a child process.

`LocalEngine` starts `gradium_cli.server.pipe` (the server's WebSocket handler
and eSpeak NG, without an HTTP server) as soon as a command knows it has no key,
so its start-up overlaps the command's own. `connect()` gives an object that
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
import os
import struct
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosedError

from gradium_cli.server.crash import describe_death

if TYPE_CHECKING:
    from gradium_cli.server.app import RunningServer
from websockets.frames import Close

__all__ = ["LOCAL_BASE_URL", "LocalEngine", "LocalSocket"]

# What `Endpoint.ws_url` shows for the built-in engine (logs, -v): not a network address.
LOCAL_BASE_URL = "built-in-engine:/api/"

# Must match gradium_cli/server/pipe.py (which this module must not import: numpy, starlette).
_HEADER = struct.Struct("<IIc")
_OPEN, _TEXT, _CLOSE = b"O", b"T", b"C"
_MARKER = struct.Struct("<IIB")  # channel, client_req_id length, has an id; then the id
_MARKER_ID_BYTES = 1024
_INTERNAL_ERROR = 1011


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
        await self._engine.write(self.channel, _TEXT, frame.encode("utf-8"))

    async def close(self) -> None:
        if self.close_code is None:
            self.close_code = 1000
            with contextlib.suppress(OSError, RuntimeError):
                await self._engine.write(self.channel, _CLOSE, b"1000")
        self._engine.channels.pop(self.channel, None)

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


def _error(message: str, client_req_id: str | None) -> str:
    frame: dict[str, object] = {"type": "error", "message": message, "code": _INTERNAL_ERROR}
    if client_req_id is not None:
        frame["client_req_id"] = client_req_id
    return json.dumps(frame)


class _Child:
    """One run of the engine process: its pipes, its channels, how it ended."""

    def __init__(self, data_dir: Path) -> None:
        # The child's stderr and its marker (which channel is in the engine); both read
        # if it dies, closed in stop(), so no `with`.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.marker = tempfile.TemporaryFile()  # noqa: SIM115
        self.marker.write(_MARKER.pack(0, 0, 0))
        self.marker.flush()
        env = {
            **os.environ,
            # glibc reports a smashed stack on the terminal by default; this sends it
            # to the child's stderr (our log), so users see our one line instead.
            "LIBC_FATAL_STDERR_": "1",
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gradium_cli.server.pipe", str(data_dir), str(self.marker.fileno())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            pass_fds=(self.marker.fileno(),),
            start_new_session=True,  # Ctrl-C is the command's to handle; the child ends with its stdin
        )
        self.channels: dict[int, LocalSocket] = {}
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.attached: asyncio.Future[None] | None = None
        self.dead = False

    async def attach(self) -> None:
        """Wrap the child's pipes in this event loop's streams (on the first connect)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), self.process.stdout)
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, self.process.stdin)
        self.writer = asyncio.StreamWriter(transport, protocol, None, loop)
        self.reader_task = asyncio.create_task(self._read(reader))

    async def write(self, channel: int, kind: bytes, payload: bytes) -> None:
        if self.dead or self.writer is None:
            raise ConnectionClosedError(Close(_INTERNAL_ERROR, ""), None)
        self.writer.write(_HEADER.pack(len(payload), channel, kind) + payload)
        try:
            await self.writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            raise ConnectionClosedError(Close(_INTERNAL_ERROR, ""), None) from None

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                size, channel, kind = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                payload = await reader.readexactly(size)
                sock = self.channels.get(channel)
                if sock is not None:
                    sock.inbox.put_nowait(payload.decode("utf-8") if kind == _TEXT else int(payload or b"1000"))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            pass
        self.dead = True
        how, culprit, culprit_id = await asyncio.to_thread(self._death)
        crashed = f"the speech engine crashed on this text ({how})"
        # Not their text: a retry gets a new engine process.
        stopped = f"the built-in engine stopped while rendering another request ({how})"
        for sock in list(self.channels.values()):
            if sock.channel == culprit:
                # Scoped to the request the engine was rendering; an unscoped error
                # after it reaches that socket's other requests (or, with no id, this one).
                sock.inbox.put_nowait(_error(crashed, culprit_id))
            sock.inbox.put_nowait(_error(stopped, None))
            sock.inbox.put_nowait(_INTERNAL_ERROR)

    def _death(self) -> tuple[str, int, str | None]:
        """How the child ended, and the channel and client_req_id it was rendering."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        culprit, culprit_id = 0, None
        with contextlib.suppress(OSError, struct.error):
            record = os.pread(self.marker.fileno(), _MARKER.size + _MARKER_ID_BYTES, 0)
            culprit, length, has_id = _MARKER.unpack_from(record)
            if has_id:
                culprit_id = record[_MARKER.size : _MARKER.size + length].decode("utf-8", "replace")
        return describe_death(code, self.log), culprit, culprit_id

    def stop(self) -> None:
        """End the child: closing its stdin ends its loop and it exits on its own.

        Not waited for: its interpreter's shutdown is no part of the command's time.
        """
        if self.reader_task is not None:
            self.reader_task.cancel()
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.close()
        for stream in (self.process.stdin, self.process.stdout, self.log, self.marker):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


class LocalEngine:
    """The built-in engine of one command: a child process, replaced if it dies."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._child = _Child(data_dir)  # started now: its start-up overlaps the command's
        self._next_channel = 0
        self._http: RunningServer | None = None

    def http_base_url(self) -> str:
        """The base URL of an in-process HTTP server for REST calls, started on first use."""
        if self._http is None:
            from gradium_cli.server.app import start_in_thread
            from gradium_cli.server.state import ServerOptions

            self._http = start_in_thread(ServerOptions(data_dir=self.data_dir, quiet=True, workers=1))
        return self._http.base_url

    async def connect(self) -> LocalSocket:
        if self._child.dead:
            self._child.stop()
            self._child = _Child(self.data_dir)
        child = self._child
        if child.attached is None:  # once, however many connect at the same moment
            child.attached = asyncio.ensure_future(child.attach())
        await asyncio.shield(child.attached)
        self._next_channel += 1
        sock = LocalSocket(child, self._next_channel)
        child.channels[sock.channel] = sock
        await child.write(sock.channel, _OPEN, b"")
        return sock

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
        self._child.stop()
