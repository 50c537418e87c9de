"""Each standard stream closed or broken in turn, in real bash: the work never depends on
diagnostics reaching anyone, and whenever the exit is 0 the promised file exists and decodes."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import isolated_env
from tests.minimal_server import MinimalServer, known_pcm, minimal_server
from tests.servers import gradium_exe

pytestmark = pytest.mark.timeout(60)
CHUNKS = 4


@pytest.fixture(scope="module")
def server() -> Iterator[MinimalServer]:
    with minimal_server(chunks=CHUNKS) as running:
        yield running


def bash(tmp_path: Path, line: str) -> tuple[int, str, float]:
    """Run `line` in bash (GRADIUM is the console script); returns gradium's exit, the script's stdout, seconds."""
    script = f'GRADIUM={shlex.quote(gradium_exe())}\n{line}\necho "rc=${{PIPESTATUS[0]}}"\n'
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, env=isolated_env(tmp_path), cwd=tmp_path, timeout=50
    )
    took = time.monotonic() - started
    out = done.stdout.decode()
    code = int(out.rsplit("rc=", 1)[1].strip())
    return code, out.rsplit("rc=", 1)[0], took


def assert_promised_file(tmp_path: Path) -> None:
    samples, rate = sf.read(tmp_path / "d.wav", dtype="int16")
    assert rate == 48000 and samples.astype("<i2").tobytes() == known_pcm(CHUNKS)


@pytest.mark.parametrize(
    "redirection",
    [
        "0<&-",  # stdin closed
        ">&-",  # stdout closed
        "2>&-",  # stderr closed
        "2>&1 | true",  # stdout and stderr into a pipe nobody reads
        "2> >(exit 0)",  # stderr into a reader that is gone at once
    ],
)
@pytest.mark.parametrize("verbose", [False, True])
def test_a_closed_or_broken_stream_never_loses_the_file(
    tmp_path: Path, server: MinimalServer, redirection: str, verbose: bool
) -> None:
    flags = "-v " if verbose else ""
    line = f'"$GRADIUM" {flags}say Hello. --base-url {server.base_url} -o d.wav --timeout 20 {redirection}'
    code, _, took = bash(tmp_path, line)
    assert code == 0
    assert_promised_file(tmp_path)
    assert took < 15, "no stall waiting on a stream nobody reads"


def test_stream_command_with_stderr_broken(tmp_path: Path, server: MinimalServer) -> None:
    line = f'echo Hello. | "$GRADIUM" -v stream --base-url {server.base_url} -o d.wav 2>&1 | true'
    code, _, _ = bash(tmp_path, line)
    assert code == 0
    assert_promised_file(tmp_path)


def test_audio_to_a_closed_stdout_is_one_line_and_exit_9(tmp_path: Path, server: MinimalServer) -> None:
    code, _, _ = bash(tmp_path, f'"$GRADIUM" say Hello. --base-url {server.base_url} -F pcm >&- 2>err.txt')
    assert code == 9
    assert (
        tmp_path / "err.txt"
    ).read_text() == "gradium: error: stdout is closed: nowhere to write the audio (use -o FILE)\n"


def test_audio_to_a_broken_stdout_stops_quietly(tmp_path: Path, server: MinimalServer) -> None:
    line = f'"$GRADIUM" say Hello. --base-url {server.base_url} -F pcm 2>err.txt | head -c 100 >/dev/null'
    code, _, _ = bash(tmp_path, line)
    assert code == 0  # the reader had what it wanted: not an error (as for `yes | head`)
    assert (tmp_path / "err.txt").read_text() == ""


def test_stdin_at_eof_with_no_text_is_a_usage_error(tmp_path: Path, server: MinimalServer) -> None:
    code, _, _ = bash(tmp_path, f'"$GRADIUM" say --base-url {server.base_url} -o d.wav < /dev/null 2>err.txt')
    assert code == 2
    assert (tmp_path / "err.txt").read_text().count("\n") == 1
    assert not (tmp_path / "d.wav").exists()


def test_the_offline_notice_into_a_broken_pipe_still_gives_the_file(tmp_path: Path) -> None:
    """The reported case: no key, so a notice goes to stderr, which nobody reads."""
    code, _, _ = bash(tmp_path, '"$GRADIUM" say Hello -o d.wav 2>&1 | true')
    assert code == 0
    samples, rate = sf.read(tmp_path / "d.wav", dtype="int16")
    assert len(samples) > rate // 10  # a tenth of a second of speech at least


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail: disk full)")
@pytest.mark.parametrize(
    "command",
    [
        "say Hello. -F pcm",  # audio to stdout
        "say Hello. -o d.wav --json",  # the result as JSON, printed after the command ran
        "voices list --json",  # a listing
    ],
)
def test_stdout_on_a_full_disk_is_one_line_and_exit_9(
    tmp_path: Path, local_server: RunningServer, command: str
) -> None:
    code, _, _ = bash(tmp_path, f'"$GRADIUM" {command} --base-url {local_server.base_url} > /dev/full 2>err.txt')
    assert (tmp_path / "err.txt").read_text() == "gradium: error: disk full while writing stdout\n"
    assert code == 9


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail: disk full)")
@pytest.mark.parametrize("command", ["--version", "--help", "say --help"])
def test_help_and_version_on_a_full_disk_are_one_line_and_exit_9(tmp_path: Path, command: str) -> None:
    """Printed while the arguments are parsed, before any command's own handling: a traceback."""
    code, _, _ = bash(tmp_path, f'"$GRADIUM" {command} > /dev/full 2>err.txt')
    assert (tmp_path / "err.txt").read_text() == "gradium: error: disk full while writing stdout\n"
    assert code == 9


def test_a_listing_to_a_reader_that_went_away_is_not_an_error(tmp_path: Path, local_server: RunningServer) -> None:
    # The reader closed its end before anything was written: the listing's write meets a broken pipe.
    line = f'"$GRADIUM" voices list --base-url {local_server.base_url} 2>err.txt | (exec 0<&-; sleep 1)'
    code, _, _ = bash(tmp_path, line)
    assert (tmp_path / "err.txt").read_text() == ""
    assert code == 0  # as for audio piped into `head -c 100`
