"""The local server's speech engine: eSpeak NG through ctypes.

The shared library and its data come from the `espeakng-loader` wheel, so nothing
is installed system-wide. eSpeak NG keeps all its state in globals (current voice,
parameters, the one synthesis callback), so every call that touches it runs under
one module lock; `synthesize` is blocking and meant for worker threads.

Only the engine lives here: no resampling, encoding or text rewriting.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import espeakng_loader
import numpy as np
import numpy.typing as npt

__all__ = [
    "ENGINE_RATE",
    "Engine",
    "EngineVoice",
    "EspeakVoiceInfo",
    "SpeechEngine",
    "Synthesis",
    "WordSpan",
    "engine_lock",
    "get_engine",
]

# eSpeak NG always synthesises at 22050 Hz; `Engine.sample_rate` is what the
# library itself reports, and initialisation fails loudly if they ever differ.
ENGINE_RATE: int = 22050

# --------------------------------------------------------------- speak_lib.h

_AUDIO_OUTPUT_SYNCHRONOUS = 2
# Without this flag a missing data directory makes the library call exit().
_INITIALIZE_DONT_EXIT = 0x8000
# Longer buffers mean fewer Python callbacks per second of audio.
_BUFFER_MS = 500

_CHARS_UTF8 = 1
_PHONEMES = 0x100
_POS_CHARACTER = 1

_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1

_RATE, _PITCH, _RANGE = 1, 3, 4
_MIN_WPM, _MAX_WPM = 80, 449
_EE_OK = 0

_GENDERS = {1: "male", 2: "female"}

# eSpeak NG overflows a fixed buffer (stack smashing or a segfault) when one call
# spells out a couple of hundred dotted single characters: "a.a.a." x200 does it, and
# so do "a.a. a.a." x160 or "a.a.a.a., " x80 (they accumulate across spaces and
# commas), with an invisible character before each dot ("a\u00ad.", "a\u200c.") or
# with symbols it spells ("\u24d0."). Past this many, the dots go: "a a a" is read
# the same way. The server runs the engine in worker processes anyway; this stops
# the known inputs before they cost a worker.
_DOTTED_LETTER = re.compile(r"(?<![^\W_])([^\s.][\u00ad\u034f\u200b-\u200f\u2060-\u2064\ufeff\u0300-\u036f]*)\.")
_MAX_DOTTED_LETTERS = 32
# GRADIUM_ENGINE_GUARD=off lets that input through, to test that isolation holds
# without the rule (tests/test_engine_isolation.py): never needed otherwise.
_GUARD = os.environ.get("GRADIUM_ENGINE_GUARD", "on") != "off"
_RESOLVED_CACHE_SIZE = 1024


class _EventId(ctypes.Union):
    _fields_ = [
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    ]


class _Event(ctypes.Structure):
    # `user_data` is a pointer, so on LP64 there are 4 padding bytes after `sample`
    # and the union is 8-aligned: 40 bytes in all. ctypes applies the same C rules.
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    # `languages` is not a C string: it is a list of (priority byte, NUL-terminated
    # name) pairs ended by an empty name, so it must stay a raw pointer.
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# ------------------------------------------------------------ public types


@dataclass(frozen=True)
class EngineVoice:
    """An eSpeak voice (with an optional `+variant`) and its prosody settings.

    `pitch` and `pitch_range` are clamped to 0-100 and `rate_wpm` to 80-449: from
    450 on eSpeak hands its output to libsonic for time compression, and its word
    events then no longer match the audio (they even go backwards).
    """

    name: str
    pitch: int = 50
    pitch_range: int = 50
    rate_wpm: int = 175


@dataclass(frozen=True)
class WordSpan:
    """One spoken word: where it is in the input text and in the returned audio."""

    char_start: int
    char_end: int
    start_s: float
    stop_s: float


@dataclass(frozen=True)
class Synthesis:
    """Mono int16 audio at ENGINE_RATE and the words in it, in order and not overlapping."""

    samples: npt.NDArray[np.int16]
    words: list[WordSpan] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / ENGINE_RATE


@dataclass(frozen=True)
class EspeakVoiceInfo:
    """One eSpeak voice: `language` is its first (preferred) language code."""

    identifier: str
    name: str
    language: str
    gender: str


class SpeechEngine(Protocol):
    """What the server asks of an engine: `Engine` in this process, or `workers.EnginePool`."""

    sample_rate: int

    def synthesize(self, text: str, voice: EngineVoice, *, phonemes: bool = True) -> Synthesis: ...

    def list_voices(self) -> list[EspeakVoiceInfo]: ...

    def has_voice(self, name: str) -> bool: ...

    def close(self) -> None: ...


# ------------------------------------------------------------ the library

_LOCK = threading.RLock()


def engine_lock() -> threading.RLock:
    """The lock every call into eSpeak NG holds (reentrant)."""
    return _LOCK


class _Library:
    """The loaded library plus what the synthesis callback collects for the current call."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.data_path = Path(espeakng_loader.get_data_path())

        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = [ctypes.POINTER(_Voice)]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # Reseeding before each call makes the noise in fricatives repeatable (the
        # pitch flutter phase still carries over between calls, see `synthesize`).
        self.seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self.seed is not None:
            self.seed.argtypes = [ctypes.c_long]
            self.seed.restype = ctypes.c_int

        # espeak-ng takes the data directory itself here, not its parent.
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS,
            _BUFFER_MS,
            str(self.data_path).encode(),
            _INITIALIZE_DONT_EXIT,
        )
        if rate <= 0:
            raise RuntimeError(f"eSpeak NG failed to initialise with data at {self.data_path}")
        if rate != ENGINE_RATE:
            raise RuntimeError(f"eSpeak NG runs at {rate} Hz, expected {ENGINE_RATE} Hz")
        self.rate = rate
        self.lib = lib
        self.chunks: list[bytes] = []
        # (text_position, length, audio_position) of each WORD event, as reported.
        self.words: list[tuple[int, int, int]] = []
        # The C side keeps only a raw pointer to this: the reference here keeps it alive.
        self.callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self.callback)

    def _on_synth(
        self,
        wav: ctypes._Pointer[ctypes.c_short],
        count: int,
        events: ctypes._Pointer[_Event],
    ) -> int:
        if wav and count > 0:
            self.chunks.append(ctypes.string_at(wav, count * 2))
        index = 0
        while True:
            event = events[index]
            if event.type == _EVENT_LIST_TERMINATED:
                break
            if event.type == _EVENT_WORD:
                self.words.append((event.text_position, event.length, event.audio_position))
            index += 1
        return 0

    def list_voices(self, languages: str | None = None) -> list[tuple[str, str, list[str], int]]:
        """(identifier, name, languages, gender code) of eSpeak's voices, or of its variants."""
        spec: ctypes._Pointer[_Voice] | None = None
        if languages is not None:
            selector = _Voice()
            keep = ctypes.c_char_p(languages.encode())
            selector.languages = ctypes.cast(keep, ctypes.c_void_p)
            spec = ctypes.pointer(selector)
        found = self.lib.espeak_ListVoices(spec)
        voices = []
        index = 0
        while found[index]:
            voice = found[index].contents
            voices.append(
                (
                    (voice.identifier or b"").decode("utf-8", "replace"),
                    (voice.name or b"").decode("utf-8", "replace"),
                    _languages(voice.languages),
                    int(voice.gender),
                )
            )
            index += 1
        return voices


