"""`batch --concat OUT`: the items joined, in manifest order, into one file with chapters.

Each item's file is decoded (one item in memory at a time; the joined file is
written as it grows), optionally normalised to `--loudness` LUFS integrated
(ITU-R BS.1770 through pyloudnorm), resampled to the first item's rate where
they differ, and followed by `--gap` seconds of silence (none after the last).
Offsets are counted in samples, so the chapter starts and the joined
timestamps are exact to the sample.

Chapters: one per item, or, when the manifest has a `chapter` column, one per
run of rows from a row that names a chapter to the next. They go into a cue
sheet beside the file (OUT.cue) and inside the file where the container has a
place for them: Vorbis comments CHAPTERnnn / CHAPTERnnnNAME in FLAC and Ogg,
ID3 CTOC + CHAP frames in MP3 (both through mutagen). WAV has none.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradium_cli.audio.atomic import AtomicFile, write_atomic
from gradium_cli.audio.subtitles import TIMESTAMP_EXTENSIONS, Word, render
from gradium_cli.audio.subtitles import _clock as clock
from gradium_cli.batch.manifest import Item
from gradium_cli.errors import OutputError, UsageError

if TYPE_CHECKING:
    import numpy as np

# Extension → (libsndfile container, subtype).
CONTAINERS = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "OPUS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
RAW_EXTENSIONS = {"pcm": "PCM_16", "raw": "PCM_16", "ulaw": "ULAW", "alaw": "ALAW"}
MIN_LOUDNESS_S = 0.4  # BS.1770's gating block: shorter items are measured looped
CUE_FRAMES = 75  # a cue sheet counts 75 frames a second
TITLE_CHARS = 60


@dataclass(frozen=True)
class ConcatOptions:
    output: Path
    gap_s: float = 0.0
    loudness: float | None = None  # LUFS; None: items as they are
    timestamps: str | None = None  # extension of the joined timestamps (the items' own)


@dataclass(frozen=True)
class Chapter:
    start_s: float
    end_s: float
    title: str


@dataclass(frozen=True)
class Assembled:
    output: Path
    samples: int
    sample_rate: int
    chapters: list[Chapter]
    cue_sheet: Path
    timestamps: Path | None

    @property
    def duration_s(self) -> float:
        return self.samples / self.sample_rate


def check(options: ConcatOptions) -> None:
    """Bad --concat, --gap or --loudness fail before anything is sent."""
    extension = options.output.suffix.lower().lstrip(".")
    if extension == "m4b":
        try:
            import av  # noqa: F401
        except ImportError:
            raise UsageError(
                "--concat: writing .m4b needs PyAV, which is not installed",
                hint="pip install 'gradium-cli[m4b]', or write .mp3 and convert (docs/batch.md)",
            ) from None
    elif extension not in CONTAINERS:
        raise UsageError(f"--concat: unknown extension '.{extension}' (use .wav, .flac, .ogg, .mp3 or .m4b)")
    if options.output.is_dir():
        raise UsageError(f"--concat: {options.output} is a directory")
    if not (0 <= options.gap_s <= 3600) or not math.isfinite(options.gap_s):
        raise UsageError("--gap must be between 0 and 3600 seconds")
    if options.loudness is not None and not -70 <= options.loudness <= 0:
        raise UsageError("--loudness must be between -70 and 0 LUFS (e.g. -16, -19 or -23)")


def title_of(text: str) -> str:
    words = " ".join(text.split())
    if len(words) <= TITLE_CHARS:
        return words
    return words[:TITLE_CHARS].rsplit(" ", 1)[0] + "…"


def _decode(item: Item) -> tuple[np.ndarray, int]:
    """The item's file as float64 mono samples, and their rate."""
    import numpy as np
    import soundfile as sf

    extension = item.output.suffix.lower().lstrip(".")
    try:
        if extension in RAW_EXTENSIONS:
            rate = item.plan.wire.sample_rate
            data, rate = sf.read(
                str(item.output), dtype="float64", format="RAW", subtype=RAW_EXTENSIONS[extension],
                samplerate=rate, channels=1, endian="LITTLE",
            )  # fmt: skip
        else:
            data, rate = sf.read(str(item.output), dtype="float64", always_2d=True)
            data = data.mean(axis=1)
    except (OSError, sf.LibsndfileError, RuntimeError) as exc:
        raise OutputError(f"--concat: cannot read {item.output}: {exc}") from None
    return np.asarray(data, dtype=np.float64), int(rate)


