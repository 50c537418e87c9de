"""Where audio goes: a file (atomically), stdout, the sound device, or a file
encoded locally (FLAC, MP3, or Ogg/Opus when playing at the same time).

Every sink takes wire bytes as they arrive; `close()` finalises on success and
`abort()` leaves nothing behind on failure.
"""

from __future__ import annotations

import contextlib
import io
import struct
import tempfile
from pathlib import Path
from typing import BinaryIO, Protocol

from gradium_cli.audio.atomic import AtomicFile, is_stream_target, open_output, output_error
from gradium_cli.errors import OutputError
from gradium_cli.protocol.formats import WAV_HEADER_BYTES, WAV_STREAMING_SIZE, OutputFormat

# numpy, soundfile and the decoders load only for sinks that decode audio: writing
# wire bytes to a file or a pipe must stay light (start-up time).


class Sink(Protocol):
    """Takes wire bytes. A rewindable sink also has `rewind(samples)` and `keep_partial() -> Path`."""

    @property
    def rewindable(self) -> bool: ...

    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


# The largest RIFF size a plain WAV header can state; past it the file becomes RF64 (EBU 3306).
WAV_MAX_RIFF_BYTES = 0xFFFFFFFF
_RF64_EXTRA_BYTES = 36  # the ds64 chunk an RF64 header adds in front of "fmt "


