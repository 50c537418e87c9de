"""The eSpeak NG engine, run for real: audio content, word timing, voices, threads."""

from __future__ import annotations

import re
import threading

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradium_cli.server.engine import (
    ENGINE_RATE,
    Engine,
    EngineVoice,
    Synthesis,
    get_engine,
)

US = EngineVoice("en-us")
HELLO = "Hello world, this is a test."


@pytest.fixture(scope="module")
def engine() -> Engine:
    return get_engine()


def rms(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def fundamental_hz(samples: npt.NDArray[np.int16]) -> float:
    """Median F0 of the loud 40 ms frames, from the autocorrelation peak in 70-400 Hz."""
    x = samples.astype(np.float64)
    frame = int(ENGINE_RATE * 0.04)
    low, high = ENGINE_RATE // 400, ENGINE_RATE // 70
    level = rms(samples)
    estimates = []
    for begin in range(0, len(x) - frame, frame):
        chunk = x[begin : begin + frame]
        if np.sqrt(np.mean(chunk**2)) < level:
            continue
        chunk = chunk - chunk.mean()
        corr = np.correlate(chunk, chunk, mode="full")[frame - 1 :]
        lag = low + int(np.argmax(corr[low:high]))
        estimates.append(ENGINE_RATE / lag)
    assert estimates, "no voiced frames"
    return float(np.median(estimates))


def spoken(text: str, synthesis: Synthesis) -> list[str]:
    return [text[w.char_start : w.char_end] for w in synthesis.words]


def long_term_spectrum_db(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """Average power spectrum up to ~8.6 kHz in dB: timbre, blind to small time shifts."""
    size = 512
    count = len(samples) // size
    frames = samples[: count * size].astype(np.float64).reshape(count, size) * np.hanning(size)
    power = np.mean(np.abs(np.fft.rfft(frames, axis=1)) ** 2, axis=0)
    return np.asarray(10 * np.log10(power[:200] + 1e-9), dtype=np.float64)


def assert_same_speech(got: Synthesis, expected: Synthesis) -> None:
    """Equal up to eSpeak's pitch-flutter phase, which carries over between calls.

    So not bit-identical: same words, timing within 15 ms (now and then a phoneme
    comes out one 11 ms frame shorter), same timbre and the same pitch. Another
    text, voice, rate or pitch fails at least one of these.
    """
    slack = max(0.025, 0.02 * expected.duration_s)
    assert got.duration_s == pytest.approx(expected.duration_s, abs=slack)
    assert [(w.char_start, w.char_end) for w in got.words] == [(w.char_start, w.char_end) for w in expected.words]
    for mine, theirs in zip(got.words, expected.words, strict=True):
        assert mine.start_s == pytest.approx(theirs.start_s, abs=0.015)
        assert mine.stop_s == pytest.approx(theirs.stop_s, abs=0.015)
    timbre = np.corrcoef(long_term_spectrum_db(got.samples), long_term_spectrum_db(expected.samples))
    assert timbre[0, 1] > 0.98
    assert fundamental_hz(got.samples) == pytest.approx(fundamental_hz(expected.samples), rel=0.05)


def assert_well_formed(synthesis: Synthesis) -> None:
    previous_stop = 0.0
    for word in synthesis.words:
        assert 0 <= word.char_start < word.char_end
        assert 0.0 <= word.start_s < word.stop_s <= synthesis.duration_s
        assert word.start_s >= previous_stop - 1e-9, "words overlap"
        previous_stop = word.stop_s


# ---------------------------------------------------------------- audio


def test_hello_world_audio_and_words(engine: Engine) -> None:
    result = engine.synthesize(HELLO, US)
    assert engine.sample_rate == ENGINE_RATE == 22050
    assert result.samples.dtype == np.int16
    assert result.samples.ndim == 1
    assert rms(result.samples) > 1000
    assert 1.0 < result.duration_s < 3.0
    assert result.duration_s == pytest.approx(len(result.samples) / ENGINE_RATE)

    assert spoken(HELLO, result) == ["Hello", "world", "this", "is", "a", "test"]
    expected = [(m.start(), m.end()) for m in re.finditer(r"\w+", HELLO)]
    assert [(w.char_start, w.char_end) for w in result.words] == expected
    assert_well_formed(result)
    starts = [w.start_s for w in result.words]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    # The last word ends where the sound ends, give or take the kept tail.
    assert result.duration_s - 0.06 < result.words[-1].stop_s <= result.duration_s


def test_silence_is_trimmed(engine: Engine) -> None:
    result = engine.synthesize(HELLO, US)
    loud = np.flatnonzero(np.abs(result.samples.astype(np.int32)) > 64)
    assert loud[0] / ENGINE_RATE < 0.05
    # The fading release of the last sound is kept (up to 0.1 s), never more.
    assert (len(result.samples) - loud[-1]) / ENGINE_RATE <= 0.101


def test_comma_pause_is_not_part_of_the_word(engine: Engine) -> None:
    result = engine.synthesize(HELLO, US)
    world, this = result.words[1], result.words[2]
    # stop_s is the time of the word's last audible sample: the gap starts one sample later
    # (round, not int: a float time can fall a hair short of its sample index).
    gap = result.samples[round(world.stop_s * ENGINE_RATE) + 1 : int(this.start_s * ENGINE_RATE)]
    assert this.start_s - world.stop_s > 0.05
    assert np.abs(gap.astype(np.int32)).max() <= 64


def test_longer_text_gives_proportionally_longer_audio(engine: Engine) -> None:
    sentence = "The quick brown fox jumps over the lazy dog. "
    one = engine.synthesize(sentence, US)
    four = engine.synthesize(sentence * 4, US)
    assert 3.0 < four.duration_s / one.duration_s < 5.0
    assert len(four.words) == 4 * len(one.words) == 36
    assert_well_formed(four)
    assert spoken(sentence * 4, four) == (sentence * 4).replace(".", "").split()


def test_rate_changes_duration(engine: Engine) -> None:
    text = "Speaking rate changes how long this sentence takes to say."
    slow = engine.synthesize(text, EngineVoice("en-us", rate_wpm=120))
    fast = engine.synthesize(text, EngineVoice("en-us", rate_wpm=350))
    assert slow.duration_s > 2.0 * fast.duration_s
    assert len(slow.words) == len(fast.words) == 10


def test_rate_beyond_native_range_is_clamped(engine: Engine) -> None:
    # From 450 wpm eSpeak time-compresses with libsonic and its word events stop
    # matching the audio, so the engine stays at its fastest native rate instead.
    text = "The quick brown fox jumps over the lazy dog. " * 3
    fastest = engine.synthesize(text, EngineVoice("en-us", rate_wpm=449))
    beyond = engine.synthesize(text, EngineVoice("en-us", rate_wpm=1000))
    slowest = engine.synthesize(text, EngineVoice("en-us", rate_wpm=80))
    below = engine.synthesize(text, EngineVoice("en-us", rate_wpm=10))
    assert_same_speech(beyond, fastest)
    assert_same_speech(below, slowest)
    assert spoken(text, beyond) == text.replace(".", "").split()
    assert_well_formed(beyond)


def test_pitch_changes_fundamental(engine: Engine) -> None:
    text = "A low voice and a high voice say the same words."
    low = engine.synthesize(text, EngineVoice("en-us", pitch=10))
    high = engine.synthesize(text, EngineVoice("en-us", pitch=90))
    assert fundamental_hz(high.samples) > 1.4 * fundamental_hz(low.samples)
    # Pitch alone does not change the timing.
    assert low.duration_s == pytest.approx(high.duration_s, rel=0.05)


def test_pitch_range_changes_audio(engine: Engine) -> None:
    flat = engine.synthesize(HELLO, EngineVoice("en-us", pitch_range=0))
    lively = engine.synthesize(HELLO, EngineVoice("en-us", pitch_range=100))
    assert not np.array_equal(flat.samples, lively.samples)


def test_same_input_gives_the_same_speech(engine: Engine) -> None:
    first = engine.synthesize(HELLO, US)
    engine.synthesize("Something else entirely.", EngineVoice("fr-fr+f3", pitch=90, rate_wpm=300))
    second = engine.synthesize(HELLO, US)
    assert_same_speech(second, first)


def test_same_speech_check_tells_settings_apart(engine: Engine) -> None:
    reference = engine.synthesize(HELLO, US)
    for other_text, other_voice in [
        ("Hello world, this is a toast.", US),
        (HELLO, EngineVoice("en-us", pitch=30)),
        (HELLO, EngineVoice("en-us", rate_wpm=190)),
        (HELLO, EngineVoice("en-us+m3")),
    ]:
        with pytest.raises(AssertionError):
            assert_same_speech(engine.synthesize(other_text, other_voice), reference)


# ---------------------------------------------------------------- phonemes


def test_phoneme_block_changes_audio_and_keeps_a_word(engine: Engine) -> None:
    plain_text = "the gradium voice"
    block_text = "the [[g@r'eIdi@m]] voice"
    plain = engine.synthesize(plain_text, US)
    phonetic = engine.synthesize(block_text, US)
    assert not np.array_equal(plain.samples, phonetic.samples)
    assert spoken(block_text, phonetic) == ["the", "[[g@r'eIdi@m]]", "voice"]
    assert_well_formed(phonetic)


def test_phoneme_block_with_several_words_stays_inside_block(engine: Engine) -> None:
    text = "[[h@'loU w'3:ld]] friend"
    result = engine.synthesize(text, US)
    block_end = text.index("]]") + 2
    inside = [w for w in result.words if w.char_start < block_end]
    assert len(inside) == 2
    assert inside[0].char_start == 0 and inside[-1].char_end == block_end
    assert all(w.char_end <= block_end for w in inside)
    assert spoken(text, result)[-1] == "friend"
    assert_well_formed(result)


def test_phonemes_flag_off_reads_brackets_as_text(engine: Engine) -> None:
    text = "say [[g@r'eIdi@m]] now"
    on = engine.synthesize(text, US)
    off = engine.synthesize(text, US, phonemes=False)
    assert not np.array_equal(on.samples, off.samples)
    assert len(off.words) > len(on.words) == 3


# ---------------------------------------------------------------- offsets


def test_non_ascii_offsets_are_characters(engine: Engine) -> None:
    text = "café naïve über Straße 😀 smile"
    result = engine.synthesize(text, US)
    words = spoken(text, result)
    assert words[:4] == ["café", "naïve", "über", "Straße"]
    assert words[-1] == "smile"
    assert_well_formed(result)


def test_whitespace_and_punctuation_offsets(engine: Engine) -> None:
    text = '  "Well,"\tshe said\r\n(quietly): don\'t   stop-it!  '
    result = engine.synthesize(text, US)
    assert spoken(text, result) == ["Well", "she", "said", "quietly", "don't", "stop-it"]
    assert_well_formed(result)


def test_numbers_read_as_several_words_stay_one_span(engine: Engine) -> None:
    text = "I have 123 apples and 4.5 pears."
    result = engine.synthesize(text, US)
    assert spoken(text, result) == ["I", "have", "123", "apples", "and", "4.5", "pears"]
    number = result.words[2]
    # "one hundred and twenty three" takes far longer than one syllable.
    assert number.stop_s - number.start_s > 0.8


def test_multi_word_entry_is_one_span_covering_both_words(engine: Engine) -> None:
    # eSpeak's English dictionary speaks "from the" and "of the" as one word, with
    # one WORD event: the span covers both, so callers can still map both back.
    text = "Hello from the other side, all of the above."
    result = engine.synthesize(text, US)
    assert spoken(text, result) == ["Hello", "from the", "other", "side", "all", "of the", "above"]
    assert_well_formed(result)


def test_multiple_sentences_keep_absolute_positions(engine: Engine) -> None:
    text = "First sentence. Second one! Third? Fourth, and last."
    result = engine.synthesize(text, US)
    assert spoken(text, result) == ["First", "sentence", "Second", "one", "Third", "Fourth", "and", "last"]
    assert_well_formed(result)
    assert result.words[-1].stop_s > result.duration_s - 0.06


PIECES = [
    "hello",
    "world",
    "Don't",
    "café",
    "naïve",
    "Straße",
    "123",
    "4.5",
    "$5",
    "50%",
    "e.g.",
    "www.example.com",
    "日本",
    "😀",
    "—",
    "(quiet)",
    '"quoted"',
    "[[g@r'eIdi@m]]",
    "[[h@'loU w'3:ld]]",
    ",",
    ".",
    "?",
    "!",
    "...",
]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=12),
    separators=st.lists(st.sampled_from([" ", "  ", "\n", "\t", ""]), min_size=12, max_size=12),
)
def test_spans_are_well_formed_for_any_mix(engine: Engine, pieces: list[str], separators: list[str]) -> None:
    text = "".join(p + s for p, s in zip(pieces, separators, strict=False))
    result = engine.synthesize(text, US)
    assert_well_formed(result)
    previous_end = 0
    for word in result.words:
        assert word.char_start >= previous_end, "char ranges overlap"
        assert word.char_end <= len(text)
        previous_end = word.char_end
        piece = text[word.char_start : word.char_end]
        assert piece.strip() == piece != ""


