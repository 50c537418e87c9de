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

    if path.suffix.lower() not in TIMESTAMP_EXTENSIONS:
        raise UsageError(f"unknown timestamps extension '{path.suffix}' (use {', '.join(TIMESTAMP_EXTENSIONS)})")
    if path.is_dir():
        raise OutputError(f"{path} is a directory")
    if path.exists() and not force:
        raise OutputError(f"{path} exists", hint="use --force to replace it")
    AtomicFile(path).abort()  # an unwritable place fails now, not after the audio is made


def cues(words: list[Word]) -> list[tuple[float, float, str]]:
    """Group words into subtitle cues, breaking after sentence ends and at length limits."""
    out: list[tuple[float, float, str]] = []
    current: list[Word] = []
    for word in words:
        candidate = " ".join(w.text for w in [*current, word])
        if current and (len(current) >= MAX_CUE_WORDS or len(candidate) > MAX_CUE_CHARS):
            out.append((current[0].start_s, current[-1].stop_s, " ".join(w.text for w in current)))
            current = []
        current.append(word)
        if word.text.endswith((".", "!", "?", "…")):
            out.append((current[0].start_s, current[-1].stop_s, " ".join(w.text for w in current)))
            current = []
    if current:
        out.append((current[0].start_s, current[-1].stop_s, " ".join(w.text for w in current)))
    return out


def _clock(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, ms = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def render(words: list[Word], extension: str) -> str:
    extension = extension.lower()
    if extension == ".json":
        return json.dumps([vars(w) for w in words], ensure_ascii=False, indent=1) + "\n"
    if extension == ".jsonl":
        return "".join(json.dumps(vars(w), ensure_ascii=False) + "\n" for w in words)
    if extension == ".srt":
        blocks = [
            f"{i}\n{_clock(a, ',')} --> {_clock(b, ',')}\n{text}\n" for i, (a, b, text) in enumerate(cues(words), 1)
        ]
        return "\n".join(blocks)
    if extension == ".vtt":
        blocks = [f"{_clock(a, '.')} --> {_clock(b, '.')}\n{text}\n" for a, b, text in cues(words)]
        return "WEBVTT\n\n" + "\n".join(blocks)
    raise UsageError(f"unknown timestamps extension '{extension}'")
