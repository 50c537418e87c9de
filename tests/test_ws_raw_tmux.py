"""The interactive `gradium ws-raw` prompt in a real terminal (tmux): line editing, history, completion.

Each test runs its own tmux server (`-L` with a private socket name) started
with the isolated environment, types with send-keys and reads the screen with
capture-pane. NO_COLOR keeps the captured text plain.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import isolated_env
from tests.needs import need_program
from tests.servers import gradium_exe


@pytest.fixture(autouse=True)
def _needs_tmux() -> None:
    need_program("tmux")


KEY = "gsk_tmux_SECRET_5e6f7a8b"


class Tmux:
    def __init__(self, tmp_path: Path) -> None:
        self.socket = f"gradium-test-{uuid.uuid4().hex[:8]}"
        self.tmp_path = tmp_path
        self.sessions = 0

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            env=isolated_env(self.tmp_path),
            timeout=30,
            check=True,
        )
        return result.stdout

    def start(self, *args: str) -> str:
        """Run `gradium ARGS` in a new 120x40 window; the shell reports its exit status after."""
        self.sessions += 1
        name = f"s{self.sessions}"
        command = " ".join(shlex.quote(part) for part in (gradium_exe(), *args))
        self.tmux(
            "new-session", "-d", "-s", name, "-x", "120", "-y", "40",
            f"cd {shlex.quote(str(self.tmp_path))}; {command}; echo EXITED $?; sleep 600",
        )  # fmt: skip
        self.current = name
        return name

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", self.current, *(["-l"] if literal else []), *keys)

    def type(self, text: str) -> None:
        self.keys(text, literal=True)

    def screen(self) -> str:
        """The window and its scrollback."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", self.current)

    def prompt_line(self) -> str:
        lines = [line for line in self.screen().splitlines() if line.startswith(">")]
        return lines[-1].rstrip() if lines else ""

    def wait(self, condition: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{screen}")
            time.sleep(0.05)

    def wait_text(self, text: str, count: int = 1) -> str:
        return self.wait(lambda screen: screen.count(text) >= count, f"{text!r} ×{count}")

    def wait_prompt(self, expected: str) -> None:
        self.wait(lambda _: self.prompt_line() == expected, f"prompt {expected!r}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture()
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    terminal = Tmux(tmp_path)
    try:
        yield terminal
    finally:
        terminal.kill()


def test_line_editing_history_and_completion(tmux: Tmux, tmp_path: Path, local_server: RunningServer) -> None:
    tmux.start("ws-raw", "--base-url", local_server.base_url)
    tmux.wait_text("type JSON, text or /help; Ctrl-D quits")
    tmux.wait_prompt(">")

    tmux.type("/setup output_format=pcm")
    tmux.keys("Enter")
    tmux.wait_text('setup {"output_format":"pcm"}')
    tmux.wait_text('ready {"request_id":')

    # Line editing: a typo fixed by moving left and inserting a character.
    tmux.type("Helo world.")
    tmux.keys(*["Left"] * 8)
    tmux.type("l")
    tmux.wait_prompt("> Hello world.")
    tmux.keys("Enter")
    tmux.wait_text("text 'Hello world.'")
    tmux.type("/eos")
    tmux.keys("Enter")
    screen = tmux.wait_text("closed 1000 by the server")
    assert "text 'Hello' 0.00–" in screen and "text 'world.' " in screen
    assert "audio 7680 B (80 ms) seq 1 +0.00 s" in screen
    assert "/reconnect opens a new connection; Ctrl-D quits" in screen

    # History: Up recalls earlier lines, newest first.
    tmux.keys("Up")
    tmux.wait_prompt("> /eos")
    tmux.keys("Up")
    tmux.wait_prompt("> Hello world.")
    tmux.keys("C-u")
    tmux.wait_prompt(">")

    # Tab completes slash commands.
    tmux.type("/reco")
    tmux.keys("Tab")
    tmux.wait_prompt("> /reconnect")
    tmux.keys("Enter")
    tmux.wait_text("connected to ws://127.0.0.1:", count=2)

    # A whole request again from history alone: setup is 4 lines back, then the text 4 more.
    tmux.keys(*["Up"] * 4)
    tmux.wait_prompt("> /setup output_format=pcm")
    tmux.keys("Enter")
    tmux.wait_text('setup {"output_format":"pcm"}', count=2)
    tmux.keys(*["Up"] * 4)
    tmux.wait_prompt("> Hello world.")
    tmux.keys("Enter")
    tmux.wait_text("text 'Hello world.'", count=2)

    # Ctrl-C clears the line being typed; Ctrl-D leaves with status 0.
    tmux.type("half a line")
    tmux.keys("C-c")
    tmux.wait_prompt(">")
    tmux.keys("C-d")
    tmux.wait_text("EXITED 0")
    history = (tmp_path / "data" / "ws-raw-history").read_text()
    assert "\n+Hello world.\n" in history and "\n+/reconnect\n" in history and "half a line" not in history


def test_history_survives_restarts_and_the_key_stays_hidden(
    tmux: Tmux, tmp_path: Path, server_factory: Callable[..., RunningServer]
) -> None:
    server = server_factory(api_key=KEY)
    args = ("ws-raw", "--base-url", server.base_url, "--api-key", KEY)
    tmux.start(*args)
    tmux.wait_text("(x-api-key gsk_…7a8b)")
    tmux.type("Typed before setup")
    tmux.keys("Enter")
    tmux.wait_text("not sent: text before setup (send a setup first, e.g. /setup voice_id=YTpq7expH9539ERJ")
    tmux.type("/ping")
    tmux.keys("Enter")
    tmux.wait_text("pong, round trip")
    tmux.keys("C-d")
    first = tmux.wait_text("EXITED 0")

    tmux.start(*args)
    tmux.wait_text("Ctrl-D quits")
    tmux.wait_prompt(">")  # keys sent before the prompt is up would be echoed raw (^[[A)
    tmux.keys("Up", "Up")
    tmux.wait_prompt("> Typed before setup")
    tmux.keys("C-u")
    tmux.type("/quit")
    tmux.keys("Enter")
    second = tmux.wait_text("EXITED 0")
    assert KEY not in first + second
    assert "gsk_…7a8b" in second


def test_a_typed_line_is_shown_once(tmux: Tmux, local_server: RunningServer) -> None:
    tmux.start("ws-raw", "--base-url", local_server.base_url)
    tmux.wait_prompt(">")
    tmux.type("/setup output_format=pcm")
    tmux.keys("Enter")
    tmux.wait_text('ready {"request_id":')
    tmux.type("Zebras quietly graze.")
    tmux.wait_prompt("> Zebras quietly graze.")
    tmux.keys("Enter")
    screen = tmux.wait_text("text 'Zebras quietly graze.'")
    time.sleep(0.3)  # any late redraw of the accepted line would show by now
    screen = tmux.screen()
    assert screen.count("Zebras quietly graze.") == 1, screen
    assert screen.count("/setup output_format=pcm") == 0 and 'setup {"output_format":"pcm"}' in screen
    tmux.keys("C-d")
    tmux.wait_text("EXITED 0")
