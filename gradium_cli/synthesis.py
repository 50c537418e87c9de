"""Client-side synthesis runs: requests in, audio to sinks, timestamps and stats out.

Long text becomes many requests on reusable sockets (a fresh one before the
server's per-socket cap); their audio joins into one stream and their
timestamps into one continuous timeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradium_cli.audio.sinks import DeviceSink, Sink
from gradium_cli.audio.subtitles import TimestampWriter, Word
from gradium_cli.errors import GradiumError, ProtocolError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.bounds import MAX_FRAME_BYTES, AudioBudget
from gradium_cli.protocol.formats import WAV_HEADER_BYTES, OutputFormat, lookup_format
from gradium_cli.protocol.limits import Limits
from gradium_cli.retry import is_transient, retry_delay
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.transport.rest import RestClient
from gradium_cli.transport.ws import FrameHook, TtsSocket
from gradium_cli.ui.env import get_env

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
        ids = self.request_ids
        # An hours-long stream makes hundreds of requests: name the first and the last (--json has all).
        which = ", ".join(ids) if len(ids) <= 3 else f"{ids[0]} ... {ids[-1]} ({len(ids)} requests)"
        return (
            f"request {which}: first audio {ttfa}, total {self.total_s * 1000:.0f} ms, "
            f"audio {self.audio_s:.2f} s, {rtf} real time"
        )


@dataclass
class Collector:
    """Feeds sinks and timestamps across requests as one timeline.

    Each request's times start at 0; the collector moves them to where the
    request's audio begins in the output, counted in samples written, so every
    timestamp matches the samples to the sample. A word goes to the timestamps
    file once all its audio has arrived (nothing is kept when no file is asked
    for); until then it is pending, and a resumed request repeats it.
    """

    sinks: list[Sink]
    stats: RunStats = field(default_factory=RunStats)
    on_message: MessageHook | None = None
    wire: OutputFormat | None = None  # exact sample counting for fixed-size formats
    timestamps: TimestampWriter | None = None
    words: list[Word] | None = None  # finished words, kept only where a caller needs them all
    offset_s: float = 0.0
    committed: int = 0  # words of the current request whose audio has all arrived
    _request_end_s: float = 0.0
    _requests: int = 0
    _bytes: int = 0  # sample bytes written in total (headers excluded)
    _request_audio: bool = False
    _pending: list[Word] = field(default_factory=list)
    _committed_texts: list[str] = field(default_factory=list)  # the current request's, for resuming
    _last_stop_s: float = 0.0  # where the last finished word ends

    @property
    def _bytes_per_sample(self) -> int:
        return self.wire.bytes_per_sample if self.wire is not None else 0

    @property
    def position_s(self) -> float:
        """Where the audio written so far ends on the output's timeline."""
        if self._bytes_per_sample and self.wire is not None:
            return self._bytes // self._bytes_per_sample / self.wire.sample_rate
        return self.offset_s + self._request_end_s  # Opus: no sample count, trust the stop times

    def begin_request(self) -> None:
        self.offset_s = self.position_s
        self._request_end_s = 0.0
        self._requests += 1
        self.committed = 0
        self._committed_texts.clear()
        self._request_audio = False
        self._pending.clear()

    def handle(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Ready):
            self.stats.request_ids.append(message.request_id)
        elif isinstance(message, m.Audio):
            priming = message.stop_s <= message.start_s
            header = priming and message.audio[:4] == b"RIFF"
            if header and self._requests > 1:
                return  # later requests' WAV headers: the output keeps the first one only
            if not priming and self.stats.first_audio_s is None:
                self.stats.first_audio_s = time.monotonic() - self.stats.started
            self._request_end_s = max(self._request_end_s, message.stop_s)
            if not header:
                self._bytes += len(message.audio)
                self._request_audio = self._request_audio or bool(message.audio)
            self.stats.audio_s = self.position_s
            self.stats.audio_bytes += len(message.audio)
            for sink in self.sinks:
                sink.write(message.audio)
            self._commit(self.position_s)
        elif isinstance(message, m.WordTimestamp):
            self._pending.append(
                Word(
                    message.text,
                    round(self.offset_s + message.start_s, 6),
                    round(self.offset_s + message.stop_s, 6),
                )
            )
            self._commit(self.position_s)
        elif isinstance(message, m.EndOfStream):
            self._commit(None)
        if self.on_message is not None:
            shifted = message
            if isinstance(message, (m.Audio, m.WordTimestamp)) and self.offset_s:
                shifted = dataclasses.replace(
                    message,
                    start_s=round(self.offset_s + message.start_s, 6),
                    stop_s=round(self.offset_s + message.stop_s, 6),
                )
            self.on_message(shifted)

    def _commit(self, until_s: float | None) -> None:
        """Words whose audio has all arrived (all of them when `until_s` is None) are final."""
        while self._pending and (until_s is None or self._pending[0].stop_s <= until_s + 0.0005):
            word = self._pending.pop(0)
            self.committed += 1
            self._committed_texts.append(word.text)
            self._last_stop_s = min(word.stop_s, self.position_s)
            self._finished(word)

    def _finished(self, word: Word) -> None:
        if self.timestamps is not None:
            self.timestamps.add(word)
        if self.words is not None:
            self.words.append(word)

    def add_words(self, words: Iterable[Word]) -> None:
        """Words already on the output's timeline (a cached run's), straight to the outputs."""
        for word in words:
            self._finished(word)

    # ------------------------------------------------------------- resuming

    def can_resume(self, lenient: bool = False) -> bool:
        """Whether the current request can be repeated from its first unfinished word.

        Audio already in a pipe or played cannot be taken back: only `lenient`
        callers (a live stream) accept hearing part of one word twice.
        """
        if lenient or not self._request_audio:
            return True
        return bool(self._bytes_per_sample) and all(sink.rewindable for sink in self.sinks)

    def _whole_words_end_s(self) -> float:
        """Where the audio of the last word that arrived whole ends: the first pending word's start."""
        cut = self._pending[0].start_s if self._pending else self.position_s
        # Never into a finished word: a server's rounded times may overlap by a millisecond.
        return max(self.offset_s, self._last_stop_s, min(cut, self.position_s))

    def resume_point(self, words: Sequence[str]) -> tuple[int, float]:
        """(how many of the request's `words` to skip, where the audio to keep ends).

        The words whose audio all arrived are skipped when they are the request's
        own first words; a server that names words otherwise gets the whole request again.
        """
        done = self._committed_texts
        if len(done) <= len(words) and all(a == b for a, b in zip(done, words, strict=False)):
            return len(done), self._whole_words_end_s()
        return 0, self.offset_s

    def rewind(self, cut_s: float) -> None:
        """Drop audio after `cut_s` (in sinks that can) and every pending word."""
        self._pending.clear()
        if not self._bytes_per_sample or self.wire is None:
            return
        samples = round(cut_s * self.wire.sample_rate)
        if samples * self._bytes_per_sample >= self._bytes:
            return
        for sink in self.sinks:
            if sink.rewindable:
                sink.rewind(samples)  # type: ignore[attr-defined]
        self._bytes = samples * self._bytes_per_sample
        self.stats.audio_s = self.position_s

    # ------------------------------------------------------------- ending

    def finish(self) -> None:
        self.stats.total_s = time.monotonic() - self.stats.started
        for sink in self.sinks:
            sink.close()
        if self.timestamps is not None:
            self.timestamps.close()

    def abort(self) -> None:
        for sink in self.sinks:
            sink.abort()
        if self.timestamps is not None:
            self.timestamps.abort()

    def keep_partial(self) -> list[Path]:
        """After a late failure: what was made, kept as valid `NAME.partial.EXT` files; the rest removed."""
        kept: list[Path] = []
        has_audio = self._bytes > 0
        self.rewind(self._whole_words_end_s())  # end on a whole word
        for sink in self.sinks:
            if has_audio and sink.rewindable and hasattr(sink, "keep_partial"):
                try:
                    kept.append(sink.keep_partial())
                except GradiumError:  # the error being reported matters more
                    sink.abort()
            else:
                sink.abort()
        if self.timestamps is not None:
            if kept:
                kept.append(self.timestamps.keep_partial())
            else:
                self.timestamps.abort()
        return kept


