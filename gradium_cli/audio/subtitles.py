"""Word timestamps → .json, .jsonl, .srt or .vtt.

Cue text is the server's segment text, which is the input's own words with
their punctuation, so subtitles read like the original text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gradium_cli.errors import OutputError, UsageError

TIMESTAMP_EXTENSIONS = (".json", ".jsonl", ".srt", ".vtt")
MAX_CUE_WORDS = 8
MAX_CUE_CHARS = 42  # a common subtitle line length


@dataclass(frozen=True)
class Word:
    text: str
    start_s: float
    stop_s: float


def check_timestamps_path(path: Path, *, force: bool) -> None:
    """Before any synthesis: the same rules as the audio file (--force to replace; a place we can write)."""
    from gradium_cli.audio.atomic import AtomicFile

    extensions = ", ".join(TIMESTAMP_EXTENSIONS)
    if str(path) == "-":
        # A file, because it is rewritten when a request is retried and kept as partial on failure.
        raise UsageError(f"--timestamps writes a file, not stdout: name one ending in {extensions}")
    if not path.suffix:
        raise UsageError(f"--timestamps {path}: the extension says the format ({extensions})")
    if path.suffix.lower() not in TIMESTAMP_EXTENSIONS:
        raise UsageError(f"unknown timestamps extension '{path.suffix}' (use {extensions})")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path} exists", hint="use --force to replace it")
    AtomicFile(path).abort()  # an unwritable place fails now, not after the audio is made


class _CueBuilder:
    """Groups words into subtitle cues as they come, breaking after sentence ends and at length limits."""

    def __init__(self) -> None:
        self.current: list[Word] = []

    def _cut(self) -> tuple[float, float, str]:
        cue = (self.current[0].start_s, self.current[-1].stop_s, " ".join(w.text for w in self.current))
        self.current = []
        return cue

    def add(self, word: Word) -> list[tuple[float, float, str]]:
        out = []
        candidate = " ".join(w.text for w in [*self.current, word])
        if self.current and (len(self.current) >= MAX_CUE_WORDS or len(candidate) > MAX_CUE_CHARS):
            out.append(self._cut())
        self.current.append(word)
        if word.text.endswith((".", "!", "?", "…")):
            out.append(self._cut())
        return out

    def finish(self) -> list[tuple[float, float, str]]:
        return [self._cut()] if self.current else []


def cues(words: list[Word]) -> list[tuple[float, float, str]]:
    builder = _CueBuilder()
    out = [cue for word in words for cue in builder.add(word)]
    return out + builder.finish()


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


class TimestampRenderer:
    """Renders words to text piece by piece: each word's text as it comes, then the ending."""

    def __init__(self, extension: str) -> None:
        self.extension = extension.lower()
        if self.extension not in TIMESTAMP_EXTENSIONS:
            raise UsageError(f"unknown timestamps extension '{extension}'")
        self.builder = _CueBuilder()
        self.count = 0
        self.cues = 0

    def start(self) -> str:
        return "WEBVTT\n\n" if self.extension == ".vtt" else ""

    def add(self, word: Word) -> str:
        self.count += 1
        if self.extension == ".json":
            item = json.dumps(vars(word), ensure_ascii=False, indent=1).replace("\n", "\n ")
            return ("[\n " if self.count == 1 else ",\n ") + item
        if self.extension == ".jsonl":
            return json.dumps(vars(word), ensure_ascii=False) + "\n"
        return "".join(self._cue(cue) for cue in self.builder.add(word))

    def finish(self) -> str:
        if self.extension == ".json":
            return "[]\n" if self.count == 0 else "\n]\n"
        return "".join(self._cue(cue) for cue in self.builder.finish())

    def _cue(self, cue: tuple[float, float, str]) -> str:
        start, stop, text = cue
        self.cues += 1
        gap = "" if self.cues == 1 else "\n"
        if self.extension == ".srt":
            return f"{gap}{self.cues}\n{_clock(start, ',')} --> {_clock(stop, ',')}\n{text}\n"
        return f"{gap}{_clock(start, '.')} --> {_clock(stop, '.')}\n{text}\n"


def render(words: list[Word], extension: str) -> str:
    renderer = TimestampRenderer(extension)
    return renderer.start() + "".join(renderer.add(word) for word in words) + renderer.finish()


class TimestampWriter:
    """Words to a timestamps file as they are confirmed, so none are kept in memory.

    Written atomically like audio: the name holds a complete file or nothing; a
    failed run can keep what it has as `NAME.partial.EXT`.
    """

    def __init__(self, path: Path) -> None:
        from gradium_cli.audio.atomic import AtomicFile

        self.path = path
        self.renderer = TimestampRenderer(path.suffix)
        self.file = AtomicFile(path)
        self._write(self.renderer.start())

    def _write(self, text: str) -> None:
        if text:
            self.file.write(text.encode("utf-8"))

    def add(self, word: Word) -> None:
        self._write(self.renderer.add(word))

    def close(self) -> None:
        self._write(self.renderer.finish())
        self.file.commit()

    def keep_partial(self) -> Path:
        from gradium_cli.audio.sinks import partial_path

        self._write(self.renderer.finish())
        self.file.commit(partial_path(self.path))
        return partial_path(self.path)

    def abort(self) -> None:
        self.file.abort()
