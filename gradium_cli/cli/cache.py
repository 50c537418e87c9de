"""`gradium cache`: what the request cache holds, and emptying it (see gradium_cli/cache.py)."""

import json
from typing import Annotated

import typer

from gradium_cli.cli.runtime import guard
from gradium_cli.cli.typer_app import plain_typer
from gradium_cli.ui.env import get_env

cache_app = plain_typer(
    name="cache",
    help="The request cache that --cache on say and batch fills: its size, and emptying it.",
    no_args_is_help=True,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="One JSON object on stdout")]


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


def _write(text: str) -> None:
    from gradium_cli.ui.tables import write_stdout

    write_stdout(text if text.endswith("\n") else text + "\n")


@cache_app.command("info")
def info(json_out: JsonFlag = False) -> None:
    """Where the cache is, how many entries and bytes it holds, and its cap."""

    def body() -> None:
        from gradium_cli.cache import RequestCache, enabled

        cache = RequestCache()
        usage = cache.usage()
        facts = {
            "directory": str(cache.root),
            "entries": usage.entries,
            "bytes": usage.bytes,
            "max_bytes": cache.max_bytes,
            "enabled_by_default": enabled(None),
        }
        if json_out or get_env().json:
            _write(json.dumps(facts))
            return
        _write(
            f"directory  {facts['directory']}\n"
            f"entries    {usage.entries}\n"
            f"size       {_mib(usage.bytes)} of {_mib(cache.max_bytes)}\n"
            f"default    {'on' if facts['enabled_by_default'] else 'off'} (--cache/--no-cache, setting cache)"
        )

    guard(body)


@cache_app.command("clear")
def clear(json_out: JsonFlag = False) -> None:
    """Remove every entry: later runs ask the server again."""

    def body() -> None:
        from gradium_cli.cache import RequestCache

        removed = RequestCache().clear()
        if json_out or get_env().json:
            _write(json.dumps({"removed_entries": removed.entries, "removed_bytes": removed.bytes}))
            return
        get_env().say(f"gradium: removed {removed.entries} cache entries ({_mib(removed.bytes)})")

    guard(body)
