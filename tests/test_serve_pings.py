"""A client that floods pings and reads nothing cannot grow `gradium serve`'s memory.

Every ping is answered with a pong, and a pong nobody reads waits in the server's
write buffer. The flood here is sent on a raw socket (a client library would read
the pongs) with a small receive buffer, so the kernel holds little of it, and the
server's own write buffer for the connection is looked at once it has read it all.
"""

from __future__ import annotations

import base64
import fcntl
import os
import socket
import struct
import termios
import time

from tests.test_server_limits import Factory, assert_served, speak
from tests.test_server_socket import server_side

PING_PAYLOAD = b"p" * 125  # the largest a control frame may carry
PINGS = 200_000  # 26 MB of pings
# What the buffer may hold: asyncio's high-water mark (64 KiB) plus a little.
BUFFER_LIMIT = 256 * 1024
DEADLINE_S = 60.0


def masked_ping() -> bytes:
    """A client's ping frame: FIN + opcode 9, the mask bit and length, a zero mask (payload as is)."""
    return bytes([0x89, 0x80 | len(PING_PAYLOAD)]) + b"\0\0\0\0" + PING_PAYLOAD


def open_websocket(address: tuple[str, int]) -> socket.socket:
    """A WebSocket handshake by hand, on a socket that will read nothing after it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect(address)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /api/speech/tts HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def unread_bytes(sock: socket.socket) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


def test_a_ping_flood_from_a_client_that_reads_nothing_grows_no_buffer(server_factory: Factory) -> None:
    server = server_factory()
    client = open_websocket((server.host, server.port))
    try:
        client.sendall(masked_ping() * PINGS)
        protocol = server_side(server, client.getsockname())
        server_sock = protocol.transport.get_extra_info("socket")
        deadline = time.monotonic() + DEADLINE_S
        while unread_bytes(server_sock) and time.monotonic() < deadline:  # the server reads the rest
            time.sleep(0.05)
        assert unread_bytes(server_sock) == 0
        time.sleep(0.2)  # the last read's pings handled
        buffered = protocol.transport.get_write_buffer_size()
        assert buffered < BUFFER_LIMIT, f"{buffered} bytes of pongs held for a client that reads nothing"
        assert_served(speak(server))  # and the server serves on
    finally:
        client.close()