# ---------------------------------------------------------------- voices


def test_variants_and_languages_sound_different(engine: Engine) -> None:
    text = "Bonjour, hello."
    male = engine.synthesize(text, EngineVoice("en-us+m3"))
    female = engine.synthesize(text, EngineVoice("en-us+f3"))
    french = engine.synthesize(text, EngineVoice("fr-fr"))
    assert not np.array_equal(male.samples, female.samples)
    assert not np.array_equal(male.samples, french.samples)
    assert fundamental_hz(female.samples) > 1.3 * fundamental_hz(male.samples)
    for result in (male, female, french):
        assert rms(result.samples) > 500
        assert spoken(text, result) == ["Bonjour", "hello"]


@pytest.mark.parametrize("name", ["en-us", "en-gb", "fr-fr+m3", "de", "es", "pt-br", "cmn", "ja"])
def test_common_voices_speak(engine: Engine, name: str) -> None:
    assert engine.has_voice(name)
    result = engine.synthesize("one two", EngineVoice(name))
    assert rms(result.samples) > 500
    assert result.words


def test_list_voices(engine: Engine) -> None:
    voices = engine.list_voices()
    languages = {v.language for v in voices}
    assert {"en-us", "fr-fr", "de", "es", "pt-br"} <= languages
    assert len({v.language.split("-")[0] for v in voices}) > 50
    us = next(v for v in voices if v.language == "en-us")
    assert us.identifier == "gmw/en-US"
    assert us.name == "English_(America)"
    assert {v.gender for v in voices} <= {"male", "female", "unknown"}
    assert not any(v.identifier.startswith("!v/") for v in voices), "variants are not voices"


