"""The server's per-socket and per-request limits (PROTOCOL.md §11.3), as the client respects them.

The service states them but never announces them on the wire, so the client
holds the service's values and lets a user pointed at another server set that
server's values in the environment:

  GRADIUM_MAX_REQUESTS_PER_SOCKET  requests on one WebSocket (64)
  GRADIUM_MAX_REQUEST_CHARS        characters of text in one request (100000)
  GRADIUM_MAX_SESSION_S            seconds one request may last (300)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gradium_cli.errors import ConfigError

# `say` cuts its text finer than the hard limit: the free tier allows 1500 characters
# per session, and short requests keep the audio of one request well inside 300 s.
SAY_CHARS_PER_REQUEST = 1500
# Speech runs at about 15 characters a second; half of that keeps a request's audio
# well inside its session time even at slow speeds.
CHARS_PER_SESSION_SECOND = 7


@dataclass(frozen=True)
class Limits:
    requests_per_socket: int = 64
    request_chars: int = 100_000
    session_s: float = 300.0

    @property
    def say_chars(self) -> int:
        """Characters in each of `say`'s requests: inside both the character and the time limit."""
        by_time = int(self.session_s * CHARS_PER_SESSION_SECOND)
        return max(1, min(SAY_CHARS_PER_REQUEST, self.request_chars, by_time))

    @property
    def word_chars(self) -> int:
        """The longest word sent whole; longer runs without a space are cut to fit. Only the
        character limits count: a long word's speaking time is no reason to cut it."""
        return max(1, min(SAY_CHARS_PER_REQUEST, self.request_chars))

    @property
    def rollover_s(self) -> float:
        """Session age at which `stream` ends a request at the next sentence end."""
        return self.session_s * 0.7

    @property
    def hard_rollover_s(self) -> float:
        """Session age at which `stream` ends a request at the next word, sentence or not."""
        return self.session_s * 0.85

    @property
    def rollover_chars(self) -> int:
        """Characters after which `stream` ends a request at the next sentence end.

        90% of the limit, and no more than the session's time can speak: a server that
        paces audio at real time (as the service does) still finishes inside the session.
        """
        by_time = int(self.session_s * CHARS_PER_SESSION_SECOND)
        return max(1, min(int(self.request_chars * 0.9), by_time))

    @property
    def hard_rollover_chars(self) -> int:
        """Characters a `stream` request never passes, sentence end or not."""
        return max(1, min(self.request_chars - 1, self.rollover_chars * 3 // 2))


def _number(name: str, default: float, kind: type[int] | type[float]) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ConfigError(f"{name} must be above 0, not {raw!r}")
    return value


def limits_from_env() -> Limits:
    base = Limits()
    return Limits(
        requests_per_socket=int(_number("GRADIUM_MAX_REQUESTS_PER_SOCKET", base.requests_per_socket, int)),
        request_chars=int(_number("GRADIUM_MAX_REQUEST_CHARS", base.request_chars, int)),
        session_s=_number("GRADIUM_MAX_SESSION_S", base.session_s, float),
    )
