"""Where audio goes: a file (atomically), stdout, the sound device, or a file
encoded locally (FLAC, MP3, or Ogg/Opus when playing at the same time).

Every sink takes wire bytes as they arrive; `close()` finalises on success and
`abort()` leaves nothing behind on failure.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

from gradium_cli.audio.atomic import AtomicFile, is_stream_target, open_output, write_atomic
from gradium_cli.errors import OutputError
from gradium_cli.protocol.formats import WAV_HEADER_BYTES, WAV_STREAMING_SIZE, OutputFormat

if TYPE_CHECKING:
    import numpy as np

# numpy, soundfile and the decoders load only for sinks that decode audio: writing
# wire bytes to a file or a pipe must stay light (start-up time).


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class FileSink:
    """Wire bytes straight to a file; a streamed WAV header gets its real sizes at the end."""

    def __init__(self, path: Path, fmt: OutputFormat) -> None:
        self.path = path
        self.format = fmt
        self.file = open_output(path)
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.bytes_written += len(data)

    def close(self) -> None:
        if self.format.container == "wav" and self.bytes_written >= WAV_HEADER_BYTES and self.file.seekable:
            self._patch_wav_sizes()
        self.file.commit()

    def abort(self) -> None:
        self.file.abort()

    def _patch_wav_sizes(self) -> None:
        handle = self.file.handle
        handle.seek(0)
        header = handle.read(WAV_HEADER_BYTES)
        if header[:4] != b"RIFF" or header[36:40] != b"data":
            return
        data_bytes = self.bytes_written - WAV_HEADER_BYTES
        if struct.unpack_from("<I", header, 40)[0] in (WAV_STREAMING_SIZE, 0):
            handle.seek(4)
            handle.write(struct.pack("<I", 36 + data_bytes))
            handle.seek(40)
            handle.write(struct.pack("<I", data_bytes))
        handle.seek(0, io.SEEK_END)


class PipeSink:
    """Bytes to stdout as they arrive, so `| aplay` or `| ffplay -` start at once.

    A streamed WAV header says "until end of file" (0xFFFFFFFF): right for a pipe,
    but when stdout is a regular file (`say -o - > hello.wav`) that file would keep
    those sizes, so at the end they are patched in place, as FileSink does.
    """

    def __init__(self, stream: BinaryIO, *, wav: bool = False) -> None:
        self.stream = stream
        self.header_at = seekable_position(stream) if wav else None
        self.header = b""
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        if self.header_at is not None and len(self.header) < WAV_HEADER_BYTES:
            self.header += data[: WAV_HEADER_BYTES - len(self.header)]
        self.stream.write(data)
        self.bytes_written += len(data)
        self.stream.flush()

    def close(self) -> None:
        sizes = wav_sizes(self.header, self.bytes_written) if self.header_at is not None else None
        if sizes is not None and self.header_at is not None:
            riff, data = sizes
            self.stream.flush()
            self.stream.seek(self.header_at + 4)
            self.stream.write(riff)
            self.stream.seek(self.header_at + 40)
            self.stream.write(data)
            self.stream.seek(0, io.SEEK_END)
        self.stream.flush()

    def abort(self) -> None:
        pass


def seekable_position(stream: BinaryIO) -> int | None:
    """Where the next byte goes, when `stream` is a regular file we may rewrite; else None.

    A file opened for appending (`>> log.wav`) is not: every write goes to its end.
    """
    import os
    import stat

    try:
        fd = stream.fileno()
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        import fcntl

        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_APPEND:
            return None
        return stream.tell() if stream.seekable() else None
    except (OSError, ValueError, AttributeError, ImportError):
        return None


def wav_sizes(header: bytes, total_bytes: int) -> tuple[bytes, bytes] | None:
    """The RIFF and data size fields for a streamed WAV of `total_bytes`, or None when it needs none.

    None when the header is not a plain streamed one, or when the sizes do not fit
    a RIFF header (over 4 GiB): then "until end of file" stays, which readers accept.
    """
    if len(header) < WAV_HEADER_BYTES or header[:4] != b"RIFF" or header[36:40] != b"data":
        return None
    if struct.unpack_from("<I", header, 40)[0] not in (WAV_STREAMING_SIZE, 0):
        return None
    data_bytes = total_bytes - WAV_HEADER_BYTES
    if 36 + data_bytes > WAV_STREAMING_SIZE - 1:
        return None
    return struct.pack("<I", 36 + data_bytes), struct.pack("<I", data_bytes)


class DeviceSink:
    def __init__(self, fmt: OutputFormat, device: str | None) -> None:
        from gradium_cli.audio.decode import StreamDecoder
        from gradium_cli.audio.device import DevicePlayer

        self.decoder = StreamDecoder(fmt)
        self.player = DevicePlayer(fmt.sample_rate, device)

    def write(self, data: bytes) -> None:
        self.player.write(self.decoder.feed(data))

    def close(self) -> None:
        self.player.finish(drain=True)

    def abort(self) -> None:
        self.player.finish(drain=False)


# Local encodings libsndfile writes for us: extension → (format, subtype).
LOCAL_ENCODINGS = {
    "flac": ("FLAC", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "ogg": ("OGG", "OPUS"),
    "opus": ("OGG", "OPUS"),
    "wav": ("WAV", "PCM_16"),
    "ulaw": ("RAW", "ULAW"),
    "alaw": ("RAW", "ALAW"),
    "pcm": ("RAW", "PCM_16"),
    "raw": ("RAW", "PCM_16"),
}


class EncodeSink:
    """Collect decoded samples and write the file through libsndfile at the end."""

    def __init__(self, path: Path, wire: OutputFormat, extension: str) -> None:
        from gradium_cli.audio.decode import StreamDecoder

        self.path = path
        self.decoder = StreamDecoder(wire)
        self.sample_rate = wire.sample_rate
        self.container, self.subtype = LOCAL_ENCODINGS[extension]
        self.chunks: list[np.ndarray] = []
        # Fail on an unwritable place now, not after the whole synthesis (a FIFO is opened at the end).
        if not is_stream_target(path):
            AtomicFile(path).abort()

    def write(self, data: bytes) -> None:
        self.chunks.append(self.decoder.feed(data))

    def close(self) -> None:
        import numpy as np
        import soundfile as sf

        samples = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int16)
        buffer = io.BytesIO()
        rate = 8000 if self.subtype in ("ULAW", "ALAW") else self.sample_rate
        if rate != self.sample_rate:
            import soxr

            samples = np.asarray(soxr.resample(samples, self.sample_rate, rate), dtype=np.int16)
        try:
            sf.write(buffer, samples, rate, subtype=self.subtype, format=self.container)
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise OutputError(f"cannot encode {self.path.name}: {exc}") from None
        write_atomic(self.path, buffer.getvalue())

    def abort(self) -> None:
        self.chunks.clear()
