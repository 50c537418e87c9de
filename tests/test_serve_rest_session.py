"""One-shot REST TTS keeps the session's time limit, as the WebSocket does (README "Limits").

A stream that runs past `max_session_s` ends with the WebSocket's `session too long`
error line, and a client that stops reading its response is dropped once the
session and its grace are over: before, it held the connection (and the voice it
spoke with, which could then not be deleted) for as long as it liked.
"""

from __future__ import annotations

import json
import socket
import time

import httpx

from tests.test_server_limits import Factory
from tests.test_server_socket import server_side

LONG_TEXT = "The session has a time limit. " * 1500  # thousands of units: seconds of rendering
DEADLINE_S = 60.0


def post_tts_head(address: tuple[str, int], body: dict[str, object]) -> socket.socket:
    """POST the one-shot TTS on a raw socket that buffers little, and read up to its status line."""
    raw = json.dumps(body).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(address)
    sock.sendall(
        b"POST /api/post/speech/tts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(raw), raw)
    )
    assert sock.recv(12) == b"HTTP/1.1 200"
    return sock


def test_a_rest_stream_past_the_session_ends_with_session_too_long(server_factory: Factory) -> None:
    server = server_factory(max_session_s=0.2)
    body = {"text": LONG_TEXT, "output_format": "pcm"}
    with httpx.stream("POST", server.base_url + "post/speech/tts", json=body, timeout=DEADLINE_S) as response:
        lines = [json.loads(line) for line in response.iter_lines()]
    assert lines[0]["type"] == "ready"
    assert lines[-1] == {"type": "error", "message": "session too long: at most 0.2 s per session", "code": 1008}
    assert not any(line["type"] == "end_of_stream" for line in lines)


def test_a_rest_client_that_stops_reading_is_dropped_after_the_session(server_factory: Factory) -> None:
    server = server_factory(max_session_s=1.0)
    state = server.server.config.app.state.gradium
    client = post_tts_head((server.host, server.port), {"text": LONG_TEXT, "output_format": "pcm", "only_audio": True})
    try:
        protocol = server_side(server, client.getsockname())

        def held() -> bool:
            return protocol in server.server.server_state.connections or state.shared.voices_in_use() != 0

        deadline = time.monotonic() + DEADLINE_S
        while held() and time.monotonic() < deadline:
            time.sleep(0.1)  # reading nothing meanwhile
        assert protocol not in server.server.server_state.connections, "the server still holds the connection"
        assert state.shared.voices_in_use() == 0  # and the voice it spoke with is free again
        received = 0
        try:
            while chunk := client.recv(1 << 16):
                received += len(chunk)
        except ConnectionResetError:
            pass
        # What the kernel held for it, not the hours of audio the text makes.
        assert received < 16 << 20
    finally:
        client.close()
