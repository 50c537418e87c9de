"""`gradium serve` at its edges: browser origins, a public address, body sizes, slow headers,
and the speech-to-text routes it lacks. Each against `gradium serve` run as a subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.protocol import State as WsState
from websockets.uri import parse_uri

from gradium_cli.server.guard import LINGER_BYTES, LINGER_S, MAX_LINGERING
from tests.test_serve_store import multipart
from tests.test_server_rest import tone_wav

Serve = Callable[..., tuple[Any, str]]
CHUNK = b"\0" * (1 << 20)
PAGE = "http://localhost:3000"


def port_of(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1].split("/")[0])


def ws_url(base_url: str, route: str) -> str:
    return base_url.replace("http://", "ws://") + route


async def ws_first_frame(url: str, **headers: str) -> tuple[dict[str, Any], int | None]:
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return first, ws.close_code


def voice_upload(name: str) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(
        [("audio_file", "s.wav", tone_wav(1.5)), ("name", None, name.encode()), ("language", None, b"en")]
    )
    return body, {"content-type": content_type}


# ------------------------------------------------------------------ browser origins


def test_a_page_from_another_origin_is_refused_on_every_route(tmp_path: Path, serve_process: Serve) -> None:
    _, base_url = serve_process()
    body, headers = voice_upload("from-a-page")
    evil = {"origin": "https://evil.example"}
    with httpx.Client(base_url=base_url, timeout=30) as client:
        attempts = [
            client.post("voices/", content=body, headers={**headers, **evil}),  # a no-preflight form POST
            client.get("voices/", headers=evil),
            client.delete("voices/AAAAAAAAAAAAAAAA", headers=evil),
            client.post("pronunciations/", json={"name": "d", "language": "en"}, headers=evil),
            client.post("post/speech/tts", json={"text": "Hi."}, headers=evil),
            client.get("usages/credits", headers=evil),
            client.get("api-keys/token", headers=evil),
            client.post("post/speech/asr", content=b"x", headers=evil),
            client.get("no/such/route", headers=evil),
            client.options("voices/", headers={**evil, "access-control-request-method": "POST"}),
            client.post("voices/", content=body, headers={**headers, "origin": "null"}),
        ]
        for response in attempts:
            assert response.status_code == 403, (response.request.url, response.status_code)
            assert "Origin" in response.json()["detail"]
            assert "access-control-allow-origin" not in response.headers
        # Nothing was stored; the same requests without an Origin (any non-browser client) work.
        assert client.get("voices/").json() == []
        assert client.get("pronunciations/").json()["total"] == 0
        assert client.post("voices/", content=body, headers=headers).status_code == 201
    assert len(list((tmp_path / "serve-data" / "voice-samples").iterdir())) == 1


@pytest.mark.parametrize("route", ["speech/tts", "speech/asr", "speech/s2s"])
def test_a_cross_origin_websocket_upgrade_is_refused_with_403(serve_process: Serve, route: str) -> None:
    _, base_url = serve_process()

    async def attempt() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(base_url, route), origin="https://evil.example", open_timeout=10):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403

    asyncio.run(attempt())
    # Without an Origin header (every non-browser client) the TTS socket opens and speaks.
    if route == "speech/tts":

        async def speak() -> dict[str, Any]:
            async with connect(ws_url(base_url, route), open_timeout=10) as ws:
                await ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
                return dict(json.loads(await ws.recv()))

        assert asyncio.run(speak())["type"] == "ready"


def test_allowed_origins_are_served_with_cors_headers(serve_process: Serve) -> None:
    _, base_url = serve_process("--allow-origin", PAGE, "--allow-origin", "HTTPS://Tool.Example:8443/")
    body, headers = voice_upload("from-my-page")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post("voices/", content=body, headers={**headers, "origin": PAGE})
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == PAGE
        preflight = client.options(
            "pronunciations/",
            headers={"origin": "https://tool.example:8443", "access-control-request-method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://tool.example:8443"
        # Near misses are other origins.
        for other in ("http://localhost:3001", "https://localhost:3000", "http://localhost:3000.evil.example"):
            assert client.get("voices/", headers={"origin": other}).status_code == 403, other

    async def speak() -> str:
        async with connect(ws_url(base_url, "speech/tts"), origin=PAGE, open_timeout=10) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
            return str(json.loads(await ws.recv())["type"])

    assert asyncio.run(speak()) == "ready"


# ------------------------------------------------------------------ host names (DNS rebinding)


def test_a_rebound_host_name_is_refused_on_every_route(tmp_path: Path, serve_process: Serve) -> None:
    """A page at rebound.example, whose name now resolves to 127.0.0.1, is same-origin to the
    browser: its GET carries no Origin, but its Host header is still its own name."""
    _, base_url = serve_process()
    body, headers = voice_upload("rebound")
    port = port_of(base_url)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for host in (
            f"rebound.example:{port}",
            "rebound.example",
            f"localhost.rebound.example:{port}",
            f"127.0.0.1.rebound.example:{port}",
            "127.0.0.2",
            "[::2]",
            "",
        ):
            attempts = [
                client.get("voices/", headers={"host": host}),
                client.get("usages/credits", headers={"host": host}),
                client.post("voices/", content=body, headers={**headers, "host": host}),
                client.post("post/speech/tts", json={"text": "Hi."}, headers={"host": host}),
            ]
            for response in attempts:
                assert response.status_code == 403, (host, response.request.url, response.status_code)
                why = f"Host {json.dumps(host)} is not allowed: start gradium serve with --allow-host to allow it"
                assert response.json() == {"detail": why}
        # The loopback names, in any case and with or without port or trailing dot, are served.
        for host in (f"127.0.0.1:{port}", "127.0.0.1", f"localhost:{port}", "LocalHost.", f"[::1]:{port}", "[::1]"):
            assert client.get("usages/credits", headers={"host": host}).status_code == 200, host
        assert client.get("voices/").json() == []  # the refused upload stored nothing

    # The WebSocket upgrade too (by hand: a client library sends its own Host).
    upgrade = (
        "GET /api/speech/tts HTTP/1.1\r\nhost: rebound.example\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(upgrade.encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 403 ")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(upgrade.replace("rebound.example", f"localhost:{port}").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_allow_host_serves_that_name_and_off_loopback_any_name_is_served(serve_process: Serve) -> None:
    _, base_url = serve_process("--allow-host", "speech.test")
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("usages/credits", headers={"host": f"speech.test:{port_of(base_url)}"}).status_code == 200
        assert client.get("usages/credits", headers={"host": "other.test"}).status_code == 403
    # Bound to every interface, the server cannot know the names it is reached by.
    _, public_url = serve_process("--host", "0.0.0.0")
    with httpx.Client(timeout=30) as client:
        assert client.get(public_url + "usages/credits", headers={"host": "any.name.test"}).status_code == 200


def test_allow_origin_refuses_what_is_not_an_origin(tmp_path: Path) -> None:
    import subprocess

    from tests.servers import gradium_exe

    for value in ("localhost:3000", "ftp://x.example", "http://x.example/path", "*"):
        done = subprocess.run(
            [gradium_exe(), "serve", "--port", "0", "--allow-origin", value],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2, (value, done.stderr)
        assert "not an origin" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------ a public address


def stderr_after_stop(proc: Any) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=15)
    return str(err)


def test_a_public_address_without_a_key_gets_one_warning_line(serve_process: Serve) -> None:
    public, _ = serve_process("--host", "0.0.0.0")
    keyed, _ = serve_process("--host", "0.0.0.0", "--api-key", "gsk_local_secret_1")
    loopback, _ = serve_process()
    warned = [line for line in stderr_after_stop(public).splitlines() if "warning" in line]
    assert warned == [
        "gradium serve: warning: listening on 0.0.0.0 without --api-key: anyone who can reach it can use it"
    ]
    assert "warning" not in stderr_after_stop(keyed)
    assert "warning" not in stderr_after_stop(loopback)


# ------------------------------------------------------------------ what it lacks


@pytest.mark.parametrize("route", ["speech/asr", "speech/s2s"])
def test_speech_to_text_websockets_answer_an_error_frame_then_1008(serve_process: Serve, route: str) -> None:
    _, base_url = serve_process()
    first, close_code = asyncio.run(ws_first_frame(ws_url(base_url, route)))
    assert first["type"] == "error" and first["code"] == 1008
    assert "gradium serve does not offer speech-to-text" in first["message"]
    assert close_code == 1008


def test_speech_to_text_rest_answers_501_with_a_detail(serve_process: Serve) -> None:
    _, base_url = serve_process()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for route in ("post/speech/asr", "post/speech/s2s"):
            response = client.post(route, content=b"RIFF" + bytes(50_000), headers={"content-type": "audio/wav"})
            assert response.status_code == 501
            assert response.headers["content-type"] == "application/json"
            assert "gradium serve does not offer speech-to-text" in response.json()["detail"]


# ------------------------------------------------------------------ body sizes


def raw_exchange(port: int, head: bytes, body: bytes, *, chunked: bool) -> int | None:
    """Send one request on a raw socket; the status line's code, or None when the server hung up first."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            if chunked:
                for start in range(0, len(body), 65536):
                    piece = body[start : start + 65536]
                    sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                sock.sendall(b"0\r\n\r\n")
            else:
                sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = sock.recv(200)
        except ConnectionResetError:
            return None
    return int(reply.split()[1]) if reply.startswith(b"HTTP/1.1 ") else None


