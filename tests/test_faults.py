"""How `gradium say` behaves under each server fault: a clear error and exit code within
the timeout, never a hang, no partial output file, and retries only where they are safe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import soundfile as sf

from tests.cli_helpers import gradium, isolated_env
from tests.minimal_server import known_pcm, minimal_server
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(90)


def say_against(tmp_path: Path, base_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, "say", "Hello, world.", "--base-url", base_url, "-o", "out.wav", *args)


def assert_no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "out.wav").exists()
    assert not list(tmp_path.glob(".out.wav*")), "no temp file left behind"


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("drop", 7, "gradium: error: connection dropped by the server (close code 1006)"),
        ("close_1011", 7, "gradium: error: connection dropped by the server (close code 1011)"),
        ("error_midstream", 6, "gradium: error: server error: internal failure (1011)"),
        ("malformed", 6, "gradium: error: malformed frame from server: malformed JSON:"),
        ("http_500", 7, "gradium: error: server answered HTTP 500 instead of a WebSocket at ws://127.0.0.1:"),
        ("http_503", 7, "gradium: error: server answered HTTP 503 instead of a WebSocket at ws://127.0.0.1:"),
        ("http_429", 7, "gradium: error: server answered HTTP 429 instead of a WebSocket at ws://127.0.0.1:"),
    ],
)
def test_fault_gives_one_line_and_no_file(tmp_path: Path, mode: str, code: int, message: str) -> None:
    with minimal_server(mode=mode) as server:
        result = say_against(tmp_path, server.base_url, "--retries", "2")
        attempts = server.connections
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert stderr.startswith(message) and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    assert_no_output(tmp_path)
    assert attempts == 3  # every one of these is "not now": the first try and two retries


@pytest.mark.parametrize("mode", ["stall", "never_answer"])
def test_silent_server_times_out_instead_of_hanging(tmp_path: Path, mode: str) -> None:
    with minimal_server(mode=mode) as server:
        result = say_against(tmp_path, server.base_url, "--timeout", "1", "--retries", "0")
    assert result.returncode == 7
    assert result.stderr.decode() == "gradium: error: no reply from the server for 1 s (raise --timeout)\n"
    assert_no_output(tmp_path)


def test_unknown_message_types_are_ignored(tmp_path: Path) -> None:
    with minimal_server(mode="unknown_type", chunks=10) as server:
        result = gradium(tmp_path, "say", "Hello.", "--base-url", server.base_url, "-o", "out.pcm")
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "out.pcm").read_bytes() == known_pcm(10)


@pytest.mark.parametrize("mode", ["drop", "close_1011", "http_503", "error_midstream"])
def test_transient_faults_are_retried_into_a_complete_file(tmp_path: Path, mode: str) -> None:
    with minimal_server(mode=mode, fail_first=2, chunks=10) as server:
        result = gradium(tmp_path, "-v", "say", "Hello.", "--base-url", server.base_url, "-o", "out.wav")
        attempts = server.connections
    assert result.returncode == 0, result.stderr
    assert attempts == 3
    retries = [line for line in result.stderr.decode().splitlines() if "; retry " in line]
    assert [line.split("; retry ")[1].split(" in ")[0] for line in retries] == ["1/2", "2/2"]
    samples, rate = sf.read(tmp_path / "out.wav", dtype="int16")
    assert rate == 48000 and samples.astype("<i2").tobytes() == known_pcm(10)


def test_retries_are_capped(tmp_path: Path) -> None:
    with minimal_server(mode="drop", fail_first=5) as server:
        result = say_against(tmp_path, server.base_url, "--retries", "1")
        attempts = server.connections
    assert result.returncode == 7 and attempts == 2
    assert_no_output(tmp_path)


def test_refused_requests_are_not_retried(tmp_path: Path, server_factory: object) -> None:
    server = server_factory(api_key="gsk_only_this_one")  # type: ignore[operator]
    result = gradium(
        tmp_path, "-v", "say", "Hi.", "--base-url", server.base_url, "--api-key", "gsk_another_key", "-o", "out.wav"
    )
    assert result.returncode == 4
    assert "retry" not in result.stderr.decode()


def test_played_or_piped_audio_is_not_retried(tmp_path: Path) -> None:
    """Audio already written to a pipe cannot be taken back, so a mid-stream drop is final."""
    with minimal_server(mode="drop", fail_first=1, chunks=10) as server:
        result = subprocess.run(
            [gradium_exe(), "say", "Hello.", "--base-url", server.base_url, "--format", "pcm"],
            capture_output=True,
            timeout=60,
            env=isolated_env(tmp_path),
        )
        attempts = server.connections
    assert result.returncode == 7 and attempts == 1
    assert 0 < len(result.stdout) < len(known_pcm(10))
