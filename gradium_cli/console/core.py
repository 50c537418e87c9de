"""The `gradium ws-raw` console: one WebSocket, lines in, every frame shown.

Three ways to drive it: an interactive prompt (prompt-toolkit: line editing,
history), a script (piped stdin or `-x` lines: sent as fast as they come, then
wait for the server to finish), or a replay of a recording. A reader task
shows each frame as it arrives while input is being read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State as WsState

from gradium_cli.console import commands as c
from gradium_cli.console.checker import Checker, server_error
from gradium_cli.console.connection import Target, masked_headers, open_socket
from gradium_cli.console.display import RECEIVED, SENT, Display
from gradium_cli.console.live_input import LiveLines
from gradium_cli.console.recorder import Recorder, Session, close_marker, diff_replies
from gradium_cli.console.saving import AudioStore
from gradium_cli.errors import GradiumError, NetworkError, OutputError, ProtocolError, UsageError
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.bounds import MAX_FRAME_BYTES
from gradium_cli.transport.endpoint import masked_url
from gradium_cli.ui.env import Env
from gradium_cli.ui.wirelog import escape_control

CHECK, WARN, QUIET = "check", "warn", "quiet"  # what a send does with protocol problems
RECONNECT_DELAYS = (0.25, 0.5, 1.0, 2.0, 4.0)  # --reconnect back-off, seconds before each attempt


@dataclass
class ConsoleOptions:
    check: bool = True
    pretty: bool = False
    json_lines: bool = False
    setup: str | None = None  # frame sent on connect, and by a bare /setup
    record: Path | None = None
    force: bool = False
    ignore: list[str] = field(default_factory=list)  # reply fields the replay diff leaves out
    strict: bool = False  # replay diff: compare audio bytes and timings too
    show_ping: bool = False  # show the pings and pongs the server sends
    ping_interval: float | None = None  # ping the server this often to keep the connection alive
    reconnect: bool = False  # after an unexpected close, connect again and re-send what is needed


class WsConsole:
    def __init__(self, target: Target, options: ConsoleOptions, env: Env) -> None:
        self.target = target
        self.options = options
        self.env = env
        self.display = Display(env, options.pretty, options.json_lines)
        self.recorder = Recorder(options.record, options.force) if options.record else None
        self.checker = Checker()
        self.audio = AudioStore()
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.t0 = time.monotonic()
        self.changed = asyncio.Event()
        self.interactive = False
        self.client_req_id: str | None = None
        self.save_format = "wav"
        self.connections = 0
        self.closed: tuple[int | None, str, str | None] | None = None
        self.replies: list[str] = []
        self.pending_pings = 0
        self.keepalive: asyncio.Task[None] | None = None
        # --reconnect: the last setup without client_req_id while its request is open, and the
        # frames of the requests with one that have not finished.
        self.resend_setup: str | None = None
        self.open_requests: dict[str, list[str]] = {}
        self.reconnecting: asyncio.Task[None] | None = None
        self._resending = False
        self._tasks: set[asyncio.Task[None]] = set()
        # What went wrong, for the exit code of a script.
        self.server_errors: list[m.ErrorMessage] = []
        self.violations: list[str] = []
        self.dropped: str | None = None
        self.local_errors: list[GradiumError] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ connection

    async def connect(self, send_setup: bool = True) -> None:
        started = time.monotonic()
        self.ws = await open_socket(self.target)
        self.ws.on_control = self._on_control
        self.t0 = time.monotonic()
        self.connections += 1
        self.checker = Checker()
        self.closed = None
        self.replies = []
        url = masked_url(self.target.url)
        took = (self.t0 - started) * 1000
        self.display.note(f"connected to {url} ({self.target.key_note}) in {took:.0f} ms", 0.0)
        if self.target.subprotocols:
            chosen = self.ws.subprotocol
            offered = ", ".join(self.target.subprotocols)
            self.display.note(
                f"subprotocol {chosen} (offered {offered})"
                if chosen
                else f"no subprotocol chosen by the server (offered {offered})",
                0.0,
            )
        if self.env.verbose and not self.options.json_lines:
            for name, value in self.target.shown_headers.items():
                self.display.note(f"request header {name}: {value}")
            response = self.ws.response
            if response is not None:
                self.display.note(f"response HTTP {response.status_code} {response.reason_phrase}")
                for name, value in masked_headers(list(response.headers.raw_items())).items():
                    self.display.note(f"response header {name}: {value}")
        if self.recorder is not None:
            extra = {"subprotocol": self.ws.subprotocol} if self.target.subprotocols else {}
            self.recorder.start(url, self.target.shown_headers, conn=self.connections, **extra)
        self.reader = asyncio.create_task(self._read(self.ws))
        if self.options.ping_interval and (self.keepalive is None or self.keepalive.done()):
            self.keepalive = asyncio.create_task(self._keep_alive(self.options.ping_interval))
        if send_setup and self.options.setup is not None:
            await self.send(self.options.setup)

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self._on_frame(frame)
        self._on_close(ws)

    def _on_frame(self, frame: str | bytes) -> None:
        t = self.now()
        self.replies.append(frame if isinstance(frame, str) else "binary:" + base64.b64encode(frame).decode())
        if self.recorder is not None:
            self.recorder.event("recv", t, frame, conn=self.connections)
        message, problems = self.checker.received(frame)
        req = message.client_req_id if message is not None else None
        output_format = self.checker.output_format(req)
        if isinstance(message, m.Ready):
            self.audio.begin(req, output_format)
        elif isinstance(message, m.Audio):
            self.audio.add(req, message.audio, message.stop_s, output_format)
        elif isinstance(message, m.ErrorMessage):
            self.server_errors.append(message)
        if isinstance(message, (m.EndOfStream, m.ErrorMessage)):
            if req is None:
                self.resend_setup = None  # its request is over: the next one brings its own setup
            else:
                self.open_requests.pop(req, None)
        self.display.received(frame, t, output_format)
        for problem in problems:
            self.violations.append(problem)
            self.display.warning(f"the server broke the protocol: {problem}", t)
        self.changed.set()

    def _on_control(self, kind: str, payload: bytes) -> None:
        """A ping or pong from the server (websockets has already queued the pong to a ping)."""
        if not self.options.show_ping:
            return
        t = self.now()
        shown = f" {payload.hex(' ')}" if payload else ""
        if kind == "ping":
            self.display.control(RECEIVED, t, f"ping{shown}", "ping")
            self.display.control(SENT, t, f"pong{shown} (automatic)", "pong")
        elif not self.pending_pings:
            self.display.control(RECEIVED, t, f"pong{shown} (unasked)", "pong")

    async def _keep_alive(self, interval: float) -> None:
        """--ping-interval: a ping whenever the connection has been idle for `interval` seconds."""
        while True:
            await asyncio.sleep(interval)
            if self.is_open and not self.pending_pings:
                await self.ping(quiet=not self.options.show_ping)

    def _on_close(self, ws: ClientConnection) -> None:
        t = self.now()
        code, reason = ws.close_code, ws.close_reason or ""
        first = ws.protocol.close_rcvd_then_sent
        by = None if first is None else ("server" if first else "client")
        self.closed = (code, reason, by)
        self.replies.append(close_marker(code, by))
        if self.recorder is not None:
            self.recorder.event("close", t, conn=self.connections, code=code, reason=reason, by=by)
        self.display.closed(code, reason, by, t)
        if by is None:
            self.dropped = f"connection dropped (close code {code})"
        elif by == "server" and not self.server_errors:
            if code != 1000:
                why = f": {escape_control(reason)}" if reason else ""
                self.dropped = f"the server closed the connection ({code}{why})"
            elif self.checker.active:
                self.dropped = "the server closed the connection before end_of_stream"
        if self.dropped and self.options.reconnect and not self.server_errors:
            self.reconnecting = asyncio.create_task(self._reconnect())
        elif self.interactive:
            self.display.note("/reconnect opens a new connection; Ctrl-D quits")
        self.changed.set()

    async def _reconnect(self) -> None:
        """--reconnect: back off, connect, re-send the setup and the requests that had not finished."""
        for attempt, delay in enumerate(RECONNECT_DELAYS, 1):
            self.display.warning(f"reconnecting in {delay:g} s (attempt {attempt} of {len(RECONNECT_DELAYS)})")
            await asyncio.sleep(delay)
            try:
                await self.connect(send_setup=False)
            except GradiumError as error:
                self.display.warning(f"reconnect failed: {error.message}")
                continue
            self.dropped = None
            self._resending = True
            try:
                frames = ([self.resend_setup] if self.resend_setup else []) + [
                    frame for frames in self.open_requests.values() for frame in frames
                ]
                pending = ", ".join(self.open_requests) or "none"
                self.display.note(f"reconnected: re-sending {len(frames)} frames (unfinished requests: {pending})")
                for frame in frames:
                    await self.send(frame, QUIET)
            finally:
                self._resending = False
                self.changed.set()
            return
        self.display.warning(f"gave up reconnecting after {len(RECONNECT_DELAYS)} attempts")
        self.changed.set()

    def _remember(self, frame: str) -> bool:
        """Keep what --reconnect re-sends: the last plain setup, and every frame of a request with an id."""
        if not self.options.reconnect or self._resending:
            return False
        try:
            message = m.decode_client(frame)
        except m.MessageError:
            return False
        req = message.client_req_id
        if req is not None:
            self.open_requests.setdefault(req, []).append(frame)
        elif isinstance(message, m.Setup):
            self.resend_setup = frame
        else:
            return False
        return True

    @property
    def is_open(self) -> bool:
        """Open for sending. Frames may still be waiting for the reader after the state changes."""
        return self.ws is not None and self.closed is None and self.ws.state is WsState.OPEN

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws is not None and self.closed is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(code, reason), self.target.timeout)
        if self.reader is not None:
            # Bounded: a server that never completes the close handshake must not keep
            # Ctrl-D or /quit from returning.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.reader), self.target.timeout)
            if not self.reader.done():
                self.reader.cancel()
                with contextlib.suppress(BaseException):
                    await self.reader

    async def shutdown(self) -> None:
        if self.reconnecting is not None:
            self.reconnecting.cancel()
        if self.keepalive is not None:
            self.keepalive.cancel()
        await self.close()
        for task in list(self._tasks):
            task.cancel()
        if self.recorder is not None:
            self.recorder.close()

    # ------------------------------------------------------------------ sending

    async def send(self, frame: str | bytes, mode: str | None = None) -> bool:
        """Send one frame after checking it; False when it was not sent."""
        mode = mode or (CHECK if self.options.check else WARN)
        if self.ws is not None and self.closed is None and self.ws.state is not WsState.OPEN and self.reader:
            # A close is in but the reader has not shown it yet: let it, so the close
            # prints before the complaint about it, and --reconnect starts from it.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self.reader), self.target.timeout)
        if self.reconnecting is not None and not self._resending:
            await asyncio.wait([self.reconnecting])  # sent on the new connection (wait never raises)
        if self.ws is None or self.closed is not None:
            self._local_error(UsageError("not sent: the connection is closed", hint="/reconnect opens a new one"))
            return False
        if isinstance(frame, bytes) and mode != QUIET:
            self.display.warning("binary frames are not part of the protocol (the service closes on one)")
        problems = self.checker.check(frame) if mode != QUIET and isinstance(frame, str) else []
        blocked = mode == CHECK and any(p.blocking for p in problems)
        for problem in problems:
            if blocked and problem.blocking:
                self.display.warning(f"not sent: {problem}", blocked=True)
            elif problem.blocking:
                self.display.warning(f"{problem} [sent anyway: --no-check]")
            else:
                self.display.warning(str(problem))
        if blocked:
            first = next(problem for problem in problems if problem.blocking)
            self.local_errors.append(UsageError(f"not sent: {first.message}", hint="--no-check sends it anyway"))
            return False
        # Shown and followed before it goes: a quick reply must never print above its cause.
        t = self.now()
        if isinstance(frame, str):
            self.checker.sent(frame)
            if self.checker.last_setup is not None:
                self.save_format = self.checker.last_setup.output_format
        if self.recorder is not None:
            self.recorder.event("send", t, frame, conn=self.connections)
        self.display.sent(frame, t)
        remembered = isinstance(frame, str) and self._remember(frame)
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            if remembered:
                return True  # the reconnect re-sends it
            self._local_error(UsageError("not sent: the connection closed meanwhile"))
            return False
        return True

    async def ping(self, quiet: bool = False) -> None:
        if self.ws is None or not self.is_open:
            self._local_error(UsageError("cannot ping: the connection is closed", hint="/reconnect opens a new one"))
            return
        if not quiet:
            self.display.control(SENT, self.now(), "ping", "ping")
        try:
            waiter = await self.ws.ping()
        except ConnectionClosed:
            self._local_error(UsageError("cannot ping: the connection closed meanwhile"))
            return
        self.pending_pings += 1

        async def pong() -> None:
            try:
                latency = await waiter
                if not quiet:
                    text = f"pong, round trip {latency * 1000:.1f} ms"
                    self.display.control(RECEIVED, self.now(), text, "pong", rtt_ms=round(latency * 1000, 3))
            except (ConnectionClosed, asyncio.CancelledError):
                pass
            finally:
                self.pending_pings -= 1
                self.changed.set()

        task = asyncio.create_task(pong())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ waiting

    def _settled(self) -> bool:
        """Nothing more to wait for: closed, or every request ended and no close is coming."""
        if self.reconnecting is not None and not self.reconnecting.done():
            return False
        if self.ws is None or self.closed is not None:
            return True  # `closed` is set by the reader once it has shown every frame
        if self.pending_pings or self.checker.active:
            return False
        if not self.checker.frames_sent:
            return True
        return not self.checker.expects_close

    async def settle(self, seconds: float | None = None, silence_is_error: bool = True) -> bool:
        """Wait until settled, `seconds` at most; a server silent for --timeout raises NetworkError."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._settled():
            self.changed.clear()
            timeout = self.target.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return False
            try:
                await asyncio.wait_for(self.changed.wait(), timeout)
            except asyncio.TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                if not silence_is_error:
                    return False
                raise NetworkError(
                    f"no reply from the server for {self.target.timeout:g} s",
                    hint="raise --timeout, or bound the wait with --wait",
                ) from None
        return True

    # ------------------------------------------------------------------ input

    def _local_error(self, error: GradiumError) -> None:
        self.local_errors.append(error)
        hint = f" ({error.hint})" if error.hint else ""
        self.display.warning(f"{error.message}{hint}", blocked=True)

    async def handle_line(self, line: str) -> bool:
        """Carry out one input line; False means leave."""
        try:
            action = c.parse_line(line, self.client_req_id, self.options.setup)
            if action is None:
                return True
            return await self.run_action(action)
        except (UsageError, OutputError) as error:
            self._local_error(error)
        except GradiumError as error:
            if not self.interactive:
                raise
            self._local_error(error)
        return True

    async def run_action(self, action: c.Action) -> bool:
        if isinstance(action, c.Send):
            await self.send(action.frame)
        elif isinstance(action, c.SendFile):
            await self.send(read_frame_file(action.path))
        elif isinstance(action, c.Ping):
            await self.ping()
        elif isinstance(action, c.Close):
            if not self.is_open:
                raise UsageError("the connection is already closed")
            await self.close(action.code, action.reason)
        elif isinstance(action, c.Save):
            if not self.interactive:
                await self.settle()  # a script's /save means the audio of what it sent
            self.display.note(self.audio.save(action.path, self.save_format, action.force))
        elif isinstance(action, c.Wait):
            if not await self.settle(action.seconds, silence_is_error=not self.interactive):
                self.display.note("still waiting for the server; carrying on")
        elif isinstance(action, c.SetId):
            if not action.show:
                self.client_req_id = action.client_req_id
            shown = f"'{self.client_req_id}'" if self.client_req_id else "none"
            self.display.note(f"client_req_id for /setup, /text, /eos and plain lines: {shown}")
        elif action.name == "help":
            self.display.text(c.HELP)
        elif action.name == "pretty":
            self.display.pretty = not self.display.pretty
            self.display.note(f"pretty JSON {'on' if self.display.pretty else 'off'}")
        elif action.name == "last":
            self.display.show_last()
        elif action.name == "reconnect":
            if self.reconnecting is not None and not self.reconnecting.done():
                self.reconnecting.cancel()  # --reconnect's own attempt gives way to the one asked for
            await self.close()
            await self.connect()
        elif action.name == "quit":
            return False
        return True

    async def run_interactive(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.patch_stdout import patch_stdout

        from gradium_cli.console.prompt import CommandCompleter, history

        self.interactive = True
        # erase_when_done: an accepted line is shown once, as the frame it became
        # (`→ text 'Hello'`), not also as the `> Hello` it was typed as.
        session: PromptSession[str] = PromptSession(
            history=history(), completer=CommandCompleter(), complete_while_typing=False, erase_when_done=True
        )
        self.display.note("type JSON, text or /help; Ctrl-D quits")
        with patch_stdout(raw=True):
            while True:
                try:
                    line = await session.prompt_async(f"[{self.client_req_id}] > " if self.client_req_id else "> ")
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    break
                if not await self.handle_line(line):
                    break
            await self.close()

    async def run_script(self, lines: LiveLines | Iterable[str], wait: float | None, leave_now: bool) -> None:
        """Send each line; then wait for the server to finish (at most `wait` seconds) unless `leave_now`."""
        if isinstance(lines, LiveLines):
            while (line := await self._next_line(lines)) is not None:
                if not await self.handle_line(line):
                    return
        else:
            for line in lines:
                if not await self.handle_line(line):
                    return
        if not leave_now:
            await self.settle(wait)

    async def _next_line(self, lines: LiveLines) -> str | None:
        """The next line of live input; None once it ends, or once the server has ended the
        connection (no reconnect to come) and the input has no more lines ready: like
        websocat, a producer that keeps stdin open must not keep the command alive on a
        dead connection, while a script's remaining lines (/save ...) still run."""
        next_line = asyncio.ensure_future(anext(lines))
        await asyncio.sleep(0)  # a line already queued is taken now
        while not next_line.done():
            if self._ended_by_server():
                if lines.idle.is_set():
                    next_line.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await next_line
                    return None
                waiter = asyncio.ensure_future(lines.idle.wait())
            else:
                self.changed.clear()
                waiter = asyncio.ensure_future(self.changed.wait())
            await asyncio.wait({next_line, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        try:
            return next_line.result()
        except StopAsyncIteration:
            return None

    def _ended_by_server(self) -> bool:
        reconnect_due = self.reconnecting is not None and not self.reconnecting.done()
        return self.closed is not None and self.closed[2] != "client" and not reconnect_due

    # ------------------------------------------------------------------ replay

    async def replay(self, sessions: list[Session], fast: bool) -> list[str]:
        """Re-send each recorded session's client side; returns the differences in the replies."""
        differences: list[str] = []
        for number, session in enumerate(sessions, 1):
            await self.connect(send_setup=False)
            await self._replay_events(session.events, fast)
            try:
                await self.settle()
            except NetworkError as error:
                self.display.warning(error.message)
            await self.close()
            lines = diff_replies(session.replies, self.replies, self.options.ignore, self.options.strict)
            if lines and len(sessions) > 1:
                lines.insert(0, f"connection {number}:")
            differences += lines
        return differences

    async def _replay_events(self, events: list[dict[str, Any]], fast: bool) -> None:
        seen = 0
        for event in events:
            if event["event"] == "recv":
                seen += 1
                continue
            if event["event"] not in ("send", "close") or (event["event"] == "close" and event.get("by") != "client"):
                continue
            await self._wait_for_replies(seen)  # causality: what the client had seen before it acted
            if not fast:
                await asyncio.sleep(max(0.0, event["t"] - self.now()))
            if not self.is_open:
                return
            if event["event"] == "close":
                await self.close(_sendable_code(event.get("code")), str(event.get("reason") or ""))
            elif "binary" in event:
                await self.send(base64.b64decode(event["binary"]), QUIET)
            else:
                await self.send(str(event["frame"]), QUIET)

    async def _wait_for_replies(self, count: int) -> None:
        while self.is_open and len(self.replies) < count:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), self.target.timeout)
            except asyncio.TimeoutError:
                return  # fewer replies than recorded: the diff will say so

    # ------------------------------------------------------------------ result

    def outcome(self) -> GradiumError | None:
        """The error a script exits with: the server's first error frame first."""
        if self.server_errors:
            return server_error(self.server_errors[0])
        if self.dropped:
            return NetworkError(self.dropped)
        if self.violations:
            return ProtocolError(f"the server broke the protocol: {self.violations[0]}")
        if self.local_errors:
            first = self.local_errors[0]
            more = len(self.local_errors) - 1
            return type(first)(first.message + (f" (and {more} more problems above)" if more else ""), first.hint)
        return None


def _sendable_code(code: Any) -> int:
    """The code to close a replay with: the recorded one, unless no client may send it.

    A client that closed first records the code the server answered with: 1005 when that
    answer had none. websockets refuses to send such a code, and the replay then waited
    --timeout for a close that never came.
    """
    if isinstance(code, int) and not isinstance(code, bool) and code in c.SENDABLE_CLOSE_CODES:
        return code
    return 1000


def read_frame_file(path: Path) -> bytes:
    """`/binary @FILE`: the file's bytes, refused above the largest frame a client accepts."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FRAME_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"/binary: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FRAME_BYTES:
        raise UsageError(f"/binary: {path} is larger than a frame may be ({MAX_FRAME_BYTES // 2**20} MiB)")
    return data