def normalise(samples: np.ndarray, rate: int, target: float) -> np.ndarray:
    """The item at `target` LUFS integrated; silence stays silence. Peaks are clipped at full scale."""
    import numpy as np
    import pyloudnorm

    if samples.size == 0 or not np.any(samples):
        return samples
    measured = samples
    if samples.size < MIN_LOUDNESS_S * rate:
        measured = np.tile(samples, math.ceil(MIN_LOUDNESS_S * rate / samples.size) + 1)
    loudness = pyloudnorm.Meter(rate).integrated_loudness(measured)
    if not math.isfinite(loudness):
        return samples
    return np.asarray(np.clip(samples * 10 ** ((target - loudness) / 20), -1.0, 1.0), dtype=np.float64)


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    import numpy as np
    import soxr

    return np.asarray(soxr.resample(samples, rate, target), dtype=np.float64)


def read_words(path: Path) -> list[Word]:
    """Timestamps written by an item: words from .json/.jsonl, cues from .srt/.vtt."""
    text = path.read_text(encoding="utf-8")
    extension = path.suffix.lower()
    if extension == ".json":
        return [Word(w["text"], float(w["start_s"]), float(w["stop_s"])) for w in json.loads(text)]
    if extension == ".jsonl":
        return [
            Word(w["text"], float(w["start_s"]), float(w["stop_s"]))
            for w in map(json.loads, filter(str.strip, text.splitlines()))
        ]
    clock = r"(\d+):(\d\d):(\d\d)[,.](\d{3})"
    found = []
    for block in re.split(r"\n\s*\n", text):
        lines = block.strip().splitlines()
        for number, line in enumerate(lines):
            match = re.match(rf"{clock}\s*-->\s*{clock}", line)
            if match:
                g = [int(v) for v in match.groups()]
                start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
                stop = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
                found.append(Word(" ".join(lines[number + 1 :]), start, stop))
                break
    return found


def chapters_of(items: list[Item], starts: list[float], end_s: float) -> list[Chapter]:
    """One chapter per item, or per run of rows from each row that names a `chapter`."""
    named = any(item.chapter for item in items)
    marks: list[tuple[float, str]] = []
    for item, start in zip(items, starts, strict=True):
        if not named:
            marks.append((start, title_of(item.text)))
        elif item.chapter and (not marks or marks[-1][1] != item.chapter):
            marks.append((start, item.chapter))
        elif not marks:
            marks.append((start, title_of(item.text)))
    ends = [start for start, _ in marks[1:]] + [end_s]
    return [Chapter(start, end, title) for (start, title), end in zip(marks, ends, strict=True)]


def cue_sheet(output: Path, chapters: list[Chapter]) -> str:
    kind = "MP3" if output.suffix.lower() == ".mp3" else "WAVE"
    lines = [f'FILE "{output.name.replace(chr(34), chr(39))}" {kind}']
    for number, chapter in enumerate(chapters, 1):
        frames = round(chapter.start_s * CUE_FRAMES)
        minutes, rest = divmod(frames, 60 * CUE_FRAMES)
        seconds, frame = divmod(rest, CUE_FRAMES)
        title = " ".join(chapter.title.split()).replace('"', "'")
        lines += [
            f"  TRACK {number:02d} AUDIO",
            f'    TITLE "{title}"',
            f"    INDEX 01 {minutes:02d}:{seconds:02d}:{frame:02d}",
        ]
    return "\n".join(lines) + "\n"


