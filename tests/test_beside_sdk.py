"""Living beside the official SDK, whose `gradium` script shadows ours when installed after it.

The SDK's console script is rebuilt here exactly as pip writes it (`from gradium.cli import main`),
so the clash is the real one, and the SDK's own CLI is run to compare `gradium tts` with.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from gradium_cli.server.app import RunningServer
from tests.cli_helpers import gradium, isolated_env
from tests.servers import gradium_exe

EMMA = "YTpq7expH9539ERJ"
TEXT = "Scripts written for the SDK keep working."


def sdk_script(directory: Path) -> Path:
    """The `gradium` script pip installs for the SDK."""
    directory.mkdir(exist_ok=True)
    script = directory / "gradium"
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom gradium.cli import main\nsys.exit(main())\n")
    script.chmod(0o755)
    return script


def with_path(tmp_path: Path, *first: Path) -> dict[str, str]:
    env = isolated_env(tmp_path)
    env["PATH"] = os.pathsep.join([*map(str, first), env.get("PATH", "")])
    return env


def cli_exe() -> str:
    return str(Path(gradium_exe()).with_name("gradium-cli"))


def wav_seconds(data: bytes) -> float:
    info = sf.info(io.BytesIO(data))
    assert info.samplerate == 48000 and info.channels == 1
    return float(info.frames / info.samplerate)


def test_gradium_cli_runs_this_tool_when_the_sdk_owns_gradium(tmp_path: Path, local_server: RunningServer) -> None:
    sdk_bin = tmp_path / "sdk-bin"
    sdk_script(sdk_bin)
    env = with_path(tmp_path, sdk_bin, Path(gradium_exe()).parent)
    # The clash is real: the SDK's `gradium` knows no `say`.
    clash = subprocess.run(["gradium", "say", "hi"], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert clash.returncode == 2 and b"invalid choice: 'say'" in clash.stderr
    done = subprocess.run(
        ["gradium-cli", "say", TEXT, "-o", "a.wav", "--base-url", local_server.base_url],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert 1.5 < wav_seconds((tmp_path / "a.wav").read_bytes()) < 6


def test_doctor_says_which_gradium_is_on_path(tmp_path: Path) -> None:
    sdk_bin = tmp_path / "sdk-bin"
    script = sdk_script(sdk_bin)
    shadowed = subprocess.run(
        [cli_exe(), "doctor", "--local", "--json"],
        capture_output=True,
        env=with_path(tmp_path, sdk_bin, Path(gradium_exe()).parent),
        cwd=tmp_path,
        timeout=120,
    )
    assert shadowed.returncode == 0, shadowed.stderr
    check = next(c for c in json.loads(shadowed.stdout)["checks"] if c["name"] == "command")
    assert check["status"] == "warn" and check["essential"] is False
    assert check["detail"].startswith(f"`gradium` on PATH ({script}) is not this tool")
    assert "gradium-cli" in check["detail"]
    ours = subprocess.run(
        [cli_exe(), "doctor", "--local", "--json"],
        capture_output=True,
        env=with_path(tmp_path, Path(gradium_exe()).parent, sdk_bin),
        cwd=tmp_path,
        timeout=120,
    )
    check = next(c for c in json.loads(ours.stdout)["checks"] if c["name"] == "command")
    assert check == {
        "name": "command",
        "status": "ok",
        "detail": f"`gradium` on PATH is this tool ({gradium_exe()})",
        "essential": False,
        "exit_code": 0,
    }


def sdk_tts(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gradium.cli", "tts", *args],
        capture_output=True,
        env=isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )


def test_tts_means_what_the_sdk_cli_means(tmp_path: Path, local_server: RunningServer) -> None:
    url = local_server.base_url.rstrip("/")  # the SDK's documented form has no trailing slash
    common = ["--voice-id", EMMA, "--gradium-base-url", url, "--api-key", "gsk_sdk_form"]
    for name, extra in (("wav", []), ("bin", []), ("pcm", []), ("raw", ["-f", "pcm_16000"])):
        theirs = sdk_tts(tmp_path, TEXT, "-o", f"sdk.{name}", *extra, *common)
        assert theirs.returncode == 0, theirs.stderr
        ours = gradium(tmp_path, "tts", TEXT, "-o", f"ours.{name}", *extra, *common)
        assert ours.returncode == 0 and ours.stdout == b"", ours.stderr
        a, b = (tmp_path / f"sdk.{name}").read_bytes(), (tmp_path / f"ours.{name}").read_bytes()
        # Same container as the SDK wrote (WAV for .wav and for an extension it does not know).
        assert (a[:4] == b"RIFF") == (b[:4] == b"RIFF"), name
        assert abs(len(a) - len(b)) <= 2 * 7680, (name, len(a), len(b))  # same length within 2 chunks
    assert wav_seconds((tmp_path / "ours.bin").read_bytes()) > 1.5
    pcm16 = np.frombuffer((tmp_path / "ours.raw").read_bytes(), dtype="<i2")
    assert 1.5 < len(pcm16) / 16000 < 6
    # Like the SDK, an existing file is replaced without a question.
    (tmp_path / "keep.wav").write_bytes(b"old")
    assert gradium(tmp_path, "tts", "Again.", "-o", "keep.wav", *common).returncode == 0
    assert wav_seconds((tmp_path / "keep.wav").read_bytes()) > 0.3


def test_tts_without_output_pipes_and_refuses_a_terminal(tmp_path: Path, local_server: RunningServer) -> None:
    piped = gradium(tmp_path, "tts", TEXT, "--gradium-base-url", local_server.base_url)
    assert piped.returncode == 0, piped.stderr
    assert wav_seconds(piped.stdout) > 1.5
    bad = gradium(tmp_path, "tts", TEXT, "-f", "mp4", "-o", "x.wav", "--gradium-base-url", local_server.base_url)
    assert bad.returncode == 2 and bad.stderr.decode().startswith("gradium: error: unknown format 'mp4'")
    assert not (tmp_path / "x.wav").exists()


def test_stt_points_at_the_sdk_in_one_line(tmp_path: Path) -> None:
    line = (
        "`gradium stt` is the gradium SDK's speech-to-text, which this tool does not do; "
        "run the SDK's command: python -m gradium.cli stt ARGS"
    )
    result = gradium(tmp_path, "stt", "speech.wav", "--language", "fr")
    assert result.returncode == 2 and result.stdout == b""
    assert result.stderr.decode() == f"gradium: error: {line}\n"
    as_json = gradium(tmp_path, "stt", "speech.wav", "--json")  # --json: the error is an object on stdout too
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["error"] == line
