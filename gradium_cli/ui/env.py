"""The process's streams and what they are connected to, in one swappable object.

Commands ask the Env whether stdout is a terminal (play audio, refuse binary)
or a pipe (stream bytes), and where people-facing text goes (always stderr).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO


def _isatty(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


@dataclass
class Env:
    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    stdin_isatty: bool = field(default_factory=lambda: _isatty(sys.stdin))
    stdout_isatty: bool = field(default_factory=lambda: _isatty(sys.stdout))
    stderr_isatty: bool = field(default_factory=lambda: _isatty(sys.stderr))
    quiet: bool = False
    verbose: bool = False
    json: bool = False
    no_color: bool = field(default_factory=lambda: "NO_COLOR" in os.environ)

    stderr_gone: bool = False

    def say(self, message: str) -> None:
        """A line for people on stderr, unless --quiet."""
        if not self.quiet:
            self.tell(message)

    def debug(self, message: str) -> None:
        if self.verbose:
            self.tell(message)

    def tell(self, message: str) -> None:
        """Print a line for people, whatever becomes of it.

        Known secrets are masked (a server may echo the key). A closed or broken stderr
        (`2>&-`, `2>&1 | true`) loses the diagnostics, never the work: the line is dropped.
        """
        if self.stderr_gone:
            return
        from gradium_cli.ui.redact import redact

        try:
            print(redact(message), file=self.stderr, flush=True)
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
