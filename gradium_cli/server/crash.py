"""How a process ended, in words: shared by the engine workers and the offline engine's client.

Standard library only: the client side must not import the engine to report its death.
"""

from __future__ import annotations

import re
import signal
from typing import IO

_SIGNAL_MEANINGS = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "arithmetic error",
    signal.SIGILL: "illegal instruction",
}


def crash_reason(returncode: int | None) -> str:
    """'SIGSEGV, segmentation fault', 'SIGKILL', 'exit status 1' or 'no exit status'."""
    if returncode is None:
        return "no exit status"
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        return f"signal {-returncode}"
    meaning = _SIGNAL_MEANINGS.get(sig)
    return f"{sig.name}, {meaning}" if meaning else sig.name


def last_words(log: IO[bytes]) -> str:
    """The last line a dead process wrote to its stderr file, tidied: glibc's
    "*** stack smashing detected ***: terminated" becomes "stack smashing detected"."""
    try:
        log.seek(0)
        lines = log.read()[-4096:].decode("utf-8", "replace").strip().splitlines()
    except (OSError, ValueError):
        return ""
    if not lines:
        return ""
    line = re.sub(r"\*+", "", lines[-1]).replace(": terminated", "")
    return " ".join(line.split())[:200]


def describe_death(returncode: int | None, log: IO[bytes]) -> str:
    """'SIGABRT, aborted: stack smashing detected', 'SIGSEGV, segmentation fault', ..."""
    words = last_words(log)
    return f"{crash_reason(returncode)}: {words}" if words else crash_reason(returncode)
