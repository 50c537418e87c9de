"""One request's path from text to protocol messages, on the server.

`TextBuffer` decides *when* text is spoken: like the hosted model, audio lags a
few words behind the text until a sentence ends, `<flush>` arrives or the
client ends the stream. `Renderer` decides *what* is sent: it runs the engine,
resamples to the format's rate with soxr, cuts exact 80 ms chunks, encodes
them and puts each word's timestamp just before the chunk where it starts.
"""

from __future__ import annotations

import bisect
import contextvars
import re
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import soxr

from gradium_cli.audio.encoder import ChunkEncoder
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import OutputFormat
from gradium_cli.protocol.text import FLUSH_TAG
from gradium_cli.server.engine import EngineVoice, SpeechEngine, Synthesis
from gradium_cli.server.textprep import DictionaryRule, Pause, SpokenWord, prepare

_SENTENCE_END = re.compile(r"[.!?…][\"'”’)\]]*$")
_CLAUSE_END = re.compile(r"[,;:—–][\"'”’)\]]*$")
# Text without sentence or clause ends is spoken in units of at most this many
# words, so audio lags at most a few words behind it (the hosted model's "a few").
MAX_UNIT_WORDS = 5
# A `<break ...>` tag spans at most this many tokens (textprep._BREAK_MAX_TOKENS):
# an unterminated "<break" must not hold back the rest of the text.
_TAG_MAX_TOKENS = 6


@dataclass
class TextBuffer:
    """Pending words of one request and the policy for when to speak them.

    Units end at sentence ends, clause ends (`,` `;` `:` dashes), every
    MAX_UNIT_WORDS words in between, and at `<flush>`. Each rule looks only at
    the tokens themselves, never at how they were split into messages: a text
    sent whole or word by word is cut into the same units, so it is spoken with
    the same words and timestamps. A token is complete when its message arrives
    (messages are joined with a space), so a unit is released as soon as the
    message holding its last token does.
    """

    tokens: list[str] = field(default_factory=list)
    total_chars: int = 0
    # Dictionary phrases (textprep.phrase_lengths): a unit never ends inside one, so a
    # phrase is still matched whole; deciding that needs the next longest-1 tokens.
    longest_phrase: int = 1
    phrase_span: Callable[[Sequence[str], int], int] | None = None

    def add(self, text: str) -> None:
        # The service inserts one space between messages, and whitespace runs collapse.
        self.total_chars += len(text)
        self.tokens.extend(text.replace(FLUSH_TAG, f" {FLUSH_TAG} ").split())

    def take(self, final: bool) -> list[tuple[str, bool]]:
        """Units ready to speak now, as (text, flush) pairs; flush pads the last chunk.

        Small units also mean the first unit's audio goes out while the next is
        still being synthesised: time to first audio does not grow with the text.
        """
        units: list[tuple[str, bool]] = []
        start = 0
        while (found := self._unit_end(start, final)) is not None:
            end, flush = found
            words = [token for token in self.tokens[start:end] if token != FLUSH_TAG]
            if words or flush:
                units.append((" ".join(words), flush))
            start = end
        del self.tokens[:start]
        if final:
            units.append((" ".join(self.tokens), True))
            self.tokens.clear()
        return units

    def _unit_end(self, start: int, final: bool) -> tuple[int, bool] | None:
        """(end of the complete unit starting at `start`, whether `<flush>` ends it), or None."""
        words = 0
        tag_tokens = 0  # tokens of the `<break ...>` tag being read; 0 outside one
        for index in range(start, len(self.tokens)):
            token = self.tokens[index]
            if token == FLUSH_TAG:
                return index + 1, True
            if tag_tokens or token.lower().startswith("<break"):
                tag_tokens += 1
                if ">" in token or tag_tokens >= _TAG_MAX_TOKENS:
                    tag_tokens = 0
                continue
            words += 1
            if _SENTENCE_END.search(token) or _CLAUSE_END.search(token):
                return index + 1, False  # a phrase's inner words carry no punctuation
            if words >= MAX_UNIT_WORDS:
                end = self._past_phrases(start, index + 1, final)
                return None if end is None else (end, False)
        return None

    def _past_phrases(self, start: int, end: int, final: bool) -> int | None:
        """`end` moved past a dictionary phrase it would cut; None until the tokens to tell have come."""
        if self.phrase_span is None or self.longest_phrase < 2:
            return end
        moved = True
        while moved:
            if len(self.tokens) < end + self.longest_phrase - 1 and not final:
                return None
            moved = False
            for at in range(max(start, end - self.longest_phrase + 1), end):
                span = self.phrase_span(self.tokens, at)
                if at + span > end and FLUSH_TAG not in self.tokens[end : at + span]:
                    end, moved = at + span, True
                    break
        return end


