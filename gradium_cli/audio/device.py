"""Playback on a sound device through sounddevice (PortAudio), imported lazily.

Audio arrives in bursts over the network; a callback stream pulls from a
small jitter buffer, plays silence on underrun (and counts it), and exposes
the playback clock that drives the live view's word highlight.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from gradium_cli.errors import AudioDeviceError

JITTER_BUFFER_S = 0.1
# The device's own buffer ahead of the speaker. PortAudio's "low" (about 10 ms through
# ALSA) asks the callback thread, which needs the GIL, to run every few milliseconds: on a
# busy machine it misses turns and the speech comes out with gaps (a 3.7 s sentence took
# 4.3 to 6 s with load 10 on 2 cores). 150 ms is not heard as a delay in speech.
DEVICE_LATENCY_S = 0.15


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as exc:  # PortAudio missing: sounddevice raises OSError at import
        raise AudioDeviceError(f"no audio output available: {exc}", hint="install PortAudio (libportaudio2)") from None
    return sounddevice


def parse_device(device: str | None) -> int | str | None:
    if device is None or device == "":
        return None
    return int(device) if device.isdigit() else device


def list_output_devices() -> list[dict[str, Any]]:
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_out = sd.default.device[1]
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from None
    out = []
    for index, info in enumerate(devices):
        if info["max_output_channels"] > 0:
            out.append(
                {
                    "index": index,
                    "name": info["name"],
                    "channels": info["max_output_channels"],
                    "default_samplerate": info["default_samplerate"],
                    "default": index == default_out,
                }
            )
    return out


_alsa_handler: Any = None  # kept alive: libasound calls it for as long as the process runs


def route_alsa_messages_away() -> None:
    """Stop libasound writing `ALSA lib pcm.c:...(snd_pcm_recover) underrun occurred` to the terminal.

    The library prints its diagnostics to file descriptor 2 from C, under the live view
    and in the middle of its frames. A handler that drops them takes their place; the
    player counts underruns itself. Without libasound (macOS, or no ALSA) this does nothing.
    """
    global _alsa_handler
    if _alsa_handler is not None:
        return
    import ctypes
    import ctypes.util

    try:
        lib = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
    except OSError:
        return
    # void handler(const char *file, int line, const char *function, int err, const char *fmt, ...)
    handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p)
    _alsa_handler = handler_type(lambda *_args: None)
    lib.snd_lib_error_set_handler(_alsa_handler)


class DevicePlayer:
    def __init__(self, sample_rate: int, device: str | None = None) -> None:
        sd = _sounddevice()
        route_alsa_messages_away()
        self.sample_rate = sample_rate
        self.prebuffer_samples = int(sample_rate * JITTER_BUFFER_S)
        self._buffer = np.zeros(0, dtype=np.int16)
        self._lock = threading.Lock()
        self._ended = False
        self._drained = threading.Event()
        self._stopping = False  # finish() has begun: the stream is closed by that call alone
        self._dropped = False  # a drain=False came while another finish() drained
        self.frames_played = 0
        self.underruns = 0
        # Whether audio is owed (text sent, not yet voiced): running dry is an underrun only
        # then, not while `stream` waits for someone to type. The live view sets it.
        self.expecting: Callable[[], bool] = lambda: True
        self._dry = False  # one underrun per gap, not one per callback
        self._started_audio = False
        try:
            self._stream = sd.OutputStream(
                samplerate=sample_rate,
                channels=1,
                dtype="int16",
                device=parse_device(device),
                callback=self._callback,
                latency=DEVICE_LATENCY_S,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise AudioDeviceError(f"cannot open audio device {device or '(default)'}: {exc}") from None

    def _callback(self, outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        with self._lock:
            if not self._started_audio:
                outdata[:, 0] = 0  # still filling the jitter buffer
                return
            take = min(frames, len(self._buffer))
            outdata[:take, 0] = self._buffer[:take]
            outdata[take:, 0] = 0
            self._buffer = self._buffer[take:]
            if self._started_audio:
                self.frames_played += take
            if take < frames and not self._ended and not self._dry and self.expecting():
                self.underruns += 1
                self._dry = True
            if self._ended and not len(self._buffer):
                self._drained.set()

    def write(self, samples: np.ndarray) -> None:
        if not samples.size:
            return
        with self._lock:
            self._buffer = np.concatenate([self._buffer, samples.astype(np.int16, copy=False)])
            self._dry = False
            # Network audio comes in bursts: start only with a little in hand, so the
            # first gap between bursts does not become an underrun.
            if len(self._buffer) >= self.prebuffer_samples:
                self._started_audio = True

    @property
    def buffered_seconds(self) -> float:
        return len(self._buffer) / self.sample_rate

    @property
    def played_seconds(self) -> float:
        return self.frames_played / self.sample_rate

    def finish(self, drain: bool = True) -> None:
        """Stop after the buffered audio has played (or at once with drain=False).

        drain=False may come while another thread drains (Ctrl-C during the last of the
        playback): it empties the buffer, which ends that wait, and aborts the stream so the
        device's own buffer is dropped too. The stream is stopped and closed once.
        """
        with self._lock:
            if self._stopping:
                if not drain:
                    self._buffer = np.zeros(0, dtype=np.int16)
                    self._dropped = True
                    self._drained.set()
                return
            self._stopping = True
            self._ended = True
            self._started_audio = True  # a clip shorter than the jitter buffer still plays
            if not drain:
                self._buffer = np.zeros(0, dtype=np.int16)
            if not len(self._buffer):
                self._drained.set()
        self._drained.wait(timeout=self.buffered_seconds + 5.0)
        # Let the device's own buffer play out before stopping the stream, unless told to stop now.
        if drain and not self._dropped:
            time.sleep(float(self._stream.latency) + 0.05)
            self._stream.stop()
        else:
            self._stream.abort()
        self._stream.close()