def tag_chapters(path: Path, extension: str, chapters: list[Chapter]) -> None:
    """Chapters inside the file: Vorbis comments (FLAC, Ogg Opus) or ID3 CHAP frames (MP3)."""
    if extension == "wav":
        return
    if extension == "mp3":
        from mutagen.id3 import CHAP, CTOC, ID3, TIT2, CTOCFlags

        tags = ID3()
        ids = [f"ch{number:03d}" for number in range(1, len(chapters) + 1)]
        tags.add(
            CTOC(
                element_id="toc",
                flags=CTOCFlags.TOP_LEVEL | CTOCFlags.ORDERED,
                child_element_ids=ids,
                sub_frames=[TIT2(text=["Chapters"])],
            )
        )
        for element_id, chapter in zip(ids, chapters, strict=True):
            tags.add(
                CHAP(
                    element_id=element_id,
                    start_time=round(chapter.start_s * 1000),
                    end_time=round(chapter.end_s * 1000),
                    sub_frames=[TIT2(text=[chapter.title])],
                )
            )
        tags.save(str(path))
        return
    from mutagen.flac import FLAC
    from mutagen.oggopus import OggOpus

    audio = FLAC(str(path)) if extension == "flac" else OggOpus(str(path))
    for number, chapter in enumerate(chapters, 1):
        audio[f"CHAPTER{number:03d}"] = clock(chapter.start_s, ".")  # HH:MM:SS.mmm, as WebVTT writes it
        audio[f"CHAPTER{number:03d}NAME"] = chapter.title
    audio.save()


class _SoundFileWriter:
    """WAV, FLAC, Ogg Opus and MP3 through libsndfile; chapters added with mutagen once it is closed."""

    def __init__(self, target: AtomicFile, extension: str, rate: int) -> None:
        import soundfile as sf

        container, subtype = CONTAINERS[extension]
        self.target = target
        self.extension = extension
        self.file = sf.SoundFile(target.handle, "w", samplerate=rate, channels=1, subtype=subtype, format=container)

    def write(self, samples: np.ndarray) -> None:
        self.file.write(samples)

    def finish(self, chapters: list[Chapter]) -> None:
        self.file.close()
        self.target.handle.flush()
        tag_chapters(self.target.tmp_path, self.extension, chapters)

    def abort(self) -> None:
        if not self.file.closed:
            with contextlib.suppress(Exception):
                self.file.close()


class _M4bWriter:
    """AAC in an MPEG-4 audiobook (.m4b) with a chapter track, through PyAV (FFmpeg)."""

    def __init__(self, target: AtomicFile, rate: int) -> None:
        import av

        self.rate = rate
        self.position = 0
        self.container = av.open(target.handle, "w", format="ipod")
        self.stream = self.container.add_stream("aac", rate=rate, layout="mono")
        self.target = target

    def write(self, samples: np.ndarray) -> None:
        import av

        if samples.size == 0:
            return
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.position
        self.position += samples.size
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def finish(self, chapters: list[Chapter]) -> None:
        from fractions import Fraction

        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.set_chapters(
            [
                {
                    "id": number,
                    "start": round(chapter.start_s * 1000),
                    "end": round(chapter.end_s * 1000),
                    "time_base": Fraction(1, 1000),
                    "metadata": {"title": chapter.title},
                }
                for number, chapter in enumerate(chapters, 1)
            ]
        )
        self.container.close()
        self.target.handle.flush()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.container.close()


def joined_files(options: ConcatOptions) -> list[Path]:
    """What assembling writes: the joined audio, its cue sheet, and its timestamps if asked."""
    files = [options.output, options.output.with_suffix(".cue")]
    if options.timestamps:
        files.append(options.output.with_suffix("." + options.timestamps.lstrip(".")))
    return files


