"""`gradium ws-raw --mock FILE`: a recording served back as a WebSocket server.

Connection N plays the recording's connection N (after the last, the first
again). The mock waits for the client frames the recording has, matched by the
rule in `mockmatch`, and answers with the recorded server frames: at their
recorded distance from the client frame before them (`--timing original`, the
default) or at once (`--timing fast`). A client frame that departs gets an
`error` frame (code 1008) saying where and how, and the connection is closed.
Every frame is shown, tagged `#1`, `#2`, ... like the proxy's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gradium_cli.console.commands import SENDABLE_CLOSE_CODES
from gradium_cli.console.display import Display
from gradium_cli.console.listener import serve_links
from gradium_cli.console.mockmatch import Follower
from gradium_cli.console.recorder import Session
from gradium_cli.errors import GradiumError, UsageError
from gradium_cli.protocol.bounds import MAX_FRAME_BYTES

DEPARTED_CODE = 1008
MAX_GAP_S = 60.0  # longest pause the mock keeps from a recording (a broken `t` must not hang it)


def recorded_time(event: dict[str, Any]) -> float:
    """An event's `t`, bounded: a missing, negative, NaN or huge one counts as 0 or MAX_GAP_S."""
    t = event.get("t")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t) or t < 0:
        return 0.0
    return min(float(t), MAX_GAP_S)


def check_frames(sessions: list[Session], path: Path) -> None:
    """Refuse, up front, a recording whose frames the mock could not send or compare."""
    for conn, session in enumerate(sessions, 1):
        for number, event in enumerate(session.events, 1):
            if event.get("event") not in ("send", "recv"):
                continue
            if isinstance(event.get("frame"), str):
                continue
            try:
                base64.b64decode(event.get("binary"), validate=True)  # type: ignore[arg-type]
            except (TypeError, ValueError, binascii.Error):
                raise UsageError(
                    f"{path}: connection {conn}, event {number} ({event['event']}) has no frame",
                    hint="a ws-raw recording has 'frame' (text) or 'binary' (base64) on each send and recv",
                ) from None


class MockedConnection:
    def __init__(self, number: int, ws: ServerConnection, session: Session, display: Display, fast: bool) -> None:
        self.number = number
        self.tag = f"#{number}"
        self.ws = ws
        self.follower = Follower(session.events)
        self.display = display
        self.fast = fast
        self.t0 = time.monotonic()
        self.fed_at = self.t0  # when the last client frame arrived
        self.departure: str | None = None

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self) -> None:
        self.display.note(f"client connected to {self.ws.request.path if self.ws.request else '?'}", 0.0, self.tag)
        try:
            while await self._step():
                pass
        except ConnectionClosed:
            if not self.follower.finished and not self.follower.expects_client_close():
                left = len(self.follower.events) - self.follower.pos
                self.display.warning(f"the client left {left} recorded events before the end", self.now(), self.tag)
        if self.ws.close_code is not None:
            by = "client" if self.ws.protocol.close_rcvd_then_sent else "mock"
            self.display.note(f"closed {self.ws.close_code} by the {by}", self.now(), self.tag)

    async def _step(self) -> bool:
        """Play what is due, then take one client frame; False when the connection is over."""
        for event, after in self.follower.due():
            if not await self._play(event, after):
                return False
        if self.follower.finished:
            return False
        frame = await self.ws.recv()
        t = self.now()
        self.display.sent(frame, t, self.tag, self.number)
        departure = self.follower.feed(frame)
        if departure is not None:
            self.departure = departure
            self.display.warning(f"departs from the recording: {departure}", t, self.tag, blocked=True)
            error = {"type": "error", "message": f"ws-raw mock: {departure}", "code": DEPARTED_CODE}
            await self.ws.send(json.dumps(error, ensure_ascii=False))
            await self.ws.close(DEPARTED_CODE, "departs from the recording")
            return False
        self.fed_at = time.monotonic()
        return True

    async def _play(self, event: dict[str, Any], after: float) -> bool:
        """Send one recorded server event; original timing keeps its distance from the client frame `after`."""
        if not self.fast:
            await asyncio.sleep(max(0.0, self.fed_at + recorded_time(event) - after - time.monotonic()))
        if event["event"] == "close":
            code = event.get("code")
            if event.get("by") is None:  # the recording lost its connection: so does the client
                self.display.note("dropping the connection, as recorded", self.now(), self.tag)
                if self.ws.transport is not None:
                    self.ws.transport.abort()
                return False
            code = code if isinstance(code, int) and code in SENDABLE_CLOSE_CODES else 1000
            await self.ws.close(code, str(event.get("reason") or ""))
            return False
        frame: str | bytes = base64.b64decode(event["binary"]) if "binary" in event else str(event["frame"])
        self.display.received(frame, self.now(), None, self.tag, self.number)
        await self.ws.send(frame)
        return True


async def run_mock(
    sessions: list[Session], host: str, port: int, display: Display, fast: bool, once: bool
) -> GradiumError | None:
    """Serve until Ctrl-C (or, with `once`, the end of the first connection); returns a departure as an error."""
    plural = "s" if len(sessions) != 1 else ""

    def link(number: int, ws: ServerConnection) -> MockedConnection:
        return MockedConnection(number, ws, sessions[(number - 1) % len(sessions)], display, fast)

    finished = await serve_links(
        link,
        host,
        port,
        display,
        once=once,
        name="mock",
        port_option="--port",
        headline=lambda url: f"mock listening on {url} with {len(sessions)} recorded connection{plural}",
        max_size=MAX_FRAME_BYTES,
    )
    departed = [link.departure for link in finished if link.departure is not None]
    if departed:
        return GradiumError(f"a client departed from the recording: {departed[0]}", hint="see the log above")
    return None