def request_head(path: str, content_type: str, length: int | None) -> bytes:
    framing = f"content-length: {length}" if length is not None else "transfer-encoding: chunked"
    return f"POST /api/{path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\n{framing}\r\n\r\n".encode()


def padded_upload(name: str, size: int) -> tuple[bytes, str]:
    """A valid voice upload of exactly `size` bytes: the description part is padding."""
    body, _ = multipart(
        [("audio_file", "s.wav", tone_wav(1.5)), ("name", None, name.encode()), ("description", None, b"")]
    )
    return multipart(
        [
            ("audio_file", "s.wav", tone_wav(1.5)),
            ("name", None, name.encode()),
            ("description", None, b"d" * (size - len(body))),
        ]
    )


def test_upload_limit_just_below_at_and_above(serve_process: Serve) -> None:
    limit = len(padded_upload("x", 60_000)[0]) + 1000  # room for a tone and a short description
    _, base_url = serve_process("--max-upload-bytes", str(limit))
    port = port_of(base_url)
    for index, (size, expected) in enumerate([(limit - 1, 201), (limit, 201), (limit + 1, 413)]):
        for chunked in (False, True):
            body, content_type = padded_upload(f"v{index}{chunked}", size)
            assert len(body) == size
            head = request_head("voices/", content_type, None if chunked else size)
            assert raw_exchange(port, head, body, chunked=chunked) == expected, (size, chunked)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert len(client.get("voices/").json()) == 4


