"""Output formats of the TTS protocol (PROTOCOL.md §4), shared by client and server.

Every format sends 80 ms of audio per `audio` message, so chunk sizes follow
from the rate. `wav` and `opus` are containers around 48 kHz audio.
"""

from __future__ import annotations

from dataclasses import dataclass

CHUNK_SECONDS = 0.08
WAV_HEADER_BYTES = 44
# Both size fields of a streamed WAV header: "until end of file" (PROTOCOL.md §2.7).
WAV_STREAMING_SIZE = 0xFFFFFFFF


@dataclass(frozen=True)
class OutputFormat:
    name: str
    sample_rate: int
    encoding: str  # "s16le", "ulaw", "alaw" or "opus"
    container: str  # "raw", "wav" or "ogg"
    content_type: str
    extension: str

    @property
    def chunk_samples(self) -> int:
        return round(self.sample_rate * CHUNK_SECONDS)

    @property
    def bytes_per_sample(self) -> int:
        """Bytes per sample of the raw payload (0 for compressed Opus)."""
        return {"s16le": 2, "ulaw": 1, "alaw": 1}.get(self.encoding, 0)

    @property
    def chunk_bytes(self) -> int | None:
        """Exact payload size of each audio message, or None when compressed."""
        return self.chunk_samples * self.bytes_per_sample or None

    @property
    def is_raw(self) -> bool:
        return self.container == "raw"


def _pcm(rate: int) -> OutputFormat:
    return OutputFormat(f"pcm_{rate}", rate, "s16le", "raw", "audio/pcm", "pcm")


FORMATS: dict[str, OutputFormat] = {
    "pcm": OutputFormat("pcm", 48000, "s16le", "raw", "audio/pcm", "pcm"),
    "wav": OutputFormat("wav", 48000, "s16le", "wav", "audio/wav", "wav"),
    "opus": OutputFormat("opus", 48000, "opus", "ogg", "audio/ogg", "ogg"),
    "ulaw_8000": OutputFormat("ulaw_8000", 8000, "ulaw", "raw", "audio/basic", "ulaw"),
    "alaw_8000": OutputFormat("alaw_8000", 8000, "alaw", "raw", "audio/x-alaw-basic", "alaw"),
    **{f"pcm_{rate}": _pcm(rate) for rate in (8000, 16000, 22050, 24000, 44100, 48000)},
}

ALIASES = {"mulaw_8000": "ulaw_8000"}

DEFAULT_FORMAT = "wav"


def lookup_format(name: str) -> OutputFormat | None:
    """The format for a protocol name (aliases included), or None when unknown."""
    return FORMATS.get(ALIASES.get(name, name))


def format_names() -> list[str]:
    return list(FORMATS)
