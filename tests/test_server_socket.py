"""`gradium serve`'s connections run without Nagle's algorithm (issue 14, the ~40 ms stall).

asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; a listening
socket made with proto 0 passes that on to every accepted connection, and then a
small frame after a large one (end_of_stream, a short last audio frame) waited
for the client's delayed ACK. The bench (bench/stall.py) shows the time; this
checks the cause on the server's own accepted sockets.
"""

from __future__ import annotations

import socket
import time

from gradium_cli.server.app import RunningServer


def test_accepted_connections_have_tcp_nodelay(local_server: RunningServer) -> None:
    with socket.create_connection((local_server.host, local_server.port)) as client:
        client.sendall(b"GET /api/usages/credits HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        client.recv(1)  # the server has accepted it and answered
        deadline = time.monotonic() + 5
        found: list[socket.socket] = []
        while not found and time.monotonic() < deadline:
            for connection in list(local_server.server.server_state.connections):
                sock = connection.transport.get_extra_info("socket")  # type: ignore[attr-defined]
                if sock is not None and sock.getpeername() == client.getsockname():
                    found.append(sock)
            time.sleep(0.01)
        assert found, "the server's side of the connection was not found"
        assert found[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
