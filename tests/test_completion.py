"""Completion through the real machinery: the shipped bash script in a bash subprocess (COMP_WORDS as
readline leaves them), and the zsh and fish scripts loaded by their own shells."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from gradium_cli.protocol.formats import FORMATS
from tests.cli_helpers import gradium, isolated_env
from tests.servers import REPO, gradium_exe

COMPLETIONS = REPO / "completions"


def shell_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = isolated_env(tmp_path, XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    env["PATH"] = f"{Path(gradium_exe()).parent}{os.pathsep}{env['PATH']}"
    return env


def need(program: str) -> None:
    assert shutil.which(program), f"{program} is not installed (.ci/run installs it with apt-get)"


def bash_complete(tmp_path: Path, words: list[str], env: dict[str, str]) -> list[str]:
    """COMPREPLY from the shipped script; `words` as bash hands them over (backslashes kept), the last one
    being completed."""
    need("bash")
    quoted = " ".join("'" + word.replace("'", "'\\''") + "'" for word in words)
    script = (
        f"source {COMPLETIONS / 'gradium.bash'}\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_gradium_completion gradium\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    return [line for line in done.stdout.decode().splitlines() if line]


def test_a_name_with_spaces_completes_quoted_as_one_argument(tmp_path: Path) -> None:
    env = shell_env(tmp_path)
    assert bash_complete(tmp_path, ["gradium", "say", "--voice", "eSpeak\\ Afr"], env) == ["eSpeak\\ Afrikaans"]
    got = bash_complete(tmp_path, ["gradium", "say", "--voice", "eSpeak\\ English\\ \\(Gr"], env)
    assert got == ["eSpeak\\ English\\ \\(Great\\ Britain\\)"]
    # Whatever bash inserts is one argument that says the voice's name.
    argv = subprocess.run(
        ["bash", "--norc", "-c", f"printf '%s\\n' {got[0]}"], capture_output=True, timeout=30
    ).stdout.decode()
    assert argv == "eSpeak English (Great Britain)\n"
    # ... and it is a voice `say` accepts.
    said = gradium(tmp_path, "say", "Hello.", "--voice", "eSpeak English (Great Britain)", "-o", "gb.wav")
    assert said.returncode == 0, said.stderr


def test_voice_names_complete_with_no_key(tmp_path: Path) -> None:
    env = shell_env(tmp_path)
    assert bash_complete(tmp_path, ["gradium", "say", "--voice", "Em"], env) == ["Emma"]
    assert bash_complete(tmp_path, ["gradium", "say", "-V", "YTpq"], env) == ["YTpq7expH9539ERJ"]
    # The offline engine's own store: a voice cloned offline completes too.
    sample = tmp_path / "me.wav"
    import numpy as np
    import soundfile as sf

    t = np.arange(3 * 24000) / 24000
    sf.write(sample, 0.2 * np.sin(2 * np.pi * 220 * t), 24000)
    made = gradium(tmp_path, "voices", "create", "--name", "Zed Voice", "--audio", str(sample))
    assert made.returncode == 0, made.stderr
    assert bash_complete(tmp_path, ["gradium", "voices", "show", "Zed"], env) == ["Zed\\ Voice"]
    assert not any(p.name.endswith(".part") for p in (tmp_path / "cache").rglob("*"))


def test_show_format_and_config_set_offer_values(tmp_path: Path) -> None:
    env = shell_env(tmp_path)
    shown = bash_complete(tmp_path, ["gradium", "voices", "show", ""], env)
    assert {"Emma", "Kent", "Jack"} <= set(shown)
    assert gradium(tmp_path, "pronounce", "create", "Brand Names").returncode == 0
    assert bash_complete(tmp_path, ["gradium", "pronounce", "show", "Br"], env) == ["Brand\\ Names"]
    assert bash_complete(tmp_path, ["gradium", "say", "--pronunciation", ""], env) == ["Brand\\ Names"]
    formats = bash_complete(tmp_path, ["gradium", "say", "-F", ""], env)
    assert formats == [*FORMATS, "flac", "mp3"]
    assert bash_complete(tmp_path, ["gradium", "stream", "--format", "pcm_1"], env) == ["pcm_16000"]
    settings = bash_complete(tmp_path, ["gradium", "config", "set", ""], env)
    assert {"api-key", "base-url", "region", "voice", "format", "offline-notice"} <= set(settings)
    assert bash_complete(tmp_path, ["gradium", "config", "set", "region", ""], env) == ["eu", "us"]
    assert bash_complete(tmp_path, ["gradium", "config", "set", "offline-notice", "o"], env) == ["on", "off"]
    assert bash_complete(tmp_path, ["gradium", "config", "set", "voice", "Ja"], env) == ["Jack"]
    assert bash_complete(tmp_path, ["gradium", "config", "set", "format", "ul"], env) == ["ulaw_8000"]
    assert bash_complete(tmp_path, ["gradium", "config", "set", "base-url", ""], env) == []


def test_zsh_script_loads_cleanly(tmp_path: Path) -> None:
    need("zsh")
    script = f"autoload -U compinit && compinit -u -d {tmp_path / 'zcompdump'} && source {COMPLETIONS / 'gradium.zsh'}"
    done = subprocess.run(["zsh", "-f", "-c", script], capture_output=True, env=shell_env(tmp_path), timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")


def test_fish_script_loads_and_completes(tmp_path: Path) -> None:
    need("fish")
    env = shell_env(tmp_path)
    script = f"source {COMPLETIONS / 'gradium.fish'}; complete -C 'gradium con'; complete -C 'gradium say --voice Em'"
    done = subprocess.run(["fish", "--no-config", "-c", script], capture_output=True, env=env, timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("config\t") and lines[1].startswith("Emma\t")


@pytest.mark.parametrize("words", [["gradium", "say", "--voice", ""], ["gradium", "config", "set", "voice", ""]])
def test_completion_writes_nothing_but_its_cache(tmp_path: Path, words: list[str]) -> None:
    env = shell_env(tmp_path)
    assert bash_complete(tmp_path, words, env)
    assert not (tmp_path / "config").exists()
    assert json.loads(next((tmp_path / "cache").rglob("*.json")).read_text())["items"]
