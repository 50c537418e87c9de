"""-q, -v, --json, --no-color and --profile: accepted before the command and after it.

`gradium -q say ...` is parsed by the root callback; `gradium say ... -q` by a hidden
copy of the option that every command gets here. Where a command has an option of
its own by that name (`say --json`, the backend group's `--profile`), its callback
is chained instead, so the value reaches the shared Env either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import typer

from gradium_cli.ui.env import get_env


def _quiet(value: Any) -> None:
    get_env().quiet = True


def _verbose(value: Any) -> None:
    get_env().verbose = True


def _json(value: Any) -> None:
    get_env().json = True


def _no_color(value: Any) -> None:
    get_env().no_color = True
    os.environ["NO_COLOR"] = "1"


def _profile(value: Any) -> None:
    from gradium_cli.config import select_profile

    select_profile(value)


# name -> (flags, takes a value, what to do when given)
GLOBAL_OPTIONS: dict[str, tuple[tuple[str, ...], bool, Callable[[Any], None]]] = {
    "quiet": (("--quiet", "-q"), False, _quiet),
    "verbose": (("--verbose", "-v"), False, _verbose),
    "json": (("--json",), False, _json),
    "no_color": (("--no-color",), False, _no_color),
    "profile": (("--profile",), True, _profile),
}


def _when_given(apply: Callable[[Any], None], then: Callable[..., Any] | None) -> Callable[..., Any]:
    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value and not ctx.resilient_parsing:  # resilient: completing a word, not running
            apply(value)
        return then(ctx, param, value) if then is not None else value

    return callback


def add_global_options(command: Any) -> None:
    """Give `command` (and every subcommand of a group) the global options, hidden from its help."""
    for sub in getattr(command, "commands", {}).values():
        add_global_options(sub)
    if getattr(command, "commands", None) is not None:
        return  # a group's own options come before its subcommand: not where users put them
    taken = {opt: param for param in command.params for opt in getattr(param, "opts", [])}
    for flags, takes_value, apply in GLOBAL_OPTIONS.values():
        own = next((taken[flag] for flag in flags if flag in taken), None)
        if own is not None:
            own.callback = _when_given(apply, own.callback)
            continue
        command.params.append(
            typer.core.TyperOption(
                param_decls=list(flags),
                is_flag=not takes_value,
                default=None if takes_value else False,
                expose_value=False,
                hidden=True,
                callback=_when_given(apply, None),
            )
        )