def _blocks(items: Iterable[Item], options: ConcatOptions) -> Iterator[tuple[Item, np.ndarray, int]]:
    # Checked before anything joined is written: `--concat x.mp3` beside an item `x.wav` wrote
    # the joined x.json over the item's own (which every later run then made again).
    joined = {path.resolve(): path for path in joined_files(options)}
    for item in items:
        for what, made in (("output", item.output), ("timestamps", item.timestamps)):
            clash = None if made is None else joined.get(made.resolve())
            if clash is not None:
                writes = "" if clash == options.output else f" writes {clash}, which"
                raise UsageError(f"--concat {options.output}{writes} is also the {what} of line {item.line}")
        samples, rate = _decode(item)
        if options.loudness is not None:
            samples = normalise(samples, rate, options.loudness)
        yield item, samples, rate


def assemble(items: Iterable[Item], options: ConcatOptions) -> Assembled:
    """Join the items' files into options.output (atomically), with its cue sheet and timestamps."""
    import numpy as np

    extension = options.output.suffix.lower().lstrip(".")
    done: list[Item] = []
    starts: list[float] = []
    words: list[Word] = []
    position = 0
    target = AtomicFile(options.output)
    writer: _SoundFileWriter | _M4bWriter | None = None
    rate = 0
    gap = 0
    try:
        for item, samples, item_rate in _blocks(items, options):
            if writer is None:
                rate = item_rate
                if extension in ("ogg", "opus") and rate not in OPUS_RATES:
                    rate = 48000
                gap = round(options.gap_s * rate)
                writer = _M4bWriter(target, rate) if extension == "m4b" else _SoundFileWriter(target, extension, rate)
            elif gap:
                writer.write(np.zeros(gap, dtype=np.int16))
                position += gap
            samples = _resample(samples, item_rate, rate)
            offset = position / rate
            # x 32768 undoes soundfile's int16 → float scale exactly: untouched items keep every sample.
            writer.write(np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16))
            position += samples.size
            done.append(item)
            starts.append(offset)
            if options.timestamps and item.timestamps is not None and item.timestamps.exists():
                words += [
                    Word(w.text, round(offset + w.start_s, 3), round(offset + w.stop_s, 3))
                    for w in read_words(item.timestamps)
                ]
        if writer is None:
            raise UsageError("--concat: no items to join")
        chapters = chapters_of(done, starts, position / rate)
        writer.finish(chapters)
        target.commit()
    except (OSError, RuntimeError, TypeError, ValueError) as exc:
        if writer is not None:
            writer.abort()
        target.abort()
        raise OutputError(f"--concat: cannot write {options.output}: {exc}") from None
    except BaseException:
        if writer is not None:
            writer.abort()
        target.abort()
        raise
    _, cue, *asked = joined_files(options)
    write_atomic(cue, cue_sheet(options.output, chapters).encode("utf-8"))
    stamps = asked[0] if asked else None
    if stamps is not None:
        write_atomic(stamps, render(words, stamps.suffix).encode("utf-8"))
    return Assembled(options.output, position, rate, chapters, cue, stamps)


def timestamps_extension(value: str | None) -> str | None:
    """The joined timestamps' extension when --timestamps names one (srt, vtt, json, jsonl)."""
    if value is None:
        return None
    extension = "." + value.lower().lstrip(".")
    return extension if extension in TIMESTAMP_EXTENSIONS else Path(value).suffix.lower() or None


def describe(result: Assembled) -> dict[str, Any]:
    return {
        "output": str(result.output),
        "duration_s": round(result.duration_s, 3),
        "samples": result.samples,
        "sample_rate": result.sample_rate,
        "cue_sheet": str(result.cue_sheet),
        "timestamps": None if result.timestamps is None else str(result.timestamps),
        "chapters": [{"start_s": round(c.start_s, 3), "title": c.title} for c in result.chapters],
    }