def with_partial(error: GradiumError, collector: Collector) -> GradiumError:
    """A late failure keeps the audio made so far beside the target; the error line names it."""
    kept = collector.keep_partial()
    if kept:
        error.message += f"; the {collector.stats.audio_s:.1f} s made so far are in {kept[0]}"
    return error


class RetryPolicy:
    """How often one request may be repeated, and the back-off between tries."""

    def __init__(self, retries: int, log: Callable[[str], None] | None = None) -> None:
        self.retries = retries
        self.log = log
        self.rng = random.Random()

    def allows(self, failures: int, error: GradiumError) -> bool:
        return failures < self.retries and is_transient(error)

    async def wait(self, failures: int, error: GradiumError) -> None:
        delay, asked = retry_delay(failures, error, self.rng)
        if asked is not None:  # a wait the server chose may be long: always say so
            get_env().say(f"{asked} (retry {failures}/{self.retries})")
        if self.log is not None:
            self.log(f"gradium: {error.message}; retry {failures}/{self.retries} in {delay:.2f} s")
        await asyncio.sleep(delay)


NO_RETRY = RetryPolicy(0)


class SocketRotation:
    """Sockets for a run of requests, never more requests on one than the server allows.

    When a socket takes its last allowed request, the next one is opened in the
    background, so the switch costs no connection time.
    """

    def __init__(self, endpoint: Endpoint, per_socket: int, on_frame: FrameHook | None = None) -> None:
        self.endpoint = endpoint
        self.per_socket = per_socket
        self.on_frame = on_frame
        self._current: TtsSocket | None = None
        self._used = 0
        self._next: asyncio.Task[TtsSocket] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.hurry = False  # the run is being cancelled: closing waits little for the server

    async def _open(self) -> TtsSocket:
        sock = TtsSocket(self.endpoint, self.on_frame)
        await sock.open()
        return sock

    def _retire(self, sock: TtsSocket) -> None:
        task = asyncio.create_task(sock.close(hurry=self.hurry))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def take(self, more: bool = True) -> TtsSocket:
        """A socket for one more request; `more`: another request will follow this one."""
        if self._current is not None and self._used >= self.per_socket:
            self._retire(self._current)
            self._current = None
        if self._current is None:
            opening, self._next = self._next, None
            self._current = await (opening if opening is not None else self._open())
            self._used = 0
        self._used += 1
        if more and self._used >= self.per_socket and self._next is None:
            self._next = asyncio.create_task(self._open())
        return self._current

    def discard(self) -> None:
        """The current socket failed: the next request gets a fresh one."""
        if self._current is not None:
            self._retire(self._current)
            self._current = None

    async def aclose(self) -> None:
        if self._current is not None:
            self._retire(self._current)
            self._current = None
        if self._next is not None:
            self._next.cancel()
            with contextlib.suppress(BaseException):
                self._retire(await self._next)
            self._next = None
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


