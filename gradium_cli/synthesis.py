"""Client-side synthesis runs: requests in, audio to sinks, timestamps and stats out.

Long text becomes several requests on one reusable socket; their audio joins
into one stream and their timestamps into one continuous timeline.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradium_cli.audio.sinks import Sink
from gradium_cli.audio.subtitles import Word
from gradium_cli.errors import GradiumError, ProtocolError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.bounds import MAX_FRAME_BYTES, AudioBudget
from gradium_cli.protocol.formats import WAV_HEADER_BYTES, lookup_format
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.transport.rest import RestClient
from gradium_cli.transport.ws import FrameHook, TtsSocket

MessageHook = Callable[[m.ServerMessage], None]


@dataclass
class RunStats:
    request_ids: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    first_audio_s: float | None = None
    total_s: float = 0.0
    audio_s: float = 0.0
    audio_bytes: int = 0

    @property
    def real_time_factor(self) -> float | None:
        return self.audio_s / self.total_s if self.total_s > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_ids[0] if len(self.request_ids) == 1 else self.request_ids,
            "time_to_first_audio_s": None if self.first_audio_s is None else round(self.first_audio_s, 4),
            "total_s": round(self.total_s, 4),
            "audio_s": round(self.audio_s, 4),
            "audio_bytes": self.audio_bytes,
            "real_time_factor": None if self.real_time_factor is None else round(self.real_time_factor, 2),
        }

    def summary(self) -> str:
        ttfa = "-" if self.first_audio_s is None else f"{self.first_audio_s * 1000:.0f} ms"
        rtf = "-" if self.real_time_factor is None else f"{self.real_time_factor:.1f}x"
        return (
            f"request {', '.join(self.request_ids)}: first audio {ttfa}, total {self.total_s * 1000:.0f} ms, "
            f"audio {self.audio_s:.2f} s, {rtf} real time"
        )


@dataclass
class Collector:
    """Feeds sinks and gathers timestamps across requests, offsetting each request's times."""

    sinks: list[Sink]
    stats: RunStats = field(default_factory=RunStats)
    words: list[Word] = field(default_factory=list)
    on_message: MessageHook | None = None
    offset_s: float = 0.0
    _request_end_s: float = 0.0
    _requests: int = 0

    def begin_request(self) -> None:
        self.offset_s += self._request_end_s
        self._request_end_s = 0.0
        self._requests += 1

    def handle(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Ready):
            self.stats.request_ids.append(message.request_id)
        elif isinstance(message, m.Audio):
            priming = message.stop_s <= message.start_s
            if priming and self._requests > 1 and message.audio[:4] == b"RIFF":
                return  # later requests' WAV headers: the output keeps the first one only
            if not priming and self.stats.first_audio_s is None:
                self.stats.first_audio_s = time.monotonic() - self.stats.started
            self._request_end_s = max(self._request_end_s, message.stop_s)
            self.stats.audio_s = self.offset_s + self._request_end_s
            self.stats.audio_bytes += len(message.audio)
            for sink in self.sinks:
                sink.write(message.audio)
        elif isinstance(message, m.WordTimestamp):
            self.words.append(
                Word(
                    message.text,
                    round(self.offset_s + message.start_s, 3),
                    round(self.offset_s + message.stop_s, 3),
                )
            )
        if self.on_message is not None:
            shifted = message
            if isinstance(message, (m.Audio, m.WordTimestamp)) and self.offset_s:
                shifted = dataclasses.replace(
                    message,
                    start_s=self.offset_s + message.start_s,
                    stop_s=self.offset_s + message.stop_s,
                )
            self.on_message(shifted)

    def finish(self) -> None:
        self.stats.total_s = time.monotonic() - self.stats.started
        for sink in self.sinks:
            sink.close()

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()


async def run_websocket(
    endpoint: Endpoint,
    setup: m.Setup,
    requests: Sequence[str | Iterable[str] | AsyncIterable[str]],
    collector: Collector,
    on_frame: FrameHook | None = None,
) -> None:
    """Each item of `requests` is one request's text; all share one socket."""
    async with TtsSocket(endpoint, on_frame) as sock:
        for index, texts in enumerate(requests):
            last = index == len(requests) - 1
            request_setup = dataclasses.replace(setup, close_ws_on_eos=None if last else False)
            collector.begin_request()
            async for message in sock.request(request_setup, texts):
                collector.handle(message)


async def run_rest(
    endpoint: Endpoint,
    setup: m.Setup,
    texts: list[str],
    collector: Collector,
    want_timestamps: bool,
) -> None:
    """The one-shot POST endpoint (§9): raw audio, or NDJSON messages when timestamps are wanted."""
    async with RestClient(endpoint) as rest:
        for text in texts:
            body: dict[str, Any] = {
                "text": text,
                "voice_id": setup.voice_id,
                "output_format": setup.output_format,
                "only_audio": not want_timestamps,
            }
            if setup.model_name:
                body["model_name"] = setup.model_name
            if setup.json_config:
                body["json_config"] = json.dumps(setup.json_config)
            if setup.pronunciation_id:
                body["pronunciation_id"] = setup.pronunciation_id
            collector.begin_request()
            budget = AudioBudget(setup.output_format)
            budget.add_text(text)
            if not want_timestamps:
                # Raw audio carries no timing: derive it from the byte count where the
                # format has a fixed sample size (Opus has none and reports no duration).
                fmt = lookup_format(setup.output_format)
                rate = fmt.sample_rate * fmt.bytes_per_sample if fmt else 0
                position = 0
                async for chunk in rest.stream_post("post/speech/tts", body):
                    budget.add_audio(len(chunk))
                    start, position = position, position + len(chunk)
                    collector.handle(m.Audio(chunk, start / rate if rate else 0.0, position / rate if rate else 0.0))
                budget.check_complete(header_bytes=WAV_HEADER_BYTES if fmt and fmt.container == "wav" else 0)
                continue
            pending = b""
            async for chunk in rest.stream_post("post/speech/tts", body):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > MAX_FRAME_BYTES:
                    raise ProtocolError(f"the server sent a line longer than {MAX_FRAME_BYTES // 2**20} MiB")
                for line in lines:
                    if line.strip():
                        _handle_rest_line(line, collector, budget)
            if pending.strip():
                _handle_rest_line(pending, collector, budget)
            budget.check_complete()


def _handle_rest_line(line: bytes, collector: Collector, budget: AudioBudget) -> None:
    try:
        message = m.decode_server(line.decode("utf-8"))
    except (m.MessageError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed line from server: {getattr(exc, 'message', exc)}") from None
    if isinstance(message, m.Audio):
        budget.add_audio(len(message.audio), speech=message.stop_s > message.start_s, whole_samples=True)
    if isinstance(message, m.ErrorMessage):
        from gradium_cli.protocol.session import error_from_server

        raise error_from_server(message)
    collector.handle(message)


__all__ = ["Collector", "GradiumError", "RunStats", "run_rest", "run_websocket"]
