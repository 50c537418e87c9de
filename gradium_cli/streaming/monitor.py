"""What a live run reports: JSON events, the live view's state, plain progress lines.

It watches the frames going out and the messages coming in, keeps the times
each word was read and sent, and derives each audio chunk's latency from the
send time of the text it speaks.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import deque
from typing import BinaryIO

from gradium_cli.protocol import messages as m
from gradium_cli.protocol.text import FLUSH_TAG
from gradium_cli.ui.env import Env
from gradium_cli.ui.live import ChunkRow, LiveState

RECENT_WORDS = 1000


class StreamMonitor:
    def __init__(self, env: Env, state: LiveState, events: BinaryIO | None, progress_lines: bool) -> None:
        self.env = env
        self.state = state
        self.events = events
        self.progress_lines = progress_lines
        self.started = state.started
        self._pending_reads: deque[float] = deque()  # read times of messages not yet on the wire
        self._frames_in: deque[float] = deque()  # arrival times of audio frames not yet handled
        self._sent_words: deque[tuple[str, float]] = deque()  # words on the wire, with send time
        self._word_sent_at: list[tuple[float, float]] = []  # (start_s, sent time) per timestamp
        self._words_at_last_flush = 0
        # `stream --interactive`: the prompt shown again after each line goes out.
        self.prompt: str | None = None

    def _t(self, at: float | None = None) -> float:
        return round((at if at is not None else time.monotonic()) - self.started, 6)

    def emit(self, event: str, **fields: object) -> None:
        if self.events is not None:
            self.events.write((json.dumps({"event": event, **fields}, ensure_ascii=False) + "\n").encode("utf-8"))
            self.events.flush()

    # ------------------------------------------------------------- outgoing

    def text_queued(self, text: str, read_at: float) -> None:
        self._pending_reads.append(read_at)

    def frame(self, direction: str, frame: str) -> None:
        """FrameHook: stamps sends and arrivals at the socket itself."""
        now = time.monotonic()
        if direction == "<":
            if '"type":"audio"' in frame or '"type": "audio"' in frame:
                self._frames_in.append(now)
            return
        try:
            obj = json.loads(frame)
        except json.JSONDecodeError:
            return
        if obj.get("type") != "text":
            if obj.get("type") == "end_of_stream":
                self.state.status = "input ended; finishing"
            return
        text = str(obj.get("text", ""))
        read_at = self._pending_reads.popleft() if self._pending_reads else now
        if text == FLUSH_TAG:
            self.state.flushes += 1
            self.emit("flush", t=self._t(now))
            # Per flush, not since the start: "flush after 3 words" is this line's 3 words.
            words = self.state.words_sent - self._words_at_last_flush
            self._words_at_last_flush = self.state.words_sent
            if self.progress_lines:
                self.env.say(f"gradium: flush after {words} word{'' if words == 1 else 's'}")
            self.show_prompt()
            return
        for word in text.split():
            self._sent_words.append((word, now))
        self.state.words_sent += len(text.split())
        self.state.status = "streaming"
        self.emit("text", t=self._t(now), input_t=self._t(read_at), text=text)

    def show_prompt(self) -> None:
        if self.prompt is not None and not self.env.quiet:
            self.env.stderr.write(self.prompt)
            self.env.stderr.flush()

    def code_skipped(self, blocks: int, lines: int, in_code: bool) -> None:
        """Markdown input: fenced code is not spoken; the view and the events say how much."""
        self.state.code_lines_skipped = lines
        if blocks == self.state.code_blocks_skipped or in_code:
            return  # reported once the block has closed, with its length
        self.state.code_blocks_skipped = blocks
        self.emit("code_skipped", t=self._t(), blocks=blocks, lines=lines)
        if self.progress_lines:
            self.env.say(f"gradium: code block not spoken ({blocks} skipped, {lines} lines in all)")

    # ------------------------------------------------------------- incoming

    def message(self, message: m.ServerMessage, handled_at: float) -> None:
        if isinstance(message, m.Ready):
            self.state.status = "ready"
            self.state.synthesised_at = None  # a long `say` sends several requests: synthesis goes on
            self.emit("ready", t=self._t(handled_at), request_id=message.request_id, sample_rate=message.sample_rate)
        elif isinstance(message, m.Audio):
            arrived = self._frames_in.popleft() if self._frames_in else handled_at
            if message.stop_s <= message.start_s:
                return  # priming frame (a WAV header): no audio yet
            if self.state.first_audio_s is None:
                self.state.first_audio_s = arrived - self.started
                if self.progress_lines:
                    self.env.say(f"gradium: first audio {self.state.first_audio_s * 1000:.0f} ms after start")
            latency = self._latency(message.start_s, arrived)
            self.state.audio_s = max(self.state.audio_s, message.stop_s)
            self.state.chunk_count += 1
            self.state.chunks.append(
                ChunkRow(arrived - self.started, len(message.audio), message.start_s, message.stop_s, latency)
            )
            self.emit(
                "audio",
                t=self._t(handled_at),  # handed to the sinks (device, file, pipe)
                arrived_t=self._t(arrived),  # off the socket
                bytes=len(message.audio),
                crc32=zlib.crc32(message.audio),
                start_s=message.start_s,
                stop_s=message.stop_s,
                latency_s=None if latency is None else round(latency, 6),
            )
        elif isinstance(message, m.WordTimestamp):
            sent_at = self._match_sent(message.text)
            if sent_at is not None:
                self._word_sent_at.append((message.start_s, sent_at))
            self.state.words.append((message.text, message.start_s, message.stop_s))
            self.state.words_voiced += 1
            # An hours-long stream: keep the recent words only (the view shows a line of them).
            if len(self.state.words) > 2 * RECENT_WORDS:
                del self.state.words[:RECENT_WORDS]
                del self._word_sent_at[: max(0, len(self._word_sent_at) - RECENT_WORDS)]
            self.emit("word", t=self._t(handled_at), text=message.text, start_s=message.start_s, stop_s=message.stop_s)
        elif isinstance(message, m.EndOfStream):
            self.state.status = "done"
            self.state.synthesised_at = handled_at

    def _match_sent(self, word: str) -> float | None:
        # Timestamps come back in input order; skip sent tokens the engine did not voice.
        for _ in range(min(len(self._sent_words), 8)):
            sent_word, sent_at = self._sent_words.popleft()
            if sent_word == word:
                return sent_at
        return None

    def _latency(self, start_s: float, arrived: float) -> float | None:
        """Arrival minus the send time of the latest word starting before this chunk ends."""
        sent_at = None
        for word_start, at in reversed(self._word_sent_at):
            if word_start <= start_s + 0.08:
                sent_at = at
                break
        if sent_at is None and self._word_sent_at:
            sent_at = self._word_sent_at[0][1]
        return None if sent_at is None else max(0.0, arrived - sent_at)

    def end(self, stats: dict[str, object]) -> None:
        self.emit("end", t=self._t(), **stats)
