"""Nothing finished waits for more input: when text is released, not only what comes out.

Properties (hypothesis) for the three places that hold text back — the client's
stream splitter, its line feeder and the server's text buffer — under random
fragmentation, newlines included; a property that message boundaries never
change what the server says; and the same timeliness on the wire of a real
`gradium serve` process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import lookup_format
from gradium_cli.protocol.text import FLUSH_TAG, StreamSplitter
from gradium_cli.server.catalog import DEFAULT_VOICE
from gradium_cli.server.engine import get_engine
from gradium_cli.server.synth import _CLAUSE_END, _SENTENCE_END, MAX_UNIT_WORDS, Renderer, RenderSettings, TextBuffer
from gradium_cli.server.textprep import DictionaryRule, SpokenWord, phrase_lengths, prepare
from gradium_cli.streaming.feeder import TextFeeder
from tests.servers import free_port, gradium_exe, wait_for_port

CI_BUDGET = settings(deadline=None, derandomize=True, database=None)

WORDS = ["one", "two", "Hello,", "world.", "fine!", "really?", "(quoted)", "x", "état", "C#", "2", "*", ",", "..."]
# Text made of words and whitespace of every kind the input may carry.
texts = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from([" ", "\n", "  ", "\t", " \n", "\n\n"])), max_size=25
).map(lambda pairs: "".join(word + space for word, space in pairs))


def fragments_of(text: str, cuts: list[int]) -> list[str]:
    """`text` cut at the given offsets (any offset: mid-word, mid-whitespace, at a newline)."""
    points = sorted({min(max(cut, 0), len(text)) for cut in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


# ---------------------------------------------------------------- client: splitter and feeder


@CI_BUDGET
@given(texts, st.lists(st.integers(0, 400), max_size=12))
def test_splitter_releases_text_ending_in_whitespace_at_once(text: str, cuts: list[int]) -> None:
    splitter = StreamSplitter()
    sent: list[str] = []
    received = ""
    for fragment in fragments_of(text, cuts):
        received += fragment
        sent += splitter.feed(fragment)
        if received[-1:].isspace():
            # Every complete word is on the wire now, in order, unchanged.
            assert " ".join(sent).split() == received.split(), (received, sent)
            assert splitter.pending.strip() == ""
    sent += splitter.finish()
    assert " ".join(sent).split() == text.split()


def test_splitter_releases_the_last_word_of_a_line() -> None:
    # `$` matches before a trailing newline: the old pattern held "now." here.
    splitter = StreamSplitter()
    assert splitter.feed("This line should be spoken now.\n") == ["This line should be spoken now."]
    assert splitter.pending == ""


def test_splitter_keeps_leading_punctuation_with_its_word_but_releases_the_rest() -> None:
    splitter = StreamSplitter()
    assert splitter.feed("one two three ,") == ["one two"]
    assert splitter.feed("four ") == ["three ,four"]


@CI_BUDGET
@given(texts, st.lists(st.integers(0, 400), max_size=12), st.booleans())
def test_feeder_releases_every_complete_line_and_word_at_once(text: str, cuts: list[int], every_line: bool) -> None:
    feeder = TextFeeder(flush_every_line=every_line)
    sent: list[str] = []
    received = ""
    for fragment in fragments_of(text, cuts):
        received += fragment
        sent += feeder.feed(fragment)
        words = [w for message in sent if message != FLUSH_TAG for w in message.split()]
        if received[-1:].isspace():
            assert words == received.split(), (received, sent)
        if every_line and received.endswith("\n") and words:
            # Interactive mode: a finished line is flushed, not just sent.
            assert sent[-1] == FLUSH_TAG
        if received.endswith("\n\n") and words:
            assert FLUSH_TAG in sent  # a blank line flushes
    sent += feeder.finish()
    assert [w for message in sent if message != FLUSH_TAG for w in message.split()] == text.split()


def test_feeder_idle_releases_a_partial_word_and_flushes() -> None:
    feeder = TextFeeder()
    assert feeder.feed("no end yet") == ["no end"]
    assert feeder.idle() == ["yet", FLUSH_TAG]
    assert feeder.idle() == []  # nothing new: no second flush


# ---------------------------------------------------------------- server: text buffer

tag_texts = st.lists(
    st.one_of(st.sampled_from(WORDS), st.just('<break time="0.2s" />'), st.just(FLUSH_TAG), st.just("<break")),
    max_size=30,
)


@CI_BUDGET
@given(tag_texts, st.lists(st.integers(0, 40), max_size=10))
def test_text_buffer_speaks_sentence_ends_and_lags_at_most_a_few_words(tokens: list[str], cuts: list[int]) -> None:
    """After every message, take(final=False) has spoken every sentence end, and at
    most MAX_UNIT_WORDS - 1 words wait (none of them ending a sentence or clause)."""
    buffer = TextBuffer()
    spoken: list[str] = []
    points = sorted({min(c, len(tokens)) for c in cuts} | {0, len(tokens)})
    for a, b in itertools.pairwise(points):
        buffer.add(" ".join(tokens[a:b]))
        spoken += [t for text, _flush in buffer.take(final=False) for t in text.split()]
        assert FLUSH_TAG not in buffer.tokens
        words = _words_outside_tags(buffer.tokens)
        assert len(words) < MAX_UNIT_WORDS, buffer.tokens
        assert not any(_SENTENCE_END.search(w) or _CLAUSE_END.search(w) for w in words), buffer.tokens
    spoken += [t for text, _flush in buffer.take(final=True) for t in text.split()]
    assert spoken == [t for t in " ".join(tokens).split() if t != FLUSH_TAG]


def _words_outside_tags(tokens: list[str]) -> list[str]:
    """Tokens that are words, not parts of a `<break ...>` tag (at most 6 tokens long)."""
    words, in_tag = [], 0
    for token in tokens:
        if in_tag or token.lower().startswith("<break"):
            in_tag += 1
            if ">" in token or in_tag == 6:
                in_tag = 0
        else:
            words.append(token)
    return words


def test_text_buffer_speaks_a_sentence_ended_by_the_latest_message() -> None:
    buffer = TextBuffer()
    buffer.add("This whole sentence came in one message.")
    # Before the fix the last token waited for another message, and with it the sentence.
    assert buffer.take(final=False) == [("This whole sentence came in", False), ("one message.", False)]
    assert buffer.tokens == []


def test_text_buffer_unit_boundaries_do_not_depend_on_messages() -> None:
    text = "one two three four five six seven eight nine ten eleven twelve"
    whole, by_word = TextBuffer(), TextBuffer()
    whole.add(text)
    units_whole = whole.take(final=False) + whole.take(final=True)
    units_by_word: list[tuple[str, bool]] = []
    for word in text.split():
        by_word.add(word)
        units_by_word += by_word.take(final=False)
    units_by_word += by_word.take(final=True)
    assert (
        units_whole
        == units_by_word
        == [
            ("one two three four five", False),
            ("six seven eight nine ten", False),
            ("eleven twelve", True),
        ]
    )


# ---------------------------------------------------------------- server: what is said


@dataclass
class Said:
    units: list[tuple[str, bool]]  # what each engine call was given, and whether it flushed
    words: list[tuple[str, float, float]]  # word timestamps: text, start, stop
    audio_s: float


def render(messages: list[str]) -> Said:
    """TextBuffer → Renderer as ws.Request.run drives them, one message at a time."""
    fmt = lookup_format("pcm_16000")
    assert fmt is not None
    renderer = Renderer(get_engine(), RenderSettings(fmt=fmt, voice=DEFAULT_VOICE.engine_voice))
    buffer = TextBuffer()
    out: list[m.ServerMessage] = []
    rendered: list[tuple[str, bool]] = []
    for message in [*messages, None]:
        if message is not None:
            buffer.add(message)
        units = buffer.take(final=message is None)
        rendered += units
        for index, (text, flush) in enumerate(units):
            out += renderer.render(text, flush=flush, final=message is None and index == len(units) - 1)
    words = [(w.text, w.start_s, w.stop_s) for w in out if isinstance(w, m.WordTimestamp)]
    return Said(rendered, words, renderer.audio_seconds)


SAID = [
    "So here is a long run of words without any sentence end at all that keeps going on",
    "Short one. Then a clause, and another; then twenty more words that go on and on and on and on",
    'Numbers like 1234 and 12:30 stay, pauses <break time="0.3s" /> too, and the end.',
]
# eSpeak's run-to-run noise (its pitch-flutter phase carries over between calls): audio
# lengths move by a few samples, word starts by up to ~10 ms over a few units; a word's stop is its last loud
# sample, and the fading release of a final stop consonant crosses that line or not (~70 ms).
START_NOISE_S = 0.02
STOP_NOISE_S = 0.1


@settings(CI_BUDGET, max_examples=12)
@given(st.sampled_from(SAID), st.lists(st.integers(1, 30), max_size=8))
def test_any_split_on_whitespace_says_the_same_words_at_the_same_times(text: str, cuts: list[int]) -> None:
    tokens = text.split()
    points = sorted({min(c, len(tokens)) for c in cuts} | {0, len(tokens)})
    whole = render([text])
    split = render([" ".join(tokens[a:b]) for a, b in itertools.pairwise(points)])
    # The engine is given exactly the same units: where the breaks fall depends on the words only.
    assert split.units == whole.units
    assert [w for w, _, _ in split.words] == [w for w, _, _ in whole.words] == _words_outside_tags(tokens)
    for (_, a0, a1), (_, b0, b1) in zip(whole.words, split.words, strict=True):
        assert abs(a0 - b0) <= START_NOISE_S and abs(a1 - b1) <= STOP_NOISE_S
    assert split.audio_s == pytest.approx(whole.audio_s, abs=0.081)  # whole 80 ms chunks: a few samples can add one


# ---------------------------------------------------------------- the wire of `gradium serve`


async def _first_audio_after(url: str, messages: list[str], wait_each: float, wait_last: float) -> int | None:
    """Send messages one by one; the number sent when the first audio arrives (None: never)."""
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "setup", "voice_id": "YTpq7expH9539ERJ", "output_format": "pcm_16000"}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 15))
        assert ready["type"] == "ready"
        for count, message in enumerate(messages, start=1):
            await ws.send(json.dumps({"type": "text", "text": message}))
            deadline = time.monotonic() + (wait_last if count == len(messages) else wait_each)
            while (left := deadline - time.monotonic()) > 0:
                try:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), left))
                except TimeoutError:
                    break
                if frame["type"] == "audio" and frame["stop_s"] > frame["start_s"]:
                    await ws.send(json.dumps({"type": "end_of_stream"}))
                    async for _ in ws:  # to the server's close, so the socket shuts at once
                        pass
                    return count
                assert frame["type"] == "text", frame  # a word timestamp may come first
    return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `gradium serve` process, as a user runs it, for the tests below: its WebSocket URL."""
    port = free_port()
    env = {**os.environ, "GRADIUM_DATA_DIR": str(tmp_path_factory.mktemp("serve-data"))}
    proc = subprocess.Popen([gradium_exe(), "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"ws://127.0.0.1:{port}/api/speech/tts"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize(
    # Shorter than one 5-word unit too, so only the sentence end can release it.
    "sentence",
    ["A sentence sent whole is heard now.", "Heard right now."],
)
def test_served_sentence_sent_whole_is_heard_without_another_message(served: str, sentence: str) -> None:
    sent = asyncio.run(_first_audio_after(served, [sentence], 0, 10.0))
    assert sent == 1


def test_served_unpunctuated_words_one_by_one_are_heard_after_at_most_five(served: str) -> None:
    words = ["words", "that", "keep", "coming", "with", "no", "end", "in", "sight"][:MAX_UNIT_WORDS]
    # Words 1-4 may wait (the model needs context); after the fifth, audio comes
    # without any further message.
    sent = asyncio.run(_first_audio_after(served, words, 0.3, 10.0))
    assert sent is not None and sent <= 5


def test_units_never_cut_a_dictionary_phrase_and_wait_only_to_know() -> None:
    rules = [DictionaryRule("New York City", "noo york"), DictionaryRule("Gradium", "gray dee um")]
    text = "I flew to the New York City office today and back again"

    def units(messages: list[str]) -> list[tuple[str, bool]]:
        buffer = TextBuffer([], 0, *phrase_lengths(rules))
        out: list[tuple[str, bool]] = []
        for message in messages:
            buffer.add(message)
            out += buffer.take(final=False)
        return out + buffer.take(final=True)

    expected = [("I flew to the New York City", False), ("office today and back again", False), ("", True)]
    assert units([text]) == units(text.split()) == expected
    # The phrase is one dictionary match inside its unit, said as the rule says.
    pieces = prepare(expected[0][0], dictionary=rules)
    assert SpokenWord("New York City", "noo york") in pieces
    # With multi-word rules a 5-word cut waits for the next (longest - 1) words, to know no phrase spans it.
    buffer = TextBuffer([], 0, *phrase_lengths(rules))
    buffer.add("one two three four five")
    assert buffer.take(final=False) == []  # "four five ..." could still be a phrase
    buffer.add("six seven")
    assert buffer.take(final=False) == [("one two three four five", False)]
