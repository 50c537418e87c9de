"""`/save FILE`: the audio received so far, decoded and written in the container FILE names.

Audio is kept per request as the wire bytes. Saving uses the output format of
the last setup sent: the bytes go to the file as they are when the file's type
is that format (FileSink fixes a streamed WAV header's sizes), otherwise they
are decoded and written through libsndfile (EncodeSink): pcm to .wav or .flac,
wav to .mp3, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gradium_cli.audio.plan import EXTENSION_FORMATS
from gradium_cli.errors import OutputError, UsageError
from gradium_cli.protocol.formats import WAV_HEADER_BYTES, OutputFormat, lookup_format

SAVE_EXTENSIONS = ("wav", "pcm", "raw", "ogg", "opus", "flac", "mp3", "ulaw", "alaw")


@dataclass
class Segment:
    """The audio of one request."""

    format: str
    chunks: list[bytes] = field(default_factory=list)
    end_s: float = 0.0


@dataclass
class AudioStore:
    segments: list[Segment] = field(default_factory=list)
    _open: dict[str | None, Segment] = field(default_factory=dict)

    def begin(self, client_req_id: str | None, output_format: str) -> None:
        """A request's `ready`: its audio starts a new segment."""
        segment = Segment(output_format)
        self.segments.append(segment)
        self._open[client_req_id] = segment

    def add(self, client_req_id: str | None, data: bytes, stop_s: float, output_format: str) -> None:
        segment = self._open.get(client_req_id)
        if segment is None and len(self._open) == 1:
            segment = next(iter(self._open.values()))
        if segment is None:
            self.begin(client_req_id, output_format)
            segment = self._open[client_req_id]
        segment.chunks.append(data)
        segment.end_s = max(segment.end_s, stop_s)

    def save(self, path: Path, output_format: str, force: bool = False) -> str:
        """Write the audio of every request in `output_format`; returns a one-line summary."""
        fmt = lookup_format(output_format)
        if fmt is None:
            raise UsageError(f"cannot save audio in unknown format '{output_format}'")
        segments = [s for s in self.segments if lookup_format(s.format) == fmt and s.chunks]
        if not segments:
            raise UsageError(f"no {fmt.name} audio received yet", hint="send /setup, some text and /eos first")
        extension = path.suffix.lower().lstrip(".")
        if extension not in SAVE_EXTENSIONS:
            known = " ".join(f".{e}" for e in SAVE_EXTENSIONS)
            raise UsageError(f"cannot save as '.{extension}'", hint=f"use one of {known}")
        if path.is_dir():
            raise OutputError(f"{path} is a directory")
        if path.exists() and not force:
            raise OutputError(f"{path} exists", hint=f"/save {path} --force replaces it")
        parts = []
        for index, segment in enumerate(segments):
            data = b"".join(segment.chunks)
            if index and fmt.container == "wav" and data[:4] == b"RIFF":
                data = data[WAV_HEADER_BYTES:]  # one header for the whole file
            parts.append(data)
        _write(path, fmt, extension, b"".join(parts))
        seconds = sum(segment.end_s for segment in segments)
        return f"saved {seconds:.2f} s of {fmt.name} audio to {path} ({path.stat().st_size} B)"


def _verbatim(fmt: OutputFormat, extension: str) -> bool:
    wanted = lookup_format(EXTENSION_FORMATS.get(extension, ""))
    return wanted is not None and (wanted.container, wanted.encoding) == (fmt.container, fmt.encoding)


def _write(path: Path, fmt: OutputFormat, extension: str, data: bytes) -> None:
    from gradium_cli.audio.sinks import EncodeSink, FileSink, Sink

    sink: Sink
    if _verbatim(fmt, extension):
        sink = FileSink(path, fmt)
    elif fmt.encoding == "opus":
        raise UsageError(
            "Opus audio is saved as received only", hint="save as .ogg, or /setup output_format=pcm and speak again"
        )
    else:
        sink = EncodeSink(path, fmt, extension)
    try:
        sink.write(data)
        sink.close()
    except BaseException:
        sink.abort()
        raise
