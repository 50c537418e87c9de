"""Tests for gradium_cli.server.textprep (PROTOCOL.md §5-7)."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradium_cli.server.textprep import (
    ALIASES,
    BREAK_MAX_SECONDS,
    BREAK_MIN_SECONDS,
    FLUSH_TAG,
    RULE_NAMES,
    DictionaryRule,
    Pause,
    Piece,
    SpokenWord,
    expand_rewrite_rules,
    join_messages,
    prepare,
    rewrite_word,
    sanitize_spoken,
    validate_dictionary_rewrite,
    validate_dictionary_word,
)

EN = expand_rewrite_rules("en")


def words(pieces: list[Piece]) -> list[SpokenWord]:
    return [p for p in pieces if isinstance(p, SpokenWord)]


def pauses(pieces: list[Piece]) -> list[float]:
    return [p.seconds for p in pieces if isinstance(p, Pause)]


# ------------------------------------------------------------------- join_messages


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (["foo", "bar"], "foo bar"),
        (["Hello, ", " world"], "Hello, world"),
        (["hel", "lo"], "hel lo"),
        (["word ", "word ", "word "], "word word word"),
        (["foo", "."], "foo ."),
        (["  a\n", "\tb  "], "a b"),
        ([], ""),
        (["", "  ", ""], ""),
        (["one"], "one"),
    ],
)
def test_join_messages(parts: list[str], expected: str) -> None:
    assert join_messages(parts) == expected


@given(st.lists(st.text()))
def test_join_messages_is_normalised(parts: list[str]) -> None:
    joined = join_messages(parts)
    assert "  " not in joined
    assert joined == joined.strip()
    assert all(c == " " or not c.isspace() for c in joined)
    # Joining never glues two messages' words together.
    assert joined.split() == [w for part in parts for w in part.split()]


# ------------------------------------------------------------ expand_rewrite_rules


def test_aliases_match_protocol() -> None:
    assert expand_rewrite_rules("en") == [
        "TimeEn",
        "Date",
        "AlNum",
        "NumberEn",
        "EmailEn",
        "UrlEn",
        "PhoneEn",
    ]
    assert expand_rewrite_rules("fr") == [
        "TimeFr",
        "Date",
        "AlNum",
        "NumberFr",
        "EmailFr",
        "UrlFr",
        "PhoneFr",
    ]
    assert expand_rewrite_rules("de") == [
        "TimeDe",
        "Date",
        "AlNum",
        "NumberDe",
        "EmailDe",
        "UrlDe",
        "PhoneDe",
    ]
    assert expand_rewrite_rules("es") == [
        "Date",
        "AlNum",
        "NumberEs",
        "EmailEs",
        "UrlEs",
        "PhoneEs",
    ]
    assert expand_rewrite_rules("pt") == [
        "Date",
        "AlNum",
        "NumberPt",
        "EmailPt",
        "UrlPt",
        "PhonePt",
    ]


def test_every_alias_names_real_rules() -> None:
    for names in ALIASES.values():
        assert set(names) <= set(RULE_NAMES)


def test_comma_list_is_expanded_and_deduplicated_in_order() -> None:
    assert expand_rewrite_rules("Date,NumberEn") == ["Date", "NumberEn"]
    assert expand_rewrite_rules("NumberEn, en") == [
        "NumberEn",
        "TimeEn",
        "Date",
        "AlNum",
        "EmailEn",
        "UrlEn",
        "PhoneEn",
    ]
    assert expand_rewrite_rules("fr,de")[:7] == expand_rewrite_rules("fr")
    assert expand_rewrite_rules("fr,de").count("Date") == 1


def test_expand_is_lenient_about_case_and_blanks() -> None:
    assert expand_rewrite_rules(" EN ") == EN
    assert expand_rewrite_rules("timeen,,date,") == ["TimeEn", "Date"]
    assert expand_rewrite_rules("") == []
    assert expand_rewrite_rules(" , ") == []


def test_unknown_rule_names_the_bad_rule_and_the_valid_ones() -> None:
    with pytest.raises(ValueError) as excinfo:
        expand_rewrite_rules("Date,Bogus")
    message = str(excinfo.value)
    assert "'Bogus'" in message
    assert "NumberEn" in message
    assert "en" in message


def test_unknown_rule_is_rejected_by_rewrite_word_and_prepare() -> None:
    with pytest.raises(ValueError, match="Nope"):
        rewrite_word("1234", ["Nope"])
    with pytest.raises(ValueError, match="Nope"):
        prepare("", rewrite_rules=["Nope"])


# ---------------------------------------------------------------------- rewrite_word


@pytest.mark.parametrize(
    ("rule", "word", "expected"),
    [
        # Date
        ("Date", "12/31/2020", "12-31 2020"),
        ("Date", "16/01/1980", "16-01 1980"),
        ("Date", "1/5.", "1-5."),
        ("Date", "31.12.2020", "31-12 2020"),
        ("Date", "13/13/2020", "13/13/2020"),
        # Time
        ("TimeEn", "12:30", "12.30"),
        ("TimeEn", "3:45PM!", "3.45PM!"),
        ("TimeEn", "12.30.", "12.30."),
        ("TimeEn", "12:75", "12:75"),
        ("TimeFr", "14:00?", "14h00?"),
        ("TimeFr", "9h15,", "9h15,"),
        ("TimeDe", "14:00", "14 Uhr 00"),
        ("TimeDe", "8:20.", "8 Uhr 20."),
        ("TimeDe", "22.45!", "22 Uhr 45!"),
        # Numbers, English
        ("NumberEn", "123", "123"),
        ("NumberEn", "1234", "1 thousand 234"),
        ("NumberEn", "1234.", "1 thousand 234."),
        ("NumberEn", "1999", "1999"),
        ("NumberEn", "1900", "1900"),
        ("NumberEn", "2100", "2100"),
        ("NumberEn", "2101", "2 thousand 101"),
        ("NumberEn", "1899", "1 thousand 899"),
        ("NumberEn", "1000", "1 thousand"),
        ("NumberEn", "1000000", "1 million"),
        ("NumberEn", "2500000", "2 million 500 thousand"),
        ("NumberEn", "1002003004", "1 billion 2 million 3 thousand 4"),
        ("NumberEn", "-4500", "minus 4 thousand 500"),
        ("NumberEn", "-5", "-5"),
        ("NumberEn", "1,234,567", "1 million 234 thousand 567"),
        ("NumberEn", "1,999", "1 thousand 999"),
        ("NumberEn", "0123", "0123"),
        ("NumberEn", "3.5", "3.5"),
        # Numbers, other languages
        ("NumberFr", "1234", "mille 234"),
        ("NumberFr", "2234", "2 mille 234"),
        ("NumberFr", "2000000", "2 millions"),
        ("NumberFr", "1000000", "un million"),
        ("NumberFr", "-4500", "moins 4 mille 500"),
        ("NumberFr", "123456000789", "123 milliards 456 millions 789"),
        ("NumberDe", "1234", "Tausend 234"),
        ("NumberDe", "2000000", "2 Millionen"),
        ("NumberDe", "1.234", "Tausend 234"),
        ("NumberEs", "1234", "mil 234"),
        ("NumberEs", "2000000", "2 millones"),
        ("NumberEs", "1000000000", "mil millones"),
        ("NumberEs", "2500000000", "2 mil 500 millones"),
        ("NumberPt", "1234", "mil 234"),
        ("NumberPt", "1234567", "um milhão 234 mil 567"),
        ("NumberPt", "3000000000", "3 bilhões"),
        # Email
        ("EmailEn", "foo.bar@gmail.com", "foo dot bar at gmail dot com"),
        ("EmailEn", "foo.bar@gmail.com.", "foo dot bar at gmail dot com."),
        ("EmailFr", "foo@gmail.com", "foo arobaze gmail point com"),
        ("EmailDe", "a-b@web.de", "a Bindestrich b at web Punkt D-E"),
        ("EmailEs", "a@b.com", "a arroba b punto com"),
        ("EmailPt", "a@b.com", "a arroba b ponto com"),
        ("EmailEn", "not@an-address", "not@an-address"),
        # URL
        ("UrlEn", "www.example.com", "www dot example dot com"),
        (
            "UrlEn",
            "https://www.example.com/path",
            "H-T-T-P-S colon slash slash www dot example dot com slash path",
        ),
        (
            "UrlEn",
            "http://sub.domain.co.uk",
            "H-T-T-P colon slash slash sub dot domain dot C-O dot U-K",
        ),
        (
            "UrlFr",
            "https://www.kyutai.fr",
            "H-T-T-P-S deux-points slash slash www point kyutai point F-R",
        ),
        (
            "UrlFr",
            "www.it-management.com/promo",
            "www point I-T tiret management point com slash promo",
        ),
        ("UrlEn", "http://localhost:8080/", "H-T-T-P colon slash slash localhost colon 8080 slash"),
        ("UrlEn", "Mr.Smith", "Mr.Smith"),
        ("UrlEn", "e.g.", "e.g."),
        # Phone
        ("PhoneEn", "+16502349653", "+1 6-5-0 2-3-4 9-6-5-3"),
        ("PhoneEn", "+1-650-234-9653", "+1 6-5-0 2-3-4 9-6-5-3"),
        ("PhoneEn", "07596854413", "0-7-5-9 6-8-5 4-4-1-3"),
        ("PhoneEn", "+447700900123", "+44 7-7-0 0-9-0 0-1-2-3"),
        ("PhoneEn", "+442000900123", "+44 2-0 0-0-9-0 0-1-2-3"),
        ("PhoneEn", "+330556791936", "+33 0-5 5-6 7-9 1-9 3-6"),
        ("PhoneFr", "0123456789", "01 23 45 67 89"),
        ("PhoneFr", "+330556791936", "+33 05 56 79 19 36"),
        ("PhoneDe", "+491511234567", "+49 1-5 1-1 2-3 4-5 6-7"),
        ("PhoneDe", "01511234567", "0-1-5 1-1 2-3 4-5 6-7"),
        ("PhoneEs", "+34612345678", "+34 6-1-2 3-4-5 6-7-8"),
        ("PhonePt", "+351912345678", "+351 9-1-2 3-4-5 6-7-8"),
        ("PhoneEn", "+81312345678", "+81312345678"),
        ("PhoneEn", "+1234", "+1234"),
        # AlNum
        ("AlNum", "AB12CD34!", "A-B 1-2 C-D 3-4!"),
        ("AlNum", "AB-123-CD", "A-B 1-2-3 C-D"),
        ("AlNum", "NASA", "NASA"),
        ("AlNum", "Ab12", "Ab12"),
        ("AlNum", "1234", "1234"),
    ],
)
def test_rule_examples(rule: str, word: str, expected: str) -> None:
    assert rewrite_word(word, [rule]) == expected


@pytest.mark.parametrize(
    ("alias", "word", "expected"),
    [
        ("en", "12/31/2020", "12-31 2020"),
        ("en", "12:30", "12.30"),
        ("en", "1234", "1 thousand 234"),
        ("en", "foo.bar@gmail.com", "foo dot bar at gmail dot com"),
        ("en", "+16502349653", "+1 6-5-0 2-3-4 9-6-5-3"),
        ("en", "07596854413", "0-7-5-9 6-8-5 4-4-1-3"),
        ("en", "AB12CD34!", "A-B 1-2 C-D 3-4!"),
        ("en", "www.example.com", "www dot example dot com"),
        ("en", "hello,", "hello,"),
        ("fr", "14:00?", "14h00?"),
        ("fr", "+330556791936", "+33 05 56 79 19 36"),
        ("de", "14:00", "14 Uhr 00"),
        ("de", "31.12.2020", "31-12 2020"),
        ("es", "12:30", "12:30"),  # es and pt have no time rule
        ("pt", "1234", "mil 234"),
    ],
)
def test_aliases_apply_the_right_rules(alias: str, word: str, expected: str) -> None:
    assert rewrite_word(word, [alias]) == expected


def test_first_matching_rule_wins() -> None:
    assert rewrite_word("10:00", ["TimeFr", "TimeEn"]) == "10h00"
    assert rewrite_word("10:00", ["TimeEn", "TimeFr"]) == "10.00"
    assert rewrite_word("1/5", ["Date", "TimeEn"]) == "1-5"
    # A rule that keeps the word (a year) still counts as the match.
    assert rewrite_word("1999", ["NumberEn", "AlNum"]) == "1999"


def test_affixes_survive_a_rewrite() -> None:
    assert rewrite_word('"(12:30)!"', EN) == '"(12.30)!"'
    assert rewrite_word("...", EN) == "..."
    assert rewrite_word("", EN) == ""


def test_rewrite_word_without_rules_is_identity() -> None:
    assert rewrite_word("1234", []) == "1234"


@given(st.text(max_size=40), st.lists(st.sampled_from(RULE_NAMES), max_size=5))
def test_rewrite_word_never_raises(word: str, rules: list[str]) -> None:
    assert isinstance(rewrite_word(word, rules), str)


@given(st.text(alphabet="0123456789", min_size=1, max_size=5000))
def test_huge_numbers_are_safe(digits: str) -> None:
    # Python refuses int() on > 4300 digits; the rules must bound lengths first.
    assert isinstance(rewrite_word(digits, EN + expand_rewrite_rules("fr,de,es,pt")), str)


# ------------------------------------------------------------------------- prepare


def test_plain_tokens_pass_through() -> None:
    assert prepare("Hello,  world!\n") == [
        SpokenWord("Hello,", "Hello,"),
        SpokenWord("world!", "world!"),
    ]
    assert prepare("") == []
    assert prepare("   \n\t ") == []


def test_flush_tokens_are_dropped() -> None:
    assert prepare(f"a {FLUSH_TAG} b {FLUSH_TAG}") == [SpokenWord("a", "a"), SpokenWord("b", "b")]


def test_flush_glued_to_a_word_is_not_spoken() -> None:
    assert prepare("word<flush>") == [SpokenWord("word<flush>", "word")]


def test_rewrite_rules_apply_in_prepare() -> None:
    assert prepare("Call +16502349653 at 12:30.", rewrite_rules=["en"]) == [
        SpokenWord("Call", "Call"),
        SpokenWord("+16502349653", "+1 6-5-0 2-3-4 9-6-5-3"),
        SpokenWord("at", "at"),
        SpokenWord("12:30.", "12.30."),
    ]


# --- breaks


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ('<break time="1.5s" />', 1.5),
        ('<break time="1.5s"/>', 1.5),
        ('<break time="500ms" />', 0.5),
        ('<break time="500ms"/>', 0.5),
        ("<break time='1s' />", 1.0),
        ("<break time=1s/>", 1.0),
        ('<break time="2" />', 2.0),
        ('<break  time = "0.25s"  />', 0.25),
        ('<BREAK TIME="1S" />', 1.0),
        ('<break\ntime="1s"\n/>', 1.0),
    ],
)
def test_break_spellings(text: str, seconds: float) -> None:
    pieces = prepare(f"before {text} after")
    assert pieces == [SpokenWord("before", "before"), Pause(seconds), SpokenWord("after", "after")]


@pytest.mark.parametrize(
    ("time", "seconds"),
    [
        ("3s", BREAK_MAX_SECONDS),
        ("2.5s", BREAK_MAX_SECONDS),
        ("50ms", BREAK_MIN_SECONDS),
        ("0s", BREAK_MIN_SECONDS),
        ("100ms", 0.1),
        ("2000ms", 2.0),
        ("9" * 500 + "s", BREAK_MAX_SECONDS),
    ],
)
def test_break_is_clamped(time: str, seconds: float) -> None:
    assert pauses(prepare(f'<break time="{time}" />')) == [pytest.approx(seconds)]


def test_break_split_over_tokens_as_separate_parts() -> None:
    # LiveKit reassembles tags, but other clients send `<break`, `time="1s"`, `/>`.
    text = join_messages(["Hello", "<break", 'time="1s"', "/>", "world"])
    assert prepare(text) == [SpokenWord("Hello", "Hello"), Pause(1.0), SpokenWord("world", "world")]


def test_unreadable_break_tag_is_silent_but_keeps_originals() -> None:
    pieces = prepare('a <break time="soon" /> b <break/> c')
    assert pauses(pieces) == []
    assert [(w.original, w.spoken) for w in words(pieces)] == [
        ("a", "a"),
        ("<break", ""),
        ('time="soon"', ""),
        ("/>", ""),
        ("b", "b"),
        ("<break/>", ""),
        ("c", "c"),
    ]


def test_unterminated_break_is_ordinary_text() -> None:
    pieces = prepare("<break time=1s and then a lot of words")
    assert pauses(pieces) == []
    assert [w.original for w in words(pieces)] == [
        "<break",
        "time=1s",
        "and",
        "then",
        "a",
        "lot",
        "of",
        "words",
    ]
    assert words(pieces)[0].spoken == "break"


def test_break_ends_dictionary_phrases() -> None:
    rules = [DictionaryRule("New York", "noo york")]
    pieces = prepare('New <break time="1s" /> York', dictionary=rules)
    assert pieces == [SpokenWord("New", "New"), Pause(1.0), SpokenWord("York", "York")]


# --- dictionary


GRADIUM = DictionaryRule("Gradium", "gray dee um")


def test_dictionary_is_case_insensitive_by_default() -> None:
    pieces = prepare("gradium GRADIUM Gradium", dictionary=[GRADIUM])
    assert [w.spoken for w in words(pieces)] == ["gray dee um"] * 3
    assert [w.original for w in words(pieces)] == ["gradium", "GRADIUM", "Gradium"]


def test_case_sensitive_rule_matches_exact_case_only() -> None:
    rule = DictionaryRule("US", "you ess", case_sensitive=True)
    pieces = prepare("US us Us", dictionary=[rule])
    assert [w.spoken for w in words(pieces)] == ["you ess", "us", "Us"]


def test_case_sensitive_rule_beats_insensitive_one() -> None:
    rules = [DictionaryRule("us", "uss"), DictionaryRule("US", "you ess", case_sensitive=True)]
    assert [w.spoken for w in words(prepare("US us", dictionary=rules))] == ["you ess", "uss"]


def test_first_of_two_equal_rules_wins() -> None:
    rules = [DictionaryRule("Gradium", "first"), DictionaryRule("gradium", "second")]
    assert words(prepare("Gradium", dictionary=rules))[0].spoken == "first"


def test_dictionary_keeps_punctuation() -> None:
    pieces = prepare('Try Gradium. "Gradium", (Gradium)!', dictionary=[GRADIUM])
    assert [(w.original, w.spoken) for w in words(pieces)] == [
        ("Try", "Try"),
        ("Gradium.", "gray dee um."),
        ('"Gradium",', '"gray dee um",'),
        ("(Gradium)!", "(gray dee um)!"),
    ]


def test_dictionary_matches_whole_words_only() -> None:
    pieces = prepare("Gradiums preGradium Gradium's", dictionary=[GRADIUM])
    assert all(w.spoken == w.original for w in words(pieces))


def test_rule_with_its_own_punctuation() -> None:
    rules = [DictionaryRule("Dr", "drive"), DictionaryRule("Dr.", "doctor")]
    assert [w.spoken for w in words(prepare("Dr. Dr, Dr", dictionary=rules))] == [
        "doctor",
        "drive,",
        "drive",
    ]


def test_phrases_and_longest_phrase_wins() -> None:
    rules = [
        DictionaryRule("New York", "noo york"),
        DictionaryRule("New York City", "the big apple"),
        DictionaryRule("York", "yorrk"),
    ]
    pieces = prepare("I love new  york city. New York! York", dictionary=rules)
    assert [(w.original, w.spoken) for w in words(pieces)] == [
        ("I", "I"),
        ("love", "love"),
        ("new york city.", "the big apple."),
        ("New York!", "noo york!"),
        ("York", "yorrk"),
    ]


def test_phrase_rule_with_irregular_whitespace() -> None:
    rule = DictionaryRule("  New \u00a0 York ", "noo york")
    assert words(prepare("New York", dictionary=[rule])) == [SpokenWord("New York", "noo york")]


def test_phrase_needs_punctuation_free_inner_tokens() -> None:
    rule = DictionaryRule("New York", "noo york")
    pieces = prepare("New, York", dictionary=[rule])
    assert [w.spoken for w in words(pieces)] == ["New,", "York"]


def test_dictionary_beats_rewrite_rules() -> None:
    rules = [DictionaryRule("1234", "twelve thirty-four")]
    pieces = prepare("1234 1234", rewrite_rules=["en"], dictionary=rules)
    assert [w.spoken for w in words(pieces)] == ["twelve thirty-four"] * 2
    pieces = prepare("1234 5678", rewrite_rules=["en"], dictionary=rules)
    assert [w.spoken for w in words(pieces)] == ["twelve thirty-four", "5 thousand 678"]


def test_phoneme_rewrite_is_kept() -> None:
    rule = DictionaryRule("Gradium", "[[gr'eIdi@m]]")
    assert words(prepare("Gradium!", dictionary=[rule])) == [SpokenWord("Gradium!", "[[gr'eIdi@m]]!")]


def test_mixed_respelling_and_phonemes() -> None:
    rule = DictionaryRule("GTX", "gee [[ti:]] ex")
    assert words(prepare("GTX", dictionary=[rule]))[0].spoken == "gee [[ti:]] ex"


@pytest.mark.parametrize(
    "rewrite", ["[[unterminated", "oops]] more", "<speak>x</speak>", "a\x00b", "[[a [[b]]", "[[]]"]
)
def test_malformed_rewrites_are_defused(rewrite: str) -> None:
    spoken = words(prepare("word", dictionary=[DictionaryRule("word", rewrite)]))[0].spoken
    assert_safe(spoken, allow_phonemes=True)


@pytest.mark.parametrize("rewrite", ["[[unterminated", "oops]] more", "a\x00b", "[[a [[b]]"])
def test_validate_dictionary_rewrite_rejects(rewrite: str) -> None:
    with pytest.raises(ValueError):
        validate_dictionary_rewrite(rewrite)


def test_empty_rewrite_silences_the_word() -> None:
    assert words(prepare("um hello", dictionary=[DictionaryRule("um", "")]))[0] == SpokenWord("um", "")
    validate_dictionary_rewrite("")


def test_rules_with_blank_originals_are_ignored() -> None:
    assert prepare("a b", dictionary=[DictionaryRule("  ", "x")]) == [
        SpokenWord("a", "a"),
        SpokenWord("b", "b"),
    ]


def test_validate_dictionary_word() -> None:
    validate_dictionary_word("Gradium", 16)
    validate_dictionary_word("New York", 2)
    for bad in ["", "   ", "\t", "a\nb", "bad\x00", "x\x7f"]:
        with pytest.raises(ValueError):
            validate_dictionary_word(bad, 16)
    with pytest.raises(ValueError, match="a dictionary phrase has at most 2 words, not 3"):
        validate_dictionary_word("New York City", 2)


def test_validate_dictionary_rewrite_accepts_good_ones() -> None:
    for good in ["gray dee um", "[[gr'eIdi@m]]", "gee [[ti:]] ex [[Eks]]"]:
        validate_dictionary_rewrite(good)


# --- hostile user text


def assert_safe(spoken: str, *, allow_phonemes: bool = False) -> None:
    outside = re.sub(r"\[\[[^\[\]]+\]\]", " ", spoken) if allow_phonemes else spoken
    assert "[" not in outside
    assert "]" not in outside
    assert "<" not in spoken
    assert ">" not in spoken
    assert all(unicodedata.category(c) not in ("Cc", "Cs") for c in spoken)
    assert spoken == " ".join(spoken.split())


@pytest.mark.parametrize(
    "text",
    [
        "[[h@'loU]] world",
        "a[[b c]]d",
        "]] [[ [[[ ]]]",
        "[[",
        "<speak><voice name='x'>hi</voice></speak>",
        "x < y > z",
        "\x00\x01\x1b[31mred\x1b[0m",
        "<break time=",
        "</break>",
        "<<break time='1s'/>>",
    ],
)
def test_user_text_cannot_inject_phonemes_or_markup(text: str) -> None:
    for piece in words(prepare(text, rewrite_rules=EN)):
        assert_safe(piece.spoken)


def test_user_brackets_do_not_survive_next_to_dictionary_phonemes() -> None:
    rule = DictionaryRule("Gradium", "[[gr'eIdi@m]]")
    pieces = words(prepare("[[Gradium]] [Gradium]", dictionary=[rule]))
    for piece in pieces:
        assert_safe(piece.spoken, allow_phonemes=True)
    assert [p.original for p in pieces] == ["[[Gradium]]", "[Gradium]"]


def test_sanitize_spoken_keeps_words_apart() -> None:
    assert sanitize_spoken("foo[1]") == "foo 1"
    assert sanitize_spoken("a<b>c") == "a c"
    assert sanitize_spoken("a\x00b") == "ab"
    assert sanitize_spoken("") == ""


# --- properties

fragment = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=8),
    st.sampled_from(["<", ">", "[[", "]]", "/>", "<break", 'time="1s"', FLUSH_TAG, " ", "\n"]),
)
hostile = st.lists(fragment, max_size=30).map("".join)
some_rules = st.lists(st.sampled_from([*RULE_NAMES, *ALIASES]), max_size=4)
some_dictionary = st.lists(
    st.builds(
        DictionaryRule,
        original=st.text(min_size=1, max_size=20),
        rewrite=st.text(max_size=20),
        case_sensitive=st.booleans(),
    ),
    max_size=5,
)


@settings(max_examples=300)
@given(hostile, some_rules, some_dictionary)
def test_prepare_never_raises_and_output_is_safe(text: str, rules: list[str], dictionary: list[DictionaryRule]) -> None:
    pieces = prepare(text, rewrite_rules=rules, dictionary=dictionary)
    for piece in pieces:
        if isinstance(piece, Pause):
            assert BREAK_MIN_SECONDS <= piece.seconds <= BREAK_MAX_SECONDS
        else:
            assert_safe(piece.spoken, allow_phonemes=True)


@given(hostile.filter(lambda t: "<break" not in t.lower()), some_rules, some_dictionary)
def test_originals_are_the_tokens_in_order(text: str, rules: list[str], dictionary: list[DictionaryRule]) -> None:
    pieces = prepare(text, rewrite_rules=rules, dictionary=dictionary)
    originals = [w.original for w in words(pieces)]
    assert " ".join(originals).split() == [t for t in text.split() if t != FLUSH_TAG]


@given(
    st.lists(
        st.one_of(
            st.text(alphabet=st.characters(exclude_categories=("Z", "Cc")), min_size=1),
            st.sampled_from(['<break time="1s" />', "<break", "/>", FLUSH_TAG]),
        ),
        max_size=30,
    )
)
def test_originals_keep_order_around_breaks(parts: list[str]) -> None:
    text = " ".join(parts)
    originals = " ".join(w.original for w in words(prepare(text))).split()
    tokens = [t for t in text.split() if t != FLUSH_TAG]
    # Originals are the tokens minus those consumed by valid break tags: a subsequence.
    remaining = iter(tokens)
    assert all(any(o == t for t in remaining) for o in originals)