def _languages(pointer: int | None) -> list[str]:
    names: list[str] = []
    if not pointer:
        return names
    offset = 0
    while ctypes.string_at(pointer + offset, 1) != b"\0":
        name = ctypes.string_at(pointer + offset + 1)
        if not name:
            break
        names.append(name.decode("utf-8", "replace"))
        offset += len(name) + 2
    return names


def defuse(text: str) -> str:
    """`text` with the known crash input made harmless; always the same length."""
    if not _GUARD or len(_DOTTED_LETTER.findall(text)) <= _MAX_DOTTED_LETTERS:
        return text
    return _DOTTED_LETTER.sub(r"\1 ", text)


def _uses_sonic(voice_file: Path) -> bool:
    try:
        lines = voice_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    return any(line.split()[:1] == ["fast_test2"] for line in lines)


_library: _Library | None = None


def _load() -> _Library:
    global _library
    with _LOCK:
        if _library is None:
            _library = _Library()
        return _library


# ------------------------------------------------------------ word timing

# Below this a sample counts as silence: eSpeak's pauses are exact zeros, and
# decays this quiet (about -54 dBFS) are inaudible.
_SILENCE = 64
# Silence kept before the first and after the last audible sample. eSpeak opens
# with ~12 ms, but far more after leading punctuation ("(Hello" gives 120 ms).
_LEAD_S = 0.02
_TAIL_S = 0.05
# eSpeak's own output ends with the fading release of its last sound (up to ~90 ms,
# never silence). Whether that release crosses the silence threshold changes from call
# to call, so a tail this short is kept whole: the length of the audio stays the same
# for the same text (within a few samples), which keeps a text cut into several units
# timed like the same text sent whole.
_KEEP_TAIL_S = 0.1