def test_every_listed_language_resolves(engine: Engine) -> None:
    for voice in engine.list_voices():
        assert engine.has_voice(voice.language), voice
        assert engine.has_voice(voice.identifier), voice


def test_has_voice(engine: Engine) -> None:
    for name in ["en-us", "EN-US", "en", "fr", "gmw/en-US", "English_(America)", "en-us+f3"]:
        assert engine.has_voice(name), name
    for name in ["", "xx-nope", "klingon-ish", "en-us+nope"]:
        assert not engine.has_voice(name), name


@pytest.mark.parametrize("name", ["xx-nope", "en-us+nope", ""])
def test_unknown_voice_raises(engine: Engine, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"unknown eSpeak voice {name!r}")):
        engine.synthesize("hello", EngineVoice(name))


@pytest.mark.parametrize("text", ["", " ", "\n\t  "])
def test_empty_text_gives_empty_synthesis(engine: Engine, text: str) -> None:
    result = engine.synthesize(text, EngineVoice("no-such-voice"))
    assert result.samples.dtype == np.int16
    assert len(result.samples) == 0
    assert result.words == []
    assert result.duration_s == 0.0


def test_get_engine_is_a_singleton() -> None:
    assert get_engine() is get_engine()


# ---------------------------------------------------------------- threads


def test_concurrent_synthesis_matches_sequential(engine: Engine) -> None:
    jobs = [
        (
            "The first thread reads this sentence aloud, then another one.",
            EngineVoice("en-us+f3", pitch=70),
        ),
        (
            "Le deuxième fil lit cette phrase, puis une autre encore.",
            EngineVoice("fr-fr+m3", rate_wpm=220),
        ),
        (
            "Der dritte Faden liest diesen Satz und danach noch einen.",
            EngineVoice("de", pitch_range=80),
        ),
        (
            "And [[fO:T]], the fourth, is quick: it speaks at three hundred words a minute.",
            EngineVoice("en-us", rate_wpm=300),
        ),
    ]
    alone = [engine.synthesize(text, voice) for text, voice in jobs]
    results: dict[int, list[Synthesis]] = {i: [] for i in range(len(jobs))}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def run(index: int) -> None:
        try:
            barrier.wait()
            text, voice = jobs[index]
            for _ in range(5):
                results[index].append(engine.synthesize(text, voice))
        except BaseException as error:  # surfaced in the main thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for index, expected in enumerate(alone):
        assert len(results[index]) == 5
        for got in results[index]:
            assert_same_speech(got, expected)
