"""The `gradium` console script: `main()` of cli/app.py, with the built-in engine started first.

With no key, `gradium say` speaks through the built-in engine, a child process
whose start-up (Python, numpy, the server's modules) is longer than the
command's own imports (Typer, rich). When the command line shows a `say` that
will use it, the child starts here, before those imports, so the two start-ups
overlap (issue 14: the offline default costs at most 1.3x the served command).

This reads the command line ahead of Typer, so it only guesses: a wrong guess
costs an idle process or the head start, never behaviour, since the command
decides again from its parsed options (`say` -> `prestart_local_engine`) and
takes the process started here only when that decision says so too.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions

__all__ = ["main", "say_backend"]

_GLOBAL_FLAGS = frozenset({"-q", "--quiet", "-v", "--verbose", "--json", "--no-color"})
# Help and version print and exit.
_NO_ENGINE = frozenset({"-h", "--help", "--version"})
_BACKEND_VALUES = ("--api-key", "--base-url", "--profile")


def say_backend(args: list[str]) -> BackendOptions | None:
    """The backend options of a `gradium say` command line, or None when it is not one,
    asks for no engine, or is not plain enough to tell."""
    values: dict[str, str | None] = {"--api-key": None, "--base-url": None, "--profile": None}
    index = 0
    while index < len(args) and args[index].startswith("-"):  # global options before the command
        name, eq, value = args[index].partition("=")
        if name == "--profile":
            if not eq and index + 1 == len(args):
                return None
            values[name] = value if eq else args[index + 1]
            index += 1 if eq else 2
        elif args[index] in _GLOBAL_FLAGS:
            index += 1
        else:
            return None
    if args[index : index + 1] != ["say"]:
        return None
    rest = args[index + 1 :]
    local = False
    for position, arg in enumerate(rest):
        if arg == "--":  # what follows is text, whatever it looks like
            break
        name, eq, value = arg.partition("=")
        if name in _NO_ENGINE:
            return None
        if arg == "--local":
            local = True
        elif name in _BACKEND_VALUES:
            if not eq and position + 1 == len(rest):
                return None
            values[name] = value if eq else rest[position + 1]
    if (values["--api-key"] or values["--base-url"]) and not local:
        return None
    from gradium_cli.backend import BackendOptions

    return BackendOptions(values["--base-url"], values["--api-key"], profile=values["--profile"], local=local)


def _prestart(args: list[str]) -> None:
    options = say_backend(args)
    if options is None:
        return
    from gradium_cli.backend import prestart_local_engine

    try:
        prestart_local_engine(options, announce=False)
    except Exception:  # only a head start: the command meets and reports any problem itself
        return


def main() -> None:
    _prestart(sys.argv[1:])
    from gradium_cli.cli.app import main as app_main

    app_main()