_PHONEME_BLOCK = re.compile(r"\[\[.*?\]\]", re.DOTALL)


def _is_edge(char: str) -> bool:
    """Whitespace or punctuation: trimmed off the ends of a word's range."""
    return char.isspace() or unicodedata.category(char).startswith("P")


def _word_ranges(text: str, starts: list[int], blocks: list[tuple[int, int]]) -> list[tuple[int, int] | None]:
    """Char range of each word from the start offsets of consecutive words.

    eSpeak's own `length` is unreliable ("Don't" gives 3, "[[h@'loU]]" gives 2), and
    one event can cover several words of the text: multi-word dictionary entries such
    as "from the" or "of the" are spoken as one word with one event. So a word runs
    up to the next one, minus whitespace and punctuation at its ends, and can contain
    spaces. None marks a word with nothing left.
    """
    block_starts = [begin for begin, _ in blocks]
    ranges: list[tuple[int, int] | None] = []
    for index, position in enumerate(starts):
        limit = starts[index + 1] if index + 1 < len(starts) else len(text)
        if index > 0 and position < len(text) and text[position].isspace():
            # eSpeak reading a symbol out as several words ("😀" is "grinning face")
            # reports the later ones one character past it: still the same word.
            ranges.append(None)
            continue
        found = bisect.bisect_right(block_starts, position)
        if found < len(blocks):
            # A word running into a phoneme block stops at it: the block has its own.
            limit = min(limit, blocks[found][0])
        block = blocks[found - 1] if found > 0 and position < blocks[found - 1][1] else None
        if block is not None:
            # Phoneme mnemonics are full of punctuation (' , : @) and a block can hold
            # several words, so split at whitespace only, and cover the whole block
            # when the word opens or closes it so callers can map it back.
            start = block[0] if index == 0 or starts[index - 1] < block[0] else position
            end = position
            while end < min(limit, block[1]) and not text[end].isspace():
                end += 1
            if limit >= block[1]:
                end = block[1]
            ranges.append((start, end) if start < end else None)
            continue
        start, end = position, limit
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        core = (start, end)
        while start < end and _is_edge(text[start]):
            start += 1
        while end > start and _is_edge(text[end - 1]):
            end -= 1
        if start == end:
            # A word that is all punctuation ("." in a URL, read as "dot").
            start, end = core
        ranges.append((start, end) if start < end else None)
    return ranges


def _group_words(raw: list[tuple[int, int, int]], text_length: int) -> list[tuple[int, int]]:
    """(char start, audio ms) per spoken word, with eSpeak's sub-word events folded in.

    A number or abbreviation read as several words yields several events whose
    positions fall inside the first one's reported range ("123" is reported at 123,
    then twice at 23): those are one word of the input text.
    """
    grouped: list[tuple[int, int]] = []
    reach = -1
    for position, length, audio_ms in raw:
        # eSpeak counts characters (code points) from 1, not bytes.
        start = min(max(position - 1, 0), text_length)
        if grouped and start < reach:
            reach = max(reach, start + length)
            continue
        grouped.append((start, audio_ms))
        reach = start + max(length, 1)
    return grouped


