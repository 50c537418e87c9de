"""How much a server may send: limits that keep a hostile or broken server from filling
memory or disk (README "Limits" documents each one).

Audio per request is bounded by what its text could plausibly need: `AUDIO_BASE_S`
plus `AUDIO_PER_CHAR_S` for each character sent. Speech runs at ~15 characters a second
(~0.07 s each), the slowest setting at about half that, so the bound is ten times more
than any real request needs and a server streaming endless audio stops within seconds.
"""

from __future__ import annotations

import time

from gradium_cli.errors import DeadlineExceeded, ProtocolError
from gradium_cli.protocol.formats import lookup_format

MAX_FRAME_BYTES = 16 * 1024 * 1024  # one WebSocket frame (an 80 ms audio frame is ~10 KB)
MAX_JSON_BYTES = 16 * 1024 * 1024  # one REST JSON body (a voices listing of thousands is ~2 MB)
AUDIO_BASE_S = 30.0
AUDIO_PER_CHAR_S = 1.0
# Opus has no fixed size per second; bound it as if it were 48 kHz 16-bit PCM (Opus is far smaller).
UNSIZED_BYTES_PER_S = 48000 * 2


class AudioBudget:
    """Counts one request's text and audio; raises once the audio outgrows what the text allows."""

    def __init__(self, output_format: str | None) -> None:
        fmt = lookup_format(output_format) if output_format else None
        per_sample = fmt.bytes_per_sample if fmt else 0
        self.bytes_per_s = fmt.sample_rate * per_sample if fmt and per_sample else UNSIZED_BYTES_PER_S
        self.sample_bytes = per_sample  # 0 for Opus: no whole-sample rule
        self.chars = 0
        self.audio_bytes = 0
        self.speech_bytes = 0  # audio past any priming frame or container header

    def add_text(self, text: str) -> None:
        self.chars += len(text)

    @property
    def allowed_s(self) -> float:
        return AUDIO_BASE_S + AUDIO_PER_CHAR_S * self.chars

    def add_audio(self, size: int, speech: bool = True, whole_samples: bool = False) -> None:
        """Count `size` bytes; `speech`: not a priming frame or header; `whole_samples`: one
        WebSocket message, which must hold whole samples (a REST body may split anywhere)."""
        if whole_samples and speech and self.sample_bytes > 1 and size % self.sample_bytes:
            raise ProtocolError(f"the server sent an audio chunk of {size} bytes: not whole 16-bit samples")
        self.audio_bytes += size
        if speech:
            self.speech_bytes += size
        if self.audio_bytes > self.allowed_s * self.bytes_per_s:
            raise ProtocolError(
                f"the server sent more than {self.allowed_s:g} s of audio for {self.chars} characters of text "
                f"(the limit is {AUDIO_BASE_S:g} s + {AUDIO_PER_CHAR_S:g} s per character)"
            )

    def check_complete(self, header_bytes: int = 0) -> None:
        """At the end of a request: audio came, and it is whole samples."""
        speech = self.speech_bytes - header_bytes
        if speech <= 0:
            raise ProtocolError("the server ended the request without sending any audio")
        if self.sample_bytes > 1 and speech % self.sample_bytes:
            raise ProtocolError(f"the server sent {speech} bytes of audio: not whole 16-bit samples")


class Deadline:
    """`--deadline SECONDS` for a whole request, however the server paces it (the idle
    `--timeout` never ends a response dripped a byte at a time). None: no deadline."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.at = None if seconds is None else time.monotonic() + seconds

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def cap(self, timeout: float | None) -> float | None:
        """`timeout`, shortened to what is left before the deadline."""
        left = self.remaining()
        if left is None:
            return timeout
        return max(0.0, left) if timeout is None else max(0.0, min(timeout, left))

    def check(self) -> None:
        left = self.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceeded(
                f"the request did not finish within --deadline {self.seconds:g} s", hint="raise --deadline"
            )
