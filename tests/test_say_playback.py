"""`gradium say` playing through a real audio device: a PulseAudio null sink whose monitor is recorded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from gradium_cli.server.app import RunningServer
from tests.audio_device import AudioDevice, active_span
from tests.cli_helpers import isolated_env
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(120)
SENTENCE = "Playback test: the quick brown fox jumps over the lazy dog."
OTHER_SENTENCE = "A different sentence, spoken at another pace, with other pauses!"


def similarity(recorded: np.ndarray, rate: int, reference: np.ndarray, ref_rate: int) -> float:
    """Peak normalised cross-correlation of the two signals' envelopes, after alignment.

    Each is first cut to its speech: the recording also holds the silence before the
    player opened and after it closed, which is longer the slower the machine, and
    would otherwise dilute the score (0.45 for the right speech under load).
    """
    if rate != ref_rate:
        recorded = soxr.resample(recorded, rate, ref_rate)
    recorded, reference = speech_only(recorded, ref_rate), speech_only(reference, ref_rate)

    def envelope(x: np.ndarray) -> np.ndarray:
        frames = len(x) // 480
        env = np.sqrt(np.mean(np.square(x[: frames * 480].reshape(frames, 480)), axis=1))
        return (env - env.mean()) / (env.std() + 1e-12)

    a, b = envelope(recorded), envelope(reference)
    corr = np.correlate(a, b, "full") / min(len(a), len(b))
    return float(corr.max())


def speech_only(samples: np.ndarray, rate: int) -> np.ndarray:
    start, end = active_span(samples, rate)
    return samples[int(start * rate) : int(end * rate)]


def run_say(
    audio_device: AudioDevice, tmp_path: Path, *args: str, stdout: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = audio_device.subprocess_env(isolated_env(tmp_path))
    return subprocess.run(
        [gradium_exe(), "say", *args],
        stdin=subprocess.DEVNULL,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def test_play_and_write_gives_the_same_speech(
    audio_device: AudioDevice, local_server: RunningServer, tmp_path: Path
) -> None:
    with audio_device.record(tmp_path / "monitor.wav") as recording:
        result = run_say(
            audio_device, tmp_path, SENTENCE, "--base-url", local_server.base_url, "--play", "-o", "ref.wav"
        )
    assert result.returncode == 0, result.stderr
    reference, ref_rate = sf.read(tmp_path / "ref.wav", dtype="float64")
    recorded, rate = recording.read()
    start, end = active_span(recorded, rate)
    ref_start, ref_end = active_span(reference, ref_rate)
    assert end - start == pytest.approx(ref_end - ref_start, abs=0.25)
    same = similarity(recorded, rate, reference, ref_rate)
    # The measure discriminates: other speech of similar length scores far lower.
    other = run_say(audio_device, tmp_path, OTHER_SENTENCE, "--base-url", local_server.base_url, "-o", "other.wav")
    assert other.returncode == 0
    different = similarity(recorded, rate, *sf.read(tmp_path / "other.wav", dtype="float64"))
    assert same > 0.7 and same > different + 0.25, (same, different)


def test_terminal_stdout_plays_by_default(
    audio_device: AudioDevice, local_server: RunningServer, tmp_path: Path
) -> None:
    primary, secondary = os.openpty()
    try:
        with audio_device.record(tmp_path / "monitor.wav") as recording:
            result = run_say(audio_device, tmp_path, SENTENCE, "--base-url", local_server.base_url, stdout=secondary)
    finally:
        os.close(primary)
        os.close(secondary)
    assert result.returncode == 0, result.stderr
    recorded, rate = recording.read()
    start, end = active_span(recorded, rate)
    assert end - start > 2.0, "speech reached the sound device"
    # The same text written to a file: the device got that speech.
    file_result = run_say(audio_device, tmp_path, SENTENCE, "--base-url", local_server.base_url, "-o", "same.wav")
    assert file_result.returncode == 0
    reference, ref_rate = sf.read(tmp_path / "same.wav", dtype="float64")
    assert similarity(recorded, rate, reference, ref_rate) > 0.7


def test_unknown_device_is_a_clear_error(
    audio_device: AudioDevice, local_server: RunningServer, tmp_path: Path
) -> None:
    result = run_say(
        audio_device,
        tmp_path,
        SENTENCE,
        "--base-url",
        local_server.base_url,
        "--play",
        "-o",
        "x.wav",
        "--device",
        "no-such-device",
    )
    assert result.returncode == 8
    assert result.stderr.decode().startswith("gradium: error: cannot open audio device no-such-device")
    assert not (tmp_path / "x.wav").exists()


def test_devices_lists_the_sink(audio_device: AudioDevice, tmp_path: Path) -> None:
    env = audio_device.subprocess_env(isolated_env(tmp_path))
    result = subprocess.run([gradium_exe(), "devices", "--json"], capture_output=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    import json

    devices = json.loads(result.stdout)
    assert any(d["default"] for d in devices) and all({"index", "name", "channels"} <= d.keys() for d in devices)
