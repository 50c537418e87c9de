"""Commands load on use: `gradium --help` imports no command module, `gradium say` only its own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gradium_cli.cli.commands import COMMANDS
from tests.cli_helpers import gradium, isolated_env

COMMAND_MODULES = {f"gradium_cli.cli.{entry.module}" for entry in COMMANDS}


def run_and_list_modules(tmp_path: Path, *argv: str) -> tuple[str, set[str]]:
    """Run `gradium ARGV` the way the console script does; (stdout, modules it loaded)."""
    probe = (
        "import json, sys\n"
        "from gradium_cli.cli.app import main\n"
        f"sys.argv = ['gradium', *{list(argv)!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('\\nMODULES ' + json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, env=isolated_env(tmp_path), cwd=tmp_path, timeout=60
    )
    assert result.returncode == 0, result.stderr
    output, _, modules = result.stdout.decode().rpartition("\nMODULES ")
    return output, set(json.loads(modules))


def test_root_help_lists_every_command_without_importing_one(tmp_path: Path) -> None:
    output, modules = run_and_list_modules(tmp_path, "--help")
    assert modules & COMMAND_MODULES == set()
    assert "pydantic" not in modules
    listed = output.split("Commands:\n", 1)[1].splitlines()
    assert [line.split(None, 1) for line in listed if line.strip()] == [
        [entry.name, entry.summary] for entry in COMMANDS
    ]


def test_a_command_imports_its_own_module_only(tmp_path: Path) -> None:
    output, modules = run_and_list_modules(tmp_path, "say", "--help")
    assert output.startswith("Usage: gradium say [OPTIONS]")
    assert modules & COMMAND_MODULES == {"gradium_cli.cli.say"}
    assert "pydantic" not in modules  # Typer 0.29+ coerces parameters through pydantic (~150 ms)
    output, modules = run_and_list_modules(tmp_path, "config", "path")
    assert Path(output.strip()).parent == tmp_path / "config"
    assert modules & COMMAND_MODULES == {"gradium_cli.cli.config_cmd"}


def test_every_listed_command_has_its_own_help(tmp_path: Path) -> None:
    for entry in COMMANDS:
        result = gradium(tmp_path, entry.name, "--help")
        assert result.returncode == 0, (entry.name, result.stderr)
        assert result.stdout.decode().startswith(f"Usage: gradium {entry.name} [OPTIONS]")


def test_the_command_list_fits_an_80_column_terminal(tmp_path: Path) -> None:
    result = gradium(tmp_path, "--help", env=isolated_env(tmp_path, COLUMNS="80"))
    listed = result.stdout.decode().split("Commands:\n", 1)[1].splitlines()
    assert len(listed) == len(COMMANDS)  # no summary wrapped onto a second line
    assert max(len(line) for line in listed) <= 80


def test_a_mistyped_command_suggests_the_right_one(tmp_path: Path) -> None:
    result = gradium(tmp_path, "sya", "Hello")
    assert result.returncode == 2
    assert "No such command 'sya'. Did you mean 'say'?" in result.stderr.decode()
