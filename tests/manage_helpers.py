"""Helpers for the `gradium voices` / `gradium pronounce` tests: the real CLI against a real server."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from tests.cli_helpers import gradium_in_process, isolated_env
from tests.servers import gradium_exe


def tone_wav(path: Path, seconds: float = 3.0, hz: float = 220.0, rate: int = 24000) -> Path:
    """A harmonic-rich tone: a voiced sample the server can estimate a pitch from."""
    t = np.arange(int(seconds * rate)) / rate
    signal = sum(np.sin(2 * np.pi * hz * k * t) / k for k in range(1, 8))
    sf.write(path, 0.2 * signal, rate, subtype="PCM_16")
    return path


@dataclass
class Cli:
    """`gradium` bound to one server (through GRADIUM_BASE_URL) and one isolated config."""

    tmp_path: Path
    base_url: str

    @property
    def env(self) -> dict[str, str]:
        return isolated_env(self.tmp_path, GRADIUM_BASE_URL=self.base_url)

    def __call__(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        # In this process: these commands talk HTTP and write files, and a tty, signal or
        # audio device is never part of them (run_on_pty runs the terminal cases as processes).
        return gradium_in_process(self.tmp_path, *args, input=input, env=self.env)

    def ok(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = self(*args, input=input)
        assert result.returncode == 0, (args, result.stderr.decode())
        return result

    def json(self, *args: str, input: bytes | None = None) -> Any:
        return json.loads(self.ok(*args, "--json", input=input).stdout)


def one_line_error(result: subprocess.CompletedProcess[bytes]) -> str:
    """stderr must be exactly one `gradium: error: ...` line, no traceback."""
    text = result.stderr.decode()
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("gradium: error: "), text
    return lines[0]


@dataclass
class PtyRun:
    returncode: int
    terminal: str  # everything written to the terminal
    stdout: bytes  # stdout when it was a pipe


def run_on_pty(
    args: list[str],
    env: dict[str, str],
    cwd: Path,
    *,
    answer: bytes | None = None,
    prompt: bytes = b"?",
    stdout_on_pty: bool = False,
    timeout: float = 60.0,
) -> PtyRun:
    """Run `gradium ARGS` with stdin and stderr (and optionally stdout) on a pseudo-terminal.

    When `answer` is given it is typed once `prompt` has appeared on the terminal.
    """
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [gradium_exe(), *args],
        stdin=slave,
        stdout=slave if stdout_on_pty else subprocess.PIPE,
        stderr=slave,
        env={**env, "COLUMNS": "200", "LINES": "50"},
        cwd=cwd,
        close_fds=True,
    )
    os.close(slave)
    seen = b""
    answered = answer is None
    deadline = time.monotonic() + timeout
    stdout = b""
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk and proc.poll() is not None:
                    break
                seen += chunk
                if not answered and prompt in seen:
                    assert answer is not None
                    os.write(master, answer)
                    answered = True
            elif proc.poll() is not None:
                break
        else:
            proc.kill()
            raise AssertionError(f"gradium {' '.join(args)} did not finish: {seen.decode(errors='replace')}")
        if proc.stdout is not None:
            stdout = proc.stdout.read()
        proc.wait(10)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return PtyRun(proc.returncode, seen.decode("utf-8", errors="replace").replace("\r\n", "\n"), stdout)


def pitch_hz(samples: np.ndarray, rate: int = 48000) -> float:
    """Median fundamental of the louder 40 ms frames, by autocorrelation (70–400 Hz)."""
    x = np.asarray(samples, dtype=np.float64)
    frame, low, high = int(rate * 0.04), rate // 400, rate // 70
    level = float(np.sqrt(np.mean(x**2)))
    estimates = []
    for begin in range(0, len(x) - frame, frame):
        chunk = x[begin : begin + frame]
        if float(np.sqrt(np.mean(chunk**2))) < level:
            continue
        chunk = chunk - chunk.mean()
        corr = np.correlate(chunk, chunk, mode="full")[frame - 1 :]
        estimates.append(rate / (low + int(np.argmax(corr[low:high]))))
    return float(np.median(estimates))
