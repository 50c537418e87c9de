"""Run a purpose-built test server on its own event loop in a background thread.

The minimal, quality and hostile servers differ in what they answer, not in how they
start and stop: this is the one place that does that.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

# serve(stop, ready): listen, set `ready`, and return once `stop` is done.
Serve = Callable[[asyncio.Future[None], threading.Event], Coroutine[Any, Any, None]]


@contextmanager
def server_thread(serve: Serve) -> Iterator[None]:
    """Serving while the block runs (up to 10 s to start listening); stopped on leaving it."""
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    stop: asyncio.Future[None] = loop.create_future()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(stop, ready),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield
    finally:
        loop.call_soon_threadsafe(lambda: None if stop.done() else stop.set_result(None))
        thread.join(10)
