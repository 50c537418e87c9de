"""Where input text comes from: an argument, a file, or piped stdin, decoded strictly."""

from __future__ import annotations

from pathlib import Path

from gradium_cli.errors import UsageError
from gradium_cli.ui.env import Env


def decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_text(argument: str | None, file: str | None, env: Env) -> str:
    """The text to speak; never waits on a terminal, never returns blank text."""
    if argument is not None and file is not None:
        raise UsageError("give the text as an argument or with -f, not both")
    if argument == "-" or file == "-":
        if env.stdin_isatty:
            raise UsageError("no text piped on stdin", hint='pipe text in, e.g. echo "Hello" | gradium say')
        text = decode_utf8(env.stdin.read(), "stdin")
    elif file is not None:
        try:
            text = decode_utf8(Path(file).read_bytes(), file)
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    elif argument is not None:
        text = argument
    elif not env.stdin_isatty:
        text = decode_utf8(env.stdin.read(), "stdin")
    else:
        raise UsageError("no text given", hint='gradium say "Hello there", -f FILE, or pipe text in')
    if not text.strip():
        raise UsageError("the text is empty")
    return text
