"""Conventions every command keeps: the key never shows, --json where there is data, colour and -q."""

from __future__ import annotations

import os
import select
import signal
import time
from pathlib import Path

from gradium_cli.devtools import gendocs
from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

KEY = "gsk_Leak9Canary_7Qx2Vb8Nw3Lm5Kz4"
# Commands that print no data on stdout: only messages on stderr, audio, a server log or files.
NO_DATA = {
    "gradium serve",
    "gradium voices delete",
    "gradium voices preview",
    "gradium pronounce delete",
    "gradium pronounce add",
    "gradium pronounce remove",
    "gradium pronounce import",
    "gradium pronounce export",
    "gradium config set",
    "gradium config path",
    "gradium config unset",
    "gradium auth login",
    "gradium auth logout",
}


def leaks(text: bytes) -> bool:
    """The key, or any 12-character run of it, anywhere in the bytes."""
    return any(KEY[i : i + 12].encode() in text for i in range(len(KEY) - 11))


def test_the_key_appears_in_no_output_at_verbose(tmp_path: Path, serve_process) -> None:
    proc, base_url = serve_process("--api-key", KEY)
    work = tmp_path / "work"
    work.mkdir()
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=base_url, GRADIUM_API_KEY=KEY)
    flag_env = isolated_env(tmp_path, GRADIUM_BASE_URL=base_url)  # the key given as --api-key instead
    (work / "lines.txt").write_text("First line.\nSecond line.\n")
    runs = [
        (env, ["-v", "say", "Hello there", "-o", str(work / "say.wav"), "--timestamps", str(work / "say.srt")], b""),
        (env, ["-v", "say", "Hello there", "--json", "--rest", "-o", str(work / "rest.wav")], b""),
        (flag_env, ["-v", "say", "Hi", "--api-key", KEY, "-o", str(work / "flag.wav")], b""),
        (env, ["-v", "stream", "-o", str(work / "stream.wav"), "--json"], b"Streaming some words.\n"),
        (env, ["-v", "batch", str(work / "lines.txt"), "--out-dir", str(work / "clips"), "--json"], b""),
        (env, ["-v", "voices", "list", "--json"], b""),
        (env, ["-v", "voices", "list"], b""),
        (flag_env, ["-v", "voices", "list", "--api-key", KEY], b""),
        (env, ["-v", "pronounce", "list", "--json"], b""),
        (env, ["-v", "auth", "status"], b""),
        (env, ["-v", "auth", "status", "--json"], b""),
        (flag_env, ["-v", "auth", "status", "--api-key", KEY], b""),
        (flag_env, ["-v", "auth", "login"], KEY.encode() + b"\n"),
        (flag_env, ["-v", "config", "list"], b""),
        (flag_env, ["-v", "config", "list", "--json"], b""),
        (flag_env, ["-v", "config", "get", "api-key"], b""),
        (env, ["-v", "doctor"], b""),
        (env, ["-v", "doctor", "--json"], b""),
        (
            env,
            [
                "-v",
                "ws-raw",
                "--setup",
                "output_format=pcm",
                "-x",
                "Hello over the raw socket.",
                "-x",
                "/eos",
                "--record",
                str(work / "raw.jsonl"),
            ],
            b"",
        ),
    ]
    for run_env, args, stdin in runs:
        done = gradium(work, *args, input=stdin, env=run_env)
        assert done.returncode == 0, f"{args}: {done.stderr.decode()}"
        assert done.stderr, f"{args}: -v printed nothing on stderr"
        assert not leaks(done.stdout), f"key in stdout of {args}"
        assert not leaks(done.stderr), f"key in stderr of {args}"
    written = [path for path in work.rglob("*") if path.is_file()]
    assert len(written) >= 8, written
    for path in written:
        assert not leaks(path.read_bytes()), f"key in {path}"
    # the only place the key may be is the config file `auth login` wrote, mode 0600
    config = tmp_path / "config" / "config.ini"
    assert KEY in config.read_text() and (config.stat().st_mode & 0o777) == 0o600
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert not leaks(out.encode() + err.encode()), "key in the server's log"


def test_every_command_that_prints_data_has_json() -> None:
    leaves = [node for node in gendocs.walk() if node.path and not node.is_group]
    assert {node.name for node in leaves} >= NO_DATA, "a NO_DATA command was renamed or removed"
    missing = []
    for node in leaves:
        flags = {opt for param in node.command.params for opt in getattr(param, "opts", [])}
        if node.name not in NO_DATA and "--json" not in flags:
            missing.append(node.name)
    assert not missing, f"commands printing data without --json: {missing}"


def run_in_terminal(args: list[str], env: dict[str, str], cwd: Path) -> bytes:
    """Run `gradium ARGS` with a pseudo-terminal as stdin, stdout and stderr; the transcript."""
    exe, where = gradium_exe(), str(cwd)
    pid, fd = os.forkpty()
    if pid == 0:
        try:
            os.chdir(where)
            os.execve(exe, [exe, *args], env)
        finally:
            os._exit(127)
    transcript = b""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child is gone
            break
        if not chunk:
            break
        transcript += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, transcript.decode(errors="replace")
    return transcript


def test_colour_on_a_terminal_and_off_with_no_color(tmp_path: Path, local_server) -> None:
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url, TERM="xterm")
    env.pop("NO_COLOR")
    coloured = run_in_terminal(["doctor"], env, tmp_path)
    assert b"\x1b[" in coloured and "✓ config".encode() not in coloured  # the mark is wrapped in colour
    for args, extra in ((["--no-color", "doctor"], {}), (["doctor"], {"NO_COLOR": "1"})):
        plain = run_in_terminal(args, {**env, **extra}, tmp_path)
        assert b"\x1b[" not in plain, args
        assert "✓ config".encode() in plain


def test_quiet_leaves_stderr_empty(tmp_path: Path) -> None:
    out = tmp_path / "q.wav"
    loud = gradium(tmp_path, "say", "Hello", "-o", str(out), "--stats")
    assert b"audio" in loud.stderr  # the statistics line that -q silences
    quiet = gradium(tmp_path, "-q", "say", "Hello", "-o", str(out), "--force", "--stats")
    assert (quiet.returncode, quiet.stderr) == (0, b"")
    assert out.read_bytes()[:4] == b"RIFF"
    failed = gradium(tmp_path, "-q", "config", "set", "nope", "x")
    assert failed.returncode == 2 and failed.stderr.startswith(b"gradium: error:")  # errors still show
