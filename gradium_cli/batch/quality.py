"""Quality checks on every batch item, from its audio and its word timestamps.

Nobody listens to a thousand clips. These catch what goes wrong without it:
audio that is mostly silence, long silence before or after the speech, speech
far too fast or slow for the text, a clip far shorter or longer than the text
predicts (gradium_cli/batch/estimate.py), words of the text that never got a
timestamp (skipped or cut off), and clipping.

The audio is measured as it streams through, in 10 ms frames, so memory stays
small: one RMS figure per frame, a count of full-scale samples. Thresholds are
`Thresholds`' fields, each settable with `--check NAME=VALUE` (docs/batch.md).
"""

from __future__ import annotations

import difflib
import math
from array import array
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from gradium_cli.audio.subtitles import Word
from gradium_cli.batch.estimate import predicted_duration_s, words
from gradium_cli.errors import UsageError
from gradium_cli.protocol.formats import WAV_HEADER_BYTES

if TYPE_CHECKING:
    import numpy as np

    from gradium_cli.protocol.formats import OutputFormat

FRAME_S = 0.01
FULL_SCALE = 32767


@dataclass(frozen=True)
class Thresholds:
    silence_db: float = -45.0  # a 10 ms frame quieter than this (dBFS RMS) is silence
    max_silence_share: float = 0.5  # of the whole clip
    max_leading_silence_s: float = 1.0
    max_trailing_silence_s: float = 1.5
    min_words_per_s: float = 1.0  # over the span from first to last sound, at speed 1
    max_words_per_s: float = 6.0
    min_duration_ratio: float = 0.5  # actual / predicted duration
    max_duration_ratio: float = 2.0
    max_missing_words: int = 0  # words of the text without a timestamp
    max_clipped_share: float = 0.001  # samples at full scale

    @classmethod
    def parse(cls, specs: list[str]) -> Thresholds:
        """`--check NAME=VALUE` options over the defaults; a usage error names the valid names."""
        names = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for spec in specs:
            name, sep, raw = spec.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in names:
                raise UsageError(
                    f"--check expects NAME=VALUE, got '{spec}'",
                    hint=f"names: {', '.join(names)}",
                )
            try:
                number = float(raw)
            except ValueError:
                raise UsageError(f"--check {name}: '{raw.strip()}' is not a number") from None
            if not math.isfinite(number):
                raise UsageError(f"--check {name}: '{raw.strip()}' is not a finite number")
            values[name] = int(number) if name == "max_missing_words" else number
        return cls(**values)


@dataclass(frozen=True)
class Flag:
    check: str
    reason: str
    value: float
    limit: float

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "value": round(self.value, 3)}


class Probe:
    """Measures decoded samples as they stream through (one instance per item and attempt)."""

    def __init__(self, sample_rate: int) -> None:
        self.rate = sample_rate
        self.frame = max(1, round(sample_rate * FRAME_S))
        self.rms = array("f")
        self.samples = 0
        self.clipped = 0
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def feed(self, samples: np.ndarray) -> None:
        """Take int16 samples; they are measured a second at a time (fewer, larger numpy calls)."""
        if samples.size == 0:
            return
        self._pending.append(samples)
        self._pending_size += samples.size
        if self._pending_size >= self.rate:
            self._measure(final=False)

    def _measure(self, final: bool) -> None:
        import numpy as np

        data = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        whole = data.size if final else data.size - data.size % self.frame
        block, rest = data[:whole], data[whole:]
        self._pending = [rest] if rest.size else []
        self._pending_size = rest.size
        self.samples += block.size
        self.clipped += int(np.count_nonzero((block >= FULL_SCALE) | (block <= -FULL_SCALE)))
        frames = block.size // self.frame
        if frames:
            grid = block[: frames * self.frame].reshape(frames, self.frame).astype(np.float32) / 32768.0
            self.rms.extend(np.sqrt(np.einsum("ij,ij->i", grid, grid) / self.frame).tolist())
        tail = block[frames * self.frame :]
        if tail.size:  # only at the end: the last, shorter frame
            scaled = tail.astype(np.float64) / 32768.0
            self.rms.append(float(np.sqrt(np.mean(scaled * scaled))))

    def finish(self) -> None:
        if self._pending:
            self._measure(final=True)


@dataclass(frozen=True)
class Report:
    figures: dict[str, float]
    flags: list[Flag]

    def to_json(self) -> dict[str, Any]:
        figures = {k: round(v, 3) for k, v in self.figures.items()}
        return {"figures": figures, "flags": [f.to_json() for f in self.flags]}


