"""The voice upload's multipart form, read as a stream.

The `audio_file` part goes straight to a file in the store's upload area (inside
the data dir; nothing is spooled to the system temp dir), text parts are kept in
memory up to a small cap, and the whole body is bounded by the Guard while it
arrives, so memory stays flat however large or slow the upload. The file's name
is server-generated; the client's file name is only returned as metadata.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

FILE_FIELD = "audio_file"
MAX_FIELD_BYTES = 64 * 1024  # name, description, language, start_s, input_format
MAX_PARTS = 32
MAX_PART_HEADER_BYTES = 16 * 1024


class FormProblem(Exception):
    """The form cannot be read: a 422 on `location`."""

    def __init__(self, location: list[str | int], message: str) -> None:
        super().__init__(message)
        self.location = location
        self.message = message


@dataclass
class VoiceForm:
    fields: dict[str, str] = field(default_factory=dict)  # the first value of each text part
    sample: Path | None = None  # the audio_file part, in the upload area
    # Holds the sample's flock until the form is done with it (store.remove_dead_uploads).
    sample_lock: int | None = None
    sample_bytes: int = 0
    filename: str | None = None  # as the client sent it: metadata, never a path


class _Reader:
    """Turns parser callbacks into the form, part by part."""

    def __init__(self, spool_dir: Path, form: VoiceForm) -> None:
        self.spool_dir = spool_dir
        self.form = form
        self.parts = 0
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.header_bytes = 0
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.text: bytearray | None = None
        self.file: IO[bytes] | None = None
        self.ended = False

    def end(self) -> None:
        self.ended = True

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise FormProblem(["body"], f"too many parts: at most {MAX_PARTS}")
        self.headers, self.header_bytes = {}, 0

    def header_data(self, target: bytearray, data: bytes, start: int, end: int) -> None:
        self.header_bytes += end - start
        if self.header_bytes > MAX_PART_HEADER_BYTES:
            raise FormProblem(["body"], f"part headers too long: at most {MAX_PART_HEADER_BYTES} bytes")
        target += data[start:end]

    def header_end(self) -> None:
        self.headers[bytes(self.header_field).lower()] = bytes(self.header_value)
        self.header_field.clear()
        self.header_value.clear()

    def headers_finished(self) -> None:
        disposition, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        if disposition != b"form-data" or b"name" not in options:
            raise FormProblem(["body"], "each part needs Content-Disposition: form-data with a name")
        self.name = _text(options[b"name"], ["body"])
        self.text = self.file = None
        if self.name == FILE_FIELD and b"filename" in options:
            if self.form.sample is None:
                self.form.filename = _text(options[b"filename"], ["body", FILE_FIELD])
                fd, self.form.sample_lock, path = _open_spool_file(self.spool_dir)
                self.form.sample = path
                self.file = os.fdopen(fd, "wb")
            # A second file part is read and dropped, like any unknown part.
        elif self.name not in self.form.fields:
            self.text = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self.file is not None:
            self.file.write(data[start:end])
            self.form.sample_bytes += end - start
        elif self.text is not None:
            if len(self.text) + end - start > MAX_FIELD_BYTES:
                raise FormProblem(["body", self.name or ""], f"field too long: at most {MAX_FIELD_BYTES} bytes")
            self.text += data[start:end]

    def part_end(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        elif self.text is not None and self.name is not None:
            self.form.fields[self.name] = _text(bytes(self.text), ["body", self.name])
            self.text = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _text(raw: bytes, location: list[str | int]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormProblem(location, "not valid UTF-8") from None


def _open_spool_file(spool_dir: Path) -> tuple[int, int, Path]:
    """A new spool file: (descriptor to write, descriptor holding its lock, path).

    Each server process removes, as it starts, the spool files of processes that died
    mid-upload, and with several processes on one data dir (`serve --workers`, offline
    commands) one starts while another is receiving: only files nobody holds a lock on
    are removed, and this one is locked (flock, released when the lock descriptor is
    closed or its process dies) until the form is done with it.
    """
    spool_dir.mkdir(parents=True, exist_ok=True)
    while True:
        fd, name = tempfile.mkstemp(prefix=".upload-", dir=spool_dir)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            ours = os.stat(name).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            ours = False
        if ours:
            return fd, os.dup(fd), Path(name)  # the dup shares the lock and outlives the writing
        os.close(fd)  # removed by a starting process between its creation and the lock: anew


@contextlib.asynccontextmanager
async def voice_form(request: Request, spool_dir: Path) -> AsyncIterator[VoiceForm]:
    """Read the form; the uploaded sample's spool file is removed on leaving unless moved away."""
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise FormProblem(["body"], "expected a multipart/form-data body")
    form = VoiceForm()
    reader = _Reader(spool_dir, form)
    callbacks = {
        "on_part_begin": reader.part_begin,
        "on_part_data": reader.part_data,
        "on_part_end": reader.part_end,
        "on_header_field": lambda d, s, e: reader.header_data(reader.header_field, d, s, e),
        "on_header_value": lambda d, s, e: reader.header_data(reader.header_value, d, s, e),
        "on_header_end": reader.header_end,
        "on_headers_finished": reader.headers_finished,
        "on_end": reader.end,
    }
    try:
        try:
            parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
            if not reader.ended:
                raise FormProblem(["body"], "the multipart body ends before its closing boundary")
        except (MultipartParseError, ValueError) as exc:
            raise FormProblem(["body"], f"not a valid multipart body ({exc})") from None
        finally:
            reader.close()
        yield form
    finally:
        if form.sample is not None:
            form.sample.unlink(missing_ok=True)
        if form.sample_lock is not None:
            os.close(form.sample_lock)
