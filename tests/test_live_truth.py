"""The live view tells the truth at any size: it always fits the terminal (so no stale frame stays on
screen), shows the phase, and its figures each mean one thing; libasound's own messages stay off it."""

from __future__ import annotations

import io
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradium_cli.server.app import RunningServer
from gradium_cli.ui.live import ChunkRow, LiveState, render
from tests.cli_helpers import isolated_env
from tests.needs import need_program
from tests.servers import gradium_exe

SIZES = [(60, 12), (80, 24), (160, 50)]


def lines_of(state: LiveState, width: int, height: int) -> list[str]:
    from rich.console import Console

    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(render(state, width, height))
    return out.getvalue().splitlines()


def busy_state(chunks: int = 200) -> LiveState:
    state = LiveState(title="gradium stream · Emma · wav", started=time.monotonic() - 5)
    state.words = [(f"word{i}", i * 0.3, i * 0.3 + 0.25) for i in range(120)]
    for i in range(chunks):
        state.chunks.append(ChunkRow(0.1 + i * 0.08, 7680, i * 0.08, i * 0.08 + 0.08, 0.2))
    state.chunk_count, state.audio_s, state.first_audio_s = chunks, chunks * 0.08, 0.14
    state.words_sent, state.status = 120, "streaming"
    return state


@pytest.mark.parametrize(("width", "height"), [*SIZES, (40, 8), (200, 6)])
def test_every_frame_fits_the_terminal(width: int, height: int) -> None:
    shown = lines_of(busy_state(), width, height)
    assert len(shown) <= height - 1, "\n".join(shown)
    assert all(len(line) <= width for line in shown)
    assert "synthesising" in shown[-1] or "synthesising" in "\n".join(shown)


def test_a_tall_terminal_still_gets_the_chunk_table() -> None:
    shown = lines_of(busy_state(), 160, 50)
    assert any("latency" in line for line in shown)
    assert sum("7680 B" in line for line in shown) == 50 - 12  # as many rows as fit, no more


def test_phase_and_figures_mean_one_thing_each() -> None:
    played = [0.0]
    state = busy_state(chunks=50)  # 4 s of audio
    state.played_s = lambda: played[0]
    assert state.phase() == "synthesising"
    state.synthesised_at = state.started + 2.0  # all 4 s made in 2 s
    assert state.phase() == "playing"
    text = "\n".join(lines_of(state, 160, 50))
    assert "synthesis 2.0x real time" in text and "first audio 140 ms after start" in text
    assert "played 0.00 s" in text and "audio 4.00 s" in text and "playing" in text
    time.sleep(0.2)
    assert "synthesis 2.0x real time" in "\n".join(lines_of(state, 160, 50))  # frozen once synthesis ends
    played[0] = 4.0
    assert state.phase() == "done"
    frozen = lines_of(state, 160, 50)[-2]
    time.sleep(0.25)
    assert lines_of(state, 160, 50)[-2] == frozen, "the timer stops when it is done"


def test_waiting_text_matches_the_counts() -> None:
    state = LiveState()
    assert "(waiting for text)" in "\n".join(lines_of(state, 80, 24))
    state.words_sent = 2
    text = "\n".join(lines_of(state, 80, 24))
    assert "(waiting for the first spoken word)" in text and "words sent 2" in text


PRODUCER = (
    "import sys, time\nfor i in range(30):\n    sys.stdout.write(f'Word{i} '); sys.stdout.flush(); time.sleep(0.02)\n"
)


