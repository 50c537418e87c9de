"""Encode consecutive audio chunks into the bytes each `audio` message carries.

Codecs go through libsndfile (soundfile): µ-law and A-law as RAW subtypes, Opus
in Ogg, so none is written by hand here. The WAV header is packed here (the same
44 bytes libsndfile writes, tests/test_encoder.py): WAV and PCM, what the
built-in engine's process serves most, then never load libsndfile at all, whose
import is part of every offline command's wait.
"""

from __future__ import annotations

import io
import struct
from typing import TYPE_CHECKING

import numpy as np

from gradium_cli.protocol.formats import WAV_STREAMING_SIZE, OutputFormat

if TYPE_CHECKING:
    import soundfile as sf

# sndfile.h SFC_SET_OGG_PAGE_LATENCY_MS: without it libsndfile holds Ogg pages for
# a second, so Opus audio would arrive in 1 s bursts instead of 80 ms chunks.
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302
_OGG_PAGE_LATENCY_MS = 40.0
# RIFF size, WAVE, a 16-byte `fmt ` chunk (PCM, channels, rate, byte rate, block align,
# bits per sample), then the `data` chunk's size.
_WAV_HEADER = struct.Struct("<4sI4s4sIHHIIHH4sI")


def wav_header(sample_rate: int, data_bytes: int | None = None) -> bytes:
    """A 44-byte PCM s16 mono WAV header, as libsndfile writes it.

    With no data size it carries 0xFFFFFFFF in both size fields: the streaming
    convention (PROTOCOL.md §2.7) that readers take as "until end of file".
    """
    riff, data = (WAV_STREAMING_SIZE, WAV_STREAMING_SIZE) if data_bytes is None else (36 + data_bytes, data_bytes)
    pcm_mono_16 = (16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return _WAV_HEADER.pack(b"RIFF", riff, b"WAVE", b"fmt ", *pcm_mono_16, b"data", data)


def _raw_codec(samples: np.ndarray, sample_rate: int, subtype: str) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, sample_rate, subtype=subtype, format="RAW")
    return buffer.getvalue()


class ChunkEncoder:
    """Stateful encoder for one request's audio in one output format."""

    def __init__(self, fmt: OutputFormat) -> None:
        self.format = fmt
        self._ogg: sf.SoundFile | None = None
        self._ogg_buffer = io.BytesIO()
        self._ogg_sent = 0

    def preamble(self) -> bytes:
        """Bytes that open the stream before any audio (the WAV header), else empty."""
        return wav_header(self.format.sample_rate) if self.format.container == "wav" else b""

    def encode(self, samples: np.ndarray) -> bytes:
        """int16 mono samples at the format's rate → the payload of one message."""
        encoding = self.format.encoding
        if encoding == "s16le":
            return samples.astype("<i2", copy=False).tobytes()
        if encoding == "ulaw":
            return _raw_codec(samples, self.format.sample_rate, "ULAW")
        if encoding == "alaw":
            return _raw_codec(samples, self.format.sample_rate, "ALAW")
        return self._encode_opus(samples)

    def finish(self) -> bytes:
        """What remains once the stream ends (the final Ogg pages)."""
        if self._ogg is None:
            return b""
        self._ogg.close()
        self._ogg = None
        return self._take_ogg_bytes()

    def _encode_opus(self, samples: np.ndarray) -> bytes:
        import soundfile as sf

        if self._ogg is None:
            self._ogg = sf.SoundFile(self._ogg_buffer, "w", self.format.sample_rate, 1, "OPUS", format="OGG")
            latency = sf._ffi.new("double*", _OGG_PAGE_LATENCY_MS)
            sf._snd.sf_command(self._ogg._file, _SFC_SET_OGG_PAGE_LATENCY_MS, latency, sf._ffi.sizeof("double"))
        self._ogg.write(samples)
        return self._take_ogg_bytes()

    def _take_ogg_bytes(self) -> bytes:
        data = self._ogg_buffer.getvalue()[self._ogg_sent :]
        self._ogg_sent += len(data)
        return data
