"""The test audio device itself: sounddevice really plays into the recorded null sink."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.audio_device import AudioDevice, active_span, dominant_frequency

pytestmark = pytest.mark.timeout(90)

PLAY_SINE = textwrap.dedent(
    """
    import numpy as np
    import sounddevice as sd

    rate = 48000
    t = np.arange(rate) / rate  # 1.0 s
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    sd.play(tone, rate)  # default output device
    sd.wait()
    """
)

LIST_OUTPUTS = textwrap.dedent(
    """
    import sounddevice as sd

    default_out = sd.default.device[1]
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_output_channels"] > 0:
            mark = "*" if index == default_out else " "
            print(f"{mark}{index}\\t{dev['name']}\\t{dev['max_output_channels']}")
    """
)


def run_python(audio_device: AudioDevice, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=audio_device.subprocess_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_sounddevice_lists_an_output_device(audio_device: AudioDevice) -> None:
    result = run_python(audio_device, LIST_OUTPUTS)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines, f"no output device listed; stderr:\n{result.stderr}"
    assert any(line.startswith("*") for line in lines), f"no default output: {lines}"


def test_sine_played_with_sounddevice_reaches_the_sink(audio_device: AudioDevice, tmp_path: Path) -> None:
    with audio_device.record(tmp_path / "monitor.wav") as recording:
        result = run_python(audio_device, PLAY_SINE)
    assert result.returncode == 0, result.stderr

    samples, rate = recording.read()
    start, end = active_span(samples, rate)
    assert end > start, "the recording is silent: nothing reached the sink"
    tone = samples[int(start * rate) : int(end * rate)]
    assert dominant_frequency(tone, rate) == pytest.approx(440.0, abs=5.0)
    assert end - start == pytest.approx(1.0, abs=0.1)
    # Quiet before and after the tone: the recording really spans the whole playback.
    assert start > 0.0
    assert end < samples.size / rate


def test_recording_without_playback_is_silent(audio_device: AudioDevice, tmp_path: Path) -> None:
    with audio_device.record(tmp_path / "silence.wav", tail=0.3) as recording:
        pass
    samples, rate = recording.read()
    assert samples.size >= int(0.25 * rate)
    assert active_span(samples, rate) == (0.0, 0.0)


def test_in_process_playback_reaches_the_sink(
    audio_device: AudioDevice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    import sounddevice as sd

    audio_device.use_in_process(monkeypatch)
    rate = 48000
    t = np.arange(rate // 2) / rate  # 0.5 s
    tone = (0.5 * np.sin(2 * np.pi * 880.0 * t)).astype(np.float32)
    with audio_device.record(tmp_path / "in_process.wav") as recording:
        sd.play(tone, rate)
        sd.wait()
    samples, rate = recording.read()
    start, end = active_span(samples, rate)
    tone_part = samples[int(start * rate) : int(end * rate)]
    assert dominant_frequency(tone_part, rate) == pytest.approx(880.0, abs=5.0)
    assert end - start == pytest.approx(0.5, abs=0.1)
