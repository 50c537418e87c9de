"""One request's path from text to protocol messages, on the server.

`TextBuffer` decides *when* text is spoken: like the hosted model, audio lags a
few words behind the text until a sentence ends, `<flush>` arrives or the
client ends the stream. `Renderer` decides *what* is sent: it runs the engine,
resamples to the format's rate with soxr, cuts exact 80 ms chunks, encodes
them and puts each word's timestamp just before the chunk where it starts.
"""

from __future__ import annotations

import bisect
import re
from collections import deque
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
# Past this many unspoken words the buffer speaks all but the last few, so audio
# keeps flowing for text that has no sentence ends (an LLM's run-on list).
MAX_LAG_WORDS = 16
LAG_WORDS = 4


@dataclass
class TextBuffer:
    """Pending words of one request and the policy for when to speak them."""

    tokens: list[str] = field(default_factory=list)
    total_chars: int = 0

    def add(self, text: str) -> None:
        # The service inserts one space between messages, and whitespace runs collapse.
        self.total_chars += len(text)
        self.tokens.extend(text.replace(FLUSH_TAG, f" {FLUSH_TAG} ").split())

    def take(self, final: bool) -> list[tuple[str, bool]]:
        """Units ready to speak now, as (text, flush) pairs; flush pads the last chunk.

        One unit per sentence, so the first sentence's audio goes out while the
        next is still being synthesised: time to first audio does not grow with
        the length of the text.
        """
        units: list[tuple[str, bool]] = []
        while FLUSH_TAG in self.tokens:
            index = self.tokens.index(FLUSH_TAG)
            units += self._sentence_units(self.tokens[:index], flush=True)
            del self.tokens[: index + 1]
        cut = self._cut_point()
        if cut:
            units += self._sentence_units(self.tokens[:cut], flush=False)
            del self.tokens[:cut]
        if final:
            units += self._sentence_units(self.tokens, flush=True)
            self.tokens.clear()
        return units

    def _sentence_units(self, tokens: list[str], flush: bool) -> list[tuple[str, bool]]:
        """Split tokens at sentence ends (never inside a break tag); only the last unit flushes."""
        sentences: list[list[str]] = [[]]
        in_tag = False
        for token in tokens:
            sentences[-1].append(token)
            in_tag = (in_tag or token.startswith("<break")) and not token.endswith("/>")
            if not in_tag and _SENTENCE_END.search(token):
                sentences.append([])
        if not sentences[-1] and len(sentences) > 1:
            sentences.pop()
        return [(" ".join(words), flush and i == len(sentences) - 1) for i, words in enumerate(sentences)]

    def _cut_point(self) -> int:
        """How many leading tokens can be spoken now without waiting for context."""
        last_sentence_end = 0
        for index, token in enumerate(self.tokens[:-1]):
            if _SENTENCE_END.search(token):
                last_sentence_end = index + 1
        if last_sentence_end:
            return self._outside_tag(last_sentence_end)
        if len(self.tokens) > MAX_LAG_WORDS:
            return self._outside_tag(len(self.tokens) - LAG_WORDS)
        return 0

    def _outside_tag(self, cut: int) -> int:
        # Never cut a `<break time="1s" />` tag in two: move the cut before it.
        opened = max((i for i, t in enumerate(self.tokens[:cut]) if t.startswith("<break")), default=-1)
        if opened >= 0 and not any(t.endswith("/>") for t in self.tokens[opened:cut]):
            return opened
        return cut


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
        self.audio_seconds = 0.0

    # ------------------------------------------------------------------ public

    def render(self, text: str, *, flush: bool, final: bool = False) -> list[m.ServerMessage]:
        out: list[m.ServerMessage] = []
        if not self._opened:
            self._opened = True
            preamble = self.encoder.preamble()
            if preamble:
                # A priming frame (start_s == stop_s) carries the WAV header, so every
                # later message holds exactly 80 ms of samples.
                out.append(self._audio(preamble, 0.0, 0.0))
        for piece_group in self._segments(text):
            self._append(piece_group)
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
        resampled = soxr.resample(samples, self.engine.sample_rate, self.fmt.sample_rate, quality="HQ")
        return np.asarray(resampled, dtype=np.int16)

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
