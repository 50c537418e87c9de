"""A hostile HTTP/WebSocket server for tests: it answers every request exactly as a test scripts it.

It shares no code with `gradium serve` or the client: raw asyncio sockets, hand-written HTTP
and hand-written WebSocket frames, so a test can send what no real server would (a redirect
to another host, a drip-fed body, a 100 MiB frame, an echoed key, escape sequences). Every
request's method, path and headers are recorded, so a test can prove what never arrived.

A script is an async function `(request, conn) -> None` that writes its answer with
`conn.write(...)` / `conn.ws_send(...)`; the helpers below build the common ones.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.server_thread import server_thread

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names (the last of repeated ones)
    body: bytes = b""
    raw_headers: list[tuple[str, str]] = field(default_factory=list)  # as sent, repeats kept
    at: float = field(default_factory=time.monotonic)  # when its head had arrived

    @property
    def is_upgrade(self) -> bool:
        return self.headers.get("upgrade", "").lower() == "websocket"


class Conn:
    """One accepted connection: raw writes, and WebSocket frames once upgraded."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def respond(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)

    async def accept_ws(self, request: Request) -> None:
        accept = base64.b64encode(hashlib.sha1((request.headers["sec-websocket-key"] + WS_GUID).encode()).digest())
        await self.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )

    async def ws_send(self, payload: str | bytes, opcode: int | None = None) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        op = opcode if opcode is not None else (1 if isinstance(payload, str) else 2)
        await self.write(ws_frame_header(op, len(data)) + data)

    async def ws_send_json(self, obj: dict[str, Any]) -> None:
        await self.ws_send(json.dumps(obj))

    async def ws_recv(self) -> str | None:
        """The next client text frame (unmasked), or None when the client closed."""
        while True:
            try:
                head = await self.reader.readexactly(2)
            except (asyncio.IncompleteReadError, ConnectionError):
                return None
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", await self.reader.readexactly(8))[0]
            mask = await self.reader.readexactly(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(await self.reader.readexactly(length)))
            if opcode == 8:
                return None
            if opcode == 1:
                return data.decode()

    async def ws_read_request(self) -> list[dict[str, Any]]:
        """Read a request's frames up to its end_of_stream (setup first)."""
        frames: list[dict[str, Any]] = []
        while (text := await self.ws_recv()) is not None:
            frames.append(json.loads(text))
            if frames[-1].get("type") == "end_of_stream":
                break
        return frames


def ws_frame_header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes([0x80 | opcode, length])
    if length < 1 << 16:
        return bytes([0x80 | opcode, 126]) + struct.pack(">H", length)
    return bytes([0x80 | opcode, 127]) + struct.pack(">Q", length)


Script = Callable[[Request, Conn], Awaitable[None]]


@dataclass
class HostileServer:
    script: Script
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Request] = field(default_factory=list)
    connections: int = 0
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/api/speech/tts"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        conn = Conn(reader, writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *lines = head.decode("latin-1").split("\r\n")
            method, path, _ = line.split(" ", 2)
            raw = [(n.strip(), v.strip()) for n, _, v in (h.partition(":") for h in lines if ":" in h)]
            headers = {name.lower(): value for name, value in raw}
            body = b""
            if "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            request = Request(method, path, headers, body, raw)
            self.requests.append(request)
            await self.script(request, conn)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]


@contextmanager
def hostile_server(script: Script, host: str = "127.0.0.1") -> Iterator[HostileServer]:
    server = HostileServer(script, host)

    async def serve_until(stop: asyncio.Future[None], ready: threading.Event) -> None:
        listener = await asyncio.start_server(server._serve, host, 0)
        server.port = listener.sockets[0].getsockname()[1]
        ready.set()
        async with listener:
            await stop
            # Scripts that never end (a stalled server) end with the server.
            for task in list(server._tasks):
                task.cancel()
            await asyncio.gather(*server._tasks, return_exceptions=True)

    with server_thread(serve_until):
        yield server


# Scripts ---------------------------------------------------------------------------------


def redirect_to(location: str, status: int = 302) -> Script:
    async def script(request: Request, conn: Conn) -> None:
        await conn.respond(status, b"", {"Location": location})

    return script


def json_reply(obj: Any, status: int = 200) -> Script:
    async def script(request: Request, conn: Conn) -> None:
        await conn.respond(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    return script


def ready_frame() -> dict[str, Any]:
    return {"type": "ready", "request_id": "hostile-1", "model_name": "default", "sample_rate": 48000}


def audio_frame(pcm: bytes, start_s: float, stop_s: float) -> dict[str, Any]:
    return {"type": "audio", "audio": base64.b64encode(pcm).decode(), "start_s": start_s, "stop_s": stop_s}


def tts_session(frames: Callable[[list[dict[str, Any]]], list[dict[str, Any] | bytes]]) -> Script:
    """A WebSocket TTS answer: read the request, then send `frames(request_frames)` and close."""

    async def script(request: Request, conn: Conn) -> None:
        if not request.is_upgrade:
            await conn.respond(404)
            return
        await conn.accept_ws(request)
        received = await conn.ws_read_request()
        for frame in frames(received):
            if isinstance(frame, bytes):
                await conn.write(frame)  # raw bytes on the wire (a partial frame, a drip)
            else:
                await conn.ws_send_json(frame)
        await conn.ws_send(struct.pack(">H", 1000), opcode=8)

    return script


async def start_chunked(conn: Conn, content_type: str = "audio/pcm") -> None:
    await conn.write(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())


async def send_chunk(conn: Conn, data: bytes) -> None:
    await conn.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
