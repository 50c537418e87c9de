"""The local server's voice catalog: the service's flagship voices, every other
eSpeak NG language, and custom voices cloned from samples.

Flagship voices keep their real ids and names (PROTOCOL.md §8), so a script
written for the hosted service runs offline unchanged; each maps onto an eSpeak
NG voice of the same language and gender.
"""

from __future__ import annotations

import base64
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gradium_cli.server.engine import EngineVoice, SpeechEngine


@dataclass(frozen=True)
class CatalogVoice:
    uid: str
    name: str
    language: str
    description: str
    engine_voice: EngineVoice
    country: str | None = None
    gender: str | None = None

    def to_api(self) -> dict[str, Any]:
        """The APIVoiceResponse shape (§8)."""
        tags = [{"category": "country", "value": self.country}] if self.country else []
        if self.gender:
            tags.append({"category": "gender", "value": self.gender})
        return {
            "uid": self.uid,
            "name": self.name,
            "description": self.description,
            "filename": None,
            "start_s": None,
            "is_catalog": True,
            "is_pro_clone": False,
            "language": self.language,
            "tags": tags,
        }


def _flagship(uid: str, name: str, lang: str, country: str, gender: str, espeak: str) -> CatalogVoice:
    pitch = 62 if gender == "female" else 40
    return CatalogVoice(
        uid=uid,
        name=name,
        language=lang,
        description=f"{name}: {lang}-{country} {gender} voice (local eSpeak NG {espeak})",
        engine_voice=EngineVoice(espeak, pitch=pitch),
        country=country,
        gender=gender,
    )


FLAGSHIP_VOICES: list[CatalogVoice] = [
    _flagship("YTpq7expH9539ERJ", "Emma", "en", "us", "female", "en-us+f3"),
    _flagship("LFZvm12tW_z0xfGo", "Kent", "en", "us", "male", "en-us+m3"),
    _flagship("jtEKaLYNn6iif5PR", "Sydney", "en", "us", "female", "en-us+f4"),
    _flagship("KWJiFWu2O9nMPYcR", "John", "en", "us", "male", "en-us+m1"),
    _flagship("ubuXFxVQwVYnZQhy", "Eva", "en", "gb", "female", "en+f2"),
    _flagship("m86j6D7UZpGzHsNu", "Jack", "en", "gb", "male", "en+m3"),
    _flagship("b35yykvVppLXyw_l", "Elise", "fr", "fr", "female", "fr-fr+f2"),
    _flagship("axlOaUiFyOZhy4nv", "Leo", "fr", "fr", "male", "fr-fr+m3"),
    _flagship("-uP9MuGtBqAvEyxI", "Mia", "de", "de", "female", "de+f2"),
    _flagship("0y1VZjPabOBU3rWy", "Maximilian", "de", "de", "male", "de+m2"),
    _flagship("B36pbz5_UoWn4BDl", "Valentina", "es", "mx", "female", "es-419+f2"),
    _flagship("xu7iJ_fn2ElcWp2s", "Sergio", "es", "es", "male", "es+m3"),
    _flagship("pYcGZz9VOo4n2ynh", "Alice", "pt", "br", "female", "pt-br+f2"),
    _flagship("M-FvVo9c-jGR4PgP", "Davi", "pt", "br", "male", "pt-br+m2"),
]

DEFAULT_VOICE = FLAGSHIP_VOICES[0]

# The eSpeak voice each language's custom clones start from.
LANGUAGE_BASE_VOICE = {"en": "en-us", "fr": "fr-fr", "de": "de", "es": "es", "pt": "pt-br"}

FEMALE_VARIANTS = ["f1", "f2", "f3", "f4", "f5"]
MALE_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7"]


def stable_uid(seed: str) -> str:
    """A stable 16-character id for a voice derived from a name, in the service's alphabet."""
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:16]


def espeak_catalog(engine: SpeechEngine) -> list[CatalogVoice]:
    """One extra catalog voice per eSpeak NG language, with an id stable across runs."""
    voices = []
    for info in engine.list_voices():
        voices.append(
            CatalogVoice(
                uid=stable_uid(f"espeak:{info.identifier}"),
                name=f"eSpeak {info.name.replace('_', ' ')}",
                language=info.language,
                description=f"eSpeak NG voice {info.identifier}",
                engine_voice=EngineVoice(info.language),
            )
        )
    return voices


