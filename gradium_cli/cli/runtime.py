"""Where errors become one line on stderr and a documented exit code.

Commands are sync Typer functions that call `run()` on an async core; every
GradiumError, Ctrl-C and broken pipe is translated here and nowhere else.
`GRADIUM_DEBUG=1` re-raises to show the traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from gradium_cli.errors import ExitCode, GradiumError, Interrupted
from gradium_cli.ui.env import discard_stdout, get_env
from gradium_cli.ui.wirelog import escape_control

T = TypeVar("T")


# SIGTERM (a service manager, `kill`) and SIGHUP (the terminal went away) end a run the
# way Ctrl-C does: the running command is cancelled, so the same cleanup runs; then one
# line and the shell's code for that signal (128 + its number).
STOP_SIGNALS = {ExitCode.TERMINATED - 128: "terminated (SIGTERM)", ExitCode.HANGUP - 128: "hung up (SIGHUP)"}
_caught: list[int] = []  # the stop signal that ended this run, if any


def _signal_exit(detail: str | None = None) -> NoReturn:
    number = _caught[0]
    line = f"gradium: {STOP_SIGNALS[number]}"
    if detail:
        line += f": {detail}"
    get_env().tell(line)
    raise typer.Exit(128 + number)


def _raise_interrupt(number: int, _frame: object) -> None:
    if not _caught:
        _caught.append(number)
    raise KeyboardInterrupt


def install_stop_signals() -> None:
    """Outside the event loop (sync commands, start-up) a stop signal interrupts like Ctrl-C."""
    import signal

    for number in STOP_SIGNALS:
        signal.signal(number, _raise_interrupt)


def unwritable_dir(exc: OSError) -> GradiumError | None:
    """A config or data directory that cannot be written (read-only HOME, a service user):
    one line naming the directory and the variable that moves it, exit 3."""
    import errno

    if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not exc.filename:
        return None
    from gradium_cli.backend import data_dir
    from gradium_cli.config import config_dir
    from gradium_cli.errors import ConfigError

    where = Path(os.fsdecode(exc.filename)).resolve()
    for directory, variable in ((config_dir(), "GRADIUM_CONFIG_DIR"), (data_dir(), "GRADIUM_DATA_DIR")):
        directory = directory.resolve()
        if where == directory or directory.is_relative_to(where) or where.is_relative_to(directory):
            return ConfigError(
                f"cannot write {directory}: {exc.strerror}", hint=f"set {variable} to a writable directory"
            )
    return None


def name_too_long(exc: OSError) -> GradiumError | None:
    """A path the system refuses for its length (an output, a manifest, a --name template's
    result): whichever command met it, a mistake in what was given, exit 2."""
    import errno

    if exc.errno != errno.ENAMETOOLONG:
        return None
    from gradium_cli.errors import UsageError

    name = os.fsdecode(exc.filename) if exc.filename is not None else ""
    if len(name) > 80:  # the name may be megabytes long (`--name '{index:>99999999}'`)
        name = f"{name[:50]}…{name[-20:]} ({len(name)} characters)"
    return UsageError(f"file name too long: {name}".rstrip(": "), hint="a name may have at most 255 bytes")


def fail(error: GradiumError) -> NoReturn:
    env = get_env()
    if _caught:  # the run was stopped by a signal: its line and code, with what became of the output
        _signal_exit(error.message.removeprefix("interrupted: ") if isinstance(error, Interrupted) else None)
    line = f"gradium: {error.message}" if isinstance(error, Interrupted) else f"gradium: error: {error.message}"
    if error.hint:
        line += f" ({error.hint})"
    # Messages can carry a server's words: never let them drive the terminal.
    line = escape_control(line)
    env.tell(line)
    if env.json:
        json_error(error.message, error.hint, int(error.exit_code))
    raise typer.Exit(int(error.exit_code))


def json_error(message: str, hint: str | None, exit_code: int) -> None:
    """With --json the error is data too: one object on stdout (on stderr when stdout carries audio)."""
    import json

    from gradium_cli.ui.redact import redact

    env = get_env()
    payload = {"ok": False, "error": redact(message), "hint": hint, "exit_code": exit_code}
    text = json.dumps(payload, ensure_ascii=False) + "\n"
    if env.stdout_is_audio:
        env.tell(text.rstrip("\n"))
        return
    try:
        env.stdout.write(text.encode("utf-8"))
        env.stdout.flush()
    except (OSError, ValueError):  # stdout closed or gone: the stderr line stands alone
        pass


def usage_failure(error: Any) -> NoReturn:
    """A Click usage error (unknown option, bad value, missing argument): one line and where help is."""
    env = get_env()
    exit_code = int(getattr(error, "exit_code", ExitCode.USAGE))
    if type(error).__name__ == "NoArgsIsHelpError":  # `gradium voices`: the help is the answer
        error.show()
        sys.exit(exit_code)
    message = str(error.format_message()).strip().rstrip(".")
    ctx = getattr(error, "ctx", None)
    hint = f"see `{ctx.command_path} --help`" if ctx is not None else "see `gradium --help`"
    env.tell(escape_control(f"gradium: error: {message} ({hint})"))
    argv = sys.argv[1:]
    if "--json" in (argv[: argv.index("--")] if "--" in argv else argv):  # parsing failed: env may not know yet
        env.json = True
    if env.json:
        json_error(message, hint, exit_code)
    sys.exit(exit_code)


def _stdout_gone() -> NoReturn:
    discard_stdout()  # the reader went away (`| head -c 100`): not an error
    raise typer.Exit(0)


@contextlib.contextmanager
def failures_translated(*, tell_interrupted: bool) -> Iterator[None]:
    """Every failure of a command body as its one line and exit code (for `run` and `guard`)."""
    debug = os.environ.get("GRADIUM_DEBUG") == "1"
    try:
        yield
    except GradiumError as error:
        if debug:
            raise
        fail(error)
    except KeyboardInterrupt:
        if _caught:
            _signal_exit()
        if tell_interrupted:
            get_env().tell("gradium: interrupted")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except BrokenPipeError:
        _stdout_gone()
    except OSError as exc:
        known = unwritable_dir(exc) or name_too_long(exc)
        if known is None or debug:
            raise
        fail(known)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run an async command body, translating every failure to an exit code."""
    import asyncio  # not at module level: `gradium --help` never needs it

    async def cancellable() -> T:
        # As asyncio.run does for SIGINT: a stop signal cancels the command's task.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def stop(number: int) -> None:
            if not _caught:
                _caught.append(number)
            task.cancel()

        for number in STOP_SIGNALS:
            loop.add_signal_handler(number, stop, number)
        return await coroutine

    try:
        with failures_translated(tell_interrupted=True):
            try:
                return asyncio.run(cancellable())
            except asyncio.CancelledError:
                raise KeyboardInterrupt from None  # the command's task was cancelled by a signal
    finally:
        install_stop_signals()  # closing the loop reset them to the default (die silently)


def guard(function: Any) -> Any:
    """Run a sync command body with the same translation as `run`."""
    with failures_translated(tell_interrupted=False):
        return function()
