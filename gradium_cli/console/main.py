"""The body of `gradium ws-raw`, apart from its flags: pick the mode and run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gradium_cli.backend import BackendOptions
from gradium_cli.console.commands import setup_from_option
from gradium_cli.console.connection import open_target, parse_headers
from gradium_cli.console.core import ConsoleOptions, WsConsole
from gradium_cli.console.display import Display
from gradium_cli.console.live_input import LiveLines
from gradium_cli.console.recorder import Recorder, ignored_fields, load_recording
from gradium_cli.errors import GradiumError, UsageError
from gradium_cli.ui.env import get_env


@dataclass
class WsRawRequest:
    url: str | None = None
    path: str | None = None
    headers: list[str] = field(default_factory=list)
    insecure: bool = False
    ca: Path | None = None
    subprotocols: list[str] = field(default_factory=list)
    backend: BackendOptions = field(default_factory=BackendOptions)
    console: ConsoleOptions = field(default_factory=ConsoleOptions)
    setup: str | None = None
    execute: list[str] = field(default_factory=list)
    wait: float | None = None
    replay: Path | None = None
    fast: bool = False
    timing: str | None = None  # --timing as given (original or fast)
    listen: int | None = None
    mock: Path | None = None
    port: int = 0
    host: str = "127.0.0.1"
    once: bool = False
    allow_origins: tuple[str, ...] = ()  # browser Origins the proxy accepts (--allow-origin)


def _check_combinations(request: WsRawRequest) -> None:
    if request.listen is not None and (request.execute or request.replay or request.setup):
        raise UsageError("--listen runs a proxy: it takes no --execute, --replay or --setup")
    if request.replay is not None and (request.execute or request.setup):
        raise UsageError("--replay sends the recorded frames: it takes no --execute or --setup")
    if request.mock is not None and (
        request.listen is not None
        or request.replay is not None
        or request.execute
        or request.setup
        or request.url
        or request.path
        or request.console.record
        or request.console.reconnect
    ):
        raise UsageError(
            "--mock serves the recording itself: it takes no --listen, --replay, --execute, --setup, --url, "
            "--path, --record or --reconnect"
        )
    if request.port and request.mock is None:
        raise UsageError("--port applies to --mock", hint="the proxy takes its port as --listen PORT")
    if (request.fast or request.timing) and request.replay is None and request.mock is None:
        raise UsageError("--fast and --timing apply to --replay and --mock")
    if request.timing == "original" and request.fast:
        raise UsageError("--fast and --timing original contradict each other")
    if request.console.reconnect and (request.listen is not None or request.replay is not None):
        raise UsageError("--reconnect applies to a console session, not to --listen or --replay")
    if request.once and request.listen is None and request.mock is None:
        raise UsageError("--once applies to --listen and --mock")


async def ws_raw_main(request: WsRawRequest) -> None:
    env = get_env()
    _check_combinations(request)
    options = request.console
    options.setup = setup_from_option(request.setup) if request.setup else None
    if request.mock is not None:
        from gradium_cli.console.mock import check_frames, run_mock

        display = Display(env, options.pretty, options.json_lines)
        recording = load_recording(request.mock)
        check_frames(recording, request.mock)
        error = await run_mock(recording, request.host, request.port, display, request.fast, request.once)
        if error is not None:
            raise error
        return
    sessions = None
    if request.replay is not None:
        from gradium_cli.console.mock import check_frames

        sessions = load_recording(request.replay)
        check_frames(sessions, request.replay)  # a frame that cannot be sent is refused before connecting
    extra = parse_headers(request.headers)
    subprotocols = _subprotocols(request.subprotocols, extra)
    with open_target(
        request.url, request.path, request.backend, extra, request.insecure, request.ca, subprotocols
    ) as target:
        if request.listen is not None:
            from gradium_cli.console.proxy import run_proxy

            recorder = Recorder(options.record, options.force) if options.record else None
            try:
                display = Display(env, options.pretty, options.json_lines)
                error = await run_proxy(
                    target,
                    request.host,
                    request.listen,
                    display,
                    recorder,
                    options.check,
                    request.once,
                    request.allow_origins,
                )
            finally:
                if recorder is not None:
                    recorder.close()
            if error is not None:
                raise error
            return
        console = WsConsole(target, options, env)
        try:
            if sessions is not None:
                differences = await console.replay(sessions, request.fast)
                _report(console, differences, ignored_fields(options.ignore, options.strict), options.strict)
                return
            await console.connect()
            if request.execute:
                await console.run_script(request.execute, request.wait, leave_now=request.wait is None)
            elif not env.stdin_isatty:
                await console.run_script(LiveLines(env.stdin), request.wait, leave_now=False)
            else:
                await console.run_interactive()
                return
        finally:
            await console.shutdown()
        error = console.outcome()
        if error is not None:
            raise error


def _subprotocols(names: list[str], headers: dict[str, str]) -> tuple[str, ...]:
    """-s names, and those of a `-H 'Sec-WebSocket-Protocol: a, b'` (moved out: the library offers them)."""
    for name in [n for n in headers if n.lower() == "sec-websocket-protocol"]:
        names = names + [part.strip() for part in headers.pop(name).split(",")]
    for name in names:
        if not name or any(ch in name for ch in ' ,;"()<>@:/[]?={}\t\\'):
            raise UsageError(f"bad subprotocol name '{name}'", hint="a token such as chat or v1.gradium")
    return tuple(dict.fromkeys(names))


def _report(console: WsConsole, differences: list[str], ignore: list[str], strict: bool) -> None:
    ignored = f" (ignoring {', '.join(ignore)}{'' if strict else '; runs of equal frames count once'})"
    if console.display.json_lines:
        console.display.record({"event": "replay", "match": not differences, "ignored": ignore, "diff": differences})
    elif not differences:
        console.display.note(f"replay: the server's replies match the recording{ignored}")
    else:
        console.display.warning(f"replay: the server's replies differ from the recording{ignored}:")
        console.display.text("\n".join("  " + line for line in differences))
    if differences:
        raise GradiumError("the server's replies differ from the recording", hint="see the diff above")