def test_json_body_limit_just_below_at_and_above(serve_process: Serve) -> None:
    limit = 1 << 20  # the per-message limit, for every body but the voice upload
    _, base_url = serve_process()
    port = port_of(base_url)
    for index, (size, expected) in enumerate([(limit - 1, 201), (limit, 201), (limit + 1, 413)]):
        for chunked in (False, True):
            start = json.dumps({"name": f"d{index}{chunked}", "language": "en"})
            body = (start[:-1] + " " * (size - len(start)) + "}").encode()
            assert len(body) == size
            head = request_head("pronunciations/", "application/json", None if chunked else size)
            assert raw_exchange(port, head, body, chunked=chunked) == expected, (size, chunked)


def test_a_too_large_upload_leaves_nothing_behind(tmp_path: Path, serve_process: Serve) -> None:
    _, base_url = serve_process("--max-upload-bytes", "100000")
    body, content_type = padded_upload("big", 300_000)
    status = raw_exchange(port_of(base_url), request_head("voices/", content_type, None), body, chunked=True)
    assert status == 413
    data_dir = tmp_path / "serve-data"
    assert [p.name for p in (data_dir / "uploads").iterdir()] == []
    assert not (data_dir / "voice-samples").exists() or list((data_dir / "voice-samples").iterdir()) == []


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def read_answer(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), leaving the connection open."""
    got = b""
    while b"\r\n\r\n" not in got:
        piece = sock.recv(65536)
        assert piece, f"closed before a whole answer: {got!r}"
        got += piece
    head, _, body = got.partition(b"\r\n\r\n")
    length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")).split()[1])
    while len(body) < length:
        piece = sock.recv(65536)
        assert piece, f"closed before a whole answer: {got!r}"
        body += piece
    return head + b"\r\n\r\n" + body


def read_until_closed(sock: socket.socket) -> tuple[bytes, bool]:
    """What the server sent until it closed; True when it closed with a reset (data it had not read)."""
    got = b""
    try:
        while piece := sock.recv(65536):
            got += piece
    except ConnectionResetError:
        return got, True
    return got, False


def test_a_refused_upload_is_answered_at_once_and_read_to_its_end(serve_process: Serve) -> None:
    """The 413 comes before the body is sent; the body, sent on, is read (no reset) and the
    connection closes as soon as it ends (server/guard.py's lingering close)."""
    _, base_url = serve_process("--max-upload-bytes", "100000")
    size = 8 << 20  # far past the socket buffers, well within what is read after a refusal
    head = request_head("voices/", "multipart/form-data; boundary=b", size)
    with socket.create_connection(("127.0.0.1", port_of(base_url)), timeout=10) as sock:
        sock.sendall(head + b"\0" * 1000)
        first = read_answer(sock)  # before the body: the Content-Length alone is refused
        assert first.startswith(b"HTTP/1.1 413 "), first
        assert first.endswith(b'\r\n\r\n{"detail": "request body too large: at most 100000 bytes"}')
        sock.sendall(b"\0" * (size - 1000))  # no reset: the server reads on
        sent_at = time.monotonic()
        rest, reset = read_until_closed(sock)
        closed_after = time.monotonic() - sent_at
    assert (rest, reset) == (b"", False)
    assert closed_after < LINGER_S / 2, closed_after


def test_a_refused_body_is_read_for_a_bounded_time_and_size(serve_process: Serve) -> None:
    _, base_url = serve_process("--max-upload-bytes", "100000")
    port = port_of(base_url)
    huge = 200 << 20
    # A sender that never stops is cut once LINGER_BYTES more have been read.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head("voices/", "multipart/form-data; boundary=b", huge))
        sent = 0
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            while sent < huge:
                sock.sendall(CHUNK)
                sent += len(CHUNK)
    assert LINGER_BYTES <= sent < 2 * LINGER_BYTES, sent
    # A sender that stalls is let go LINGER_S after its refusal.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_head("voices/", "multipart/form-data; boundary=b", huge) + b"\0" * 1000)
        started = time.monotonic()
        answer, _ = read_until_closed(sock)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert LINGER_S - 0.2 <= waited < LINGER_S + 1.0, waited


def test_the_readme_states_the_lingering_bounds() -> None:
    readme = " ".join((Path(__file__).parent.parent / "README.md").read_text().split())
    stated = f"for at most {LINGER_S:g} s and {LINGER_BYTES >> 20} MiB, on at most {MAX_LINGERING} connections"
    assert stated in readme


def test_many_refused_uploads_at_once_hold_few_descriptors(tmp_path: Path, serve_process: Serve) -> None:
    """Refused uploads linger only MAX_LINGERING at a time: the rest close at once, so a flood of
    them cannot run the server out of file descriptors; it serves meanwhile and lets all go."""
    proc, base_url = serve_process("--workers", "1", "--max-upload-bytes", "100000")
    port = port_of(base_url)
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("voices/").json() == []
        # The store holds its file open once there is one (store.Collection): in the baseline.
        body, headers = voice_upload("before")
        assert client.post("voices/", content=body, headers=headers).status_code == 201
    time.sleep(0.2)  # the server has seen that connection close
    baseline = open_descriptors(proc.pid)
    head = request_head("voices/", "multipart/form-data; boundary=b", 200 << 20)
    senders = []
    started = time.monotonic()
    for _ in range(5 * MAX_LINGERING):
        sock = socket.create_connection(("127.0.0.1", port), timeout=LINGER_S + 5)
        sock.sendall(head + b"\0" * 4096)  # then nothing: each would linger the whole LINGER_S
        senders.append(sock)
    time.sleep(0.5)  # every one is refused by now
    held = open_descriptors(proc.pid) - baseline
    with httpx.Client(base_url=base_url, timeout=30) as client:
        body, headers = voice_upload("meanwhile")
        assert client.post("voices/", content=body, headers=headers).status_code == 201
    assert held <= MAX_LINGERING, held
    lingering = []
    for sock in senders:
        sock.settimeout(0.05)
        answer = b""
        try:
            while piece := sock.recv(65536):
                answer += piece
        except TimeoutError:  # still open: lingering, with its answer already sent
            assert answer.startswith(b"HTTP/1.1 413 "), answer
            lingering.append(sock)
        except ConnectionResetError:
            pass  # closed at once, the body it sent unread
    assert len(lingering) == MAX_LINGERING
    for sock in lingering:
        sock.settimeout(LINGER_S + 5)
        _, _ = read_until_closed(sock)
    let_go = time.monotonic() - started
    for sock in senders:
        sock.close()
    assert LINGER_S - 0.2 <= let_go < LINGER_S + 1.5, let_go
    time.sleep(0.2)
    assert open_descriptors(proc.pid) == baseline
    log = stderr_after_stop(proc)
    assert "Traceback" not in log, log[-2000:]


def test_a_client_leaving_mid_body_is_not_an_error(tmp_path: Path, serve_process: Serve) -> None:
    proc, base_url = serve_process()
    port = port_of(base_url)
    upload_start = b'--b\r\nContent-Disposition: form-data; name="audio_file"; filename="s.wav"\r\n\r\nRIFF'
    for path, content_type, first in [
        ("voices/", "multipart/form-data; boundary=b", upload_start),
        ("pronunciations/", "application/json", b'{"name": "x"'),
        ("post/speech/tts", "application/json", b'{"text": "Hello'),
    ]:
        for length in (100_000, None):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request_head(path, content_type, length))
                sock.sendall(first if length else b"%x\r\n%s\r\n" % (len(first), first))
                time.sleep(0.2)  # the route is reading the body
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get("voices/").json() == []  # still serving, nothing stored
    assert list((tmp_path / "serve-data" / "uploads").iterdir()) == []
    log = stderr_after_stop(proc)
    assert "Traceback" not in log and "Exception" not in log, log[-2000:]


