"""Lines of piped stdin for `ws-raw`, as they arrive, and whether more are ready now.

A daemon thread reads, because a blocking read cannot be cancelled and must not keep
the process alive once the session is over. It reads the file descriptor itself, not
the buffered stream: that stream's lock, held by a read still blocked when the session
ends early, makes interpreter shutdown die with "could not acquire lock for <stdin>".
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

from gradium_cli.ui.textinput import decode_utf8

READ_BYTES = 65536


class LiveLines:
    """An async iterator of stdin's lines; `idle` is set while the producer has nothing
    more ready (a pipe held open with no data), so a caller can tell a script still being
    read from a producer that has gone quiet."""

    def __init__(self, stream: BinaryIO) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.idle = asyncio.Event()
        self._number = 0
        threading.Thread(target=self._pump, args=(stream,), daemon=True, name="ws-raw-stdin").start()

    def __aiter__(self) -> LiveLines:
        return self

    async def __anext__(self) -> str:
        raw = await self._queue.get()
        if raw is None:
            raise StopAsyncIteration
        self._number += 1
        return decode_utf8(raw, f"stdin line {self._number}")

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the session ended first
            self._loop.call_soon_threadsafe(callback, *args)

    def _pump(self, stream: BinaryIO) -> None:
        try:
            for raw in self._raw_lines(stream):
                self._call(self._queue.put_nowait, raw)
        except (OSError, ValueError):
            pass
        finally:
            self._call(self._queue.put_nowait, None)
            self._call(self.idle.set)

    def _raw_lines(self, stream: BinaryIO) -> Iterator[bytes]:
        try:
            fd = stream.fileno()
        except (OSError, ValueError, AttributeError):
            yield from iter(stream.readline, b"")
            return
        pending = bytearray()
        while True:
            # Queued lines go before the flag (both through the loop, in order), so `idle`
            # never hides a line that had already arrived.
            if not select.select([fd], [], [], 0)[0]:
                self._call(self.idle.set)
            chunk = os.read(fd, READ_BYTES)
            self._call(self.idle.clear)
            if not chunk:
                break
            searched = len(pending)
            pending += chunk
            end = pending.rfind(b"\n", searched)  # only the new bytes: a long line stays linear
            if end < 0:
                continue
            for line in bytes(pending[:end]).split(b"\n"):
                yield line + b"\n"
            del pending[: end + 1]
        if pending:
            yield bytes(pending)
