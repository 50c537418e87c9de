"""Lengths of decoded audio files, for tests that compare two renders of the same text."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf


def sounding_seconds(path: Path) -> float:
    """Seconds up to the last audible sample.

    The server pads each request's last 80 ms chunk with silence, so whole-file lengths
    are whole chunks, and eSpeak's few-ms pitch-flutter jitter (server/engine.py) moves a
    render across a chunk boundary now and then: two renders of one text are compared on
    their sound, which that jitter changes by a few ms only.
    """
    # From bytes, so that libsndfile detects the container by content.
    samples, rate = sf.read(io.BytesIO(path.read_bytes()), dtype="float32", always_2d=True)
    audible = np.flatnonzero(np.abs(samples).max(axis=1) > 1e-3)
    return (int(audible[-1]) + 1 if audible.size else 0) / rate