def missing_words(text: str, stamps: list[Word]) -> list[str]:
    """Words of the text that no timestamp covers, in text order (aligned, so repeats count)."""
    wanted = words(text)
    got = [w for stamp in stamps for w in words(stamp.text)]
    matcher = difflib.SequenceMatcher(a=wanted, b=got, autojunk=False)
    covered = sum(block.size for block in matcher.get_matching_blocks())
    if covered == len(wanted):
        return []
    seen: set[int] = set()
    for block in matcher.get_matching_blocks():
        seen.update(range(block.a, block.a + block.size))
    return [word for i, word in enumerate(wanted) if i not in seen]


def judge(probe: Probe, text: str, stamps: list[Word], speed: float, limits: Thresholds) -> Report:
    probe.finish()
    duration = probe.samples / probe.rate if probe.rate else 0.0
    floor = 10 ** (limits.silence_db / 20)
    silent = [value < floor for value in probe.rms]
    frames = len(silent)
    leading = next((i for i, quiet in enumerate(silent) if not quiet), frames)
    trailing = next((i for i, quiet in enumerate(reversed(silent)) if not quiet), frames)
    frame_s = probe.frame / probe.rate if probe.rate else FRAME_S
    speech_s = max(0.0, (frames - leading - trailing) * frame_s) if leading < frames else 0.0
    count = len(words(text))
    missing = missing_words(text, stamps)
    predicted = predicted_duration_s(text, speed)
    figures = {
        "duration_s": duration,
        "predicted_s": predicted,
        "duration_ratio": duration / predicted if predicted else 0.0,
        "silence_share": sum(silent) / frames if frames else 1.0,
        "leading_silence_s": min(duration, leading * frame_s),
        "trailing_silence_s": min(duration, trailing * frame_s) if leading < frames else 0.0,
        "words_per_s": count / speech_s / speed if speech_s > 0 else 0.0,
        "missing_words": float(len(missing)),
        "clipped_share": probe.clipped / probe.samples if probe.samples else 0.0,
    }
    flags: list[Flag] = []

    def above(check: str, value: float, limit: float, reason: str) -> None:
        if value > limit:
            flags.append(Flag(check, reason, value, limit))

    def below(check: str, value: float, limit: float, reason: str) -> None:
        if value < limit:
            flags.append(Flag(check, reason, value, limit))

    above("silence", figures["silence_share"], limits.max_silence_share, "mostly silence")
    above("leading_silence", figures["leading_silence_s"], limits.max_leading_silence_s, "long silence before speech")
    if leading < frames:
        above(
            "trailing_silence", figures["trailing_silence_s"], limits.max_trailing_silence_s, "long silence at the end"
        )
        below("words_per_s", figures["words_per_s"], limits.min_words_per_s, "speech too slow for the text")
        above("words_per_s", figures["words_per_s"], limits.max_words_per_s, "speech too fast for the text")
    below("duration", figures["duration_ratio"], limits.min_duration_ratio, "much shorter than the text predicts")
    above("duration", figures["duration_ratio"], limits.max_duration_ratio, "much longer than the text predicts")
    if len(missing) > limits.max_missing_words:
        shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
        reason = f"words without a timestamp: {shown}"
        flags.append(Flag("missing_words", reason, len(missing), limits.max_missing_words))
    above("clipping", figures["clipped_share"], limits.max_clipped_share, "clipped samples")
    return Report(figures, flags)


class ProbeSink:
    """A sink that decodes the wire format and feeds a Probe (Opus is measured from the file instead)."""

    rewindable = False  # batch repeats a failed item whole, into fresh sinks

    def __init__(self, wire: OutputFormat) -> None:
        from gradium_cli.audio.decode import StreamDecoder

        self.probe = Probe(wire.sample_rate)
        self.decoder = StreamDecoder(wire) if wire.encoding != "opus" else None
        # PCM (raw or in WAV) is viewed in place, not copied: the probe runs on every chunk.
        self._pcm = wire.encoding == "s16le"
        self._skip = WAV_HEADER_BYTES if wire.container == "wav" else 0
        self._odd = b""

    def write(self, data: bytes) -> None:
        if self._pcm:
            import numpy as np

            if self._skip:
                taken = min(self._skip, len(data))
                self._skip -= taken
                data = data[taken:]
            if self._odd:
                data, self._odd = self._odd + data, b""
            if len(data) % 2:
                data, self._odd = data[:-1], data[-1:]
            self.probe.feed(np.frombuffer(data, dtype="<i2"))
        elif self.decoder is not None:
            self.probe.feed(self.decoder.feed(data))

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass

    def measure_file(self, path: Any) -> None:
        """For Opus: decode the finished file."""
        import io

        import soundfile as sf

        samples, rate = sf.read(io.BytesIO(path.read_bytes()), dtype="int16")
        self.probe = Probe(rate)
        self.probe.feed(samples if samples.ndim == 1 else samples[:, 0])
