"""`gradium serve`: a local Gradium-compatible server with a real speech engine."""

from pathlib import Path
from typing import Annotated, Any

import typer

from gradium_cli.errors import ExitCode
from gradium_cli.ui.env import get_env

# The same figures as ServerOptions' defaults (server/state.py), which a test keeps equal;
# repeated here so `gradium serve --help` does not import the server.
DEFAULT_MAX_UPLOAD_BYTES = 20 << 20
DEFAULT_HEADER_TIMEOUT_S = 10.0


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", "-p", help="Port to listen on (0 picks a free one)", min=0, max=65535),
    ] = 8765,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="Refuse every other key (default: accept any)",
            envvar="GRADIUM_SERVE_API_KEY",
            show_default=False,
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Where custom voices and dictionaries live [env GRADIUM_DATA_DIR]"),
    ] = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Pace audio at real time, like a live service")] = False,
    latency_ms: Annotated[
        float,
        typer.Option("--latency-ms", help="Model latency to add before each burst of audio", min=0),
    ] = 0.0,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Server processes sharing the port, each with its own event loop and eSpeak NG process; "
            "an engine crash fails only its request [default: the cores available]",
            envvar="GRADIUM_SERVE_WORKERS",
            min=1,
            show_default=False,
        ),
    ] = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Also answer requests whose Host header is NAME (e.g. a name in /etc/hosts or a proxy's); "
            "repeatable. On loopback only localhost, 127.0.0.1 and ::1 are answered, against DNS rebinding",
            metavar="NAME",
            show_default=False,
        ),
    ] = None,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            help="Let web pages from ORIGIN (e.g. http://localhost:3000) use the server; repeatable. "
            "Requests from any other page are refused with 403",
            metavar="ORIGIN",
            show_default=False,
        ),
    ] = None,
    max_upload_bytes: Annotated[
        int,
        typer.Option("--max-upload-bytes", help="Largest voice upload; bigger ones get 413 while they arrive", min=1),
    ] = DEFAULT_MAX_UPLOAD_BYTES,
    header_timeout: Annotated[
        float,
        typer.Option("--header-timeout", help="Seconds a connection has to send its request headers", min=0.01),
    ] = DEFAULT_HEADER_TIMEOUT_S,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="One JSON object per log line")] = False,
    draft_ttl: Annotated[
        float | None,
        typer.Option(
            "--draft-ttl", help="Seconds a designed draft voice lives unless promoted (default: 24 hours)", min=1
        ),
    ] = None,
    faults: Annotated[
        str | None,
        typer.Option(
            "--faults",
            help="Inject faults to test clients: drop=P (abort a connection with probability P), "
            "after=N (once it has sent N audio messages; default 4), seed=S. E.g. drop=0.2",
        ),
    ] = None,
) -> None:
    """Serve the Gradium TTS protocol (WebSocket and REST under /api/) with eSpeak NG.

    \b
    gradium serve &                      # then, anywhere:
    gradium say "Hello" --base-url http://127.0.0.1:8765/api/ -o hello.wav

    Web pages are refused (403) unless their origin is given with --allow-origin.
    Bodies are counted while they arrive: a voice upload above --max-upload-bytes
    and any other body above 1 MiB get 413. Request headers must arrive within
    --header-timeout (408), and at most 64 connections may be sending them: the
    oldest is dropped for a new one. Off loopback, use --api-key.
    """
    import asyncio
    import contextlib
    import errno

    import uvicorn
    from starlette.applications import Starlette

    from gradium_cli.backend import writable_data_dir
    from gradium_cli.cli.runtime import guard
    from gradium_cli.config import check_api_key
    from gradium_cli.server.app import bind_socket, uvicorn_config
    from gradium_cli.server.descriptors import raise_open_file_limit
    from gradium_cli.server.processes import run_processes
    from gradium_cli.server.shared import SharedBlock
    from gradium_cli.server.state import LOOPBACK_HOSTS, MAX_LIVE_TOKENS, ServerOptions, ServerState
    from gradium_cli.server.store import CorruptStore, check_data_dir
    from gradium_cli.server.workers import available_cores

    env = get_env()
    if api_key is not None:
        # A key no client could send in a header would lock every client out.
        guard(lambda: check_api_key(api_key, "flag"))
    drafts: dict[str, Any] = {} if draft_ttl is None else {"draft_ttl_s": draft_ttl}
    origins = tuple(parse_origin(origin) for origin in allow_origin or ())
    options = ServerOptions(
        data_dir=data_dir or guard(writable_data_dir),
        api_key=api_key,
        realtime=realtime,
        latency_ms=latency_ms,
        json_logs=json_logs,
        quiet=env.quiet,
        workers=1,  # each server process has its own engine process
        **drafts,
        allowed_origins=origins,
        # Off loopback the names the server is reached by are not known: any Host is answered.
        allowed_hosts=(*LOOPBACK_HOSTS, host, *(allow_host or ())) if is_loopback(host) else None,
        max_upload_bytes=max_upload_bytes,
        header_timeout_s=header_timeout,
        **parse_faults(faults),
    )
    try:
        check_data_dir(options.data_dir)
    except CorruptStore as exc:
        print(f"gradium serve: error: {exc}", file=env.stderr)
        raise typer.Exit(int(ExitCode.CONFIG)) from None
    try:
        sock = bind_socket(host, port)
    except OSError as exc:
        reason = "in use?" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        print(f"gradium serve: error: could not listen on {host}:{port} ({reason})", file=env.stderr)
        raise typer.Exit(int(ExitCode.NETWORK)) from None
    port = sock.getsockname()[1]
    if api_key is None and not is_loopback(host):
        print(
            f"gradium serve: warning: listening on {host} without --api-key: anyone who can reach it can use it",
            file=env.stderr,
        )
    raise_open_file_limit()
    processes = workers or available_cores()
    shared = SharedBlock(shared=processes > 1, token_slots=MAX_LIVE_TOKENS, processes=processes)

    def serve_one(process: int) -> None:
        config = uvicorn_config(options, host, port, shared=shared)
        assert isinstance(config.app, Starlette)
        state: ServerState = config.app.state.gradium
        if processes > 1:
            state.log.process = process + 1
        server = uvicorn.Server(config)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(server.serve(sockets=[sock]))
        finally:
            state.close()  # the engine's worker process

    plural = "es" if processes > 1 else ""
    env.say(
        f"gradium serve: listening on http://{host}:{port}/api/ (WebSocket at speech/tts), "
        f"{processes} server process{plural}; Ctrl-C stops"
    )
    if processes == 1:
        serve_one(0)
    else:
        code = run_processes(processes, shared, serve_one, env.tell)  # its lines are warnings: even with -q
        if code:
            raise typer.Exit(code)
    env.say("gradium serve: stopped")


