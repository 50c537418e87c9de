"""`gradium auth login|status|logout` against a real local server that checks its key."""

from __future__ import annotations

import json
import os
import select
import signal
import stat
import termios
import time
from pathlib import Path

from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

KEY = "gsk_Auth5Test_Key_9d1e07"
WRONG = "gsk_Wrong_Key_000000000"


def config_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "config.ini"


def test_login_checks_then_stores_the_key(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    done = gradium(tmp_path, "auth", "login", input=f"{KEY}\n".encode(), env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert KEY.encode() not in done.stdout + done.stderr
    lines = done.stderr.decode().splitlines()
    assert lines[0].startswith(f"gradium: key gsk_…1e07 accepted by {server.base_url}; stored in profile default")
    assert lines[1] == "gradium: credits left: 1,000,000 of 1,000,000 (plan local)"
    path = config_file(tmp_path)
    assert f"api-key = {KEY}" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_refused_key_exits_4_and_stores_nothing(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    done = gradium(tmp_path, "auth", "login", input=f"{WRONG}\n".encode(), env=env)
    assert done.returncode == 4
    assert done.stderr.decode() == (
        f"gradium: error: {server.base_url} refused the key gsk_…0000; nothing was stored "
        "(check the key, and --base-url or --region)\n"
    )
    assert not config_file(tmp_path).exists()


def test_login_stores_the_base_url_given(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    done = gradium(tmp_path, "auth", "login", "--base-url", server.base_url, "--profile", "lab", input=KEY.encode())
    assert done.returncode == 0, done.stderr.decode()
    assert config_file(tmp_path).read_text() == f"[lab]\napi-key = {KEY}\nbase-url = {server.base_url}\n\n"
    # and the profile now works on its own
    out = tmp_path / "hi.wav"
    said = gradium(tmp_path, "say", "Hi", "-o", str(out), "--profile", "lab")
    assert said.returncode == 0, said.stderr.decode()


def test_empty_key_is_a_usage_error(tmp_path: Path) -> None:
    done = gradium(tmp_path, "auth", "login", input=b"\n")
    assert done.returncode == 2
    assert done.stderr.startswith(b"gradium: error: no API key given")


def test_status(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    missing = gradium(tmp_path, "auth", "status", env=env)
    assert missing.returncode == 4
    assert "api_key_source\tunset" in missing.stdout.decode().splitlines()
    assert gradium(tmp_path, "auth", "login", input=KEY.encode(), env=env).returncode == 0

    done = gradium(tmp_path, "auth", "status", env=env)
    assert done.returncode == 0, done.stderr.decode()
    fields = dict(line.split("\t", 1) for line in done.stdout.decode().splitlines())
    assert fields["api_key"] == "gsk_…1e07"
    assert fields["api_key_source"] == "config"
    assert fields["base_url"] == server.base_url
    assert fields["key_accepted"] == "true"
    assert fields["credits_left"] == "1,000,000 of 1,000,000 (plan local)"

    record = json.loads(gradium(tmp_path, "auth", "status", "--json", env=env).stdout)
    assert record["credits"]["remaining_credits"] == 1_000_000
    assert (record["api_key"], record["api_key_source"], record["base_url_source"]) == ("gsk_…1e07", "config", "env")

    from_env = json.loads(gradium(tmp_path, "auth", "status", "--json", env={**env, "GRADIUM_API_KEY": WRONG}).stdout)
    assert (from_env["api_key_source"], from_env["key_accepted"]) == ("env", False)
    refused = gradium(tmp_path, "auth", "status", env={**env, "GRADIUM_API_KEY": WRONG})
    assert refused.returncode == 4
    unreachable = gradium(tmp_path, "auth", "status", "--base-url", "http://127.0.0.1:9/api/", env=env)
    assert unreachable.returncode == 7
    for output in (done, missing, refused, unreachable):
        assert KEY.encode() not in output.stdout + output.stderr


def test_logout(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    assert gradium(tmp_path, "auth", "login", input=KEY.encode(), env=env).returncode == 0
    done = gradium(tmp_path, "auth", "logout", env=env)
    assert done.returncode == 0
    assert done.stderr.decode().splitlines() == [
        "gradium: removed the API key from profile default",
        f"gradium: note: base-url {server.base_url} is still set by GRADIUM_BASE_URL: commands go there without "
        "a key (unset it for the offline engine)",
    ]
    assert KEY not in config_file(tmp_path).read_text()
    again = gradium(tmp_path, "auth", "logout", env={**env, "GRADIUM_API_KEY": KEY})
    assert again.stderr.decode().splitlines()[:2] == [
        "gradium: no API key stored in profile default",
        "gradium: note: GRADIUM_API_KEY is still set in the environment",
    ]


def test_login_on_a_terminal_does_not_echo(tmp_path: Path, server_factory) -> None:
    """A real pseudo-terminal: the key typed at the prompt never appears in the transcript."""
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    exe, cwd = gradium_exe(), str(tmp_path)  # nothing but system calls between fork and exec
    pid, fd = os.forkpty()
    if pid == 0:  # child: the terminal is its controlling tty, as in a shell
        try:
            os.chdir(cwd)
            os.execve(exe, [exe, "auth", "login"], env)
        finally:
            os._exit(127)
    transcript = b""
    sent = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            transcript += chunk
        # Type only once the prompt has turned echo off, as a person would after seeing it:
        # typed earlier, getpass's TCSAFLUSH would discard the input (and the tty echo it).
        if not sent and b"API key:" in transcript and not termios.tcgetattr(fd)[3] & termios.ECHO:
            os.write(fd, (KEY + "\r").encode())
            sent = True
    if not sent or time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert sent, transcript.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, transcript.decode(errors="replace")
    assert KEY.encode() not in transcript
    assert b"accepted by" in transcript
    assert f"api-key = {KEY}" in config_file(tmp_path).read_text()


BAD_KEYS = ["gsk_clé_secrète", "gsk_ab\ncd", "gsk_tab\there", "gsk with space"]
BAD_KEY_LINE = "holds characters no key has (a key is printable ASCII, no spaces)"


def test_a_key_no_header_can_carry_is_refused_before_it_is_sent_and_never_shown(tmp_path: Path, server_factory) -> None:
    """A non-ASCII key crashed `say` and `voices` with a traceback (UnicodeEncodeError); one with a
    newline was shown in full in the WebSocket library's error."""
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url)
    for bad in BAD_KEYS:
        secret = bad.encode()
        runs = {
            "flag": (gradium(tmp_path, "say", "Hi.", "-o", "k.wav", "--api-key", bad, env=env), 2),
            "env": (gradium(tmp_path, "voices", "list", env={**env, "GRADIUM_API_KEY": bad}), 3),
        }
        if "\n" not in bad:  # login reads the first line: "gsk_ab" is a key the server refuses
            runs["login"] = (gradium(tmp_path, "auth", "login", input=secret + b"\n", env=env), 2)
        for how, (run, code) in runs.items():
            stderr = run.stderr.decode()
            assert run.returncode == code, (bad, how, stderr)
            assert stderr.count("\n") == 1 and BAD_KEY_LINE in stderr, (bad, how, stderr)
            assert secret not in run.stdout + run.stderr and b"Traceback" not in run.stderr
    assert not config_file(tmp_path).exists() and not (tmp_path / "k.wav").exists()
    # In the config file (written by hand): named by where it is, not shown.
    config_file(tmp_path).parent.mkdir(parents=True, exist_ok=True)
    config_file(tmp_path).write_text("[default]\napi-key = gsk_clé\n")
    config_file(tmp_path).chmod(0o600)
    filed = gradium(tmp_path, "say", "Hi.", "-o", "k.wav", env=env)
    assert filed.returncode == 3
    assert filed.stderr.decode() == (
        f"gradium: error: the API key in {config_file(tmp_path)} [default] {BAD_KEY_LINE} "
        "(set it again: `gradium config set api-key`)\n"
    )
    # And a server started with such a key would lock out every client: refused at start.
    served = gradium(tmp_path, "serve", "--port", "0", "--api-key", "gsk_clé")
    assert served.returncode == 2
    assert served.stderr.decode() == f"gradium: error: the API key given with --api-key {BAD_KEY_LINE}\n"