@dataclass(frozen=True)
class RenderSettings:
    fmt: OutputFormat
    voice: EngineVoice
    rewrite_rules: list[str] | None = None
    dictionary: list[DictionaryRule] = field(default_factory=list)
    client_req_id: str | None = None


@dataclass
class _Word:
    text: str
    start_s: float
    stop_s: float


# The client_req_id of the request this thread is rendering: the built-in engine's
# process (server/pipe.py) records it before each engine call, so that if eSpeak
# kills the process the client knows which request's text did it.
rendering_request: contextvars.ContextVar[str | None] = contextvars.ContextVar("rendering_request", default=None)


_resamplers = threading.local()


def resample_whole(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """`soxr.resample(samples, rate_in, rate_out, quality="HQ")` (float32), the same output
    (tests/test_render_repeatable.py), from a resampler kept per thread and pair of rates:
    a one-shot call designs its filter every time, ~0.5 ms of a 5-word unit's ~1 ms."""
    streams: dict[tuple[int, int], soxr.ResampleStream] = _resamplers.__dict__.setdefault("streams", {})
    stream = streams.get((rate_in, rate_out))
    if stream is None:
        stream = streams[rate_in, rate_out] = soxr.ResampleStream(rate_in, rate_out, 1, dtype="float32", quality="HQ")
    try:
        return np.asarray(stream.resample_chunk(samples, last=True), dtype=np.float32)
    finally:
        stream.clear()  # whole pieces: nothing carries over to the next call


class Renderer:
    """Stateful text → messages for one request; blocking (run it in a worker thread)."""

    def __init__(self, engine: SpeechEngine, settings: RenderSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.fmt = settings.fmt
        self.encoder = ChunkEncoder(settings.fmt)
        self._carry = np.zeros(0, dtype=np.int16)
        self._chunks_sent = 0
        self._words: deque[_Word] = deque()  # timestamps whose audio has not been sent yet, in time order
        self._opened = False
        self._given_text = False
        self.audio_seconds = 0.0

    # ------------------------------------------------------------------ public

    def render(self, text: str, *, flush: bool, final: bool = False) -> list[m.ServerMessage]:
        rendering_request.set(self.settings.client_req_id)  # this thread's context copy only
        out: list[m.ServerMessage] = []
        if not self._opened:
            self._opened = True
            preamble = self.encoder.preamble()
            if preamble:
                # A priming frame (start_s == stop_s) carries the WAV header, so every
                # later message holds exactly 80 ms of samples.
                out.append(self._audio(preamble, 0.0, 0.0))
        self._given_text = self._given_text or bool(text.strip())
        for piece_group in self._segments(text):
            self._append(piece_group)
        if final and self._given_text and not self._chunks_sent and not len(self._carry):
            # Text with nothing speakable in it (markup only: "<b></b>"): one chunk of silence,
            # as eSpeak gives for ".", so a client gets audio and not an empty stream. A request
            # given no text at all (a stream that ended) still ends with no audio.
            self._carry = np.zeros(self.fmt.chunk_samples, dtype=np.int16)
        if flush and len(self._carry) % self.fmt.chunk_samples:
            pad = self.fmt.chunk_samples - len(self._carry) % self.fmt.chunk_samples
            self._carry = np.concatenate([self._carry, np.zeros(pad, dtype=np.int16)])
        out.extend(self._drain_chunks())
        if flush:
            out.extend(self._stamps(until_s=float("inf")))
        if final:
            tail = self.encoder.finish()
            if tail:
                end = self._chunks_sent * self.fmt.chunk_samples / self.fmt.sample_rate
                out.append(self._audio(tail, end, end))
        return out

    # ----------------------------------------------------------------- private

    def _segments(self, text: str) -> list[list[SpokenWord] | Pause]:
        """Runs of words between pauses: each run is one engine call."""
        groups: list[list[SpokenWord] | Pause] = []
        for piece in prepare(text, rewrite_rules=self.settings.rewrite_rules, dictionary=self.settings.dictionary):
            if isinstance(piece, Pause):
                groups.append(piece)
            elif groups and isinstance(groups[-1], list):
                groups[-1].append(piece)
            else:
                groups.append([piece])
        return groups

    def _timeline_s(self) -> float:
        """Where newly appended audio starts in the request's audio timeline."""
        samples = self._chunks_sent * self.fmt.chunk_samples + len(self._carry)
        return samples / self.fmt.sample_rate

    def _append(self, group: list[SpokenWord] | Pause) -> None:
        rate = self.fmt.sample_rate
        if isinstance(group, Pause):
            silence = np.zeros(round(group.seconds * rate), dtype=np.int16)
            self._carry = np.concatenate([self._carry, silence])
            return
        starts, pieces = [], []
        offset = 0
        for word in group:
            starts.append(offset)
            pieces.append(word.spoken)
            offset += len(word.spoken) + 1
        synthesis = self.engine.synthesize(" ".join(pieces), self.settings.voice)
        base = self._timeline_s()
        self._words.extend(self._word_times(group, starts, synthesis, base))
        self._carry = np.concatenate([self._carry, self._resample(synthesis.samples)])

    @staticmethod
    def _word_times(group: list[SpokenWord], starts: list[int], synthesis: Synthesis, base: float) -> list[_Word]:
        """Fold the engine's word spans back onto the client's original words.

        eSpeak reports some pairs as one word ("from the", "of the"): a word with
        no span of its own shares its spoken neighbour's span, split by length,
        so every input word gets its timestamp.
        """
        spans: dict[int, tuple[float, float]] = {}
        for span in synthesis.words:
            index = bisect.bisect_right(starts, span.char_start) - 1
            if index < 0:
                continue
            start, stop = spans.get(index, (span.start_s, span.stop_s))
            spans[index] = (min(start, span.start_s), max(stop, span.stop_s))
        if not spans:
            return []
        # Each spanned word owns the unspanned words up to the next spanned one; words
        # before the first span belong to the first spanned word.
        owners = sorted(spans)
        groups: dict[int, list[int]] = {owner: [owner] for owner in owners}
        groups[owners[0]] = list(range(owners[0] + 1))
        for owner, following in zip(owners, [*owners[1:], len(group)], strict=True):
            groups[owner] += list(range(owner + 1, following))
        words: list[_Word] = []
        for owner in owners:
            members = sorted(set(groups[owner]))
            start, stop = spans[owner]
            weights = [max(1, len(group[i].spoken)) for i in members]
            total = sum(weights)
            edge = start
            for index, weight in zip(members, weights, strict=True):
                share = (stop - start) * weight / total
                words.append(_Word(group[index].original, round(base + edge, 3), round(base + edge + share, 3)))
                edge += share
        return words

    def _resample(self, samples: np.ndarray) -> np.ndarray:
        if self.engine.sample_rate == self.fmt.sample_rate or samples.size == 0:
            return samples.astype(np.int16, copy=False)
        # In float, rounded here: soxr's int16 output is dithered (digital silence came out
        # as ±1 noise), and that dither made the same input come out different by 1-2 LSB
        # from one run to the next in `gradium serve` (tests/test_render_repeatable.py).
        resampled = resample_whole(samples.astype(np.float32), self.engine.sample_rate, self.fmt.sample_rate)
        np.rint(resampled, out=resampled)
        np.clip(resampled, -32768, 32767, out=resampled)
        return resampled.astype(np.int16)

    def _drain_chunks(self) -> list[m.ServerMessage]:
        out: list[m.ServerMessage] = []
        size = self.fmt.chunk_samples
        full = len(self._carry) // size
        for index in range(full):
            chunk = self._carry[index * size : (index + 1) * size]
            start = self._chunks_sent * size / self.fmt.sample_rate
            stop = (self._chunks_sent + 1) * size / self.fmt.sample_rate
            out.extend(self._stamps(until_s=stop))
            payload = self.encoder.encode(chunk)
            self._chunks_sent += 1
            self.audio_seconds = stop
            if payload:  # Opus may hold a chunk back until its Ogg page fills
                out.append(self._audio(payload, round(start, 3), round(stop, 3)))
        self._carry = self._carry[full * size :]
        return out

    def _stamps(self, until_s: float) -> list[m.ServerMessage]:
        out: list[m.ServerMessage] = []
        while self._words and self._words[0].start_s < until_s:
            word = self._words.popleft()
            out.append(m.WordTimestamp(word.text, word.start_s, word.stop_s, client_req_id=self.settings.client_req_id))
        return out

    def _audio(self, payload: bytes, start: float, stop: float) -> m.Audio:
        return m.Audio(payload, start, stop, client_req_id=self.settings.client_req_id)
