"""SIGINT, SIGTERM and SIGHUP at three points of a run (connecting, mid-request, waiting for
input): the same cleanup as Ctrl-C, one line, the shell's code (130, 143, 129), at once.
Ctrl-C during playback stops the sound within 200 ms (PulseAudio null sink)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli_helpers import isolated_env, wait_until
from tests.hostile_server import Conn, Request, audio_frame, hostile_server
from tests.minimal_server import minimal_server
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(60)

SIGNALS = {
    signal.SIGINT: (130, "gradium: interrupted"),
    signal.SIGTERM: (143, "gradium: terminated (SIGTERM)"),
    signal.SIGHUP: (129, "gradium: hung up (SIGHUP)"),
}


async def never_answer(request: Request, conn: Conn) -> None:
    await asyncio.sleep(60)  # the TCP connection is up; the handshake never completes


def wait_for(condition: Callable[[], bool], timeout: float = 20) -> None:
    assert wait_until(condition, timeout), "the run never reached the point to signal it at"


def connecting() -> AbstractContextManager[Any]:
    return hostile_server(never_answer)


def mid_request() -> AbstractContextManager[Any]:
    return minimal_server(mode="stall")


POINTS: dict[str, tuple[Callable[[], AbstractContextManager[Any]], list[str], Callable[[Any], bool]]] = {
    # point: (server, gradium arguments, when the run is there)
    "connecting": (connecting, ["say", "Hello.", "-o", "out.wav"], lambda s: len(s.requests) >= 1),
    "mid-request": (mid_request, ["say", "Hello.", "-o", "out.wav"], lambda s: len(s.received) >= 3),
    # (a first Ctrl-C in `stream` finishes what was sent by default; discard makes it final, as
    # SIGTERM and SIGHUP always are)
    "waiting for input": (
        mid_request,
        ["stream", "-o", "out.wav", "--on-interrupt", "discard"],
        lambda s: s.connections >= 1,
    ),
}


@pytest.fixture()
def stubborn_server() -> Iterator[Any]:
    with hostile_server(stubborn_realtime) as server:
        yield server


@pytest.fixture()
def run_until(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [gradium_exe(), *args],
            stdin=subprocess.PIPE,  # kept open: `stream` waits for text
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=isolated_env(tmp_path),
            cwd=tmp_path,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("point", list(POINTS))
@pytest.mark.parametrize("signum", list(SIGNALS), ids=lambda s: signal.Signals(s).name)
def test_signal_at_each_point_cleans_up_with_one_line(
    tmp_path: Path, run_until: Callable[..., subprocess.Popen[bytes]], point: str, signum: int
) -> None:
    make_server, args, arrived = POINTS[point]
    code, line = SIGNALS[signum]
    with make_server() as server:
        proc = run_until([*args, "--base-url", server.base_url, "--timeout", "30"])
        wait_for(lambda: arrived(server) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signum)
        proc.wait(10)
        took = time.monotonic() - sent
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == code, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), stderr
    assert took < 3, f"{took:.2f} s from the signal to the exit"
    assert not (tmp_path / "out.wav").exists()
    assert not list(tmp_path.glob(".out.wav*")), "the temp file is cleaned up"


async def stubborn_realtime(request: Request, conn: Conn) -> None:
    """A server pacing a tone at real time that never answers the closing handshake (as a busy
    hosted server may not): the client must not wait for it before silencing the speakers."""
    await conn.accept_ws(request)
    await conn.ws_read_request()
    await conn.ws_send_json({"type": "ready", "request_id": "stubborn", "sample_rate": 48000})
    tone = (np.sin(2 * np.pi * 440 * np.arange(3840) / 48000) * 8000).astype("<i2").tobytes()
    for index in range(200):  # 16 s
        await conn.ws_send_json(audio_frame(tone, index * 0.08, (index + 1) * 0.08))
        await asyncio.sleep(0.08)


@pytest.mark.parametrize("pace", ["realtime", "burst", "stubborn"])
def test_ctrl_c_during_playback_stops_the_sound_within_200_ms(
    tmp_path: Path, audio_device: Any, request: pytest.FixtureRequest, pace: str
) -> None:
    """realtime: audio still arriving at Ctrl-C; burst: all audio in hand, the speakers draining
    it; stubborn: arriving, from a server that ignores the close."""
    from tests.audio_device import active_span

    if pace == "stubborn":
        server = request.getfixturevalue("stubborn_server")
    else:
        server = request.getfixturevalue("realtime_server" if pace == "realtime" else "local_server")

    text = "This sentence is long enough to keep the speakers busy for several seconds, and then some more."
    env = audio_device.subprocess_env(isolated_env(tmp_path))
    with audio_device.record(tmp_path / "rec.wav") as recording:
        recording_started = time.monotonic()
        proc = subprocess.Popen(
            [gradium_exe(), "say", text, "--play", "--base-url", server.base_url, "-o", "keep.wav"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        wait_for(lambda: bool(audio_device.sink_inputs()) or proc.poll() is not None)
        time.sleep(1.5)  # well into the speech
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        exited = time.monotonic() - sent
    assert proc.returncode == 130, proc.stderr.read() if proc.stderr else b""
    samples, rate = recording.read()
    _, last_sound = active_span(samples, rate)
    # The recording's clock starts when it went live; a little before `recording_started`.
    stopped_after = last_sound - (sent - recording_started)
    assert stopped_after < 0.2, f"sound went on {stopped_after:.3f} s after Ctrl-C"
    assert exited < 1.5, f"exited {exited:.2f} s after Ctrl-C"
    assert np.abs(samples).max() > 0.02, "something played before the interrupt"