def tmux_history(tmp_path: Path, server: RunningServer, width: int, height: int) -> str:
    """Everything that reached the terminal, scrollback included, once the run has ended."""
    session = f"gradium-fit-{width}x{height}-{time.monotonic_ns()}"
    (tmp_path / "producer.py").write_text(PRODUCER)
    command = (
        f"{shlex.quote(sys.executable)} producer.py | {shlex.quote(gradium_exe())} stream "
        f"--base-url {server.base_url} -o out.wav; echo EXIT=$?; sleep 60"
    )
    env = isolated_env(tmp_path)
    tmux = ["tmux", "-L", session]
    setup = ["-x", str(width), "-y", str(height), "-c", str(tmp_path)]
    env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    subprocess.run([*tmux, "new-session", "-d", "-s", session, *setup, *env_args, command], check=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            history = subprocess.run(
                [*tmux, "capture-pane", "-p", "-S", "-", "-t", session], capture_output=True, text=True
            ).stdout
            if "EXIT=" in history:
                return history
            time.sleep(0.2)
        raise AssertionError("the run did not end")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@pytest.mark.parametrize(("width", "height"), SIZES)
def test_no_stale_frame_stays_on_screen(
    tmp_path: Path, realtime_server: RunningServer, width: int, height: int
) -> None:
    need_program("tmux")
    history = tmux_history(tmp_path, realtime_server, width, height)
    assert "EXIT=0" in history, history
    tops = [line for line in history.splitlines() if line.startswith("╭")]
    assert len(tops) == 1, history  # one box: earlier frames were all redrawn in place
    bottoms = [line for line in history.splitlines() if line.startswith("╰")]
    assert len(bottoms) == 1, history
    box = history.split("╭", 1)[1].split("╰", 1)[0]
    assert "done" in box and "Word29" in box


def test_libasound_messages_are_routed_away(tmp_path: Path) -> None:
    probe = (
        "import ctypes, ctypes.util, sys\n"
        "lib = ctypes.CDLL(ctypes.util.find_library('asound') or 'libasound.so.2')\n"
        "pcm = ctypes.c_void_p()\n"
        "if sys.argv[1] == 'routed':\n"
        "    from gradium_cli.audio.device import route_alsa_messages_away\n"
        "    route_alsa_messages_away()\n"
        "lib.snd_pcm_open(ctypes.byref(pcm), b'no_such_pcm', 0, 0)\n"
    )
    try:
        import ctypes.util

        assert ctypes.util.find_library("asound"), "libasound2 is installed with libportaudio2"
    except AssertionError:
        raise
    plain = subprocess.run([sys.executable, "-c", probe, "plain"], capture_output=True, timeout=60)
    assert b"ALSA lib" in plain.stderr  # the message the live view used to show
    routed = subprocess.run([sys.executable, "-c", probe, "routed"], capture_output=True, timeout=60)
    assert routed.returncode == 0 and routed.stderr == b""


def test_say_no_live_plays_without_the_view(tmp_path: Path, local_server: RunningServer, audio_device) -> None:
    from tests.manage_helpers import run_on_pty

    env = audio_device.subprocess_env(isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url))
    live = run_on_pty(["say", "Hello there."], env, tmp_path, stdout_on_pty=True)
    assert live.returncode == 0 and "╭─ gradium say" in live.terminal, live.terminal
    quiet = run_on_pty(["say", "Hello there.", "--no-live"], env, tmp_path, stdout_on_pty=True)
    assert quiet.returncode == 0 and "╭" not in quiet.terminal and "synthesis" not in quiet.terminal, quiet.terminal


def test_interactive_stream_prompts_and_counts_per_flush(tmp_path: Path, local_server: RunningServer) -> None:
    import os
    import select

    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [gradium_exe(), "stream", "--interactive", "-o", "i.wav", "--base-url", local_server.base_url],
        stdin=secondary,
        stderr=secondary,
        stdout=subprocess.PIPE,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
    )
    os.close(secondary)
    seen = b""

    def wait_for(marker: bytes, count: int) -> None:
        nonlocal seen
        deadline = time.monotonic() + 30
        while seen.count(marker) < count:
            assert time.monotonic() < deadline, seen.decode(errors="replace")
            if select.select([primary], [], [], 0.2)[0]:
                try:
                    seen += os.read(primary, 4096)
                except OSError:
                    break

    try:
        wait_for(b"speak> ", 1)
        os.write(primary, b"Hello there.\n")
        wait_for(b"speak> ", 2)
        os.write(primary, b"One two three four.\n")
        wait_for(b"speak> ", 3)
        os.write(primary, b"\x04")
        proc.wait(30)
        wait_for(b"real time", 1)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(primary)
    text = seen.decode(errors="replace").replace("\r", "")
    assert proc.returncode == 0, text
    assert "gradium: type a line and press Enter to speak it; Ctrl-D ends, Ctrl-C stops" in text
    assert "gradium: flush after 2 words" in text and "gradium: flush after 4 words" in text
    assert "flush after 6 words" not in text  # counted per flush, not since the start
    assert 1.0 < sf_seconds(tmp_path / "i.wav") < 8.0  # both lines were spoken into the file


def sf_seconds(path: Path) -> float:
    import soundfile as sf

    info = sf.info(str(path))
    return float(info.frames / info.samplerate)


def test_ws_raw_help_fits_80_columns_unbroken(tmp_path: Path, local_server: RunningServer) -> None:
    from gradium_cli.console.commands import HELP

    assert max(len(line) for line in HELP.splitlines()) < 80
    done = subprocess.run(
        [gradium_exe(), "ws-raw", "--base-url", local_server.base_url],
        input=b"/help\n",
        capture_output=True,
        env=isolated_env(tmp_path, COLUMNS="80"),
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown = done.stdout.decode().splitlines()
    for line in HELP.splitlines():
        assert line.rstrip() in [s.rstrip() for s in shown], line  # whole, not wrapped mid-word


def test_underruns_count_gaps_while_audio_is_owed_not_waiting(audio_device, monkeypatch) -> None:
    """Idle (nothing owed, e.g. `stream` waiting for input): no underrun however long. Owed: one per gap."""
    import numpy as np

    from gradium_cli.audio.device import DevicePlayer

    audio_device.use_in_process(monkeypatch)
    player = DevicePlayer(48000)
    owed = [False]
    player.expecting = lambda: owed[0]
    try:
        tone = (0.2 * 32767 * np.sin(np.arange(14400) / 48000 * 2 * np.pi * 220)).astype(np.int16)  # 0.3 s
        player.write(tone)
        time.sleep(1.0)  # played out, then a long wait with nothing owed
        assert player.underruns == 0
        owed[0] = True
        player.write(tone)
        time.sleep(1.0)  # ran dry while audio was owed: one gap, however many callbacks
        assert player.underruns == 1
        player.write(tone)
        time.sleep(1.0)
        assert player.underruns == 2
    finally:
        player.finish(drain=False)