async def run_websocket(
    endpoint: Endpoint,
    setup: m.Setup,
    requests: Iterable[str],
    collector: Collector,
    on_frame: FrameHook | None = None,
    *,
    limits: Limits | None = None,
    retry: RetryPolicy = NO_RETRY,
) -> None:
    """Each item of `requests` is one request's text, taken lazily; sockets rotate before the cap.

    A request that fails for a reason that may pass is repeated from its first
    word whose audio did not all arrive, the audio after it cut away.
    """
    limits = limits or Limits()
    rotation = SocketRotation(endpoint, limits.requests_per_socket, on_frame)
    try:
        for text, last in with_last(requests):
            failures = 0
            while True:
                try:
                    sock = await rotation.take(more=not last)
                    collector.begin_request()
                    request_setup = dataclasses.replace(setup, close_ws_on_eos=None if last else False)
                    async for message in sock.request(request_setup, text):
                        collector.handle(message)
                    break
                except GradiumError as error:
                    rotation.discard()
                    if not retry.allows(failures, error) or not collector.can_resume():
                        raise
                    failures += 1
                    words = text.split()
                    skip, cut = collector.resume_point(words)
                    collector.rewind(cut)
                    text = " ".join(words[skip:])
                    if not text:
                        break
                    await retry.wait(failures, error)
    except (asyncio.CancelledError, KeyboardInterrupt):
        silence(collector)  # Ctrl-C, SIGTERM: the speakers stop now, not after the closing handshake
        rotation.hurry = True  # and a server that ignores the close does not hold the exit
        raise
    finally:
        await rotation.aclose()