def _spans(
    text: str,
    raw: list[tuple[int, int, int]],
    samples: npt.NDArray[np.int16],
    blocks: list[tuple[int, int]],
    rate: int,
) -> tuple[list[WordSpan], int, int]:
    """Word spans, and the slice of `samples` to keep: edge silence trimmed.

    Span times are relative to the start of that slice.
    """
    loud = np.flatnonzero((samples > _SILENCE) | (samples < -_SILENCE))
    if loud.size == 0:
        return [], 0, len(samples)
    begin = max(0, int(loud[0]) - int(_LEAD_S * rate))
    audible_end = int(loud[-1]) + 1
    end = len(samples)
    if end - audible_end > _KEEP_TAIL_S * rate:
        end = audible_end + int(_TAIL_S * rate)

    grouped = _group_words(raw, len(text))
    ranges = _word_ranges(text, [start for start, _ in grouped], blocks)

    # Fold words that got no text, no audio of their own, or start after the last
    # audible sample into the previous word, so spans stay strictly ordered.
    merged: list[tuple[int, int, int]] = []  # char start, char end, start sample
    for (_, audio_ms), char_range in zip(grouped, ranges, strict=True):
        at = min(audio_ms * rate // 1000, audible_end - 1)
        if merged and (char_range is None or at <= merged[-1][2]):
            previous = merged[-1]
            char_end = char_range[1] if char_range is not None else previous[1]
            merged[-1] = (previous[0], max(previous[1], char_end), previous[2])
        elif char_range is not None:
            merged.append((char_range[0], char_range[1], at))
    if not merged:
        return [], begin, end

    event_starts = np.array([at for _, _, at in merged], dtype=np.int64)
    boundaries = np.append(event_starts[1:], audible_end)
    # A word ends at its last loud sample before the next word starts, so pauses
    # (which eSpeak attributes to the word before them) are not part of it. Starts
    # stay at the event: eSpeak's pauses and stop closures are digital silence, and
    # searching forward for the onset would land on whatever tail happens to cross it.
    last = loud[np.maximum(np.searchsorted(loud, boundaries) - 1, 0)] + 1
    words = []
    for index, (char_start, char_end, at) in enumerate(merged):
        boundary = int(boundaries[index])
        stop = int(last[index]) if at < last[index] <= boundary else boundary
        # Only the first word can start inside the trimmed lead-in.
        start = max(at - begin, 0)
        words.append(WordSpan(char_start, char_end, start / rate, (stop - begin) / rate))
    return words, begin, end


# ------------------------------------------------------------ the engine


class Engine:
    """Speech synthesis with eSpeak NG. Obtain it with `get_engine()`."""

    def __init__(self) -> None:
        self._library = _load()
        self.sample_rate: int = self._library.rate
        self._voices: list[tuple[str, str, list[str], int]] | None = None
        self._variants: dict[str, str] | None = None
        self._resolved: dict[str, str | None] = {}

    def synthesize(self, text: str, voice: EngineVoice, *, phonemes: bool = True) -> Synthesis:
        """Speak `text` (UTF-8; `[[...]]` is eSpeak phoneme input when `phonemes`).

        Raises ValueError if the voice name does not resolve. Repeated calls give the
        same words and nearly the same audio, not bit-identical audio: eSpeak keeps
        its pitch-flutter phase in a function-static variable that nothing resets, so
        lengths can differ by a few samples.
        """
        if not text or text.isspace():
            return Synthesis(np.zeros(0, dtype=np.int16), [])
        target = self._resolve(voice.name)
        if target is None:
            raise ValueError(f"unknown eSpeak voice {voice.name!r}")
        # A NUL would end the C string early; a lone surrogate cannot be UTF-8.
        # Each stand-in is one character, so eSpeak's character positions still match.
        encoded = defuse(text.replace("\0", " ")).encode("utf-8", "replace") + b"\0"
        flags = _CHARS_UTF8 | (_PHONEMES if phonemes else 0)
        library = self._library
        lib = library.lib
        with _LOCK:
            if lib.espeak_SetVoiceByName(target.encode()) != _EE_OK:
                raise RuntimeError(f"eSpeak NG could not load voice {target!r}")
            lib.espeak_SetParameter(_RATE, min(max(voice.rate_wpm, _MIN_WPM), _MAX_WPM), 0)
            lib.espeak_SetParameter(_PITCH, min(max(voice.pitch, 0), 100), 0)
            lib.espeak_SetParameter(_RANGE, min(max(voice.pitch_range, 0), 100), 0)
            if library.seed is not None:
                library.seed(1)
            library.chunks, library.words = [], []
            try:
                status = lib.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, flags, None, None)
                chunks, raw = library.chunks, library.words
            finally:
                library.chunks, library.words = [], []
        if status != _EE_OK:
            raise RuntimeError(f"eSpeak NG synthesis failed with status {status}")

        samples = np.frombuffer(b"".join(chunks), dtype=np.int16)
        blocks = [m.span() for m in _PHONEME_BLOCK.finditer(text)] if phonemes else []
        words, begin, end = _spans(text, raw, samples, blocks, self.sample_rate)
        # frombuffer views immutable bytes; the copy gives callers a normal array.
        return Synthesis(samples[begin:end].copy(), words)

    def preload(self, voice: EngineVoice) -> None:
        """Load the voice's data now (eSpeak reads its files on first use, ~15 ms): only
        selects it, so what later calls synthesise is unchanged."""
        target = self._resolve(voice.name)
        if target is not None:
            with _LOCK:
                self._library.lib.espeak_SetVoiceByName(target.encode())

    def list_voices(self) -> list[EspeakVoiceInfo]:
        """eSpeak's voices (languages), not its variants."""
        return [
            EspeakVoiceInfo(
                identifier=identifier,
                name=name.replace(" ", "_"),
                language=languages[0] if languages else identifier.rsplit("/", 1)[-1].lower(),
                gender=_GENDERS.get(gender, "unknown"),
            )
            for identifier, name, languages, gender in self._voice_table()
        ]

    def has_voice(self, name: str) -> bool:
        """Whether `name` (optionally with a `+variant`) names a usable voice."""
        return self._resolve(name) is not None

    def close(self) -> None:
        """Nothing to stop: the library lives as long as the process."""

    # ------------------------------------------------------------- private

    def _voice_table(self) -> list[tuple[str, str, list[str], int]]:
        if self._voices is None:
            with _LOCK:
                # MBROLA voices need an external synthesiser that is not shipped.
                self._voices = [v for v in self._library.list_voices() if not v[0].startswith("mb/")]
        return self._voices

    def _variant_table(self) -> dict[str, str]:
        """Lower-cased variant file name or display name -> variant file name."""
        if self._variants is None:
            with _LOCK:
                found = self._library.list_voices("variant")
            # A variant with `fast_test2` switches to libsonic from 350 wpm on, where
            # word timing breaks (see EngineVoice); eSpeak itself calls it unstable.
            variants_dir = self._library.data_path / "voices"
            found = [v for v in found if not _uses_sonic(variants_dir / v[0])]
            table: dict[str, str] = {}
            for identifier, name, _, _ in found:
                file_name = identifier.rsplit("/", 1)[-1]
                table.setdefault(name.lower(), file_name)
            for identifier, _, _, _ in found:
                file_name = identifier.rsplit("/", 1)[-1]
                table[file_name.lower()] = file_name
            self._variants = table
        return self._variants

    def _resolve(self, name: str) -> str | None:
        """The exact string to give espeak_SetVoiceByName for `name`, or None."""
        if name in self._resolved:
            return self._resolved[name]
        base, _, variant = name.strip().partition("+")
        identifier = self._find_voice(base.strip())
        target: str | None = identifier
        if identifier is not None and variant:
            variant_file = self._variant_table().get(variant.strip().lower())
            target = f"{identifier}+{variant_file}" if variant_file else None
        # Names can come from clients; a flood of made-up ones must not grow this forever.
        if len(self._resolved) >= _RESOLVED_CACHE_SIZE:
            self._resolved.clear()
        self._resolved[name] = target
        return target

    def _find_voice(self, base: str) -> str | None:
        """Voice identifier by identifier, file name, display name, then language code.

        eSpeak's own lookup by name misses language codes such as "fr-fr" whose
        voice file is named differently ("roa/fr"), hence this table.
        """
        wanted = base.lower()
        if not wanted:
            return None
        voices = self._voice_table()
        for identifier, _, _, _ in voices:
            if identifier.lower() == wanted:
                return identifier
        for identifier, _, _, _ in voices:
            if identifier.rsplit("/", 1)[-1].lower() == wanted:
                return identifier
        spaced = wanted.replace("_", " ")
        for identifier, voice_name, _, _ in voices:
            if voice_name.lower() == spaced:
                return identifier
        matching = [
            identifier
            for identifier, _, languages, _ in voices
            if wanted in (language.lower() for language in languages)
        ]
        if not matching:
            return None
        # Listing with a language asks eSpeak for its own preference order.
        with _LOCK:
            ranked = [voice[0] for voice in self._library.list_voices(wanted)]
        return next((identifier for identifier in ranked if identifier in matching), matching[0])


_engine: Engine | None = None


def get_engine() -> Engine:
    """The process-wide engine, initialised on first use."""
    global _engine
    if _engine is None:
        with _LOCK:
            if _engine is None:
                _engine = Engine()
    return _engine