class Catalog:
    def __init__(self, engine: SpeechEngine) -> None:
        self.engine = engine
        self.voices = FLAGSHIP_VOICES + espeak_catalog(engine)
        self.by_uid = {voice.uid: voice for voice in self.voices}

    def base_voice_for(self, language: str | None) -> str:
        code = (language or "en").lower()
        if code in LANGUAGE_BASE_VOICE:
            return LANGUAGE_BASE_VOICE[code]
        return code if self.engine.has_voice(code) else "en-us"


def estimate_pitch_hz(samples: np.ndarray, sample_rate: int) -> float | None:
    """Median fundamental frequency of voiced frames, by autocorrelation."""
    frame = int(sample_rate * 0.04)
    low_lag, high_lag = int(sample_rate / 400), int(sample_rate / 60)
    estimates = []
    level = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
    for start in range(0, len(samples) - frame, frame):
        chunk = samples[start : start + frame]
        chunk = chunk - chunk.mean()
        if float(np.sqrt(np.mean(chunk**2))) < 0.5 * level:
            continue  # quiet frames are unvoiced or silence
        corr = np.correlate(chunk, chunk, "full")[frame - 1 :]
        if corr[0] <= 0 or high_lag >= len(corr):
            continue
        lag = low_lag + int(np.argmax(corr[low_lag:high_lag]))
        if corr[lag] / corr[0] > 0.3:
            estimates.append(sample_rate / lag)
    return float(np.median(estimates)) if estimates else None


@dataclass(frozen=True)
class SampleAnalysis:
    duration_s: float
    sample_rate: int
    pitch_hz: float | None
    extension: str  # the container found in the data, one of store.SAMPLE_EXTENSIONS


# The service clones from a 10 s window starting at start_s (§8).
CLONE_WINDOW_S = 10.0
# No recording of a voice needs more; the pitch estimate's work grows with the square of the
# rate (a header claiming 2 MHz held the event loop for minutes), so higher ones are refused.
MAX_SAMPLE_RATE = 192_000
# Frames decoded at a time: the window is mixed down to mono block by block, so a file
# declaring 255 channels (a few kB of Ogg Vorbis silence) costs no more memory than mono.
DOWNMIX_BLOCK_FRAMES = 4096


def sniff_container(head: bytes) -> str | None:
    """The container of a sample from its first 12 bytes, when it is one a voice sample may have.

    Checked before libsndfile sees the data: it also parses many rarer formats
    (MAT5, HTK, SD2, …) that no voice sample needs and an attacker could aim at.
    """
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return None


def analyse_sample(source: bytes | Path, start_s: float = 0.0) -> SampleAnalysis:
    """Check an uploaded voice sample and estimate its pitch; raises ValueError when it is not audio.

    Only the clone window is decoded, so a long sample costs no more memory than a short one.
    """
    if isinstance(source, Path):
        with source.open("rb") as handle:
            head = handle.read(12)
    else:
        head = source[:12]
    extension = sniff_container(head)
    if extension is None:
        raise ValueError("audio_file is not a WAV, FLAC, OGG, MP3 or AIFF file")
    import soundfile as sf  # here: the built-in engine's process never reads a sample

    try:
        with sf.SoundFile(source if isinstance(source, Path) else io.BytesIO(source)) as audio:
            rate, frames = int(audio.samplerate), int(audio.frames)
            if rate <= 0:
                raise ValueError("no sample rate")
            if rate > MAX_SAMPLE_RATE:
                raise ValueError(f"sample rate {rate} Hz is above {MAX_SAMPLE_RATE} Hz")
            audio.seek(min(int(start_s * rate), frames))
            blocks = audio.blocks(
                DOWNMIX_BLOCK_FRAMES, dtype="float32", always_2d=True, frames=int(CLONE_WINDOW_S * rate)
            )
            mono = [block.mean(axis=1) for block in blocks]
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"audio_file is not a readable audio file ({exc})") from None
    window = np.concatenate(mono) if mono else np.zeros(0, dtype=np.float32)
    return SampleAnalysis(frames / rate, rate, estimate_pitch_hz(window, rate), extension)


def derive_engine_voice(uid: str, base_voice: str, pitch_hz: float | None) -> EngineVoice:
    """A distinct eSpeak variant for a cloned voice: gender and pitch from the sample."""
    female = pitch_hz is not None and pitch_hz >= 165.0
    variants = FEMALE_VARIANTS if female else MALE_VARIANTS
    variant = variants[int(hashlib.sha256(uid.encode()).hexdigest(), 16) % len(variants)]
    # Map 70–300 Hz onto eSpeak's 0–100 pitch scale.
    pitch = 50 if pitch_hz is None else int(np.clip((pitch_hz - 70.0) / 230.0 * 100.0, 0, 100))
    return EngineVoice(f"{base_voice}+{variant}", pitch=pitch)
