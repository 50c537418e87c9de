"""Which server a command talks to: a configured one, or the built-in offline engine.

With no API key and no base URL configured, commands start `gradium serve`'s
app on an ephemeral loopback port in this process and use it over the same
protocol path, saying so in one line on stderr.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gradium_cli.config import REGION_URLS, resolve
from gradium_cli.errors import UsageError
from gradium_cli.transport.endpoint import Endpoint
from gradium_cli.ui.env import get_env

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


def data_dir() -> Path:
    override = os.environ.get("GRADIUM_DATA_DIR")
    if override:
        return Path(override)
    from platformdirs import user_data_dir

    return Path(user_data_dir("gradium", appauthor=False))


@contextlib.contextmanager
def local_server_endpoint(timeout: float) -> Iterator[Endpoint]:
    # Imported here: the server stack (starlette, uvicorn, the engine) is only
    # loaded when a command really falls back to it.
    from gradium_cli.server.app import running
    from gradium_cli.server.state import ServerOptions

    with running(ServerOptions(data_dir=data_dir(), quiet=True)) as server:
        BUILTIN_URLS.add(server.base_url)
        try:
            yield Endpoint(server.base_url, None, timeout)
        finally:
            BUILTIN_URLS.discard(server.base_url)


@contextlib.contextmanager
def open_backend(options: BackendOptions) -> Iterator[Endpoint]:
    key = resolve("api-key", options.api_key, options.profile)
    base = resolve("base-url", options.base_url, options.profile)
    region = resolve("region", options.region, options.profile).value
    if region is not None and region not in REGION_URLS:
        raise UsageError(f"unknown region '{region}' (choose eu or us)")
    if options.local or (not key.value and not base.value):
        if not options.local:
            get_env().say(LOCAL_NOTICE)
        with local_server_endpoint(options.timeout) as endpoint:
            yield endpoint
        return
    url = base.value or REGION_URLS[region or "default"]
    yield Endpoint(url, key.value, options.timeout)
