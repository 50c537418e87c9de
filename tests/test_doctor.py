"""`gradium doctor` against real local servers: what passes, what fails, and the exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_helpers import gradium, isolated_env

KEY = "gsk_Doctor3Test_Key_5c7d11"


def lines_by_check(stdout: bytes) -> dict[str, str]:
    """{"server": "✓ server  http://...", ...}: each report line under its check's name."""
    found = {}
    for line in stdout.decode().splitlines():
        mark, rest = line.split(" ", 1)
        name = rest.split("  ", 1)[0].strip()
        found[name] = line
        assert mark in ("✓", "!", "✗"), line
    return found


def test_all_essential_checks_pass(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url, GRADIUM_API_KEY=KEY)
    done = gradium(tmp_path, "doctor", env=env)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    checks = lines_by_check(done.stdout)
    assert list(checks) == [
        "config",
        "settings",
        "api key",
        "server",
        "websocket",
        "command",
        "audio",
        "espeak-ng",
        "python",
        "packages",
    ]
    assert checks["config"].startswith("✓ config") and "not created yet" in checks["config"]
    assert checks["settings"].endswith("valid; from the environment: GRADIUM_API_KEY, GRADIUM_BASE_URL")
    assert checks["api key"].endswith("gsk_…7d11 (from env)")
    assert f"{server.base_url} answered in" in checks["server"] and "key accepted" in checks["server"]
    assert "1,000,000 credits left" in checks["server"]
    assert checks["websocket"].startswith("✓ websocket") and "first audio" in checks["websocket"]
    assert checks["espeak-ng"].startswith("✓ espeak-ng  eSpeak NG 1.")
    assert "gradium-cli 0.1.0" in checks["packages"]
    assert done.stderr.decode().endswith("gradium doctor: all essential checks passed\n")

    report = json.loads(gradium(tmp_path, "doctor", "--json", env=env).stdout)
    assert (report["ok"], report["exit_code"]) == (True, 0)
    by_name = {check["name"]: check for check in report["checks"]}
    assert by_name["websocket"]["status"] == "ok" and by_name["websocket"]["essential"] is True
    assert by_name["audio"]["essential"] is False
    assert by_name["espeak-ng"]["essential"] is False  # a hosted server does not need the local engine


def test_bad_settings_are_listed_not_the_end_of_the_diagnosis(tmp_path: Path) -> None:
    # A command stops at the first bad setting (exit 3); doctor stopped there too, before any check.
    env = isolated_env(tmp_path, GRADIUM_TIMEOUT="abc", GRADIUM_MARKDOWN="maybe")
    done = gradium(tmp_path, "doctor", env=env)
    assert done.returncode == 3, done.stderr.decode()
    checks = lines_by_check(done.stdout)
    assert checks["settings"].startswith("✗ settings")
    assert checks["settings"].endswith(
        "GRADIUM_TIMEOUT: timeout must be a number of seconds, not 'abc'; "
        "GRADIUM_MARKDOWN: markdown must be on or off, not 'maybe'"
    )
    assert checks["espeak-ng"].startswith("✓ espeak-ng")  # the rest of the diagnosis ran
    # A config file that cannot be read at all: a failed row too, not one error line.
    config = tmp_path / "config" / "config.ini"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("this is not ini\n")
    config.chmod(0o600)
    unread = gradium(tmp_path, "doctor", env=isolated_env(tmp_path))
    assert unread.returncode == 3, unread.stderr.decode()
    rows = lines_by_check(unread.stdout)
    assert rows["config"].startswith(f"✗ config           cannot read {config}: File contains no section headers")
    assert rows["espeak-ng"].startswith("✓ espeak-ng")


def test_refused_key_fails_with_4(tmp_path: Path, server_factory) -> None:
    server = server_factory(api_key=KEY)
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=server.base_url, GRADIUM_API_KEY="gsk_not_the_right_key")
    done = gradium(tmp_path, "doctor", env=env)
    assert done.returncode == 4
    server_line = lines_by_check(done.stdout)["server"]
    assert server_line.startswith("✗ server") and "refused the API key" in server_line
    assert "websocket" not in lines_by_check(done.stdout)
    assert done.stderr.decode().endswith("gradium doctor: 1 essential check(s) failed\n")


def test_unreachable_server_fails_with_7(tmp_path: Path) -> None:
    env = isolated_env(tmp_path, GRADIUM_BASE_URL="http://127.0.0.1:9/api/", GRADIUM_API_KEY=KEY)
    done = gradium(tmp_path, "doctor", "--json", env=env)
    assert done.returncode == 7
    report = json.loads(done.stdout)
    assert report["exit_code"] == 7
    assert [c["status"] for c in report["checks"] if c["name"] == "server"] == ["fail"]


def test_a_base_url_that_is_not_one_is_its_own_failed_row(tmp_path: Path) -> None:
    """Under "api key" it read as a problem with the key, which is fine here."""
    done = gradium(tmp_path, "doctor", "--base-url", "http://[::1", env=isolated_env(tmp_path, GRADIUM_API_KEY=KEY))
    assert done.returncode == 2
    checks = lines_by_check(done.stdout)
    assert checks["base url"] == "✗ base url         base URL http://[::1: Invalid IPv6 URL"
    assert "api key" not in checks


def test_offline_engine(tmp_path: Path) -> None:
    done = gradium(tmp_path, "doctor")
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    checks = lines_by_check(done.stdout)
    assert checks["api key"].endswith("not needed: the built-in offline engine is in use")
    assert checks["websocket"].startswith("✓")
    assert checks["espeak-ng"].startswith("✓")
    as_json = gradium(tmp_path, "doctor", "--json")
    assert as_json.returncode == 0, as_json.stderr.decode()
    report = json.loads(as_json.stdout)
    assert {c["name"]: c["essential"] for c in report["checks"]}["espeak-ng"] is True


def test_loose_config_fails_with_3(tmp_path: Path, local_server) -> None:
    path = tmp_path / "config" / "config.ini"
    path.parent.mkdir()
    path.write_text(f"[default]\napi-key = {KEY}\n")
    path.chmod(0o644)
    done = gradium(tmp_path, "doctor", env=isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url))
    assert done.returncode == 3
    assert lines_by_check(done.stdout)["config"] == (
        f"✗ config     {path} has mode 0644, readable by others; run `chmod 600 {path}`"
    )
    assert KEY.encode() not in done.stdout + done.stderr


def test_unknown_configured_voice_fails_with_5(tmp_path: Path, local_server) -> None:
    env = isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url, GRADIUM_VOICE="Nobody")
    done = gradium(tmp_path, "doctor", env=env)
    assert done.returncode == 5
    assert "unknown voice 'Nobody'" in lines_by_check(done.stdout)["websocket"]


def test_audio_device_is_reported(tmp_path: Path, local_server, audio_device) -> None:
    env = audio_device.subprocess_env(isolated_env(tmp_path, GRADIUM_BASE_URL=local_server.base_url))
    done = gradium(tmp_path, "doctor", env=env)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    audio = lines_by_check(done.stdout)["audio"]
    assert audio.startswith("✓ audio") and "output device(s), default" in audio
