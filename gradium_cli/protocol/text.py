"""Word-safe text splitting (PROTOCOL.md §5), standard library only.

The server joins consecutive `text` messages with one space, so cutting the
input only where it already has whitespace sends exactly the original text.
Cutting inside a word changes its pronunciation, and a message that starts with
punctuation would get a space before it: neither ever happens here.
"""

from __future__ import annotations

import re
import unicodedata

FLUSH_TAG = "<flush>"

# Free tier: 1500 characters per session; sessions last at most 300 s (§11.3).
MAX_CHARS_PER_REQUEST = 1500

_SENTENCE_END = re.compile(r"(?<=[.!?…。！？])[\"'”’)\]]*\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:—])\s+")
_LAST_SPACE = re.compile(r"\s+(?=\S*\Z)")
_PUNCTUATION_START = re.compile(r"^[^\w\s<\[(\"'“‘¿¡#@$€£+-]")
# A run of this many characters with no whitespace is no word (a base64 blob, a key held
# down): a stream holding it back for the rest would hold it without bound.
LONGEST_WORD = 1000
_JOINERS = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: part of the characters on both sides


def normalise_space(text: str) -> str:
    return " ".join(text.split())


def _starts_with_punctuation(token: str) -> bool:
    return bool(_PUNCTUATION_START.match(token))


def _pieces(text: str, pattern: re.Pattern[str]) -> list[str]:
    return [piece for piece in (p.strip() for p in pattern.split(text)) if piece]


def _clings(char: str) -> bool:
    """A character that belongs to the one before it: a cut must not fall just before it."""
    return unicodedata.category(char) in ("Mn", "Mc", "Me") or char in _JOINERS or "\U0001f3fb" <= char <= "\U0001f3ff"


def cut_word(word: str, max_chars: int) -> list[str]:
    """`word` in pieces of at most `max_chars`: a word longer than a request could never be
    sent whole. Cuts fall between characters as people see them where there is room
    (never before a combining mark, joiner, variation selector or skin tone)."""
    pieces: list[str] = []
    while len(word) > max_chars:
        cut = max_chars
        while cut > 0 and _clings(word[cut]):
            cut -= 1
        cut = cut or max_chars  # nothing but marks: any cut will do
        pieces.append(word[:cut])
        word = word[cut:]
    return [*pieces, word] if word else pieces


def _pack(pieces: list[str], max_chars: int) -> list[str]:
    """Greedily join pieces with spaces into chunks of at most max_chars."""
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if len(candidate) <= max_chars:
            current = candidate
        else:
            if current:
                chunks.append(current)
            current = piece
    if current:
        chunks.append(current)
    return chunks


def split_long_text(text: str, max_chars: int = MAX_CHARS_PER_REQUEST, longest_word: int | None = None) -> list[str]:
    """Split text into requests of at most max_chars, on sentence ends where possible.

    A sentence longer than the limit is cut at clause ends, then between words. A
    word longer than `longest_word` (default: max_chars) is cut inside (`cut_word`),
    the only way to send it at all; a shorter one over max_chars goes alone, whole.
    """
    longest_word = max_chars if longest_word is None else longest_word
    text = normalise_space(text)
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    for sentence in _pieces(text, _SENTENCE_END):
        if len(sentence) <= max_chars:
            pieces.append(sentence)
            continue
        for clause in _pieces(sentence, _CLAUSE_END):
            if len(clause) <= max_chars:
                pieces.append(clause)
                continue
            words = [part for word in clause.split() for part in cut_word(word, longest_word)]
            pieces.extend(_pack(words, max_chars))
    return _pack(pieces, max_chars)


class StreamSplitter:
    """Turns text fragments arriving in any shape into messages that are safe to send.

    `feed` returns the complete words seen so far (a trailing fragment may be
    half a word, so it waits); `finish` returns what is left at end of input.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, fragment: str) -> list[str]:
        self._pending += fragment
        # Only text followed by whitespace is known to end on a word boundary. `\Z`,
        # not `$`: `$` also matches before a trailing newline, which would hold the
        # last word of every line until the next input arrives.
        match = _LAST_SPACE.search(self._pending)
        if match is None:
            return self._cut_endless_word()
        ready, rest = self._pending[: match.start()], self._pending[match.end() :]
        if rest and _starts_with_punctuation(rest) and len(rest) <= LONGEST_WORD:
            # Punctuation that starts the next fragment belongs to the word before
            # it, so that word waits with it; everything before it is complete.
            before = _LAST_SPACE.search(ready)
            if before is None:
                return []
            ready, rest = ready[: before.start()], f"{ready[before.end() :]} {rest}"
        self._pending = rest
        return self._emit(ready)

    def finish(self) -> list[str]:
        ready, self._pending = self._pending, ""
        return self._emit(ready)

    def _cut_endless_word(self) -> list[str]:
        """A word longer than LONGEST_WORD goes out in pieces as it comes: held for its end,
        it could grow for as long as the input lasts."""
        if len(self._pending) <= LONGEST_WORD:
            return []
        *ready, self._pending = cut_word(self._pending, LONGEST_WORD)
        return ready

    @property
    def pending(self) -> str:
        return self._pending

    @staticmethod
    def _emit(text: str) -> list[str]:
        text = normalise_space(text)
        return [text] if text else []
