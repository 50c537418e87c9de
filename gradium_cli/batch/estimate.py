"""What a text should cost and last, before any audio exists.

Used twice: `batch --dry-run` shows the estimate, and the quality checks flag
an item whose audio is far from it. Gradium bills one credit per character of
text (PROTOCOL.md §10). Speech runs at about 14 characters a second at speed 1
(measured on the local engine and in line with the ~750 credits per minute the
service quotes: 12.5 a second with pauses), plus a short fixed lead-in and tail.
"""

from __future__ import annotations

import re

from gradium_cli.protocol.settings import padding_bonus_to_speed
from gradium_cli.voice_settings import VoiceOptions, json_config

CHARS_PER_S = 14.0
FIXED_S = 0.25  # the silence around any utterance, however short
WORD = re.compile(r"\w+(?:['’]\w+)*")


def credits(text: str) -> int:
    return len(text)


def words(text: str) -> list[str]:
    """The spoken words of a text, lower case, without punctuation."""
    return [w.lower() for w in WORD.findall(text)]


def predicted_duration_s(text: str, speed: float | None = None) -> float:
    """Seconds of audio expected for `text`; `speed` is the --speed factor (1 = normal)."""
    characters = len(" ".join(text.split()))
    return FIXED_S + characters / (CHARS_PER_S * (speed or 1.0))


def speed_of(voice: VoiceOptions) -> float:
    """The speed factor a row's settings ask for (`speed`, or `padding_bonus` in its json_config)."""
    bonus = json_config(voice).get("padding_bonus")
    return padding_bonus_to_speed(float(bonus)) if isinstance(bonus, (int, float)) else 1.0
