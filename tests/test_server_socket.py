"""`gradium serve`'s connections run without Nagle's algorithm (issue 14, the ~40 ms stall),
and its WebSockets are served by the protocol that lets a unit's frames go out in one write.

asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; a listening
socket made with proto 0 passes that on to every accepted connection, and then a
small frame after a large one (end_of_stream, a short last audio frame) waited
for the client's delayed ACK. The bench (bench/stall.py) shows the time; this
checks the cause on the server's own accepted sockets.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.sync.client import connect

from gradium_cli.server.app import RunningServer


def server_side(server: RunningServer, client_address: tuple[str, int]) -> Any:
    """uvicorn's protocol object for the server's end of a client's connection."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for connection in list(server.server.server_state.connections):
            sock = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
            if sock is not None and sock.getpeername() == client_address:
                return connection
        time.sleep(0.01)
    raise AssertionError("the server's side of the connection was not found")


def test_accepted_connections_have_tcp_nodelay(local_server: RunningServer) -> None:
    with socket.create_connection((local_server.host, local_server.port)) as client:
        client.sendall(b"GET /api/usages/credits HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        client.recv(1)  # the server has accepted it and answered
        sock = server_side(local_server, client.getsockname()).transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_websockets_are_served_by_the_protocol_that_sends_frames_together(local_server: RunningServer) -> None:
    # server/asgi_socket.py sends a unit's frames in one write through this protocol,
    # and through ASGI one by one otherwise: an uvicorn that served WebSockets with
    # another would still work, at a cost the bench (server_engine.py) shows.
    url = f"ws://{local_server.host}:{local_server.port}/api/speech/tts"
    with connect(url) as ws:
        ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "ready"
        assert isinstance(server_side(local_server, ws.socket.getsockname()), WebSocketsSansIOProtocol)
