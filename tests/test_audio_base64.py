"""The audio field's base64 (protocol/audio_base64.py): pybase64 where installed, the
standard library otherwise, and the same answer either way for every input."""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gradium_cli.protocol import audio_base64
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.audio_base64 import decode_audio, decoded_size, encode_audio

# The base64 alphabet with padding, its URL-safe cousins, whitespace, NUL and non-ASCII:
# what a broken or hostile server could put in an audio field.
FIELD_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" + "-_ \n\t\0é\u2028"


def standard(text: str | bytes) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        return None


def ours(text: str | bytes) -> bytes | None:
    try:
        return decode_audio(text)
    except ValueError:
        return None


def test_the_fast_path_is_what_these_tests_compare() -> None:
    # pybase64 is a dependency: without it the tests below would compare the standard
    # library with itself.
    assert audio_base64.fast is not None


@given(st.binary(max_size=4000))
def test_encoding_is_the_standard_librarys(payload: bytes) -> None:
    encoded = encode_audio(payload)
    assert encoded == base64.b64encode(payload).decode("ascii")
    assert decode_audio(encoded) == payload


@given(st.text(alphabet=FIELD_CHARS, max_size=40))
def test_decoding_agrees_with_the_standard_library_on_any_text(text: str) -> None:
    assert ours(text) == standard(text)


@given(st.binary(max_size=40))
def test_decoding_agrees_with_the_standard_library_on_any_bytes(raw: bytes) -> None:
    assert ours(raw) == standard(raw)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("QUJD", b"ABC"),
        ("QUJDRA==", b"ABCD"),
        # Padding after a complete group: pybase64 refuses it, the standard library takes it.
        ("QUJD=", b"ABC"),
        ("QUJD====", b"ABC"),
        ("QQ", None),
        ("QU JD", None),
        ("QUJD\n", None),
        ("QUJé", None),
        ("-_-_", None),
        ("\ud800", None),
    ],
)
def test_decoding_edge_cases(text: str, expected: bytes | None) -> None:
    assert ours(text) == expected == standard(text)


def test_decoded_size_shows_what_the_client_would_refuse() -> None:
    assert decoded_size(base64.b64encode(bytes(7680)).decode()) == 7680
    assert decoded_size("QUJD\n") == -1
    assert decoded_size("not base64!") == -1


def test_a_bad_audio_field_is_one_protocol_error() -> None:
    with pytest.raises(m.MessageError, match="not valid base64"):
        m.decode_server('{"type": "audio", "audio": "QUJ\u00e9", "start_s": 0, "stop_s": 0.08}')


def test_without_pybase64_the_protocol_layer_runs_on_the_standard_library() -> None:
    # protocol/ needs only the standard library: block pybase64's import in a fresh
    # interpreter and run a whole audio frame through encode and decode.
    script = """
import sys
sys.modules["pybase64"] = None  # `import pybase64` now raises ImportError
from gradium_cli.protocol import audio_base64, messages as m
assert audio_base64.fast is None
frame = m.encode(m.Audio(bytes(range(256)) * 30, 0.0, 0.08))
back = m.decode_server(frame)
assert back.audio == bytes(range(256)) * 30, "round trip"
assert audio_base64.decode_audio("QUJD=") == b"ABC"
try:
    m.decode_server('{"type": "audio", "audio": "QU JD"}')
except m.MessageError as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused: audio field is not valid base64"
