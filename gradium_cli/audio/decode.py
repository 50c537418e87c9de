"""Wire bytes → int16 samples, incrementally, for playback and local re-encoding.

Raw PCM may split a sample across messages, WAV streams open with a header,
and G.711 decodes through libsndfile. Opus is not decoded incrementally: callers
that need samples ask the server for PCM instead.
"""

from __future__ import annotations

import io

import numpy as np

from gradium_cli.protocol.formats import WAV_HEADER_BYTES, OutputFormat


class StreamDecoder:
    def __init__(self, fmt: OutputFormat) -> None:
        if fmt.encoding == "opus":
            raise ValueError("Opus streams are not decoded incrementally; request PCM")
        self.format = fmt
        self._pending = b""
        self._header_left = WAV_HEADER_BYTES if fmt.container == "wav" else 0

    def feed(self, data: bytes) -> np.ndarray:
        if self._header_left:
            skipped = min(self._header_left, len(data))
            self._header_left -= skipped
            data = data[skipped:]
        if self.format.encoding in ("ulaw", "alaw"):
            return self._g711(data)
        data = self._pending + data
        usable = len(data) - len(data) % 2
        self._pending = data[usable:]
        return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)

    def _g711(self, data: bytes) -> np.ndarray:
        if not data:
            return np.zeros(0, dtype=np.int16)
        import soundfile as sf

        subtype = "ULAW" if self.format.encoding == "ulaw" else "ALAW"
        samples, _ = sf.read(
            io.BytesIO(data),
            dtype="int16",
            format="RAW",
            subtype=subtype,
            samplerate=self.format.sample_rate,
            channels=1,
        )
        return np.asarray(samples, dtype=np.int16)
