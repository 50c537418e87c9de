"""FLAC or MP3 to stdout (`say -F mp3 > out.mp3`): decoded here, encoded by libsndfile, then written out.

libsndfile finishes both formats by seeking back to their headers, which a pipe
cannot do, so the encoder writes an unnamed temporary file (memory stays flat
whatever the length) and its bytes go to stdout once it is complete.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, BinaryIO

from gradium_cli.errors import OutputError
from gradium_cli.protocol.formats import OutputFormat

if TYPE_CHECKING:
    from gradium_cli.audio.decode import StreamDecoder

COPY_BLOCK = 1 << 20


class EncodedPipeSink:
    rewindable = False  # what reaches stdout cannot be taken back

    def __init__(self, stream: BinaryIO, wire: OutputFormat, encoding: str) -> None:
        from gradium_cli.audio.decode import StreamDecoder
        from gradium_cli.audio.sinks import LOCAL_ENCODINGS

        self.stream = stream
        self.decoder: StreamDecoder = StreamDecoder(wire)
        self.sample_rate = wire.sample_rate
        self.container, self.subtype = LOCAL_ENCODINGS[encoding]
        self.spool = tempfile.TemporaryFile(prefix="gradium-", suffix=f".{encoding}")  # noqa: SIM115 (closed in close/abort)
        self.encoder: Any = None

    def write(self, data: bytes) -> None:
        import soundfile as sf

        samples = self.decoder.feed(data)
        if self.encoder is None:
            self.encoder = sf.SoundFile(
                self.spool, "w", self.sample_rate, 1, self.subtype, format=self.container, closefd=False
            )
        if len(samples):
            self.encoder.write(samples)

    def close(self) -> None:
        import soundfile as sf

        try:
            if self.encoder is None:  # no audio at all: still a valid, empty file
                self.encoder = sf.SoundFile(
                    self.spool, "w", self.sample_rate, 1, self.subtype, format=self.container, closefd=False
                )
            self.encoder.close()
        except (sf.LibsndfileError, RuntimeError) as exc:
            self.abort()
            raise OutputError(f"cannot encode {self.container} for stdout: {exc}") from None
        self.spool.seek(0)
        shutil.copyfileobj(self.spool, self.stream, COPY_BLOCK)
        self.stream.flush()
        self.spool.close()

    def abort(self) -> None:
        if self.encoder is not None and not self.encoder.closed:
            with contextlib.suppress(Exception):  # already failing: the spool is discarded anyway
                self.encoder.close()
        self.spool.close()