# ------------------------------------------------------------------ slow headers


def test_headers_must_arrive_within_the_timeout(serve_process: Serve) -> None:
    _, base_url = serve_process("--header-timeout", "0.5")
    port = port_of(base_url)
    # Just inside the timeout: served.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/usages/credits HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        time.sleep(0.3)
        sock.sendall(b"\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
    # Past it: 408, then closed, at the timeout and not much later.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /api/usages/credits HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        reply = sock.recv(100)
        waited = time.monotonic() - started
        assert reply.startswith(b"HTTP/1.1 408 ")
        assert 0.45 <= waited < 1.5, waited
        assert sock.recv(100) == b""
    # Trickling bytes does not reset the clock.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(40):
                sock.sendall(b"x-slow: y\r\n")
                time.sleep(0.05)
        assert time.monotonic() - started < 1.5


# ------------------------------------------------------------------ slow bodies


def test_a_body_must_keep_coming(serve_process: Serve) -> None:
    """After its headers a body has the header timeout to start, plus its size at min_body_rate (4 KiB/s):
    a byte a second kept a connection (and so a slot) for as long as the client liked."""
    _, base_url = serve_process("--header-timeout", "0.5")
    port = port_of(base_url)
    body = json.dumps({"name": "Trickled", "language": "en", "description": "d" * 8000}).encode()
    head = b"POST /api/pronunciations/ HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    # Slow but steady (10 kB/s, above the 4 KiB/s floor): served.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"content-length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 1000):
            sock.sendall(body[start : start + 1000])
            time.sleep(0.1)
        assert sock.recv(100).startswith(b"HTTP/1.1 201 ")
    # A byte at a time: 408 once the time it has earned is spent, then closed.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"content-length: 1000\r\n\r\n")
        reply = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(100):
                sock.sendall(b"x")
                readable, _, _ = select.select([sock], [], [], 0.1)
                if readable:
                    reply, _ = read_until_closed(sock)  # the head and the body may come apart
                    break
        assert reply.startswith(b"HTTP/1.1 408 "), reply
        assert b'"request body too slow: ' in reply
        assert sock.recv(100) == b""
    with httpx.Client(base_url=base_url, timeout=10) as client:
        names = [d["name"] for d in client.get("pronunciations/").json()["dictionaries"]]
    assert names == ["Trickled"]  # the slow one was stored, the trickle nothing


