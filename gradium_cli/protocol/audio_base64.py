"""Base64 of audio payloads: the bulk of the protocol, one string per 80 ms of audio.

pybase64 (SIMD) encodes ~20x and strictly decodes ~30x faster than the standard
library (bench/README.md), on both ends of every stream. protocol/ needs only the
standard library, so without pybase64 the same calls go to `base64`, with the same
results (tests/test_audio_base64.py).
"""

from __future__ import annotations

import base64
from types import ModuleType

fast: ModuleType | None
try:
    import pybase64 as fast
except ImportError:
    fast = None


def encode_audio(payload: bytes) -> str:
    if fast is not None:
        encoded: str = fast.b64encode_as_string(payload)
        return encoded
    return base64.b64encode(payload).decode("ascii")


def decode_audio(text: str | bytes) -> bytes:
    """`base64.b64decode(text, validate=True)`: raises ValueError on anything else.

    pybase64 also refuses padding after a complete group ("QUJD="), which the standard
    library accepts; what it refuses goes on to the standard library, so the two agree
    on every input and only invalid input pays twice.
    """
    if fast is not None:
        try:
            decoded: bytes = fast.b64decode(text, validate=True)
            return decoded
        except ValueError:
            pass
    return base64.b64decode(text, validate=True)


def decoded_size(text: str) -> int:
    """Bytes an audio field holds, for showing a frame: -1 where the client would refuse it."""
    try:
        return len(decode_audio(text))
    except ValueError:
        return -1
