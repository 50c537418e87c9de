"""Reading stdin incrementally into the event loop, as bytes arrive.

A daemon thread does the blocking reads (pipes and terminals alike) and hands
each chunk to the loop with the time it was read, so the client's own latency
from input to wire can be measured.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import threading
import time
from typing import BinaryIO

from gradium_cli.errors import UsageError

EOF_MARK = None


class InputReader:
    def __init__(self, stream: BinaryIO, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()
        self._loop = loop
        self._fd = stream.fileno()
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._offset = 0
        self._thread = threading.Thread(target=self._run, name="gradium-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop waiting for input (Ctrl-C): the thread may stay blocked; it is a daemon."""
        self._loop.call_soon_threadsafe(self.queue.put_nowait, EOF_MARK)

    def _run(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 65536)
            except OSError:
                data = b""
            read_at = time.monotonic()
            if not data:
                self._loop.call_soon_threadsafe(self.queue.put_nowait, ("", read_at))
                self._loop.call_soon_threadsafe(self.queue.put_nowait, EOF_MARK)
                return
            self._loop.call_soon_threadsafe(self.queue.put_nowait, (data, read_at))  # type: ignore[arg-type]

    def decode(self, data: bytes | str, final: bool = False) -> str:
        if isinstance(data, str):
            data = data.encode()
        try:
            text = self._decoder.decode(data, final=final)
        except UnicodeDecodeError as exc:
            position = self._offset + exc.start
            raise UsageError(f"stdin is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {position})") from None
        self._offset += len(data)
        return text