# ------------------------------------------------------------------ clients that vanish


def test_a_client_gone_before_the_close_frame_leaves_no_traceback(serve_process: Serve) -> None:
    """The close after end_of_stream raced a client that had already reset the connection:
    the request's task died with WebSocketDisconnect ("Task exception was never retrieved"
    and a traceback in the server's log; `gradium doctor` showed it about one run in ten)."""
    proc, base_url = serve_process()
    port = port_of(base_url)
    for _ in range(30):
        protocol = ClientProtocol(parse_uri(base_url.replace("http://", "ws://") + "speech/tts"))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            protocol.send_request(protocol.connect())
            sock.sendall(b"".join(protocol.data_to_send()))
            while protocol.state is WsState.CONNECTING:
                protocol.receive_data(sock.recv(65536))
            protocol.events_received()
            for message in ({"type": "setup", "output_format": "pcm"}, {"type": "text", "text": "Hi."}):
                protocol.send_text(json.dumps(message).encode())
            protocol.send_text(b'{"type": "end_of_stream"}')
            sock.sendall(b"".join(protocol.data_to_send()))
            ended = False
            while not ended:
                protocol.receive_data(sock.recv(1 << 20))
                ended = any(b'"end_of_stream"' in event.data for event in protocol.events_received())
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.get("voices/", params={"limit": 1}).status_code == 200  # still serving
    log = stderr_after_stop(proc)
    assert "Traceback" not in log and "Task exception" not in log, log[-3000:]