DEFAULT_DROP_AFTER_CHUNKS = 4


def is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def parse_origin(value: str) -> str:
    from gradium_cli.server.guard import normalise_origin

    origin = normalise_origin(value)
    if origin is None:
        raise typer.BadParameter(
            f"'{value}' is not an origin (use scheme://host[:port], e.g. http://localhost:3000)",
            param_hint="--allow-origin",
        )
    return origin


def parse_faults(spec: str | None) -> dict[str, Any]:
    """`drop=0.2,after=4,seed=1` → the ServerOptions fault fields."""
    if not spec:
        return {}
    fields: dict[str, Any] = {"drop_after_chunks": DEFAULT_DROP_AFTER_CHUNKS}
    for item in spec.split(","):
        key, sep, value = item.strip().partition("=")
        try:
            if key == "drop" and sep:
                fields["drop_probability"] = float(value)
                if not 0.0 <= fields["drop_probability"] <= 1.0:
                    raise ValueError
            elif key == "after" and sep:
                fields["drop_after_chunks"] = int(value)
                if fields["drop_after_chunks"] < 1:
                    raise ValueError
            elif key == "seed" and sep:
                fields["fault_seed"] = int(value)
            else:
                raise ValueError
        except ValueError:
            raise typer.BadParameter(
                f"bad fault '{item.strip()}' (use drop=P with 0<=P<=1, after=N with N>=1, seed=S)",
                param_hint="--faults",
            ) from None
    return fields
