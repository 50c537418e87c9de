"""The process's streams and what they are connected to, in one swappable object.

Commands ask the Env whether stdout is a terminal (play audio, refuse binary)
or a pipe (stream bytes), and where people-facing text goes (always stderr).
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO, cast

if TYPE_CHECKING:
    from gradium_cli.errors import OutputError

CLOSED_STD_FDS: set[int] = set()  # which of stdin, stdout, stderr were closed when we started


def reopen_closed_std_fds() -> None:
    """Put /dev/null on a closed stdin, stdout or stderr (`2>&-`), remembering which.

    Else the next file opened takes the free descriptor and anything written to
    "stderr" lands in the output audio; Python also leaves sys.stderr as None,
    and print(file=None) writes to stdout.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            CLOSED_STD_FDS.add(fd)
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 - lives as long as the process


class StdoutWriter:
    """stdout's byte stream, whose write failures are an output error like those of `-o FILE`.

    `gradium say hi > /mnt/full/hi.wav` or `gradium voices list > /dev/full`: one line and
    exit 9, not a traceback. A reader that went away (BrokenPipeError) passes through
    unchanged: that is not an error (cli/runtime.py).
    """

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def write(self, data: bytes) -> int:
        try:
            return self._stream.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise stdout_failure(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise stdout_failure(exc) from None

    def __getattr__(self, name: str) -> Any:  # fileno, seek, tell, seekable... as the stream has them
        return getattr(self._stream, name)


def discard_stdout(fd: int | None = None) -> None:
    """Point stdout's descriptor (or `fd`) at /dev/null, once its reader went away or its
    disk is full: what stays in its buffer would fail again in the interpreter's last flush
    ("Exception ignored" and exit status 120)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno() if fd is None else fd)
    finally:
        os.close(devnull)


def stdout_failure(exc: OSError) -> OutputError:
    from gradium_cli.errors import OutputError

    discard_stdout()  # as for a reader that went away
    if exc.errno == errno.ENOSPC:
        return OutputError("disk full while writing stdout")
    return OutputError(f"cannot write stdout: {exc.strerror or exc}")


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


@dataclass
class Env:
    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: BinaryIO = field(default_factory=lambda: cast(BinaryIO, StdoutWriter(sys.stdout.buffer)))
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool = field(default_factory=lambda: _isatty(sys.stdin))
    stdout_isatty: bool = field(default_factory=lambda: _isatty(sys.stdout))
    stderr_isatty: bool = field(default_factory=lambda: _isatty(sys.stderr))
    quiet: bool = False
    verbose: bool = False
    json: bool = False
    stdout_is_audio: bool = False  # set once audio is planned for stdout: nothing else may go there
    no_color: bool = field(default_factory=lambda: "NO_COLOR" in os.environ)

    stderr_gone: bool = field(default_factory=lambda: 2 in CLOSED_STD_FDS)
    stdout_closed: bool = field(default_factory=lambda: 1 in CLOSED_STD_FDS)

    def say(self, message: str) -> None:
        """A line for people on stderr, unless --quiet."""
        if not self.quiet:
            self.tell(message)

    def debug(self, message: str) -> None:
        if self.verbose:
            self.tell(message)

    def tell(self, message: str) -> None:
        """Print a line for people, whatever becomes of it.

        Known secrets are masked (a server may echo the key), control characters escaped. A closed or broken stderr
        (`2>&-`, `2>&1 | true`) loses the diagnostics, never the work: the line is dropped.
        """
        if self.stderr_gone or self.stderr is None:
            return
        from gradium_cli.ui.redact import redact
        from gradium_cli.ui.wirelog import escape_control

        # Lines can carry a server's words (voice names, errors): they never drive the terminal.
        line = "\n".join(escape_control(part) for part in redact(message).split("\n"))
        try:
            print(line, file=self.stderr, flush=True)
        except (OSError, ValueError, AttributeError):
            self.stderr_gone = True


_current = Env.__new__(Env)  # replaced at start-up by the CLI callback
_initialised = False


def get_env() -> Env:
    global _current, _initialised
    if not _initialised:
        _current, _initialised = Env(), True
    return _current


def set_env(env: Env) -> None:
    global _current, _initialised
    _current, _initialised = env, True
