"""`nan` is refused by every float option, at parsing: one usage line and exit 2.

Click's float types and ranges take it (NaN fails no comparison), so it used to reach the
commands: a traceback, or a wait "for nan s". Run as a user would, in a subprocess."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import gradium

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("command", "args", "option"),
    [
        ("say", ["Hello.", "-o", "x.wav", "--timeout", "nan"], "--timeout"),
        ("say", ["Hello.", "-o", "x.wav", "--deadline", "NaN"], "--deadline"),
        ("say", ["Hello.", "-o", "x.wav", "--speed", "nan"], "--speed"),
        ("batch", ["m.txt", "--gap", "nan"], "--gap"),
        ("voices create", ["--audio", "sample.wav", "--start", "nan"], "--start"),
        ("voices update", ["Mine", "--start", "nan"], "--start"),
    ],
)
def test_nan_is_not_a_number(tmp_path: Path, command: str, args: list[str], option: str) -> None:
    (tmp_path / "m.txt").write_text("Hello.\n")
    result = gradium(tmp_path, *command.split(), *args)
    assert result.stderr.decode() == (
        f"gradium: error: Invalid value for '{option}': '{args[-1]}' is not a number (see `gradium {command} --help`)\n"
    )
    assert result.returncode == 2
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "0001.wav").exists()
