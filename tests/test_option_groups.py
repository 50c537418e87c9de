"""The option-group decorators: Typer sees every option, the command gets one folded value."""

# No `from __future__ import annotations`: like the command modules, the probe
# command below must carry its annotations as objects for Typer to read them.
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import pytest
import typer
from typer.testing import CliRunner

from gradium_cli.backend import BackendOptions
from gradium_cli.cli import options as o
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.voice_settings import VoiceOptions

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions as FoldedBackend

received: dict[str, Any] = {}


@o.with_backend(timeout=12.5)
@o.with_voice()
def probe(
    word: Annotated[str, typer.Argument()],
    json_out: o.JsonOpt = False,
    *,
    voice_options: "VoiceOptions",
    backend: "FoldedBackend",
) -> None:
    received.update(word=word, json_out=json_out, voice=voice_options, backend=backend)


def invoke(tmp_path: Path, *args: str) -> Any:
    app = plain_typer()
    app.command()(probe)
    return CliRunner().invoke(app, list(args), env={"GRADIUM_CONFIG_DIR": str(tmp_path), "COLUMNS": "200"})


def test_the_command_receives_the_options_folded(tmp_path: Path) -> None:
    received.clear()
    result = invoke(
        tmp_path,
        *("hi", "--json", "--voice", "Emma", "--speed", "1.2", "--set", "temp=0.5", "--set", "cfg_coef=2"),
        *("--base-url", "http://127.0.0.1:1/api/", "--api-key", "k", "--local"),
    )
    assert result.exit_code == 0, result.output
    assert received["word"] == "hi" and received["json_out"] is True
    assert received["voice"] == VoiceOptions(voice="Emma", speed=1.2, settings=["temp=0.5", "cfg_coef=2"])
    assert received["backend"] == BackendOptions("http://127.0.0.1:1/api/", "k", None, 12.5, True, None)


def test_help_lists_own_options_then_voice_then_backend(tmp_path: Path) -> None:
    help_text = invoke(tmp_path, "--help").output
    flags = ["--json", "--voice", "--pronunciation", "--base-url", "--timeout", "--profile"]
    positions = [help_text.index(flag + " ") for flag in flags]
    assert positions == sorted(positions)
    assert "default: 12.5" in help_text


def test_a_string_annotation_is_refused_at_once() -> None:
    def command(json_out: "o.JsonOpt" = False, *, backend: "BackendOptions") -> None: ...

    with pytest.raises(TypeError, match="command: no string annotations in command modules"):
        o.with_backend()(command)