def partial_path(path: Path) -> Path:
    """Where a failed run keeps what it made: `chapter.wav` → `chapter.partial.wav`."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


class FileSink:
    """Wire bytes straight to a file; a streamed WAV header gets its real sizes at the end.

    A WAV whose data passes what a RIFF header can state (4 GiB) is finished as
    RF64, which libsndfile, ffmpeg and sox read. PCM and G.711 files can be cut
    back to a sample position (`rewind`) when a resumed request repeats audio.
    """

    max_riff_bytes = WAV_MAX_RIFF_BYTES

    def __init__(self, path: Path, fmt: OutputFormat) -> None:
        self.path = path
        self.format = fmt
        self.file = open_output(path)
        self.bytes_written = 0

    @property
    def rewindable(self) -> bool:
        return self.format.bytes_per_sample > 0 and self.file.seekable  # a FIFO's bytes are gone

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.bytes_written += len(data)

    def rewind(self, samples: int) -> None:
        header = WAV_HEADER_BYTES if self.format.container == "wav" else 0
        size = header + samples * self.format.bytes_per_sample
        # A failed write (disk full) already closed and removed the file: nothing to cut.
        if size < self.bytes_written and isinstance(self.file, AtomicFile) and not self.file.handle.closed:
            try:
                self.file.handle.flush()
                self.file.handle.truncate(size)
                self.file.handle.seek(0, io.SEEK_END)
            except OSError as exc:
                raise output_error(self.path, exc) from None
            self.bytes_written = size

    def close(self) -> None:
        self._finish_header()
        self.file.commit()

    def keep_partial(self) -> Path:
        assert isinstance(self.file, AtomicFile), "only a file can be kept (rewindable)"
        if self.file.handle.closed:  # a failed write (disk full) already removed it: nothing to keep
            raise OutputError(f"nothing of {self.path} could be kept")
        self._finish_header()
        self.file.commit(partial_path(self.path))
        return partial_path(self.path)

    def abort(self) -> None:
        self.file.abort()

    def _finish_header(self) -> None:
        if self.format.container == "wav" and self.bytes_written >= WAV_HEADER_BYTES and self.file.seekable:
            try:
                self._patch_wav_sizes()
            except OSError as exc:
                self.abort()
                raise output_error(self.path, exc) from None

    def _patch_wav_sizes(self) -> None:
        handle = self.file.handle
        handle.flush()
        handle.seek(0)
        header = handle.read(WAV_HEADER_BYTES)
        if header[:4] != b"RIFF" or header[36:40] != b"data":
            handle.seek(0, io.SEEK_END)
            return
        data_bytes = self.bytes_written - WAV_HEADER_BYTES
        if struct.unpack_from("<I", header, 40)[0] not in (WAV_STREAMING_SIZE, 0):
            handle.seek(0, io.SEEK_END)
            return
        if 36 + data_bytes <= self.max_riff_bytes:
            handle.seek(4)
            handle.write(struct.pack("<I", 36 + data_bytes))
            handle.seek(40)
            handle.write(struct.pack("<I", data_bytes))
        else:
            self._make_rf64(header, data_bytes)
        handle.seek(0, io.SEEK_END)

    def _make_rf64(self, header: bytes, data_bytes: int) -> None:
        """Move the data 36 bytes on, in place from the end, and write an RF64 header with ds64."""
        handle = self.file.handle
        block = 1 << 24
        position = self.bytes_written
        while position > WAV_HEADER_BYTES:
            start = max(WAV_HEADER_BYTES, position - block)
            handle.seek(start)
            data = handle.read(position - start)
            handle.seek(start + _RF64_EXTRA_BYTES)
            handle.write(data)
            position = start
        frames = data_bytes // max(1, self.format.bytes_per_sample)
        riff_bytes = WAV_HEADER_BYTES + _RF64_EXTRA_BYTES + data_bytes - 8
        rf64 = (
            b"RF64"
            + struct.pack("<I", 0xFFFFFFFF)
            + b"WAVE"
            + b"ds64"
            + struct.pack("<IQQQI", 28, riff_bytes, data_bytes, frames, 0)
            + header[12:40]  # "fmt " chunk and the "data" tag, as the server wrote them
            + struct.pack("<I", 0xFFFFFFFF)
        )
        handle.seek(0)
        handle.write(rf64)
        self.bytes_written += _RF64_EXTRA_BYTES


class PipeSink:
    """Bytes to stdout as they arrive, so `| aplay` or `| ffplay -` start at once.

    A streamed WAV header says "until end of file" (0xFFFFFFFF): right for a pipe,
    but when stdout is a regular file (`say -o - > hello.wav`) that file would keep
    those sizes, so at the end they are patched in place, as FileSink does.
    """

    rewindable = False  # bytes on a pipe are gone

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
    rewindable = False  # sound already played

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
    """Decoded samples spooled to disk, then written through libsndfile at the end.

    The spool is an unnamed file beside the target, so memory stays flat
    however long the audio; a WAV too large for a RIFF header is written as RF64.
    """

    def __init__(self, path: Path, wire: OutputFormat, extension: str) -> None:
        from gradium_cli.audio.decode import StreamDecoder

        self.path = path
        self.decoder = StreamDecoder(wire)
        self.sample_rate = wire.sample_rate
        self.container, self.subtype = LOCAL_ENCODINGS[extension]
        # Fail on an unwritable place now, not after the whole synthesis (a FIFO is opened at the end).
        if not is_stream_target(path):
            AtomicFile(path).abort()
        try:
            # Lives as long as the sink: closed by close(), keep_partial() or abort().
            spool_dir = path.parent if not is_stream_target(path) else None
            self.spool = tempfile.TemporaryFile(dir=spool_dir, prefix=f".{path.name}.", suffix=".spool")  # noqa: SIM115
        except OSError as exc:
            raise output_error(path, exc) from None
        self.samples = 0

    rewindable = True

    def write(self, data: bytes) -> None:
        samples = self.decoder.feed(data)
        try:
            self.spool.write(samples.astype("<i2", copy=False).tobytes())
        except OSError as exc:
            self.abort()
            raise output_error(self.path, exc) from None
        self.samples += len(samples)

    def rewind(self, samples: int) -> None:
        # A failed write (disk full) already closed the spool: nothing to cut.
        if samples < self.samples and not self.spool.closed:
            self.spool.truncate(samples * 2)
            self.spool.seek(0, io.SEEK_END)
            self.samples = samples

    def close(self) -> None:
        self._encode(self.path)

    def keep_partial(self) -> Path:
        if self.spool.closed:  # a failed write (disk full) already dropped it: nothing to keep
            raise OutputError(f"nothing of {self.path} could be kept")
        if is_stream_target(self.path):
            raise OutputError(f"{self.path} is not a file: nothing partial is kept there")
        self._encode(partial_path(self.path))
        return partial_path(self.path)

    def _encode(self, target: Path) -> None:
        """Encode the spool into `target`: atomically for a file; for a FIFO or device, through a
        temp file (libsndfile seeks to finish its headers) copied in when complete."""
        try:
            if is_stream_target(target):
                with tempfile.TemporaryFile() as encoded:
                    self._encode_into(encoded, target)
                    encoded.seek(0)
                    out = open_output(target)
                    while block := encoded.read(1 << 20):
                        out.write(block)
                    out.commit()
            else:
                atomic = AtomicFile(target)
                try:
                    self._encode_into(atomic.handle, target)
                except BaseException:
                    atomic.abort()
                    raise
                atomic.commit()
        finally:
            self.spool.close()

    def _encode_into(self, handle: BinaryIO, target: Path) -> None:
        import numpy as np
        import soundfile as sf

        rate = 8000 if self.subtype in ("ULAW", "ALAW") else self.sample_rate
        container = self.container
        if container == "WAV" and self.samples * 2 + 36 > FileSink.max_riff_bytes:
            container = "RF64"
        resampler = None
        if rate != self.sample_rate:
            import soxr

            resampler = soxr.ResampleStream(self.sample_rate, rate, 1, dtype="int16")
        self.spool.seek(0)
        try:
            with sf.SoundFile(handle, "w", samplerate=rate, channels=1, subtype=self.subtype, format=container) as out:
                while True:
                    block = self.spool.read(1 << 20)
                    last = len(block) < 1 << 20
                    samples = np.frombuffer(block, dtype="<i2")
                    if resampler is not None:
                        samples = np.asarray(resampler.resample_chunk(samples, last=last), dtype=np.int16)
                    if len(samples):
                        out.write(samples)
                    if last:
                        break
        except (sf.LibsndfileError, RuntimeError) as exc:
            raise OutputError(f"cannot encode {target.name}: {exc}") from None

    def abort(self) -> None:
        # Closing flushes the spool's buffer, which fails again on a full disk: it goes anyway.
        with contextlib.suppress(OSError):
            self.spool.close()
