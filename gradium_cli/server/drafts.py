"""Draft voices of the local server's voice designer (PROTOCOL.md §8): a prompt becomes an eSpeak voice.

A draft (`vox_emb_…`) is what `voice-generator/generate` makes from a description.
Its engine voice is a pure function of the prompt, the language and the sample's
index, so the same request gives the same voices and the drafts of one request
differ from each other. Drafts become ready a moment after generation (the
service computes them asynchronously, so clients must poll) and expire after a
TTL unless promoted into a custom voice, which keeps the draft's engine voice and
so speaks exactly like it.

Drafts live in one JSON file in the data dir, so a draft made by one `gradium`
command (each may run its own in-process server) can be promoted by the next.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gradium_cli.protocol.design import DRAFT_PREFIX, is_draft_id
from gradium_cli.server.catalog import LANGUAGE_BASE_VOICE
from gradium_cli.server.engine import EngineVoice
from gradium_cli.server.store import UID_ALPHABET, Collection

DEFAULT_DRAFT_TTL_S = 24 * 3600.0
DEFAULT_DRAFT_READY_S = 0.5
MAX_LIVE_DRAFTS = 500
CREDITS_PER_SAMPLE = 1000  # billed at generation; promotion is free (SDK docstring)

# Words of the prompt that steer the voice; matched as whole words, case-insensitive.
FEMALE_WORDS = {"female", "woman", "women", "feminine", "girl", "lady", "she", "her", "mother", "grandmother"}
MALE_WORDS = {"male", "man", "men", "masculine", "boy", "gentleman", "guy", "he", "his", "father", "grandfather"}
LOW_WORDS = {"deep", "low", "bass", "baritone", "gravelly", "booming"}
HIGH_WORDS = {"high", "squeaky", "shrill", "soprano", "bright", "childlike", "light"}
SLOW_WORDS = {"slow", "slowly", "measured", "leisurely", "drawling"}
FAST_WORDS = {"fast", "quick", "quickly", "rapid", "brisk", "energetic", "excited", "lively"}
LIVELY_WORDS = {"energetic", "excited", "lively", "expressive", "animated", "cheerful"}
FLAT_WORDS = {"calm", "monotone", "flat", "soothing", "relaxed"}
WHISPER_WORDS = {"whisper", "whispering", "whispered", "whispery", "breathy", "hushed"}

# eSpeak's 0-100 pitch scale: one band per pitch word, and where in its band each
# sample sits, far enough apart that two drafts of one prompt are heard (and measured)
# at different pitches. Below about 35 eSpeak's male variants bunch up at 75-80 Hz
# (a deep band of 20-60 put a prompt's first two drafts 4 % apart, at 78 and 75 Hz,
# which a listener, and tests/test_voice_design.py, could not tell apart), and under 20
# they fall into a growl. Measured F0 (en-us, male/female variants): deep 80-111 /
# 174-219 Hz, high 117-158 / 207-324 Hz, so no deep draft of a gender is as high as
# a high one.
PITCH_BANDS = {"low": (34, 64), "mid": (40, 70), "high": (65, 100)}
SAMPLE_PLACES = (0.5, 0.0, 1.0, 0.25, 0.75)
# Speaking rates (words per minute) per pace, and each sample's nudge to it.
PACE_WPM = {"slow": 135, "normal": 170, "fast": 215}
SAMPLE_RATE_NUDGE = (0, -8, 8, -4, 4)
FEMALE_VARIANTS = ("f1", "f2", "f3", "f4", "f5")
MALE_VARIANTS = ("m1", "m2", "m3", "m4", "m6")
WHISPER_VARIANTS = {"female": "whisperf", "male": "whisper"}

_WORD = re.compile(r"[^\W\d_]+")


def _words(prompt: str) -> set[str]:
    return {word.lower() for word in _WORD.findall(prompt)}


def design_voice(prompt: str, language: str, index: int) -> EngineVoice:
    """The engine voice of sample `index` (0-based) for a prompt; the same arguments, the same voice."""
    words = _words(prompt)
    seed = int(hashlib.sha256(f"{language}\0{' '.join(sorted(words))}".encode()).hexdigest(), 16)
    pitch_word = "low" if words & LOW_WORDS else "high" if words & HIGH_WORDS else "mid"
    if words & FEMALE_WORDS and not words & MALE_WORDS:
        gender = "female"
    elif words & MALE_WORDS and not words & FEMALE_WORDS:
        gender = "male"
    elif pitch_word != "mid":  # a deep voice, said no more, is a man's; a high one a woman's
        gender = "male" if pitch_word == "low" else "female"
    else:  # nothing said: the drafts alternate, starting from a side the prompt picks
        gender = ("female", "male")[(seed + index) % 2]
    slot = index % len(SAMPLE_PLACES)
    if words & WHISPER_WORDS:
        variant = WHISPER_VARIANTS[gender]
    else:
        variants = FEMALE_VARIANTS if gender == "female" else MALE_VARIANTS
        variant = variants[(seed + index) % len(variants)]
    low, high = PITCH_BANDS[pitch_word]
    pitch = round(low + (high - low) * SAMPLE_PLACES[slot])
    pace = "slow" if words & SLOW_WORDS else "fast" if words & FAST_WORDS else "normal"
    pitch_range = 85 if words & LIVELY_WORDS else 25 if words & FLAT_WORDS else 50
    base = LANGUAGE_BASE_VOICE.get(language, "en-us")
    return EngineVoice(
        f"{base}+{variant}", pitch=pitch, pitch_range=pitch_range, rate_wpm=PACE_WPM[pace] + SAMPLE_RATE_NUDGE[slot]
    )


def new_draft_id() -> str:
    return DRAFT_PREFIX + "".join(secrets.choice(UID_ALPHABET) for _ in range(22))


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class DraftSettings:
    ttl_s: float = DEFAULT_DRAFT_TTL_S
    ready_s: float = DEFAULT_DRAFT_READY_S


class Drafts:
    """The live drafts: made, looked up, promoted once, deleted; expired ones are dropped on every access."""

    def __init__(self, path: Path, settings: DraftSettings) -> None:
        self.records = Collection(path)
        self.settings = settings

    def create(self, prompt: str, language: str, samples: int) -> list[dict[str, Any]]:
        now = time.time()
        made = []
        for index in range(samples):
            record = {
                "uid": new_draft_id(),
                "prompt": prompt,
                "language": language,
                "index": index,
                "created": now,
                "ready_at": now + self.settings.ready_s,
                "expires": now + self.settings.ttl_s,
                "engine_voice": asdict(design_voice(prompt, language, index)),
                "promoted_to": None,
            }
            made.append(self.records.put(record))
        return made

    def live_count(self) -> int:
        self.prune()
        return len(self.records.all())

    def get(self, draft_id: str) -> dict[str, Any] | None:
        """A draft that has not expired, or None."""
        if not is_draft_id(draft_id):
            return None
        record = self.records.get(draft_id)
        if record is None:
            return None
        if record["expires"] <= time.time():
            self.records.delete(draft_id)
            return None
        return record

    def mark_promoted(self, draft_id: str, voice_uid: str) -> None:
        record = self.records.get(draft_id)
        if record is not None:
            record["promoted_to"] = voice_uid
            self.records.put(record)

    def delete(self, draft_id: str) -> bool:
        return self.get(draft_id) is not None and self.records.delete(draft_id)

    def prune(self) -> None:
        now = time.time()
        for record in self.records.all():
            if record["expires"] <= now:
                self.records.delete(record["uid"])


def is_ready(record: dict[str, Any]) -> bool:
    return bool(record["ready_at"] <= time.time())


def draft_api(record: dict[str, Any], *, detailed: bool) -> dict[str, Any]:
    """One entry of the `{"embeddings": [...]}` envelope; the status call adds prompt, language, created_at."""
    entry: dict[str, Any] = {
        "embedding_id": record["uid"],
        "ready": is_ready(record),
        "expires_at": iso(record["expires"]),
    }
    if detailed:
        entry |= {"prompt": record["prompt"], "language": record["language"], "created_at": iso(record["created"])}
    return entry