def silence(collector: Collector) -> None:
    """Stop playback at once; files are left to the caller (discarded or kept as partial)."""
    for sink in collector.sinks:
        if isinstance(sink, DeviceSink):
            sink.abort()


def with_last(items: Iterable[str]) -> Iterator[tuple[str, bool]]:
    """Each item with whether it is the last, reading one item ahead."""
    iterator = iter(items)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


async def run_rest(
    endpoint: Endpoint,
    setup: m.Setup,
    texts: Iterable[str],
    collector: Collector,
    want_timestamps: bool,
    retry: RetryPolicy = NO_RETRY,
) -> None:
    """The one-shot POST endpoint (§9): raw audio, or NDJSON messages when timestamps are wanted."""
    async with RestClient(endpoint) as rest:
        for text in texts:
            failures = 0
            while True:
                collector.begin_request()
                try:
                    await _rest_request(rest, setup, text, collector, want_timestamps)
                    break
                except GradiumError as error:
                    if not retry.allows(failures, error) or not collector.can_resume():
                        raise
                    failures += 1
                    collector.rewind(collector.offset_s)  # a REST request is repeated whole
                    await retry.wait(failures, error)


async def _rest_request(
    rest: RestClient, setup: m.Setup, text: str, collector: Collector, want_timestamps: bool
) -> None:
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
    budget = AudioBudget(setup.output_format)
    budget.add_text(text)
    if not want_timestamps:
        # Raw audio carries no timing: derive it from the byte count where the
        # format has a fixed sample size (Opus has none and reports no duration).
        fmt = lookup_format(setup.output_format)
        rate = fmt.sample_rate * fmt.bytes_per_sample if fmt else 0
        header = WAV_HEADER_BYTES if fmt is not None and fmt.container == "wav" else 0
        position = 0
        async for chunk in rest.stream_post("post/speech/tts", body):
            budget.add_audio(len(chunk))
            if header:  # the WAV header is no audio: a priming message, as on the WebSocket
                head, chunk, header = chunk[:header], chunk[header:], header - len(chunk[:header])
                collector.handle(m.Audio(head, 0.0, 0.0))
                if not chunk:
                    continue
            start, position = position, position + len(chunk)
            collector.handle(m.Audio(chunk, start / rate if rate else 0.0, position / rate if rate else 0.0))
        budget.check_complete(header_bytes=WAV_HEADER_BYTES if fmt and fmt.container == "wav" else 0)
        collector.handle(m.EndOfStream())
        return
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
    collector.handle(m.EndOfStream())


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


__all__ = ["Collector", "GradiumError", "RetryPolicy", "RunStats", "SocketRotation", "run_rest", "run_websocket"]
