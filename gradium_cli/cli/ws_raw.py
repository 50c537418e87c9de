"""`gradium ws-raw`: a console for the TTS WebSocket protocol, for debugging by hand."""

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gradium_cli.cli import options as o
from gradium_cli.cli.runtime import run
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.backend import BackendOptions


class Timing(str, Enum):
    original = "original"
    fast = "fast"


CONNECTION = "Connection"
SESSION = "Session"
RECORDING = "Recording"
PROXY = "Proxy"
MOCK = "Mock server"


@o.with_backend()
def ws_raw(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            "-c",
            metavar="URL",
            help="Whole WebSocket URL, e.g. ws://127.0.0.1:8765/api/speech/tts",
            rich_help_panel=CONNECTION,
        ),
    ] = None,
    path: Annotated[
        str | None,
        typer.Option(
            "--path", metavar="ROUTE", help="Route under the base URL [default: speech/tts]", rich_help_panel=CONNECTION
        ),
    ] = None,
    header: Annotated[
        list[str] | None,
        typer.Option(
            "--header",
            "-H",
            metavar="'NAME: VALUE'",
            help="Extra header 'name: value' (repeatable)",
            rich_help_panel=CONNECTION,
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", "-k", "-n", help="Skip TLS certificate checks (wss://)", rich_help_panel=CONNECTION),
    ] = False,
    subprotocol: Annotated[
        list[str] | None,
        typer.Option(
            "--subprotocol",
            "-s",
            metavar="NAME",
            help="Offer subprotocol NAME (repeatable); the one the server picks is shown",
            rich_help_panel=CONNECTION,
        ),
    ] = None,
    ca: Annotated[
        Path | None,
        typer.Option(
            "--ca",
            metavar="FILE",
            help="Trust the CA certificates in FILE (PEM) for wss://",
            rich_help_panel=CONNECTION,
        ),
    ] = None,
    setup: Annotated[
        str | None,
        typer.Option(
            "--setup",
            metavar="K=V,...",
            help="Setup sent on connect: k=v,k=v (e.g. voice_id=YTpq7expH9539ERJ,output_format=pcm) or JSON",
            rich_help_panel=SESSION,
        ),
    ] = None,
    reconnect: Annotated[
        bool,
        typer.Option(
            "--reconnect",
            help="After an unexpected close, reconnect (with back-off) and re-send the setup and unfinished requests",
            rich_help_panel=SESSION,
        ),
    ] = False,
    no_check: Annotated[
        bool,
        typer.Option(
            "--no-check", help="Send frames that break the protocol too (to test servers)", rich_help_panel=SESSION
        ),
    ] = False,
    execute: Annotated[
        list[str] | None,
        typer.Option(
            "--execute",
            "-x",
            metavar="LINE",
            help="Send LINE, then exit (repeatable; see --wait)",
            rich_help_panel=SESSION,
        ),
    ] = None,
    wait: Annotated[
        float | None,
        typer.Option(
            "--wait",
            "-w",
            metavar="SECONDS",
            help="After the input, wait at most SECONDS for the server to finish",
            min=0,
            rich_help_panel=SESSION,
        ),
    ] = None,
    pretty: Annotated[
        bool, typer.Option("--pretty", help="Show every frame as indented JSON too", rich_help_panel=SESSION)
    ] = False,
    show_ping: Annotated[
        bool,
        typer.Option(
            "--show-ping", "-P", help="Show the server's pings and pongs (and keep-alive ones)", rich_help_panel=SESSION
        ),
    ] = False,
    ping_interval: Annotated[
        float | None,
        typer.Option(
            "--ping-interval",
            metavar="SECONDS",
            help="Ping the server every SECONDS to keep an idle connection alive",
            min=0.05,
            rich_help_panel=SESSION,
        ),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            metavar="FILE",
            help="Write a JSONL transcript of both directions to FILE",
            rich_help_panel=RECORDING,
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            metavar="FILE",
            help="Re-send a recording's client side and diff the server's replies against it",
            rich_help_panel=RECORDING,
        ),
    ] = None,
    fast: Annotated[
        bool,
        typer.Option("--fast", help="Replay without the recorded pauses (order is kept)", rich_help_panel=RECORDING),
    ] = False,
    timing: Annotated[
        Timing | None,
        typer.Option(
            "--timing",
            help="Replay (or --mock) with the recorded gaps (original) or as fast as the peer answers (fast)",
            rich_help_panel=RECORDING,
        ),
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore",
            metavar="FIELD",
            help="Reply field the replay diff leaves out (repeatable; request_id always is)",
            rich_help_panel=RECORDING,
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Replay diff: compare audio bytes and timings too (for deterministic servers)",
            rich_help_panel=RECORDING,
        ),
    ] = False,
    mock: Annotated[
        Path | None,
        typer.Option(
            "--mock",
            metavar="FILE",
            help="Serve the recording FILE as a WebSocket server: recorded client frames get the recorded replies",
            rich_help_panel=MOCK,
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port",
            metavar="N",
            help="Port the --mock server listens on (0 picks one)",
            min=0,
            max=65535,
            rich_help_panel=MOCK,
        ),
    ] = 0,
    listen: Annotated[
        int | None,
        typer.Option(
            "--listen",
            metavar="PORT",
            help="Run a logging proxy on PORT (0 picks one) to the server; point any client at it",
            min=0,
            max=65535,
            rich_help_panel=PROXY,
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Address the proxy listens on", rich_help_panel=PROXY)
    ] = "127.0.0.1",
    once: Annotated[
        bool,
        typer.Option(
            "--once", help="Stop the proxy (or --mock) after its first connection ends", rich_help_panel=PROXY
        ),
    ] = False,
    allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-origin",
            metavar="ORIGIN",
            help="Browser Origin the proxy accepts (repeatable); others get 403: the proxy spends your key",
            rich_help_panel=PROXY,
        ),
    ] = None,
    force: o.ForceOpt = False,
    json_out: o.JsonOpt = False,
    *,
    backend: "BackendOptions",
) -> None:
    """Talk to the TTS WebSocket by hand: type frames, see every frame, check them against the protocol.

    A JSON line is sent as is, any other line as a text message; /help lists the
    slash commands (/setup, /flush, /eos, /ping, /save FILE ...). With piped stdin each
    line is sent and the command exits once the server has finished, or has closed the
    connection while stdin stays open (exit code 4, 5 or 6 after an error frame, 7 when
    the connection fails).

    \b
    gradium ws-raw --setup voice_id=YTpq7expH9539ERJ,output_format=pcm
    gradium ws-raw < session.txt --record session.jsonl
    gradium ws-raw --replay session.jsonl --fast
    gradium ws-raw --listen 8080 --url wss://api.gradium.ai/api/speech/tts
    """
    # Imported here so that `gradium --help` stays fast.
    from gradium_cli.console.core import ConsoleOptions
    from gradium_cli.console.main import WsRawRequest, ws_raw_main

    env = get_env()
    request = WsRawRequest(
        url=url,
        path=path,
        headers=header or [],
        insecure=insecure,
        ca=ca,
        subprotocols=subprotocol or [],
        backend=backend,
        console=ConsoleOptions(
            check=not no_check,
            pretty=pretty,
            show_ping=show_ping,
            ping_interval=ping_interval,
            reconnect=reconnect,
            json_lines=json_out or env.json,
            record=record,
            force=force,
            ignore=ignore or [],
            strict=strict,
        ),
        setup=setup,
        execute=execute or [],
        wait=wait,
        replay=replay,
        fast=fast or timing is Timing.fast,
        timing=timing.value if timing else None,
        listen=listen,
        mock=mock,
        port=port,
        host=host,
        once=once,
        allow_origins=tuple(allow_origin or ()),
    )
    run(ws_raw_main(request))
