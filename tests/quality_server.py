"""A TTS test server that gets chosen items wrong, for batch's quality checks.

It speaks the multiplexed protocol (PROTOCOL.md §3: `client_req_id` on every
message, `close_ws_on_eos: false`) over raw `websockets`, sharing no code with
`gradium serve`. Every word becomes 0.3 s of tone then 0.08 s of silence, with
0.1 s of silence before and after, and a timestamp per word: a plausible pace
of about 2.6 words a second.

A text containing a trigger word is answered wrongly, the first time only
(a redo gets it right), so that a test knows which items must be flagged:
  SILENT   the right length, but every sample zero
  CUTOFF   only the first third of the words (audio and timestamps)
  SKIPPED  the third word left out (no audio, no timestamp)
`requests` lists the text of every request, in order of arrival.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection, serve

from tests.minimal_server import wav_stream_header
from tests.server_thread import server_thread

RATE = 48000
WORD_S = 0.3
GAP_S = 0.08
EDGE_S = 0.1
TRIGGERS = ("SILENT", "CUTOFF", "SKIPPED")


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.int16)


def speak(text: str, fault: str | None) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    words = text.split()
    if fault == "CUTOFF":
        words = words[: max(1, len(words) // 3)]
    if fault == "SKIPPED" and len(words) > 3:
        words = words[:2] + words[3:]
    parts = [_silence(EDGE_S)]
    stamps = []
    position = EDGE_S
    for index, word in enumerate(words):
        parts += [_tone(WORD_S, 220 + 40 * (index % 5)), _silence(GAP_S)]
        stamps.append((word, round(position, 3), round(position + WORD_S, 3)))
        position += WORD_S + GAP_S
    parts.append(_silence(EDGE_S))
    audio = np.concatenate(parts)
    if fault == "SILENT":
        audio = np.zeros_like(audio)
    return audio, stamps


@dataclass
class QualityServer:
    port: int = 0
    requests: list[str] = field(default_factory=list)
    _faulted: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    def fault_for(self, text: str) -> str | None:
        for trigger in TRIGGERS:
            if trigger in text and text not in self._faulted:
                self._faulted.add(text)
                return trigger
        return None

    async def handler(self, ws: ServerConnection) -> None:
        setups: dict[Any, dict[str, Any]] = {}
        texts: dict[Any, list[str]] = {}
        async for frame in ws:
            message = json.loads(frame)
            rid = message.get("client_req_id")
            kind = message.get("type")
            if kind == "setup":
                setups[rid], texts[rid] = message, []
            elif kind == "text":
                texts[rid].append(message["text"])
            elif kind == "end_of_stream":
                await self.answer(ws, rid, setups.pop(rid), "".join(texts.pop(rid)))

    async def answer(self, ws: ServerConnection, rid: Any, setup: dict[str, Any], text: str) -> None:
        self.requests.append(text)

        async def send(**fields: Any) -> None:
            await ws.send(json.dumps({**fields, "client_req_id": rid}))

        audio, stamps = speak(text, self.fault_for(text))
        await send(
            type="ready",
            request_id=f"q-{len(self.requests)}",
            model_name="default",
            model_ext="quality",
            sample_rate=RATE,
            frame_size=3840,
            audio_stream_names=[],
            text_stream_names=[],
        )
        priming = wav_stream_header() if setup.get("output_format") == "wav" else b""
        await send(type="audio", audio=base64.b64encode(priming).decode(), start_s=0.0, stop_s=0.0)
        chunk = 3840
        for start in range(0, len(audio), chunk):
            piece = audio[start : start + chunk]
            await send(
                type="audio",
                audio=base64.b64encode(piece.astype("<i2").tobytes()).decode(),
                start_s=start / RATE,
                stop_s=(start + len(piece)) / RATE,
            )
        for word, begin, end in stamps:
            await send(type="text", text=word, start_s=begin, stop_s=end)
        await send(type="end_of_stream")


@contextmanager
def quality_server() -> Iterator[QualityServer]:
    server = QualityServer()

    async def serve_until(stop: asyncio.Future[None], ready: threading.Event) -> None:
        async with serve(server.handler, "127.0.0.1", 0, compression=None) as ws_server:
            server.port = next(iter(ws_server.sockets)).getsockname()[1]
            ready.set()
            await stop

    with server_thread(serve_until):
        yield server
