"""Where errors become one line on stderr and a documented exit code.

Commands are sync Typer functions that call `run()` on an async core; every
GradiumError, Ctrl-C and broken pipe is translated here and nowhere else.
`GRADIUM_DEBUG=1` re-raises to show the traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer

from gradium_cli.errors import ExitCode, GradiumError, Interrupted
from gradium_cli.ui.env import get_env
from gradium_cli.ui.wirelog import escape_control

T = TypeVar("T")


def fail(error: GradiumError) -> NoReturn:
    env = get_env()
    line = f"gradium: {error.message}" if isinstance(error, Interrupted) else f"gradium: error: {error.message}"
    if error.hint:
        line += f" ({error.hint})"
    # Messages can carry a server's words: never let them drive the terminal.
    line = escape_control(line)
    env.tell(line)
    raise typer.Exit(int(error.exit_code))


def _stdout_gone() -> NoReturn:
    # The reader went away (`| head -c 100`): not an error. Point stdout at devnull so
    # the interpreter's final flush does not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an async command body, translating every failure to an exit code."""
    import asyncio  # not at module level: `gradium --help` never needs it

    debug = os.environ.get("GRADIUM_DEBUG") == "1"
    try:
        return asyncio.run(coroutine)
    except GradiumError as error:
        if debug:
            raise
        fail(error)
    except KeyboardInterrupt:
        get_env().tell("gradium: interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except BrokenPipeError:
        _stdout_gone()


def guard(function: Any) -> Any:
    """Run a sync command body with the same translation as `run`."""
    try:
        return function()
    except GradiumError as error:
        if os.environ.get("GRADIUM_DEBUG") == "1":
            raise
        fail(error)
    except KeyboardInterrupt:
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except BrokenPipeError:
        _stdout_gone()
