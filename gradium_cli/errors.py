"""One exception tree for the whole tool, each error carrying its exit code.

Standard library only: the protocol layer raises these too. The CLI translates
them to a one-line message and the documented exit code in one place
(`gradium_cli.cli.runtime`).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented exit codes (README and man page render this table)."""

    OK = 0
    FAILURE = 1  # some items of a batch failed; or a confirmation question was answered no
    USAGE = 2  # bad flags, empty text, unknown format or extension
    CONFIG = 3  # missing or unreadable configuration
    AUTH = 4  # missing or refused API key
    BAD_REQUEST = 5  # the server rejected the request (unknown voice, bad setting)
    SERVER = 6  # server error or protocol violation
    NETWORK = 7  # connection refused, dropped or timed out
    AUDIO = 8  # sound device missing or failing
    OUTPUT = 9  # output file cannot be written (permissions, full disk)
    HANGUP = 129  # SIGHUP: handled as Ctrl-C
    INTERRUPTED = 130  # Ctrl-C
    TERMINATED = 143  # SIGTERM: handled as Ctrl-C


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "some items failed (batch), the others succeeded; "
    "or a question was answered no (nothing changed)",
    ExitCode.USAGE: "bad usage or input: empty text, non-UTF-8 input, unknown format or extension",
    ExitCode.CONFIG: "configuration problem",
    ExitCode.AUTH: "API key missing or refused",
    ExitCode.BAD_REQUEST: "request refused by the server: unknown voice, dictionary or setting, "
    "missing or expired draft voice, no credits left",
    ExitCode.SERVER: "server error or protocol violation",
    ExitCode.NETWORK: "connection refused, dropped or timed out",
    ExitCode.AUDIO: "audio device error",
    ExitCode.OUTPUT: "output cannot be written: permissions, full disk, existing file",
    ExitCode.HANGUP: "hung up (SIGHUP): cleaned up as for Ctrl-C",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
    ExitCode.TERMINATED: "terminated (SIGTERM): cleaned up as for Ctrl-C",
}


class GradiumError(Exception):
    """Base of every error the tool reports; `message` is one line, `hint` names the fix."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(GradiumError):
    exit_code = ExitCode.USAGE


class ConfigError(GradiumError):
    exit_code = ExitCode.CONFIG


class AuthError(GradiumError):
    exit_code = ExitCode.AUTH


class RequestError(GradiumError):
    """The server refused the request itself (unknown voice, out-of-range setting)."""

    exit_code = ExitCode.BAD_REQUEST
    status: int | None = None  # the HTTP status of a REST refusal, for callers that word some apart


class ServerError(GradiumError):
    exit_code = ExitCode.SERVER


class ProtocolError(ServerError):
    """A frame or a sequence of frames that the protocol does not allow."""


class NetworkError(GradiumError):
    """Connection refused, dropped or timed out: safe to retry for idempotent requests."""

    exit_code = ExitCode.NETWORK


class CrossHostRedirect(NetworkError):
    """The server redirected to another host: the API key must not follow, and a retry would not help."""


class DeadlineExceeded(NetworkError):
    """A request ran past --deadline: the user's bound on it, not a reason to try again."""


class RateLimited(NetworkError):
    """HTTP 429 (or 503 with Retry-After), over REST or the WebSocket alike: the same exit code.

    `retry_after_s` is the server's Retry-After in seconds, when it sent one.
    """

    def __init__(self, message: str, retry_after_s: float | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


class AudioDeviceError(GradiumError):
    exit_code = ExitCode.AUDIO


class OutputError(GradiumError):
    exit_code = ExitCode.OUTPUT


class DiskFull(OutputError):
    """No space left where the output goes: every later output would fail the same way."""


class Interrupted(GradiumError):
    """Ctrl-C, handled: the message says what happened to the output."""

    exit_code = ExitCode.INTERRUPTED
