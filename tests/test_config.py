"""`gradium config` and settings precedence: flag > env > profile > default, seen on the wire."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

from gradium_cli.config import KNOWN_SETTINGS
from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

EMMA, JACK, KENT, SYDNEY = "YTpq7expH9539ERJ", "m86j6D7UZpGzHsNu", "LFZvm12tW_z0xfGo", "jtEKaLYNn6iif5PR"
KEY = "gsk_Config7Test_Key_4f9a2b"


def write_config(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config" / "config.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def sent_voice(stderr: bytes) -> str | None:
    """The voice_id of the setup frame in a `-v` wire log (None when the setup has none)."""
    for line in stderr.decode().splitlines():
        if line.startswith(">") and '"type": "setup"' in line:
            setup = json.loads(line[line.index("{") :])
            return setup.get("voice_id")
    raise AssertionError(f"no setup frame in:\n{stderr.decode()}")


def say_voice(tmp_path: Path, base_url: str, *args: str, **env: str) -> str | None:
    out = tmp_path / "out.wav"
    done = gradium(
        tmp_path,
        "-v",
        "say",
        "Hello there",
        "-o",
        str(out),
        "--force",
        *args,
        env=isolated_env(tmp_path, GRADIUM_BASE_URL=base_url, **env),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert out.stat().st_size > 44
    return sent_voice(done.stderr)


def test_voice_precedence_flag_env_profile_default(tmp_path: Path, local_server) -> None:
    base = local_server.base_url
    # default: no voice in the setup, the server picks its own
    assert say_voice(tmp_path, base) is None
    write_config(tmp_path, "[default]\nvoice = Jack\n\n[work]\nvoice = Sydney\n")
    assert say_voice(tmp_path, base) == JACK  # the default profile
    assert say_voice(tmp_path, base, "--profile", "work") == SYDNEY  # a command's --profile
    assert say_voice(tmp_path, base, GRADIUM_PROFILE="work") == SYDNEY  # GRADIUM_PROFILE
    assert say_voice(tmp_path, base, "--profile", "nosuch") is None  # a profile without the setting: default
    assert say_voice(tmp_path, base, GRADIUM_VOICE="Emma", GRADIUM_PROFILE="work") == EMMA  # env beats profile
    assert say_voice(tmp_path, base, "--voice", "Kent", GRADIUM_VOICE="Emma") == KENT  # flag beats env


def test_global_profile_option(tmp_path: Path, local_server) -> None:
    write_config(tmp_path, "[default]\nvoice = Jack\n\n[work]\nvoice = Sydney\n")
    done = gradium(
        tmp_path,
        "-v",
        "--profile",
        "work",
        "say",
        "Hi",
        "-o",
        str(tmp_path / "a.wav"),
        env=isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert sent_voice(done.stderr) == SYDNEY


def test_base_url_and_key_come_from_the_profile(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    write_config(
        tmp_path,
        f"[default]\nbase-url = http://127.0.0.1:9/api/\n\n[lab]\nbase-url = {server.base_url}\napi-key = {KEY}\n",
    )
    out = tmp_path / "lab.wav"
    done = gradium(tmp_path, "say", "Hi", "-o", str(out), "--profile", "lab")
    assert done.returncode == 0, done.stderr.decode()
    assert out.read_bytes()[:4] == b"RIFF"
    # the default profile points nowhere: a network error, exit 7
    done = gradium(tmp_path, "say", "Hi", "-o", str(tmp_path / "default.wav"))
    assert done.returncode == 7, done.stderr.decode()


def test_format_setting_applies_to_stdout_only(tmp_path: Path, local_server) -> None:
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url)
    write_config(tmp_path, "[default]\nformat = pcm_16000\n")
    piped = gradium(tmp_path, "say", "Hello", env=env)
    assert piped.returncode == 0, piped.stderr.decode()
    assert piped.stdout[:4] != b"RIFF" and len(piped.stdout) % 2 == 0  # raw s16le
    flagged = gradium(tmp_path, "say", "Hello", "--format", "wav", env=env)
    assert flagged.stdout[:4] == b"RIFF"  # the flag wins
    env_wins = gradium(tmp_path, "say", "Hello", env={**env, "GRADIUM_FORMAT": "wav"})
    assert env_wins.stdout[:4] == b"RIFF"  # the environment beats the file
    ogg = tmp_path / "x.ogg"
    to_file = gradium(tmp_path, "say", "Hello", "-o", str(ogg), env=env)
    assert to_file.returncode == 0, to_file.stderr.decode()
    assert ogg.read_bytes()[:4] == b"OggS"  # a file's extension decides, not the setting


def test_format_setting_takes_the_locally_encoded_formats_as_the_flag_does(tmp_path: Path, local_server) -> None:
    # `--format mp3` on stdout works; the same value as a setting was refused as an unknown format
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url)
    stored = gradium(tmp_path, "config", "set", "format", "mp3", env=env)
    assert stored.returncode == 0, stored.stderr.decode()
    from_file = gradium(tmp_path, "say", "Hello", env=env)
    assert from_file.returncode == 0, from_file.stderr.decode()
    assert from_file.stdout[:2] == b"\xff\xfb"  # an MPEG audio frame
    from_env = gradium(tmp_path, "say", "Hello", env={**env, "GRADIUM_FORMAT": "flac"})
    assert from_env.returncode == 0, from_env.stderr.decode()
    assert from_env.stdout[:4] == b"fLaC"
    wrong = gradium(tmp_path, "config", "set", "format", "aac", env=env)
    assert wrong.returncode == 2
    assert wrong.stderr.decode().endswith(
        "unknown format 'aac' (choose from pcm, wav, opus, ulaw_8000, alaw_8000, pcm_8000, pcm_16000, pcm_22050, "
        "pcm_24000, pcm_44100, pcm_48000, flac, mp3)\n"
    )


def test_timeout_setting_and_flag(tmp_path: Path, server_factory) -> None:
    slow = server_factory(latency_ms=1500)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=slow.base_url)
    write_config(tmp_path, "[default]\ntimeout = 0.3\n")
    configured = gradium(tmp_path, "say", "Hello", "-o", str(tmp_path / "a.wav"), env=env)
    assert configured.returncode == 7, configured.stderr.decode()
    assert "no reply from the server for 0.3 s" in configured.stderr.decode()
    flagged = gradium(tmp_path, "say", "Hello", "-o", str(tmp_path / "b.wav"), "--timeout", "20", env=env)
    assert flagged.returncode == 0, flagged.stderr.decode()
    from_env = gradium(tmp_path, "say", "Hello", "-o", str(tmp_path / "c.wav"), env={**env, "GRADIUM_TIMEOUT": "20"})
    assert from_env.returncode == 0, from_env.stderr.decode()


def test_a_bad_setting_from_the_environment_or_the_file_is_exit_3_and_says_where(tmp_path: Path, local_server) -> None:
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url)
    out = ("-o", str(tmp_path / "x.wav"))
    for name, value, message in (
        ("GRADIUM_TIMEOUT", "abc", "timeout must be a number of seconds, not 'abc'"),
        ("GRADIUM_MARKDOWN", "maybe", "markdown must be on or off, not 'maybe'"),
        ("GRADIUM_CACHE", "sometimes", "cache must be on or off, not 'sometimes'"),
        ("GRADIUM_REGION", "mars", "unknown region 'mars' (choose eu or us)"),
    ):
        bad = gradium(tmp_path, "say", "Hello", *out, env={**env, name: value})
        assert bad.returncode == 3, (name, bad.stderr)
        assert bad.stderr.decode() == f"gradium: error: {name}: {message} (unset {name} or fix it)\n"
    limit = gradium(tmp_path, "say", "Hello", *out, env={**env, "GRADIUM_MAX_REQUEST_CHARS": "0"})
    assert limit.returncode == 3
    assert limit.stderr.decode() == "gradium: error: GRADIUM_MAX_REQUEST_CHARS must be above 0, not '0'\n"
    path = write_config(tmp_path, "[default]\ntimeout = soon\n")
    from_file = gradium(tmp_path, "say", "Hello", *out, env=env)
    assert from_file.returncode == 3
    assert from_file.stderr.decode() == (
        f"gradium: error: {path} [default]: timeout must be a number of seconds, not 'soon' "
        "(`gradium config unset timeout`, or set it again)\n"
    )
    # The same value typed as a flag is a usage error (exit 2), and a flag beats the file.
    assert gradium(tmp_path, "say", "Hello", *out, "--timeout", "abc", env=env).returncode == 2
    assert gradium(tmp_path, "say", "Hello", *out, "--timeout", "20", env=env).returncode == 0
    assert (tmp_path / "x.wav").stat().st_size > 44


def test_set_get_list_unset_path(tmp_path: Path) -> None:
    assert gradium(tmp_path, "config", "set", "voice", "Emma").returncode == 0
    assert gradium(tmp_path, "config", "set", "region", "eu", "--profile", "work").returncode == 0
    got = gradium(tmp_path, "config", "get", "voice")
    assert (got.returncode, got.stdout) == (0, b"Emma\n")
    as_json = json.loads(gradium(tmp_path, "config", "get", "region", "--profile", "work", "--json").stdout)
    assert as_json == {"name": "region", "value": "eu", "source": "config", "profile": "work"}
    unset = gradium(tmp_path, "config", "get", "region")  # not in the default profile
    assert (unset.returncode, unset.stdout) == (1, b"")
    assert unset.stderr == b"gradium: region is not set in profile default\n"
    listed = gradium(tmp_path, "config", "list").stdout.decode().splitlines()
    assert "voice\tEmma\tconfig" in listed and "api-key\t\tunset" in listed
    assert len(listed) == len(KNOWN_SETTINGS)  # one line per setting
    path = gradium(tmp_path, "config", "path").stdout.decode().strip()
    assert path == str(tmp_path / "config" / "config.ini")
    assert "[work]\nregion = eu" in Path(path).read_text()
    removed = gradium(tmp_path, "config", "unset", "voice")
    assert removed.returncode == 0 and b"removed voice" in removed.stderr
    assert gradium(tmp_path, "config", "get", "voice").returncode == 1


def test_key_is_masked_unless_revealed(tmp_path: Path) -> None:
    stored = gradium(tmp_path, "config", "set", "api-key", input=(KEY + "\n").encode())
    assert stored.returncode == 0, stored.stderr.decode()
    assert KEY.encode() not in stored.stderr
    for args in (("config", "list"), ("config", "list", "--json"), ("config", "get", "api-key")):
        done = gradium(tmp_path, *args)
        assert done.returncode == 0
        assert KEY.encode() not in done.stdout + done.stderr
        assert "gsk_…9a2b".encode() in done.stdout  # the prefix and the last four characters
    revealed = gradium(tmp_path, "config", "get", "api-key", "--reveal")
    assert revealed.stdout == (KEY + "\n").encode()


def test_key_file_mode_is_0600(tmp_path: Path) -> None:
    path = write_config(tmp_path, "[default]\nvoice = Emma\n", mode=0o644)
    done = gradium(tmp_path, "config", "set", "api-key", KEY)
    assert done.returncode == 0, done.stderr.decode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = tmp_path / "fresh"
    env = isolated_env(fresh, GRADIUM_CONFIG_DIR=str(fresh / "cfg"))
    fresh.mkdir()
    assert gradium(fresh, "config", "set", "api-key", input=KEY.encode(), env=env).returncode == 0
    created = fresh / "cfg" / "config.ini"
    assert stat.S_IMODE(created.stat().st_mode) == 0o600
    assert f"api-key = {KEY}" in created.read_text()
    assert not list((fresh / "cfg").glob("*.tmp"))


def test_loose_permissions_warn_once(tmp_path: Path, local_server) -> None:
    path = write_config(tmp_path, f"[default]\napi-key = {KEY}\nvoice = Jack\n", mode=0o644)
    expected = f"gradium: warning: {path} has mode 0644, readable by others; run `chmod 600 {path}`"
    done = gradium(tmp_path, "config", "get", "voice")
    assert done.returncode == 0
    assert done.stderr.decode().splitlines() == [expected]
    # a command that reads several settings still warns once
    said = gradium(
        tmp_path,
        "say",
        "Hi",
        "-o",
        str(tmp_path / "a.wav"),
        env=isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url),
    )
    assert said.returncode == 0, said.stderr.decode()
    assert said.stderr.decode().splitlines().count(expected) == 1
    path.chmod(0o600)
    assert gradium(tmp_path, "config", "get", "voice").stderr == b""


def test_unknown_setting_and_bad_values(tmp_path: Path) -> None:
    done = gradium(tmp_path, "config", "set", "colour", "blue")
    assert done.returncode == 2
    assert done.stderr == (
        b"gradium: error: unknown setting 'colour' "
        b"(choose from api-key, base-url, region, voice, model, format, timeout, cache, cache-size, markdown, "
        b"offline-notice)\n"
    )
    assert gradium(tmp_path, "config", "get", "colour").returncode == 2
    assert gradium(tmp_path, "config", "set", "region", "mars").returncode == 2
    assert gradium(tmp_path, "config", "set", "timeout", "soon").returncode == 2
    bad_format = gradium(tmp_path, "config", "set", "format", "mp4")
    assert bad_format.returncode == 2 and b"unknown format 'mp4'" in bad_format.stderr
    assert not (tmp_path / "config" / "config.ini").exists()


def test_unreadable_config_is_exit_3(tmp_path: Path) -> None:
    write_config(tmp_path, "this is not ini\n")
    done = gradium(tmp_path, "config", "list")
    assert done.returncode == 3
    assert re.fullmatch(rb"gradium: error: cannot read .*config\.ini: .* \(fix or delete the file\)\n", done.stderr)


def test_a_config_file_that_cannot_be_opened_is_exit_3_not_ignored(tmp_path: Path) -> None:
    # configparser's read() skips a file it cannot open: the settings in it were silently not used
    config = tmp_path / "config" / "config.ini"
    config.mkdir(parents=True)
    done = gradium(tmp_path, "config", "get", "voice")
    assert done.returncode == 3
    # One line: no warning about the directory's mode first (it is no file others could read).
    assert done.stderr.decode() == f"gradium: error: cannot read {config}: Is a directory (fix or delete the file)\n"
    # mode 0200: its owner cannot read it. Root reads anything: as root (CI) the command runs as `nobody`
    # (setpriv), the owner of a directory of its own
    as_root = os.geteuid() == 0
    home = Path(tempfile.mkdtemp(prefix="gradium-unreadable-")) if as_root else tmp_path / "home"
    try:
        home.mkdir(exist_ok=True)
        config = home / "config" / "config.ini"
        config.parent.mkdir()
        config.write_text("[default]\nvoice = Jack\n")
        config.chmod(0o200)
        command = [gradium_exe(), "config", "get", "voice"]
        if as_root:
            for path in (home, config.parent, config):
                os.chown(path, 65534, 65534)
            home.chmod(0o755)
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = isolated_env(home, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"))
        done = subprocess.run(command, capture_output=True, env=env, cwd=home, timeout=60)
        assert done.returncode == 3, done.stderr
        assert done.stderr.decode() == (
            f"gradium: error: cannot read {config}: Permission denied (fix or delete the file)\n"
        )
    finally:
        if as_root:
            shutil.rmtree(home)


def test_xdg_config_home_is_honoured(tmp_path: Path) -> None:
    env = {k: v for k, v in isolated_env(tmp_path).items() if k != "GRADIUM_CONFIG_DIR"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    done = gradium(tmp_path, "config", "set", "voice", "Jack", env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "xdg" / "gradium" / "config.ini").read_text() == "[default]\nvoice = Jack\n\n"
    assert gradium(tmp_path, "config", "path", env=env).stdout.decode().strip() == str(
        tmp_path / "xdg" / "gradium" / "config.ini"
    )


def test_unwritable_config_dir_is_exit_3(tmp_path: Path) -> None:
    """Root writes anywhere, so as root (CI) the command runs as `nobody` (setpriv), in a
    directory of its own that it may read and enter but not write."""
    as_root = os.geteuid() == 0
    home = Path(tempfile.mkdtemp(prefix="gradium-unwritable-")) if as_root else tmp_path
    try:
        home.chmod(0o755)
        config = home / "config"
        config.mkdir()
        config.chmod(0o500)
        command = [gradium_exe(), "config", "set", "voice", "Emma"]
        if as_root:
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
        env = isolated_env(home, HOME=str(home), XDG_CACHE_HOME=str(home / "cache"))
        done = subprocess.run(command, capture_output=True, env=env, cwd=home, timeout=60)
        config.chmod(0o700)
        assert done.returncode == 3, done.stderr
        assert done.stderr.decode() == (
            f"gradium: error: cannot write {config}: Permission denied "
            "(set GRADIUM_CONFIG_DIR to a writable directory)\n"
        )
        assert list(config.iterdir()) == []
    finally:
        if as_root:
            shutil.rmtree(home)


def test_a_base_url_that_is_not_one_is_refused_where_it_was_set(tmp_path: Path) -> None:
    # Else the URL parsers failed deep in a request (a traceback), or `ftp://x/` became a host `ftp`.
    for url, problem in (
        ("http://[::1", "Invalid IPv6 URL"),
        ("http://localhost:99999/api/", "Port out of range 0-65535"),
        ("ftp://x/", "'ftp://' is not a scheme it can have (http://, https://, ws:// or wss://)"),
        ("http:///api/", "it names no host"),
    ):
        flag = gradium(tmp_path, "say", "Hello", "-o", "x.wav", "--base-url", url)
        assert flag.stderr.decode() == f"gradium: error: base URL {url}: {problem}\n"
        assert flag.returncode == 2
        env = gradium(tmp_path, "voices", "list", env=isolated_env(tmp_path, GRADIUM_BASE_URL=url))
        assert env.stderr.decode() == (
            f"gradium: error: GRADIUM_BASE_URL: base URL {url}: {problem} (unset GRADIUM_BASE_URL or fix it)\n"
        )
        assert env.returncode == 3
        stored = gradium(tmp_path, "config", "set", "base-url", url)
        assert stored.stderr.decode() == f"gradium: error: base URL {url}: {problem}\n"
        assert stored.returncode == 2
    assert not (tmp_path / "config" / "config.ini").exists() and not (tmp_path / "x.wav").exists()
    # ws-raw's full URL, its password masked.
    raw = gradium(tmp_path, "ws-raw", "--url", "wss://me:secret@[::1/api/speech/tts", input=b"{}\n")
    assert raw.stderr.decode() == "gradium: error: --url wss://me:****@[::1/api/speech/tts: Invalid IPv6 URL\n"
    assert raw.returncode == 2
