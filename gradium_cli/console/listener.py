"""The WebSocket server behind `ws-raw --listen` (proxy) and `ws-raw --mock`: each
client connection becomes a numbered link; serving stops on Ctrl-C or, with `once`,
when the first link ends."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from websockets.asyncio.server import ServerConnection, serve

from gradium_cli.console.display import Display
from gradium_cli.errors import NetworkError


class Link(Protocol):
    async def run(self) -> None: ...


LinkT = TypeVar("LinkT", bound=Link)


async def serve_links(
    make_link: Callable[[int, ServerConnection], LinkT],
    host: str,
    port: int,
    display: Display,
    *,
    once: bool,
    name: str,
    port_option: str,
    headline: Callable[[str], str],
    **serve_options: Any,
) -> list[LinkT]:
    """Serve until stopped; returns the links that ended, in the order they ended.

    `headline` makes the start note's first words from the server's ws:// address;
    `name` and `port_option` go in the stop note and the hint when the port is taken.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    numbers = itertools.count(1)
    finished: list[LinkT] = []

    async def handler(client: ServerConnection) -> None:
        link = make_link(next(numbers), client)
        try:
            await link.run()
        finally:
            finished.append(link)
            if once:
                stop.set()

    try:
        server = await serve(handler, host, port, compression=None, ping_interval=None, **serve_options)
    except OSError as exc:
        raise NetworkError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", hint=f"pick another {port_option}"
        ) from None
    async with server:
        bound = server.sockets[0].getsockname()[1] if server.sockets else port
        display.note(f"{headline(f'ws://{host}:{bound}')} (SDK base URL http://{host}:{bound}/api/; Ctrl-C stops)")
        await stop.wait()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    display.note(f"{name} stopped after {len(finished)} connection{'s' if len(finished) != 1 else ''}")
    return finished
