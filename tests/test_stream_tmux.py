"""The live view as a person sees it: `gradium stream` in a real terminal (tmux), captured."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import isolated_env
from tests.needs import need_program
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _needs_tmux() -> None:
    need_program("tmux")


TEXT = "Streaming speech shows each word as it is spoken. The chunks table lists their latency."
PRODUCER = (
    f"import sys, time\nfor w in {TEXT.split()!r}:\n"
    "    sys.stdout.write(w + ' '); sys.stdout.flush(); time.sleep(0.05)\n"
)


def capture_live_view(tmp_path: Path, server: RunningServer, width: int, height: int) -> str:
    session = f"gradium-live-{width}x{height}-{time.monotonic_ns()}"
    env = isolated_env(tmp_path)
    (tmp_path / "producer.py").write_text(PRODUCER)
    command = (
        f"{shlex.quote(sys.executable)} producer.py | {shlex.quote(gradium_exe())} stream "
        f"--base-url {server.base_url} -o out.wav; echo EXIT=$?; sleep 60"
    )
    tmux_env = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    # A private tmux server per capture: the default one may be exiting as another test
    # kills its last session, and new-session then fails.
    tmux = ["tmux", "-L", session]
    subprocess.run(
        [
            *tmux,
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(tmp_path),
            *tmux_env,
            command,
        ],
        check=True,
    )
    try:
        deadline = time.monotonic() + 60
        screen = ""
        while time.monotonic() < deadline:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout
            if "EXIT=" in screen:
                break
            time.sleep(0.2)
        return screen
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 40)])
def test_live_view_shows_words_chunks_and_latency(
    tmp_path: Path, realtime_server: RunningServer, width: int, height: int
) -> None:
    screen = capture_live_view(tmp_path, realtime_server, width, height)
    assert "EXIT=0" in screen, screen
    lines = screen.splitlines()
    assert all(len(line) <= width for line in lines)
    assert "gradium stream" in screen
    # Words of the input, in order, on screen.
    assert ("latency." in screen and "Streaming" in screen) or "spoken." in screen
    # The chunks table: sizes of 80 ms PCM chunks, audio spans, latencies in ms.
    assert re.search(r"\b7680 B\b", screen), screen
    assert re.search(r"\d+\.\d\d–\d+\.\d\d s", screen), screen
    assert re.search(r"\b\d+ ms\s*│?$", screen, re.MULTILINE), screen
    # Running figures.
    assert re.search(r"first audio \d+ ms", screen), screen
    assert re.search(r"synthesis \d+\.\dx real time", screen), screen
    assert "flushes" in screen and "words sent 15" in screen
    rows = len(re.findall(r"\b7680 B\b", screen))
    if height == 40:
        assert rows > 10  # a taller terminal shows more of the table
    else:
        assert 2 <= rows <= 12
    (tmp_path / f"live-{width}x{height}.txt").write_text(screen)
