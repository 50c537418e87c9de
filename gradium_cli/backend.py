"""Which server a command talks to: a configured one, or the built-in offline engine.

With no API key and no base URL configured, commands use the built-in engine
and say so in one line on stderr. Commands that speak TTS over the WebSocket
(`say`, `stream`, `batch`: `pipe=True`) reach it over a pipe to a child process
running the server's WebSocket handler and eSpeak NG (`transport/local.py`):
no HTTP server to start, and an engine crash is one error line, not a core dump.
Their REST calls, and every other command, get `gradium serve`'s app on an
ephemeral loopback port in this process, its engine in a worker process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gradium_cli.config import REGION_URLS, configured, resolve
from gradium_cli.errors import ConfigError, GradiumError, UsageError
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.ui.env import get_env

if TYPE_CHECKING:
    from gradium_cli.transport.engine_process import EngineProcess
    from gradium_cli.transport.local import LocalEngine

# The built-in engine's URLs while it runs: its port changes every run, so the request
# cache names it by what it is instead (gradium_cli/cache.py).
BUILTIN_URLS: set[str] = set()
LOCAL_NOTICE = "gradium: no API key configured; using the built-in offline engine (eSpeak NG)"


@dataclass(frozen=True)
class BackendOptions:
    base_url: str | None = None
    api_key: str | None = None
    region: str | None = None
    timeout: float = 30.0
    local: bool = False
    profile: str | None = None
    deadline: float | None = None


def data_dir() -> Path:
    override = os.environ.get("GRADIUM_DATA_DIR")
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("gradium", appauthor=False))


def writable_data_dir() -> Path:
    """The data dir, created; one clear line (exit 3) when it cannot be, as for service users
    and containers whose HOME is read-only."""
    path = data_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the data directory {path}: {exc.strerror or exc}",
            hint="set GRADIUM_DATA_DIR to a writable directory",
        ) from None
    return path


@contextlib.contextmanager
def local_server_endpoint(timeout: float, deadline: float | None = None) -> Iterator[Endpoint]:
    # Imported here: the server stack (starlette, uvicorn, the engine) is only
    # loaded when a command really falls back to it.
    from gradium_cli.server.app import running
    from gradium_cli.server.state import ServerOptions

    with running(ServerOptions(data_dir=writable_data_dir(), quiet=True, workers=1)) as server:
        BUILTIN_URLS.add(server.base_url)
        try:
            yield Endpoint(server.base_url, None, timeout, deadline=deadline)
        finally:
            BUILTIN_URLS.discard(server.base_url)


_prestarted: EngineProcess | None = None
_open_engine: LocalEngine | None = None  # the command's built-in engine while it is open


def uses_local_engine(options: BackendOptions, *, announce: bool = True) -> bool:
    """`announce=False`: without the config file's -v line and warning (see `read_config`)."""
    key = resolve("api-key", options.api_key, options.profile, announce=announce)
    base = resolve("base-url", options.base_url, options.profile, announce=announce)
    return options.local or (not key.value and not base.value)


def prestart_local_engine(options: BackendOptions, *, announce: bool = True) -> None:
    """Start the built-in engine now if the command will use it over a pipe.

    The `gradium` script calls it before the CLI's own imports when the command
    line is a `say` that will (cli/entry.py), and `say` calls it first thing, so
    the engine process starts up while the command is still importing its own
    modules (`stream` and `batch` start it when they open the backend).
    """
    global _prestarted
    try:
        if _prestarted is not None or not uses_local_engine(options, announce=announce):
            return
        where = writable_data_dir()
    except GradiumError:
        return  # a bad key or setting, an unwritable data dir: said with its exit code when the backend opens
    # Standard library only: nothing else is imported before the child starts.
    from gradium_cli.transport.engine_process import EngineProcess

    _prestarted = EngineProcess(where)


NOTICE_INTERVAL_S = 24 * 3600
NOTICE_STAMP = "offline-notice.stamp"  # in the data dir; its mtime is when the notice was last shown


def offline_notice(profile: str | None) -> None:
    """Say that the offline engine speaks: for people at a terminal, at most once a day, unless turned off.

    Scripts and pipes never see it; `gradium config set offline-notice off` silences it for good.
    """
    import time

    from gradium_cli.cache import parse_switch

    env = get_env()
    if env.quiet or not env.stderr_isatty:
        return
    setting = configured("offline-notice", profile)
    if setting is not None and not parse_switch("offline-notice", setting):
        return
    stamp = data_dir() / NOTICE_STAMP
    try:
        if time.time() - stamp.stat().st_mtime < NOTICE_INTERVAL_S:
            return
    except OSError:
        pass  # never shown (or unreadable): show it
    env.say(LOCAL_NOTICE + "; `gradium config set offline-notice off` hides this")
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
    except OSError:
        pass  # a read-only home: the notice shows again next time, nothing worse


@contextlib.contextmanager
def local_engine_endpoint(timeout: float, deadline: float | None = None) -> Iterator[Endpoint]:
    global _prestarted
    from gradium_cli.transport.engine_process import SettingError, linger_seconds, ready_timeout_s
    from gradium_cli.transport.local import LOCAL_BASE_URL, LocalEngine

    try:
        linger_seconds()
        ready_timeout_s()
    except SettingError as exc:
        raise ConfigError(str(exc), hint=f"unset {exc.name} for the default ({exc.default:g} s)") from None
    global _open_engine
    if _open_engine is not None:
        # A command speaking inside another (`voices preview` takes `say`'s path): the same
        # engine process, not a second one.
        yield Endpoint(LOCAL_BASE_URL, None, timeout, local=_open_engine, deadline=deadline)
        return
    env = get_env()
    engine = LocalEngine(writable_data_dir(), _prestarted, lambda line: env.say(f"gradium: warning: {line}"))
    _prestarted, _open_engine = None, engine
    BUILTIN_URLS.add(LOCAL_BASE_URL)
    try:
        yield Endpoint(LOCAL_BASE_URL, None, timeout, local=engine, deadline=deadline)
    finally:
        BUILTIN_URLS.discard(LOCAL_BASE_URL)
        _open_engine = None
        engine.stop()


@contextlib.contextmanager
def open_backend(options: BackendOptions, *, pipe: bool = False) -> Iterator[Endpoint]:
    """The endpoint to use; `pipe`: the command only needs `TtsSocket` and `RestClient`, never
    a URL of its own to hand on, so the built-in engine may be reached over its stream (with
    no key); otherwise it is served by an HTTP server in this process (`ws-raw`, `doctor`)."""
    key = resolve("api-key", options.api_key, options.profile)
    base = resolve("base-url", options.base_url, options.profile)
    # The flag's value is checked here; the environment's or the config file's by configured().
    region = options.region if options.region is not None else configured("region", options.profile)
    if region is not None and region not in REGION_URLS:
        raise UsageError(f"unknown region '{region}' (choose eu or us)")
    if uses_local_engine(options):
        if not options.local:
            offline_notice(options.profile)
        with (local_engine_endpoint if pipe else local_server_endpoint)(options.timeout, options.deadline) as endpoint:
            yield endpoint
        return
    url = base.value or REGION_URLS[region or "default"]
    yield Endpoint(url, key.value, options.timeout, deadline=options.deadline)
