"""An unbounded stream as a chain of requests, each inside the server's per-request limits.

A request ends before it reaches a limit (characters, session time): at the
next sentence end once it is near one, at once when it is at the edge. The
next request picks up the input where the last stopped, and the collector
joins their audio and timestamps into one timeline. A dropped connection is
repeated from the first word whose audio did not all arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
from collections import deque
from collections.abc import AsyncIterator

from gradium_cli.errors import GradiumError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.limits import Limits
from gradium_cli.protocol.text import FLUSH_TAG, split_long_text
from gradium_cli.synthesis import Collector, RetryPolicy, SocketRotation
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.transport.ws import FrameHook

_SENTENCE_END = re.compile(r"[.!?…。！？][\"'”’)\]]*\s*$")
_END = object()  # end of input
SOURCE_QUEUE_MESSAGES = 64


class _Source:
    """The stream's messages, pumped into a queue so that a request cut short loses none of them."""

    def __init__(self, messages: AsyncIterator[str]) -> None:
        # Bounded: input that comes faster than it is spoken waits upstream, not here.
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize=SOURCE_QUEUE_MESSAGES)
        self.front: deque[str] = deque()  # taken back: goes first into the next request
        self.ended = False
        self._error: BaseException | None = None
        self._pump = asyncio.create_task(self._run(messages))

    async def _run(self, messages: AsyncIterator[str]) -> None:
        try:
            async for message in messages:
                await self.queue.put(message)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the input failed (e.g. not UTF-8): the request reports it
            self._error = exc
        await self.queue.put(_END)

    def ready(self) -> bool:
        return bool(self.front) or not self.queue.empty()

    async def get(self, timeout: float | None) -> object:
        """The next message, `_END`, or None when nothing came within `timeout`."""
        if self.front:
            return self.front.popleft()
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if item is _END:
            self.ended = True
            if self._error is not None:
                raise self._error
        return item

    def put_back(self, *messages: str) -> None:
        self.front.extendleft(reversed(messages))

    async def close(self) -> None:
        self._pump.cancel()
        with contextlib.suppress(BaseException):
            await self._pump


class _RequestText:
    """One request's share of the input: what `texts()` yielded is in `sent`, for resuming."""

    def __init__(self, source: _Source, first: str, limits: Limits) -> None:
        self.source = source
        self.limits = limits
        self.sent: list[str] = []
        self.first = first
        self.started = time.monotonic()
        self.chars = 0

    def _take(self, text: str) -> str:
        self.sent.append(text)
        self.chars += len(text) + 1
        return text

    async def texts(self) -> AsyncIterator[str]:
        limits = self.limits
        if self.first:
            yield self._take(self.first)
        while True:
            age = time.monotonic() - self.started
            if age >= limits.hard_rollover_s:
                return  # at the edge of the session: end between words
            near_limit = age >= limits.rollover_s or self.chars >= limits.rollover_chars
            if near_limit and not self.source.ready():
                return  # a pause in the input is as good a place as a sentence end
            timeout = (limits.hard_rollover_s if near_limit else limits.rollover_s) - age
            item = await self.source.get(max(0.0, timeout))
            if item is None or item is _END:
                if item is _END:
                    return
                continue
            assert isinstance(item, str)
            if len(item) > limits.rollover_chars // 2:
                # Piped text comes in big pieces: cut them at sentence ends, so that a request
                # can end at one before its limits.
                pieces = split_long_text(item, max(1, limits.rollover_chars // 2), limits.word_chars)
                if len(pieces) > 1:
                    self.source.put_back(*pieces)
                    continue
            if self.chars and self.chars + len(item) > limits.hard_rollover_chars:
                self.source.put_back(item)
                return
            yield self._take(item)
            if near_limit and _SENTENCE_END.search(item):
                return


async def run_rolling(
    endpoint: Endpoint,
    setup: m.Setup,
    messages: AsyncIterator[str],
    collector: Collector,
    on_frame: FrameHook | None,
    limits: Limits,
    retry: RetryPolicy,
) -> None:
    """Speak `messages` to their end over as many requests and sockets as the limits need."""
    rotation = SocketRotation(endpoint, limits.requests_per_socket, on_frame)
    source = _Source(messages)
    resume = ""  # words of a failed request whose audio did not all arrive
    failures = 0
    request_setup = dataclasses.replace(setup, close_ws_on_eos=False)
    try:
        while not (source.ended and not source.ready() and not resume):
            share = _RequestText(source, resume, limits)
            try:
                sock = await rotation.take()
                collector.begin_request()
                async for message in sock.request(request_setup, share.texts()):
                    collector.handle(message)
                resume = ""
            except GradiumError as error:
                rotation.discard()
                if collector.committed:
                    failures = 0  # progress since the last failure: a fresh budget
                if not retry.allows(failures, error) or not collector.can_resume(lenient=True):
                    raise
                failures += 1
                words = [word for word in " ".join(share.sent).split() if word != FLUSH_TAG]
                skip, cut = collector.resume_point(words)
                collector.rewind(cut)
                resume = " ".join(words[skip:])
                await retry.wait(failures, error)
    finally:
        await source.close()
        await rotation.aclose()
