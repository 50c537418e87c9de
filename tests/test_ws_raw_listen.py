"""`gradium ws-raw --listen`: the proxy spends the configured key, so it listens on loopback
by default and refuses browser Origins it was not told to allow (a web page could connect)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.cli_helpers import isolated_env
from tests.minimal_server import MinimalServer, minimal_server
from tests.servers import free_port, gradium_exe, wait_for_port

pytestmark = pytest.mark.timeout(60)
KEY = "gsk_listen_SECRET_key_0a1b2c3d"


@pytest.fixture()
def upstream() -> Iterator[MinimalServer]:
    with minimal_server(chunks=2) as server:
        yield server


def start_proxy(tmp_path: Path, upstream: MinimalServer, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    url = f"ws://127.0.0.1:{upstream.port}/api/speech/tts"
    proc = subprocess.Popen(
        [gradium_exe(), "ws-raw", "--listen", str(port), "--url", url, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=isolated_env(tmp_path, GRADIUM_API_KEY=KEY),
        cwd=tmp_path,
    )
    wait_for_port(port)
    return proc, port


async def speak_through(port: int, origin: str | None) -> list[str]:
    headers = {"Origin": origin} if origin else {}
    async with connect(f"ws://127.0.0.1:{port}/api/speech/tts", additional_headers=headers) as ws:
        await ws.send('{"type": "setup", "output_format": "pcm"}')
        await ws.send('{"type": "text", "text": "Hi."}')
        await ws.send('{"type": "end_of_stream"}')
        return [str(frame) async for frame in ws]


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


def test_browser_origins_are_refused_and_the_key_is_not_spent(tmp_path: Path, upstream: MinimalServer) -> None:
    proc, port = start_proxy(tmp_path, upstream, "--allow-origin", "http://good.example")
    try:
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(speak_through(port, "http://evil.example"))
        assert refused.value.response.status_code == 403
        assert upstream.connections == 0, "nothing reached the server, no key was spent"
        assert len(asyncio.run(speak_through(port, None))) > 2  # a plain client (SDK, script) is served
        assert len(asyncio.run(speak_through(port, "http://good.example"))) > 2
        assert upstream.connections == 2
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    shown = out.decode() + err.decode()
    assert "refused a connection from Origin http://evil.example" in shown, shown
    assert KEY not in shown


def test_the_proxy_listens_on_loopback_by_default(tmp_path: Path, upstream: MinimalServer) -> None:
    proc, port = start_proxy(tmp_path, upstream)
    try:
        assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
