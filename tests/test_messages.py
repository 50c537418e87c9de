"""Options and messages where users expect them: global options after the command, one-line usage
errors, JSON errors, the offline notice, auth truths, host names, "no" answers, counts and wording."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gradium_cli.errors import EXIT_CODE_MEANINGS, ExitCode
from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium, isolated_env
from tests.manage_helpers import run_on_pty
from tests.servers import REPO, gradium_exe

NOTICE = (
    "gradium: no API key configured; using the built-in offline engine (eSpeak NG); "
    "`gradium config set offline-notice off` hides this"
)


# ----------------------------------------------------------------------------- global options after the command


def test_global_options_work_after_the_command(tmp_path: Path, local_server: RunningServer) -> None:
    url = ["--base-url", local_server.base_url]
    loud = gradium(tmp_path, "say", "Hello.", "-o", "a.wav", "--stats", *url)
    assert loud.returncode == 0 and loud.stderr.strip(), "--stats prints a line: the one -q must silence"
    for where in ("before", "after"):
        args = ["say", "Hello.", "-o", f"q-{where}.wav", "--stats", *url]
        argv = ["-q", *args] if where == "before" else [*args, "-q"]
        quiet = gradium(tmp_path, *argv)
        assert (quiet.returncode, quiet.stderr) == (0, b""), where
    verbose = gradium(tmp_path, "say", "Hello.", "-o", "v.wav", *url, "-v")
    assert verbose.returncode == 0
    assert b'"type": "setup"' in verbose.stderr and b"end_of_stream" in verbose.stderr
    listed = gradium(tmp_path, "voices", "list", *url, "--json")
    assert listed.returncode == 0 and isinstance(json.loads(listed.stdout), list)
    devices = gradium(tmp_path, "config", "list", "--no-color", "--json")
    assert devices.returncode == 0, devices.stderr
    # --profile after the command selects the profile the command's settings come from.
    assert gradium(tmp_path, "config", "set", "voice", "Kent", "--profile", "lab").returncode == 0
    got = gradium(tmp_path, "config", "get", "voice", "--profile", "lab")
    assert (got.returncode, got.stdout) == (0, b"Kent\n")
    assert gradium(tmp_path, "config", "get", "voice").stdout == b""


def test_usage_errors_are_one_line_with_the_hint(tmp_path: Path) -> None:
    cases = [
        (["say", "hi", "--bogus"], "gradium: error: No such option: --bogus"),
        (["sya"], "gradium: error: No such command 'sya'. Did you mean 'say'?"),
        (["say", "--timeout", "0", "hi"], "gradium: error: Invalid value for '--timeout': 0.0 is not in the range"),
        (["voices", "show"], "gradium: error: Missing argument"),
    ]
    for argv, start in cases:
        result = gradium(tmp_path, *argv)
        lines = result.stderr.decode().splitlines()
        assert result.returncode == 2, argv
        assert len(lines) == 1 and lines[0].startswith(start), (argv, lines)
        assert re.search(r"\(see `gradium( \S+)* --help`\)$", lines[0]), lines[0]
        assert result.stdout == b""


def test_json_errors_are_an_object_on_stdout_and_a_line_on_stderr(tmp_path: Path, local_server: RunningServer) -> None:
    failed = gradium(tmp_path, "say", "hi", "-o", "no/dir/x.wav", "--json", "--base-url", local_server.base_url)
    assert failed.returncode == 9
    assert failed.stderr.decode() == "gradium: error: cannot write no/dir/x.wav: directory does not exist\n"
    assert json.loads(failed.stdout) == {
        "ok": False,
        "error": "cannot write no/dir/x.wav: directory does not exist",
        "hint": None,
        "exit_code": 9,
    }
    before = gradium(tmp_path, "--json", "voices", "show", "Nobody", "--base-url", local_server.base_url)
    assert before.returncode == 5 and json.loads(before.stdout)["exit_code"] == 5
    usage = gradium(tmp_path, "voices", "list", "--json", "--zzz")
    assert usage.returncode == 2
    assert json.loads(usage.stdout) == {
        "ok": False,
        "error": "No such option: --zzz",
        "hint": "see `gradium voices list --help`",
        "exit_code": 2,
    }
    # Audio on stdout: the object goes to stderr, so the audio stream stays clean.
    piped = gradium(tmp_path, "say", "hi", "--json", "--voice", "Nobody", "--base-url", local_server.base_url)
    assert piped.returncode == 5 and piped.stdout == b""
    assert json.loads(piped.stderr.decode().splitlines()[-1])["exit_code"] == 5
    # Without --json stdout stays empty.
    plain = gradium(tmp_path, "say", "hi", "-o", "no/dir/x.wav", "--base-url", local_server.base_url)
    assert plain.returncode == 9 and plain.stdout == b""


# ----------------------------------------------------------------------------- the offline notice


def test_offline_notice_only_on_a_terminal_once_a_day_and_can_be_turned_off(tmp_path: Path) -> None:
    env = isolated_env(tmp_path)
    piped = gradium(tmp_path, "say", "Offline.", "-o", "piped.wav")
    assert (piped.returncode, piped.stderr) == (0, b"")
    first = run_on_pty(["say", "Offline.", "-o", "one.wav"], env, tmp_path)
    assert first.returncode == 0 and first.terminal.count(NOTICE) == 1, first.terminal
    second = run_on_pty(["say", "Offline.", "-o", "two.wav"], env, tmp_path)
    assert second.returncode == 0 and "offline engine" not in second.terminal
    stamp = tmp_path / "data" / "offline-notice.stamp"
    day_ago = time.time() - 24 * 3600 - 5
    os.utime(stamp, (day_ago, day_ago))
    third = run_on_pty(["say", "Offline.", "-o", "three.wav"], env, tmp_path)
    assert third.terminal.count(NOTICE) == 1, "a day later it shows again"
    os.utime(stamp, (day_ago, day_ago))
    assert gradium(tmp_path, "config", "set", "offline-notice", "off").returncode == 0
    fourth = run_on_pty(["say", "Offline.", "-o", "four.wav"], env, tmp_path)
    assert fourth.returncode == 0 and "offline engine" not in fourth.terminal
    bad = gradium(tmp_path, "config", "set", "offline-notice", "sometimes")
    assert bad.returncode == 2 and b"offline-notice must be on or off, not 'sometimes'" in bad.stderr


# ----------------------------------------------------------------------------- auth and a stored base URL


def test_logout_and_status_tell_the_truth_about_a_stored_base_url(tmp_path: Path, server_factory) -> None:
    key = "gsk_Stored_Base_Url_42ab"
    server = server_factory(api_key=key)
    assert gradium(tmp_path, "auth", "login", "--base-url", server.base_url, input=key.encode()).returncode == 0
    out = gradium(tmp_path, "auth", "logout")
    assert out.returncode == 0
    assert out.stderr.decode().splitlines() == [
        "gradium: removed the API key from profile default",
        f"gradium: note: base-url {server.base_url} is still stored in profile default: commands go there "
        "without a key (`gradium config unset base-url` for the offline engine)",
    ]
    status = gradium(tmp_path, "auth", "status", "--json")
    assert status.returncode == 4
    assert json.loads(status.stdout)["error"] == (
        f"no API key set, but commands go to {server.base_url} (base-url from config) without one, which a "
        "hosted server refuses: run `gradium auth login`, or unset base-url for the offline engine"
    )
    # And that is what happens: say goes to the server, which refuses.
    said = gradium(tmp_path, "say", "Hi.", "-o", "x.wav")
    assert said.returncode == 4
    assert gradium(tmp_path, "config", "unset", "base-url").returncode == 0
    offline = gradium(tmp_path, "auth", "status", "--json")
    assert "commands use the offline engine meanwhile" in json.loads(offline.stdout)["error"]
    assert gradium(tmp_path, "say", "Hi.", "-o", "x.wav").returncode == 0


# ----------------------------------------------------------------------------- host names


@pytest.mark.parametrize("command", [["say", "Hi.", "-o", "x.wav"], ["voices", "list"]])
def test_a_host_name_that_does_not_resolve_says_so(tmp_path: Path, command: list[str]) -> None:
    result = gradium(tmp_path, *command, "--base-url", "http://no-such-host.invalid/api/", "--api-key", "gsk_x")
    assert result.returncode == 7
    line = result.stderr.decode()
    assert line.startswith("gradium: error: cannot resolve the host name 'no-such-host.invalid': ")
    assert line.endswith("(check the spelling in --base-url or the base-url setting, and the network)\n")
    assert "gradium serve" not in line and not (tmp_path / "x.wav").exists()


# ----------------------------------------------------------------------------- "no" to a question


def test_no_to_a_question_exits_1_everywhere_and_is_documented(tmp_path: Path, local_server: RunningServer) -> None:
    assert "a question was answered no" in EXIT_CODE_MEANINGS[ExitCode.FAILURE]
    readme = (REPO / "README.md").read_text()
    assert "a question was answered no (nothing changed)" in readme
    (tmp_path / "keep.wav").write_bytes(b"mine")
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url)
    declined = run_on_pty(["say", "Hi.", "-o", "keep.wav"], env, tmp_path, answer=b"n\n", prompt=b"[y/N]")
    assert declined.returncode == 1 and "gradium: nothing changed" in declined.terminal
    assert (tmp_path / "keep.wav").read_bytes() == b"mine"
    (tmp_path / "keep.srt").write_text("mine\n")
    both = run_on_pty(
        ["say", "Hi.", "-o", "keep.wav", "--timestamps", "keep.srt"], env, tmp_path, answer=b"y\n", prompt=b"[y/N]"
    )
    assert "keep.wav and keep.srt exist. Replace them? [y/N]" in both.terminal
    assert both.returncode == 0 and (tmp_path / "keep.srt").read_text().startswith("1\n")


# ----------------------------------------------------------------------------- batch summary after Ctrl-C


def test_batch_summary_after_ctrl_c_counts_every_file_written(tmp_path: Path, local_server: RunningServer) -> None:
    lines = [f"Line {i}, a short one." for i in range(400)]
    (tmp_path / "lines.txt").write_text("\n".join(lines) + "\n")
    argv = [gradium_exe(), "batch", "lines.txt", "--out-dir", "c", "--jobs", "16", "-F", "flac"]
    proc = subprocess.Popen(
        [*argv, "--base-url", local_server.base_url],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    state = tmp_path / "c" / ".gradium-batch.jsonl"
    deadline = time.monotonic() + 60
    while not (state.exists() and state.read_text().count("\n") >= 20):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    recorded = len(state.read_text().splitlines())
    files = [p for p in (tmp_path / "c").iterdir() if not p.name.startswith(".")]
    summary = next(line for line in err.decode().splitlines() if line.startswith("gradium batch: 400 items"))
    written = int(re.search(r": (\d+) written", summary).group(1))  # type: ignore[union-attr]
    assert written == recorded == len(files), (summary, recorded, len(files))
    assert recorded < 400, "interrupted before the end"


# ----------------------------------------------------------------------------- wording


def test_wording(tmp_path: Path, local_server: RunningServer) -> None:
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url)
    assert gradium(tmp_path, "pronounce", "create", "One", env=env).returncode == 0
    (tmp_path / "one.csv").write_text("original,rewrite,case_sensitive\nGradium,gray dee um,false\n")
    done = gradium(tmp_path, "pronounce", "import", "One", "one.csv", env=env)
    assert done.stderr.decode() == "imported 1 rule into 'One' (replacing 0; now 1 rule)\n"
    help_text = " ".join(gradium(tmp_path, "devices", "--help").stdout.decode().split())
    assert "--json Machine-readable JSON on stdout" in help_text and "(stats, events)" not in help_text


# ----------------------------------------------------------------------------- a voice sample without speech


def level_wav(path: Path, seconds: float, dbfs: float | None, silent_first_s: float = 0.0, rate: int = 24000) -> str:
    """A 220 Hz tone whose loudest 20 ms frame sits at `dbfs` (None: digital silence), after some silence."""
    import numpy as np
    import soundfile as sf

    t = np.arange(int(seconds * rate)) / rate
    tone = np.zeros_like(t) if dbfs is None else np.sqrt(2) * 10 ** (dbfs / 20) * np.sin(2 * np.pi * 220 * t)
    sf.write(path, np.concatenate([np.zeros(int(silent_first_s * rate)), tone]), rate, subtype="FLOAT")
    return path.name


@pytest.mark.parametrize(
    ("dbfs", "silent_first_s", "start", "refused"),
    [
        (None, 0.0, "0", "digital silence"),
        (-60.0, 0.0, "0", "its loudest moment is -60 dBFS"),
        (-45.6, 0.0, "0", "its loudest moment is -46 dBFS"),  # just under the floor
        (-44.4, 0.0, "0", None),  # just over it
        (-20.0, 11.0, "0", "digital silence"),  # the voice comes after the 10 s clone window
        (-20.0, 11.0, "11", None),  # ... and --start moves the window onto it
    ],
)
def test_a_voice_sample_without_speech_is_refused(
    tmp_path: Path, server_factory, dbfs: float | None, silent_first_s: float, start: str, refused: str | None
) -> None:
    name = level_wav(tmp_path / "sample.wav", 3.0, dbfs, silent_first_s)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server_factory().base_url)
    result = gradium(tmp_path, "voices", "create", "--name", "Quiet", "--audio", name, "--start", start, env=env)
    listed = json.loads(gradium(tmp_path, "voices", "list", "--mine", "--json", env=env).stdout)
    if refused is None:
        assert result.returncode == 0, result.stderr
        assert [voice["name"] for voice in listed] == ["Quiet"]
        return
    assert result.returncode == 2 and listed == []
    assert result.stderr.decode() == (
        f"gradium: error: sample.wav has no speech from {start} s on ({refused}); a voice is cloned from someone "
        "speaking (record a voice, or move --start to where it speaks)\n"
    )
