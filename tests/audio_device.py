"""A real, private audio device for tests: a PulseAudio null sink whose monitor is recorded.

The session fixture ``audio_device`` starts a private PulseAudio daemon (own runtime dir,
own socket, own cookie; the user's PulseAudio and files are never touched) with one null
sink, ``gradium_test_sink``, as the default sink. It writes an ALSA config that makes the
ALSA ``default`` device the PulseAudio ``pulse`` plugin, because Debian's PortAudio (what
``sounddevice`` uses) has no PulseAudio host API of its own.

Usage in a test::

    def test_plays(audio_device, tmp_path):
        with audio_device.record(tmp_path / "out.wav") as rec:
            subprocess.run([...], env=audio_device.subprocess_env(), check=True, timeout=60)
        samples, rate = rec.read()          # mono float64, 48 kHz

Everything a subprocess needs is in ``audio_device.env`` (merge it into ``os.environ``, or
use ``subprocess_env()``). For playback inside the pytest process itself, use
``audio_device.use_in_process(monkeypatch)``, which also re-initialises PortAudio.

Needs the Debian packages pulseaudio, pulseaudio-utils, libportaudio2 and
libasound2-plugins (``.ci/run`` installs them). Without them the fixture skips, except
when ``CI=true``, where it fails.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.needs import unavailable

SINK_NAME = "gradium_test_sink"
MONITOR_NAME = f"{SINK_NAME}.monitor"
SAMPLE_RATE = 48_000
CHANNELS = 2
# Latency asked for by the recording streams. A null sink renders up to 2 s ahead while
# nobody asks for less, which makes the monitor deliver audio late and in lumps.
RECORD_LATENCY_MSEC = 20

REQUIRED_PROGRAMS = ("pulseaudio", "pactl", "parec")
APT_PACKAGES = "pulseaudio pulseaudio-utils libportaudio2 libasound2-plugins"

# Variables of the surrounding session that must not leak into the private daemon or its
# clients (a desktop session bus, another PulseAudio server, X11 autolaunch).
_SCRUBBED_FOR_DAEMON = (
    "DBUS_SESSION_BUS_ADDRESS",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "PULSE_SERVER",
    "PULSE_COOKIE",
    "PULSE_CLIENTCONFIG",
    "PULSE_SINK",
    "PULSE_SOURCE",
    "PULSE_PROP",
)


class AudioDeviceUnavailable(RuntimeError):
    """The system pieces needed for the test audio device are missing."""


def missing_requirements() -> list[str]:
    """What is missing on this machine for the audio device, as readable strings."""
    missing = [f"program {name!r}" for name in REQUIRED_PROGRAMS if shutil.which(name) is None]
    if ctypes.util.find_library("portaudio") is None:
        missing.append("PortAudio library (libportaudio2)")
    plugin_globs = (
        "/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so",
        "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so",
        "/usr/lib64/alsa-lib/libasound_module_pcm_pulse.so",
    )
    if not any(glob.glob(pattern) for pattern in plugin_globs):
        missing.append("ALSA pulse plugin (libasound2-plugins)")
    return missing


def _short_tempdir() -> Path:
    """A private (0700) temp dir whose paths stay short enough for a unix socket."""
    base = tempfile.gettempdir()
    if len(base) > 60:  # sun_path is 108 bytes; keep well clear of it
        base = "/tmp"
    return Path(tempfile.mkdtemp(prefix="gradium-audio-", dir=base))


@dataclass
class Recording:
    """A WAV file recorded from the sink's monitor."""

    path: Path
    sample_rate: int = SAMPLE_RATE

    def read(self) -> tuple[np.ndarray, int]:
        """The recording as mono float64 samples in [-1, 1], and its sample rate."""
        import soundfile

        data, rate = soundfile.read(str(self.path), dtype="float64", always_2d=True)
        return data.mean(axis=1), int(rate)


