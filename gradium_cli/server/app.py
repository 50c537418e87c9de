"""The ASGI app of `gradium serve`, and ways to run it: foreground or in a thread.

Starlette routes on uvicorn; imported only by `gradium serve`, by client
commands falling back to the built-in engine, and by tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import WebSocketRoute

from gradium_cli.server.descriptors import ACCEPT_BURST, connection_budget
from gradium_cli.server.designer import ROUTES as DESIGNER_ROUTES
from gradium_cli.server.guard import Guard
from gradium_cli.server.header_limits import header_limited_protocol
from gradium_cli.server.rest import ROUTES
from gradium_cli.server.rest_common import BodyCut, http_error
from gradium_cli.server.shared import SharedBlock
from gradium_cli.server.state import DATA_UNREADABLE, ServerOptions, ServerState
from gradium_cli.server.store import CorruptStore
from gradium_cli.server.ws import SEND_GRACE_S, speech_to_text_endpoint, tts_endpoint
from gradium_cli.server.ws_protocol import websocket_protocol


def create_app(
    options: ServerOptions, state: ServerState | None = None, shared: SharedBlock | None = None
) -> Starlette:
    """The app `gradium serve` runs; `state`: one to share (the built-in engine's process
    answers REST calls with it beside its TTS channels); `shared`: the block the server's
    processes count in together (server/processes.py)."""
    middleware = [Middleware(Guard, options=options)]
    if options.allowed_origins:
        # Pages from an allowed origin may also read the answers (and send preflighted requests).
        origins = list(options.allowed_origins)
        middleware.append(Middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"]))
    routes = [
        WebSocketRoute("/api/speech/tts", tts_endpoint),
        WebSocketRoute("/api/speech/asr", speech_to_text_endpoint),
        WebSocketRoute("/api/speech/s2s", speech_to_text_endpoint),
        *DESIGNER_ROUTES,
        *ROUTES,
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: http_error, CorruptStore: data_unreadable},
    )
    app.state.gradium = state or ServerState(options, shared)
    return app


async def data_unreadable(request: Request, exc: Exception) -> Response:
    """A data dir file replaced, while the server runs, by one the store cannot read (the server
    processes read it again on every use): a 500 in the protocol's shape and one line naming the
    file, not Starlette's text/plain 500 and a traceback for every request that touches it."""
    request.app.state.gradium.log.problem(str(exc))
    return JSONResponse({"detail": DATA_UNREADABLE}, status_code=500)


class OneLineClientErrors(logging.Filter):
    """Keep reports of handled conditions to one line each, without a traceback.

    uvicorn logs a client's invalid UTF-8 text frame with one, although it is the
    client's fault and fully handled (the socket closes with 1007, as README's
    limits say); asyncio logs running out of descriptors in `accept()` with one,
    although it only stops accepting for a second and then carries on; an engine
    crash (or the session's end) that cuts a streamed REST response short is logged by the
    request itself; uvicorn's "Cancel N running task(s)" on stopping is said in our words.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
            # A response still running when the server stopped, cancelled after the graceful
            # shutdown's wait (said once, below): in a server process, which stops with the
            # event loop's own clean-up, uvicorn logged each with a traceback.
            return False
        if record.exc_info and isinstance(record.exc_info[1], BodyCut):
            # An only_audio REST response cut short (a crash, the session's end): the request has
            # already logged it in one line, and raising is how its client learns the body is unfinished.
            return False
        message = record.getMessage()
        if record.exc_info and message.startswith("Invalid UTF-8 sequence received from client"):
            record.exc_info = None
            record.exc_text = None
        elif message.startswith("Cancel ") and message.endswith("timeout graceful shutdown exceeded"):
            record.msg = f"gradium serve: stopping: connections still open after {SEND_GRACE_S:g} s are cut"
            record.args = ()
        elif message.startswith("socket.accept() out of system resource"):
            reason = record.exc_info[1] if record.exc_info else None
            record.msg = f"gradium serve: cannot accept connections for 1 s ({reason or 'out of resources'})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_client_errors() -> None:
    for name in ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OneLineClientErrors) for f in logger.filters):
            logger.addFilter(OneLineClientErrors())


def uvicorn_config(
    options: ServerOptions, host: str, port: int, shared: SharedBlock | None = None, **extra: object
) -> uvicorn.Config:
    config = uvicorn.Config(
        create_app(options, shared=shared),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # Above our own limit, so that a too-large message gets an `error` frame
        # from the handler (§2.6) instead of a bare 1009 close from uvicorn.
        ws_max_size=2 * options.max_message_bytes,
        # The protocol has no use for compression and the SDK never offers it (§1.3).
        ws_per_message_deflate=False,
        # Pongs are dropped while the client is not reading: a ping flood cannot grow memory.
        ws=websocket_protocol(),
        http=header_limited_protocol(
            options.header_timeout_s,
            options.max_pending_headers,
            connection_budget(),
            # As long as a WebSocket request may hold its client: its session, then the grace.
            response_s=options.max_session_s + SEND_GRACE_S,
        ),
        # Also how many connections asyncio accepts per wake-up, before any is counted.
        backlog=ACCEPT_BURST,
        lifespan="off",
        # Stopping (SIGTERM, Ctrl-C) waits this long for responses to finish, as for any client
        # that stops reading: uvicorn waited for ever on one that read nothing.
        timeout_graceful_shutdown=round(SEND_GRACE_S),
        **extra,  # type: ignore[arg-type]
    )
    quiet_client_errors()  # after Config: it sets up uvicorn's loggers
    return config


@dataclass
class RunningServer:
    host: str
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening address bound before uvicorn starts: port 0 is resolved, and a busy
    port fails here with an OSError the caller can report, not inside uvicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle off (TCP_NODELAY) only on
    # sockets whose proto says TCP, and accepted sockets inherit it. With Nagle on, the
    # small frame after a large one (end_of_stream, a short last audio frame) waited
    # for the client's delayed ACK: ~40 ms in most requests.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def start_in_thread(options: ServerOptions, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Start the server on a background thread; port 0 picks a free port."""
    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn_config(options, host, sock.getsockname()[1]))
    # uvicorn only captures signals on the main thread, so Ctrl-C stays with the caller.
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True, name="gradium-serve"
    )
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the local server failed to start")
        threading.Event().wait(0.005)
    return RunningServer(host, sock.getsockname()[1], server, thread)


@contextlib.contextmanager
def running(options: ServerOptions, host: str = "127.0.0.1", port: int = 0) -> Iterator[RunningServer]:
    server = start_in_thread(options, host, port)
    try:
        yield server
    finally:
        server.stop()
