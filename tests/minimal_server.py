"""An independent, minimal TTS server for tests: only what PROTOCOL.md allows.

It shares no code with `gradium serve`: raw `websockets`, hand-written frames.
It sends every `ready` field plus fields no client knows yet, a priming frame,
exact 80 ms PCM chunks of a known waveform, word timestamps with extra fields,
then `end_of_stream` and a close.

Fault modes, for testing how clients survive them (`fail_first=N` applies the
fault to the first N connections only, then serves normally):
  drop            abort the TCP connection mid-stream, no close frame
  close_1011      close with code 1011 mid-stream, no error frame
  error_midstream an `error` frame (1011) mid-stream, then close
  malformed       a frame that is not JSON, after `ready`
  unknown_type    a message type no client knows, mid-stream (clients must ignore it)
  stall           `ready`, then silence with the socket open
  never_answer    accept the connection, read, never send anything
  http_429/500/503  refuse the WebSocket upgrade with that HTTP status
  hostile_error   an error whose text carries terminal escape sequences
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from tests.server_thread import server_thread

CHUNK_SAMPLES = 3840  # 80 ms at 48 kHz (§4)


def known_pcm(chunks: int) -> bytes:
    """A deterministic 330 Hz tone, so tests can compare exact bytes."""
    total = chunks * CHUNK_SAMPLES
    return b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 330 * i / 48000))) for i in range(total))


def wav_stream_header() -> bytes:
    """A canonical 44-byte header with 0xFFFFFFFF sizes, written out by hand."""
    fmt = struct.pack("<HHIIHH", 1, 1, 48000, 96000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
    )


@dataclass
class MinimalServer:
    chunks: int = 12
    mode: str = "normal"
    fail_first: int | None = None
    received: list[dict[str, object]] = field(default_factory=list)
    port: int = 0
    connections: int = 0

    def faulty(self) -> bool:
        """Whether this connection gets the fault (`connections` counts upgrades tried)."""
        return self.mode != "normal" and (self.fail_first is None or self.connections <= self.fail_first)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.connections += 1
        if self.faulty() and self.mode.startswith("http_"):
            status = HTTPStatus(int(self.mode.removeprefix("http_")))
            return connection.respond(status, f"{status.phrase}\n")
        return None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def payload(self) -> bytes:
        return known_pcm(self.chunks)

    async def handler(self, ws: ServerConnection) -> None:
        mode = self.mode if self.faulty() else "normal"
        if mode == "never_answer":
            async for _frame in ws:  # read politely, answer never
                pass
            return
        setup = json.loads(await ws.recv())
        self.received.append(setup)
        while True:  # the client may send everything before `ready` (§2.5 rule 3)
            message = json.loads(await ws.recv())
            self.received.append(message)
            if message["type"] == "end_of_stream":
                break
        if mode == "hostile_error":
            # An error whose text tries to drive the terminal (colour, window title, bell).
            text = "bad \x1b[31mthing\x1b]0;pwned\x07 happened"
            await ws.send(json.dumps({"type": "error", "message": text, "code": 1011}))
            await ws.close()
            return
        await ws.send(
            json.dumps(
                {
                    "type": "ready",
                    "request_id": "minimal-1",
                    "model_name": "default",
                    "model_ext": "minimal",
                    "sample_rate": 48000,
                    "frame_size": CHUNK_SAMPLES,
                    "audio_stream_names": [],
                    "text_stream_names": [],
                    "future_field": {"nested": True},
                }
            )
        )
        if mode == "stall":
            await ws.wait_closed()
            return
        if mode == "malformed":
            await ws.send("{this is not json")
            await ws.wait_closed()
            return
        # A priming frame: empty for raw PCM, the streaming WAV header for wav (§2.7).
        priming = wav_stream_header() if setup.get("output_format") == "wav" else b""
        await ws.send(
            json.dumps(
                {
                    "type": "audio",
                    "audio": base64.b64encode(priming).decode(),
                    "start_s": 0.0,
                    "stop_s": 0.0,
                    "stream_id": 0,
                }
            )
        )
        await ws.send(
            json.dumps({"type": "text", "text": "Hello,", "start_s": 0.1, "stop_s": 0.4, "stream_id": 0, "x": 1})
        )
        pcm = self.payload()
        size = CHUNK_SAMPLES * 2
        for index in range(self.chunks):
            if index == self.chunks // 2:
                if mode == "drop":
                    ws.transport.abort()  # no close frame: a dropped connection
                    return
                if mode == "close_1011":
                    await ws.close(1011, "worker crashed")
                    return
                if mode == "error_midstream":
                    await ws.send(json.dumps({"type": "error", "message": "internal failure", "code": 1011}))
                    await ws.close(1011)
                    return
                if mode == "unknown_type":
                    await ws.send(json.dumps({"type": "surprise", "detail": {"new": True}, "stream_id": 0}))
            frame = {
                "type": "audio",
                "audio": base64.b64encode(pcm[index * size : (index + 1) * size]).decode(),
                "start_s": index * 0.08,
                "stop_s": (index + 1) * 0.08,
                "stream_id": 0,
                "unknown_future_field": index,
            }
            await ws.send(json.dumps(frame))
        await ws.send(json.dumps({"type": "text", "text": "world.", "start_s": 0.5, "stop_s": 0.9, "stream_id": 0}))
        await ws.send(json.dumps({"type": "end_of_stream"}))
        await ws.close()


@contextmanager
def minimal_server(**options: object) -> Iterator[MinimalServer]:
    server = MinimalServer(**options)  # type: ignore[arg-type]

    async def serve_until(stop: asyncio.Future[None], ready: threading.Event) -> None:
        async with serve(
            server.handler, "127.0.0.1", 0, compression=None, process_request=server.process_request
        ) as ws_server:
            server.port = next(iter(ws_server.sockets)).getsockname()[1]
            ready.set()
            await stop

    with server_thread(serve_until):
        yield server
