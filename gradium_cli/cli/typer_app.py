"""One way to make a Typer app, so every part of the CLI gets the same plain, fast help."""

from typing import Any

import typer


def plain_typer(**settings: Any) -> typer.Typer:
    """A Typer app with plain help and, unless asked, no completion options.

    Rich-formatted help costs ~300 ms of imports on every `--help`; completion is
    installed from the root app alone.
    """
    defaults: dict[str, Any] = {"rich_markup_mode": None, "add_completion": False, "pretty_exceptions_enable": False}
    return typer.Typer(**(defaults | settings))
