"""The sans-I/O protocol core, byte by byte: no sockets here."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradium_cli.errors import AuthError, ProtocolError, RequestError, ServerError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import FORMATS, lookup_format
from gradium_cli.protocol.session import State, TtsSession
from gradium_cli.protocol.settings import padding_bonus_to_speed, speed_to_padding_bonus, validate_json_config
from gradium_cli.protocol.text import LONGEST_WORD, StreamSplitter, cut_word, split_long_text


def test_setup_encodes_json_config_as_string_like_the_sdk() -> None:
    frame = m.encode(m.Setup(voice_id="YTpq7expH9539ERJ", output_format="pcm", json_config={"temp": 0.5}))
    assert (
        frame
        == '{"type":"setup","voice_id":"YTpq7expH9539ERJ","output_format":"pcm","json_config":"{\\"temp\\": 0.5}"}'
    )


def test_decode_client_accepts_json_config_string_or_object_and_null_voice() -> None:
    as_string = m.decode_client('{"type":"setup","voice":null,"json_config":"{\\"temp\\": 0.2}"}')
    as_object = m.decode_client('{"type":"setup","voice_id":null,"json_config":{"temp":0.2}}')
    assert isinstance(as_string, m.Setup) and isinstance(as_object, m.Setup)
    assert as_string.json_config == as_object.json_config == {"temp": 0.2}
    assert as_string.output_format == "wav"


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("not json", "malformed JSON"),
        ("[1, 2]", "one JSON object"),
        ('{"text": "hi"}', "type"),
        ('{"type": "speak"}', "unknown message type 'speak'"),
        ('{"type": "text"}', "missing field 'text'"),
        ('{"type": "text", "text": 5}', "must be str"),
        ('{"type": "setup", "close_ws_on_eos": "no"}', "close_ws_on_eos"),
        ('{"type": "setup", "json_config": "{bad"}', "json_config is not valid JSON"),
    ],
)
def test_decode_client_rejects_with_policy_code(frame: str, needle: str) -> None:
    with pytest.raises(m.MessageError) as caught:
        m.decode_client(frame)
    assert needle in caught.value.message
    assert caught.value.code == 1008


def test_binary_frames_are_refused() -> None:
    with pytest.raises(m.MessageError, match="binary"):
        m.decode_client(b"\x00\x01")


def test_server_audio_round_trip_and_unknown_fields_kept() -> None:
    audio = m.Audio(b"\x01\x02" * 10, 0.0, 0.08, client_req_id="a")
    decoded = m.decode_server(m.encode(audio))
    assert decoded == audio
    stamp = m.decode_server('{"type":"text","text":"Hi,","start_s":0.1,"stop_s":0.4,"stream_id":0,"future":1}')
    assert isinstance(stamp, m.WordTimestamp) and stamp.text == "Hi," and stamp.extra == {"future": 1}
    unknown = m.decode_server('{"type":"need_something","x":1,"client_req_id":"r"}')
    assert isinstance(unknown, m.UnknownMessage) and unknown.client_req_id == "r"


def test_bad_base64_is_a_protocol_error() -> None:
    with pytest.raises(m.MessageError, match="base64"):
        m.decode_server('{"type":"audio","audio":"***","start_s":0,"stop_s":0.08}')


def test_formats_chunk_sizes() -> None:
    assert FORMATS["pcm"].chunk_bytes == 7680
    assert FORMATS["ulaw_8000"].chunk_bytes == 640
    assert FORMATS["pcm_16000"].chunk_bytes == 2560
    assert FORMATS["pcm_22050"].chunk_bytes == 3528
    assert FORMATS["opus"].chunk_bytes is None
    assert lookup_format("mulaw_8000") is FORMATS["ulaw_8000"]
    assert lookup_format("mp3") is None


def _ready(req: str | None = None) -> str:
    return m.encode(m.Ready("rid", client_req_id=req))


def test_session_happy_path() -> None:
    session = TtsSession()
    assert json.loads(session.setup(m.Setup(output_format="pcm")))["type"] == "setup"
    session.text("Hello")  # text before ready is allowed: the SDK does it
    session.end_of_stream()
    assert isinstance(session.receive(_ready()), m.Ready)
    session.receive(m.encode(m.Audio(b"\0\0", 0, 0.08)))
    session.receive('{"type":"end_of_stream"}')
    assert session.state is State.ENDED and session.done


@pytest.mark.parametrize(
    "steps",
    [
        ["text"],
        ["setup", "setup"],
        ["setup", "eos", "text"],
        ["setup", "recv_audio"],
        ["setup", "recv_ready", "recv_ready"],
        ["recv_ready"],
    ],
)
def test_session_rejects_illegal_sequences(steps: list[str]) -> None:
    session = TtsSession()
    actions = {
        "setup": lambda: session.setup(m.Setup()),
        "text": lambda: session.text("x"),
        "eos": session.end_of_stream,
        "recv_ready": lambda: session.receive(_ready()),
        "recv_audio": lambda: session.receive(m.encode(m.Audio(b"", 0, 0))),
    }
    with pytest.raises(ProtocolError):
        for step in steps:
            actions[step]()


@pytest.mark.parametrize(
    ("frame", "error"),
    [
        ('{"type":"error","message":"API key is revoked or expired","code":1008}', AuthError),
        ('{"type":"error","message":"voice_id \'x\' not found","code":1008}', RequestError),
        ('{"type":"error","message":"boom","code":1011}', ServerError),
    ],
)
def test_error_frames_map_onto_the_exception_tree(frame: str, error: type[Exception]) -> None:
    session = TtsSession()
    session.setup(m.Setup())
    with pytest.raises(error):
        session.receive(frame)
    assert session.state is State.FAILED


def test_speed_mapping_is_symmetric_and_bounded() -> None:
    assert speed_to_padding_bonus(1.0) == 0
    assert speed_to_padding_bonus(2.0) == -4.0 and speed_to_padding_bonus(0.5) == 4.0
    assert padding_bonus_to_speed(speed_to_padding_bonus(1.3)) == pytest.approx(1.3, rel=1e-3)
    with pytest.raises(ValueError):
        speed_to_padding_bonus(3.0)
    assert validate_json_config({"temp": 5}) == ["json_config 'temp' must be between 0.0 and 1.4, got 5"]
    assert validate_json_config({"temp": True}) == ["json_config 'temp' must be a number"]
    assert validate_json_config({"whatever": 1, "cfg_coef": 2}) == []


def test_splitter_joins_partial_words_and_keeps_punctuation() -> None:
    splitter = StreamSplitter()
    sent = []
    for fragment in ["hel", "lo wor", "ld", ", how", " are you?", " "]:
        sent += splitter.feed(fragment)
    sent += splitter.finish()
    assert sent == ["hello", "world,", "how are", "you?"]
    assert " ".join(sent) == "hello world, how are you?"


def test_long_text_splits_on_sentences_within_limit() -> None:
    text = " ".join(f"Sentence number {i} is here." for i in range(200))
    chunks = split_long_text(text, 300)
    assert all(len(c) <= 300 for c in chunks)
    assert all(c.endswith(".") for c in chunks)
    assert " ".join(chunks) == text


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20), max_size=30))
def test_splitter_never_changes_the_text(fragments: list[str]) -> None:
    splitter = StreamSplitter()
    sent: list[str] = []
    for fragment in fragments:
        sent += splitter.feed(fragment)
    sent += splitter.finish()
    # The server joins messages with one space: the result is the input, whitespace-normalised.
    assert " ".join(sent) == " ".join("".join(fragments).split())
    assert all(s and s == s.strip() for s in sent)


@given(st.text(max_size=3000))
def test_long_text_split_preserves_words(text: str) -> None:
    chunks = split_long_text(text, 200)
    assert all(0 < len(chunk) <= 200 for chunk in chunks)
    # Every character but whitespace is sent, in order; words that fit are sent whole.
    assert "".join("".join(chunks).split()) == "".join(text.split())
    if all(len(word) <= 200 for word in text.split()):
        assert " ".join(chunks).split() == text.split()


CLINGING = "\u0301\u200d\ufe0f\U0001f3fd"  # a combining accent, ZWJ, a variation selector, a skin tone


@given(st.text(alphabet="ab .," + CLINGING, max_size=400), st.integers(1, 40))
def test_a_word_longer_than_a_request_is_cut_between_characters(text: str, max_chars: int) -> None:
    chunks = split_long_text(text, max_chars)
    assert all(0 < len(chunk) <= max_chars for chunk in chunks)
    assert "".join("".join(chunks).split()) == "".join(text.split())
    for word in text.split():
        pieces = cut_word(word, max_chars)
        assert "".join(pieces) == word and all(0 < len(piece) <= max_chars for piece in pieces)
        # A mark, joiner or modifier starts a piece only where the piece before had no better
        # cut: nothing but such characters after its first.
        for before, piece in itertools.pairwise(pieces):
            if piece[0] in CLINGING:
                assert not before[1:].strip(CLINGING)


def test_a_base64_blob_is_sent_in_pieces_that_fit() -> None:
    blob = "QUJD" * 1000
    assert split_long_text(f"Key: {blob}. Done.", 1500) == [
        "Key:",
        blob[:1500],
        blob[1500:3000],
        f"{blob[3000:]}. Done.",
    ]
    accented = "e\u0301" * 10  # 20 characters, a cut after any e would strand its accent
    assert cut_word(accented, 5) == [
        "e\u0301e\u0301",
        "e\u0301e\u0301",
        "e\u0301e\u0301",
        "e\u0301e\u0301",
        "e\u0301e\u0301",
    ]


def test_the_stream_splitter_sends_an_endless_word_as_it_comes() -> None:
    splitter = StreamSplitter()
    sent: list[str] = []
    for _ in range(100):
        sent += splitter.feed("y" * 97)  # `yes | tr -d '\\n'`: never a space
        assert len(splitter.pending) <= LONGEST_WORD
    assert sent and all(len(message) == LONGEST_WORD for message in sent)
    sent += splitter.finish()
    assert "".join(sent) == "y" * 9700
    # Punctuation that opens the next fragment still waits with its word; an endless one does not.
    splitter = StreamSplitter()
    assert splitter.feed("Hi ,") == []
    assert splitter.feed("there ") == ["Hi ,there"]
    splitter = StreamSplitter()
    assert splitter.feed("Hi ,") == []
    assert splitter.feed("=" * (LONGEST_WORD + 5)) == ["Hi"]
    assert splitter.pending == "," + "=" * (LONGEST_WORD + 5)
    assert splitter.feed("=") == ["," + "=" * (LONGEST_WORD - 1)]
    assert splitter.finish() == ["=" * 7]


def test_a_word_past_the_request_size_but_within_the_limit_goes_whole() -> None:
    # stream ends requests near its session's few seconds: no reason to cut a word inside.
    assert split_long_text("Quiet rivers. Old songs.", 5, longest_word=60) == ["Quiet", "rivers.", "Old", "songs."]
    assert split_long_text("Quiet rivers.", 5) == ["Quiet", "river", "s."]
