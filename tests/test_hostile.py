"""The client against hostile servers (tests/hostile_server.py): the key stays home, secrets stay
masked, bounds hold, and every failure is one line and a documented exit code."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.cli_helpers import gradium, isolated_env
from tests.hostile_server import (
    Conn,
    Request,
    audio_frame,
    hostile_server,
    ready_frame,
    redirect_to,
    tts_session,
)

pytestmark = pytest.mark.timeout(60)

KEY = "gsk_hostile_SECRET_key_9f8e7d6c"
SHOWN = f"gsk_…{KEY[-4:]}"  # the masked form: enough to tell keys apart, never enough to use one


def keyed(tmp_path: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return gradium(tmp_path, *args, input=stdin, env=isolated_env(tmp_path, GRADIUM_API_KEY=KEY))


def assert_one_line(result: subprocess.CompletedProcess[bytes], code: int, *fragments: str) -> str:
    stderr = result.stderr.decode()
    assert result.returncode == code, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("gradium: error: "), stderr
    for fragment in fragments:
        assert fragment in stderr, stderr
    assert KEY not in stderr and KEY not in result.stdout.decode(errors="replace")
    return stderr


async def answer_404(request: Request, conn: Conn) -> None:
    await conn.respond(404)


# 1. The key never follows a redirect to another host ------------------------------------

COMMANDS = {
    "say": ("say", "Hi.", "-o", "out.wav"),
    "say --rest": ("say", "Hi.", "-o", "out.wav", "--rest"),
    "stream": ("stream", "-o", "out.wav"),
    "batch": ("batch", "m.txt", "--out-dir", "clips"),
    "ws-raw": ("ws-raw", "-x", "Hi."),
    "voices list": ("voices", "list"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_command_sends_the_key_to_a_redirect_target(tmp_path: Path, command: str) -> None:
    (tmp_path / "m.txt").write_text("Hello there.\n")
    with hostile_server(answer_404, host="127.0.0.2") as elsewhere:
        target = f"ws://127.0.0.2:{elsewhere.port}/api/speech/tts"
        with hostile_server(redirect_to(target)) as first:
            result = keyed(tmp_path, *COMMANDS[command], "--base-url", first.base_url, stdin=b"Hello there.\n")
        assert first.requests, "the configured server was asked"
        assert first.requests[0].headers.get("x-api-key") == KEY
        assert elsewhere.connections == 0, [r.headers for r in elsewhere.requests]
    stderr = result.stderr.decode()
    assert "redirected to another host" in stderr and f"127.0.0.2:{elsewhere.port}" in stderr, stderr
    assert "refusing to send the API key there" in stderr
    assert KEY not in stderr
    assert "Traceback" not in stderr
    if command == "batch":  # the summary line, then the reason: the socket never opened
        assert result.returncode == 7 and stderr.splitlines()[-1].startswith("gradium: error: "), stderr
    else:
        assert_one_line(result, 7)
    assert not (tmp_path / "out.wav").exists()


def test_another_port_is_another_host_but_a_moved_route_is_followed(tmp_path: Path) -> None:
    """Only another origin is refused: a server moving its own route keeps working."""
    pcm = bytes(range(256)) * 4
    session = tts_session(lambda received: [ready_frame(), audio_frame(pcm, 0, 0.01), {"type": "end_of_stream"}])

    async def moved(request: Request, conn: Conn) -> None:
        if request.path == "/api/speech/tts":
            await conn.respond(307, b"", {"Location": "/v2/speech/tts"})
        else:
            await session(request, conn)

    with hostile_server(moved) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.pcm", "--base-url", server.base_url)
        assert result.returncode == 0, result.stderr
        assert [r.path for r in server.requests] == ["/api/speech/tts", "/v2/speech/tts"]
        assert (tmp_path / "out.pcm").read_bytes() == pcm
        with hostile_server(redirect_to(f"ws://127.0.0.1:{server.port}/api/speech/tts")) as first:
            result = keyed(tmp_path, "say", "Hi.", "-o", "out2.pcm", "--base-url", first.base_url)
        assert_one_line(result, 7, "redirected to another host")
        assert len(server.requests) == 2, "the other port got nothing"


def test_url_passwords_are_masked_in_every_message(tmp_path: Path) -> None:
    async def refuse(request: Request, conn: Conn) -> None:
        await conn.respond(500, b"nope")

    with hostile_server(refuse) as server:
        url = f"http://alice:hunter2secret@127.0.0.1:{server.port}/api/"
        for args in (("say", "Hi.", "-o", "out.wav", "--retries", "0"), ("voices", "list")):
            result = keyed(tmp_path, "-v", *args, "--base-url", url)
            stderr = result.stderr.decode()
            assert result.returncode in (6, 7), stderr
            assert "hunter2secret" not in stderr, stderr
            assert "alice:****@127.0.0.1" in stderr, stderr


def test_a_key_the_server_echoes_is_masked(tmp_path: Path) -> None:
    def frames(received: list[dict[str, object]]) -> list[dict[str, object] | bytes]:
        return [{"type": "error", "message": f"key {KEY} is not valid here", "code": 1008}]

    with hostile_server(tts_session(frames)) as server:
        result = keyed(tmp_path, "say", "Hi.", "-o", "out.wav", "--base-url", server.base_url)
    stderr = result.stderr.decode()
    assert result.returncode in (4, 5), stderr
    assert KEY not in stderr and f"key {SHOWN} is not valid here" in stderr, stderr

    async def rest_echo(request: Request, conn: Conn) -> None:
        await conn.respond(400, json.dumps({"detail": f"bad key {KEY}"}).encode())

    with hostile_server(rest_echo) as server:
        result = keyed(tmp_path, "voices", "list", "--base-url", server.base_url)
    stderr = result.stderr.decode()
    assert KEY not in stderr and f"bad key {SHOWN}" in stderr, stderr


def test_ws_raw_header_replaces_the_configured_key(tmp_path: Path) -> None:
    def frames(received: list[dict[str, object]]) -> list[dict[str, object] | bytes]:
        return [{"type": "error", "message": "stop here", "code": 1008}]

    with hostile_server(tts_session(frames)) as server:
        keyed(tmp_path, "ws-raw", "--base-url", server.base_url, "-H", "X-Api-Key: gsk_other_key_1234", "-x", "Hi.")
    sent = [value for name, value in server.requests[0].raw_headers if name.lower() == "x-api-key"]
    assert sent == ["gsk_other_key_1234"]
