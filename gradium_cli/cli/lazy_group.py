"""The root command group, which imports a command's module only when it is used.

Building every command (importing its module, reading its signature, making its
Click parameters) is most of a Typer CLI's start-up. `gradium --help` lists the
commands from the table in commands.py instead, and `gradium say ...` builds `say`
alone. Anything that walks the whole tree (completion of command names, the docs
generator) still sees every command: `commands` loads each one on first access.
"""

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Any

import typer

from gradium_cli.cli.commands import COMMANDS, CommandEntry
from gradium_cli.cli.typer_app import plain_typer


def build_command(entry: CommandEntry) -> Any:
    """The Click command for one table entry, named and summarised as the table says."""
    target = getattr(importlib.import_module(f"gradium_cli.cli.{entry.module}"), entry.attribute)
    if isinstance(target, typer.Typer):
        command = typer.main.get_command(target)
    else:
        holder = plain_typer()
        holder.command(entry.name)(target)
        command = typer.main.get_command(holder)
    command.name = entry.name
    command.short_help = entry.summary
    from gradium_cli.cli.float_options import refuse_nan
    from gradium_cli.cli.global_options import add_global_options

    add_global_options(command)
    refuse_nan(command)
    return command


class LazyCommands(MutableMapping[str, Any]):
    """Name -> Click command, in table order, each built on first access."""

    def __init__(self, entries: tuple[CommandEntry, ...]) -> None:
        self._entries = {entry.name: entry for entry in entries}
        self._built: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._built:
            self._built[name] = build_command(self._entries[name])
        return self._built[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command
        self._entries.setdefault(name, CommandEntry(name, "", "", command.get_short_help_str()))

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def summary(self, name: str) -> str:
        return self._entries[name].summary


class LazyGroup(typer.core.TyperGroup):
    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        registered = self.commands
        self.commands = LazyCommands(COMMANDS)
        self.commands.update(registered)

    def invoke(self, ctx: Any) -> Any:
        """The command, with what its body raises outside `run` and `guard` translated as they do.

        Printing a result (a table, a JSON line) comes after the command's `run`: a failed write
        to stdout there is one line and exit 9, and a reader that went away is exit 0, as inside it.
        """
        from gradium_cli.cli.runtime import failures_translated

        with failures_translated(tell_interrupted=False):
            return super().invoke(ctx)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # names only: TyperGroup's own version reads every command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """The command list from the table alone: nothing is imported to show it."""
        assert isinstance(self.commands, LazyCommands)
        rows = [(name, self.commands.summary(name)) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)