@dataclass
class AudioDevice:
    """A running private PulseAudio server with a recordable null sink."""

    workdir: Path
    socket_path: Path
    env: dict[str, str]
    daemon: subprocess.Popen[bytes]
    log_path: Path
    sink_name: str = SINK_NAME
    _keeper: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def monitor_name(self) -> str:
        return f"{self.sink_name}.monitor"

    def subprocess_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``os.environ`` with this device's variables (and ``extra``) on top."""
        merged = dict(os.environ)
        for name in _SCRUBBED_FOR_DAEMON:
            if name.startswith("PULSE_"):
                merged.pop(name, None)
        merged.update(self.env)
        if extra:
            merged.update(extra)
        return merged

    def use_in_process(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process's PortAudio at the device (for in-process playback tests).

        PortAudio reads the ALSA configuration when it is initialised, which sounddevice
        does on import; so this re-initialises it after setting the variables.
        """
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)
        import sounddevice

        sounddevice._terminate()
        sounddevice._initialize()

    # --- pactl helpers -------------------------------------------------------------------

    def pactl(self, *args: str, timeout: float = 10) -> str:
        """Run ``pactl`` against this server and return its standard output."""
        result = subprocess.run(
            ["pactl", *args],
            env=self.subprocess_env({"LC_ALL": "C"}),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def sink_inputs(self) -> list[str]:
        """The playback streams connected to the server right now (``pactl`` short lines)."""
        return [line for line in self.pactl("list", "short", "sink-inputs").splitlines() if line]

    def wait_until_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no playback stream is connected; False if one still is at the end."""
        deadline = time.monotonic() + timeout
        while self.sink_inputs():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _sink_latency_usec(self) -> int | None:
        text = self.pactl("list", "sinks")
        for block in text.split("\n\n"):
            if re.search(rf"^\s*Name:\s*{re.escape(self.sink_name)}\s*$", block, re.M):
                match = re.search(r"^\s*Latency:\s*(\d+)\s*usec", block, re.M)
                return int(match.group(1)) if match else None
        return None

    # --- recording -------------------------------------------------------------------

    def _parec(self, *args: str, stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                "parec",
                f"--device={self.monitor_name}",
                f"--rate={SAMPLE_RATE}",
                f"--channels={CHANNELS}",
                "--format=s16le",
                f"--latency-msec={RECORD_LATENCY_MSEC}",
                *args,
            ],
            env=self.subprocess_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.PIPE,
        )

    @contextlib.contextmanager
    def record(
        self, path: str | os.PathLike[str], *, idle_timeout: float = 10.0, tail: float = 0.25
    ) -> Iterator[Recording]:
        """Record the sink's monitor into the WAV file ``path`` while the block runs.

        Recording is live when the block starts. On exit it waits (up to ``idle_timeout``)
        until no playback stream is connected, keeps recording ``tail`` more seconds, then
        stops parec with SIGINT so that the WAV header is complete.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        proc = self._parec("--file-format=wav", str(path))
        try:
            # Live once audio data flows into the file (more than a header's worth).
            deadline = time.monotonic() + 10
            while not (path.exists() and path.stat().st_size > 8192):
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"parec exited with {proc.returncode}: {err.strip()}")
                if time.monotonic() > deadline:
                    raise RuntimeError("parec started but recorded no audio within 10 s")
                time.sleep(0.01)
            yield Recording(path)
            self.wait_until_idle(idle_timeout)
            time.sleep(tail)
        finally:
            _stop(proc, signal.SIGINT)
        if proc.returncode not in (0, -signal.SIGINT):
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"parec ended with {proc.returncode}: {err.strip()}")

    # --- lifecycle -------------------------------------------------------------------

    def _start_keeper(self) -> None:
        """Keep one low-latency reader on the monitor for the whole session.

        A null sink nobody asks for low latency renders 2 s ahead; a recorder that joins
        then misses audio. With this reader attached the sink stays at ~20 ms, so every
        ``record()`` is live at once. Wait until the sink's latency has come down.
        """
        self._keeper = self._parec("--raw")
        deadline = time.monotonic() + 10
        while True:
            latency = self._sink_latency_usec()
            if latency is not None and latency < 200_000:
                return
            if self._keeper.poll() is not None:
                raise RuntimeError(f"monitor reader exited with {self._keeper.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"null sink latency stayed at {latency} usec")
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        if self._keeper is not None:
            _stop(self._keeper, signal.SIGTERM)
        _stop(self.daemon, signal.SIGTERM)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float = 5.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the daemon get SIGTERM if pytest itself dies without tearing down."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_audio_device(startup_timeout: float = 15.0) -> AudioDevice:
    """Start a private PulseAudio server with the null sink; see the module docstring."""
    missing = missing_requirements()
    if missing:
        raise AudioDeviceUnavailable(
            "test audio device unavailable, missing: "
            + ", ".join(missing)
            + f" (install the Debian packages: {APT_PACKAGES}; .ci/run does)"
        )

    workdir = _short_tempdir()
    runtime = workdir / "run"  # holds the native socket; must be 0700 and ours
    home = workdir / "home"
    for d in (runtime, home, workdir / "state", workdir / "config"):
        d.mkdir(mode=0o700)
    socket_path = runtime / "native"
    cookie = home / "cookie"
    log_path = workdir / "pulseaudio.log"

    client_conf = workdir / "client.conf"
    client_conf.write_text(f"autospawn = no\ndefault-server = unix:{socket_path}\ncookie-file = {cookie}\n")
    # The whole ALSA configuration for the clients: only the pulse plugin, on our server.
    asound_conf = workdir / "asound.conf"
    asound_conf.write_text(
        "# Written by tests/audio_device.py: every ALSA client goes to the private server.\n"
        f'pcm.!default {{ type pulse server "unix:{socket_path}" hint {{ show on '
        'description "Gradium test sink (PulseAudio)" } }\n'
        f'ctl.!default {{ type pulse server "unix:{socket_path}" }}\n'
        f'pcm.pulse {{ type pulse server "unix:{socket_path}" }}\n'
        f'ctl.pulse {{ type pulse server "unix:{socket_path}" }}\n'
    )

    daemon_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_FOR_DAEMON}
    daemon_env.update(
        {
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(runtime),
            "XDG_CONFIG_HOME": str(workdir / "config"),
            "XDG_STATE_HOME": str(workdir / "state"),
            "PULSE_RUNTIME_PATH": str(runtime),
            "PULSE_STATE_PATH": str(workdir / "state"),
            "PULSE_COOKIE": str(cookie),
            "LC_ALL": "C",
        }
    )
    command = [
        "pulseaudio",
        "-n",  # no default.pa: load only the modules below
        "--daemonize=no",
        "--system=false",  # per-user mode, also as root (it only warns)
        "--use-pid-file=false",
        "--exit-idle-time=-1",
        "--disallow-exit",
        "--realtime=false",
        "--high-priority=false",
        "--log-target=stderr",
        "--log-level=notice",
        "-L",
        f"module-native-protocol-unix socket={socket_path} auth-anonymous=1 auth-cookie={cookie}",
        # norewinds: a stream that starts while the sink has already rendered silence is
        # queued after it instead of rewinding; rewinds cut the first ~latency of audio
        # out of what the monitor sees.
        "-L",
        f"module-null-sink sink_name={SINK_NAME} rate={SAMPLE_RATE} channels={CHANNELS} "
        'norewinds=1 sink_properties=device.description="Gradium-test-sink"',
    ]
    log_file = open(log_path, "wb")  # noqa: SIM115 - the daemon keeps it open
    try:
        daemon = subprocess.Popen(
            command,
            env=daemon_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    except BaseException:
        log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    log_file.close()

    client_env = {
        "PULSE_SERVER": f"unix:{socket_path}",
        "PULSE_COOKIE": str(cookie),
        "PULSE_CLIENTCONFIG": str(client_conf),
        "PULSE_SINK": SINK_NAME,
        "ALSA_CONFIG_PATH": str(asound_conf),
    }
    device = AudioDevice(
        workdir=workdir,
        socket_path=socket_path,
        env=client_env,
        daemon=daemon,
        log_path=log_path,
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if daemon.poll() is not None:
                raise RuntimeError(f"pulseaudio exited with {daemon.returncode}:\n{device.log_tail()}")
            try:
                info = device.pactl("info", timeout=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                info = ""
            if f"Default Sink: {SINK_NAME}" in info:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not answer within {startup_timeout} s:\n{device.log_tail()}")
            time.sleep(0.1)
        device._start_keeper()
    except BaseException:
        device.close()
        raise
    return device


@pytest.fixture(scope="session")
def audio_device() -> Iterator[AudioDevice]:
    """A private PulseAudio null sink as the default audio device; see the module doc."""
    try:
        device = start_audio_device()
    except AudioDeviceUnavailable as exc:
        unavailable(str(exc))
    try:
        yield device
    finally:
        device.close()


# --- analysis helpers for tests --------------------------------------------------------


def active_span(samples: np.ndarray, rate: int, threshold: float = 0.02) -> tuple[float, float]:
    """(start, end) in seconds of the part of ``samples`` louder than ``threshold``.

    (0.0, 0.0) if nothing is that loud.
    """
    loud = np.nonzero(np.abs(samples) > threshold)[0]
    if loud.size == 0:
        return 0.0, 0.0
    return float(loud[0] / rate), float((loud[-1] + 1) / rate)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The frequency in Hz of the strongest spectral peak (parabolic interpolation)."""
    if samples.size < 16:
        raise ValueError("too few samples for a spectrum")
    windowed = (samples - samples.mean()) * np.hanning(samples.size)
    spectrum = np.abs(np.fft.rfft(windowed))
    peak = int(np.argmax(spectrum[1:]) + 1)
    offset = 0.0
    if 1 <= peak < spectrum.size - 1:
        a, b, c = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denom = a - 2 * b + c
        if denom != 0:
            offset = 0.5 * (a - c) / denom
    return float((peak + offset) * rate / samples.size)
