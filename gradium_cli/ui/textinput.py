"""Where input text comes from: an argument, a file, or piped stdin, decoded strictly.

Files and stdin are read in blocks and decoded incrementally, so a long book
never sits in memory whole: `text_blocks` yields it piece by piece. A file is
checked whole first; piped stdin can only be checked as it comes.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gradium_cli.errors import UsageError
from gradium_cli.ui.env import Env

BLOCK_BYTES = 1 << 16


def decode_utf8(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def _decoded_blocks(stream: BinaryIO, source: str) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before the current block
    while True:
        data = stream.read(BLOCK_BYTES)
        held = len(decoder.getstate()[0])  # bytes of a character split across blocks
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            # The decoder saw the held bytes and this block joined: positions count from the held ones.
            bad, position = exc.object[exc.start], offset - held + exc.start
            raise UsageError(f"{source} is not valid UTF-8 (byte 0x{bad:02x} at offset {position})") from None
        offset += len(data)
        if text:
            yield text
        if not data:
            return


def _file_blocks(file: str) -> Iterator[str]:
    try:
        handle = Path(file).open("rb")  # noqa: SIM115 (closed by the `with` below, once opened)
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None
    with handle:
        try:
            yield from _decoded_blocks(handle, file)
        except OSError as exc:
            raise UsageError(f"cannot read {file}: {exc.strerror}") from None


def text_blocks(argument: str | None, file: str | None, env: Env) -> Iterator[str]:
    """The text to speak, block by block; never waits on a terminal, never yields only blank text.

    Checks happen before the first block is returned: a missing file, a terminal
    on stdin or blank input fail before any connection is made.
    """
    if argument is not None and file is not None:
        raise UsageError("give the text as an argument or with -f, not both")
    blocks: Iterator[str]
    if argument == "-" or file == "-":
        if env.stdin_isatty:
            raise UsageError("no text piped on stdin", hint='pipe text in, e.g. echo "Hello" | gradium say')
        blocks = _decoded_blocks(env.stdin, "stdin")
    elif file is not None:
        # A file can be read twice: check all of it now (in blocks, in flat memory), so that
        # a bad byte deep in a book fails before synthesis rather than an hour into it.
        for _ in _file_blocks(file):
            pass
        blocks = _file_blocks(file)
    elif argument is not None:
        blocks = iter([argument])
    elif not env.stdin_isatty:
        blocks = _decoded_blocks(env.stdin, "stdin")
    else:
        raise UsageError("no text given", hint='gradium say "Hello there", -f FILE, or pipe text in')
    # Read up to the first non-blank block now, so that empty input fails before synthesis.
    head: list[str] = []
    for block in blocks:
        head.append(block)
        if block.strip():
            break
    else:
        raise UsageError("the text is empty")
    return _chain(head, blocks)


def _chain(head: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from head
    yield from rest


def read_text(argument: str | None, file: str | None, env: Env) -> str:
    """The whole text at once, for callers whose text is short by nature."""
    return "".join(text_blocks(argument, file, env))
