"""What the built-in engine's process and the command agree on, byte for byte.

Standard library only: the command's side (transport/engine_process.py and
local.py) imports it before anything else, and must not import numpy or asyncio
for it. The engine's side is server/pipe.py (the frames and the marker) and
server/resident.py (the hello and the exit status).

- **Frames**, both ways on the pipe or socket: HEADER (payload length u32,
  channel u32, kind byte, little-endian), then the payload. Command to engine:
  OPEN, TEXT (a text frame, UTF-8) and CLOSE; engine to command: READY first
  (channel 0, no payload: the engine serves this command now), then TEXT and
  CLOSE (payload: the close code as text).
- **REST calls**, each on a channel of its own: REQUEST (command to engine:
  REQUEST_HEAD, the JSON of method, path, query and headers, then the body),
  answered with RESPONSE (the JSON of status and headers), BODY frames, then
  CLOSE "1000" (or "1011" if the answer broke off). A CLOSE from the command
  abandons the call.
- **Marker file**: which request is in the engine now, so that if eSpeak kills
  the process the command knows whose text did it: MARKER (channel, 0 for none;
  the client_req_id's length; whether it has one) then the id's UTF-8, at most
  MARKER_ID_BYTES. At STATUS_OFFSET the resident engine writes how the process
  serving the command ended: STATUS (has one; the exit code, negative for a
  signal, as `Popen.returncode` gives it).
- **Hello**, the command's first message to the resident engine: HELLO (the JSON's
  length), then the JSON; the marker and stderr file descriptors ride on its
  first byte (SCM_RIGHTS).
"""

from __future__ import annotations

import struct

__all__ = [
    "BODY",
    "CLOSE",
    "FRAME_LIMIT",
    "HEADER",
    "HELLO",
    "MARKER",
    "MARKER_ID_BYTES",
    "OPEN",
    "PEER",
    "READY",
    "REQUEST",
    "REQUEST_HEAD",
    "RESPONSE",
    "STATUS",
    "STATUS_OFFSET",
    "STREAM_BUFFER",
    "TEXT",
    "frame",
]

HEADER = struct.Struct("<IIc")
OPEN, TEXT, CLOSE, READY = b"O", b"T", b"C", b"R"
REQUEST, RESPONSE, BODY = b"Q", b"S", b"B"
REQUEST_HEAD = struct.Struct("<I")
# The largest frame the engine reads (it stops reading a stream that sends a larger one): a
# voice sample upload (20 MiB by default, refused by the command above that) fits.
FRAME_LIMIT = 1 << 26
# What a side's stream buffers before it stops reading (asyncio's flow control), not a frame limit.
STREAM_BUFFER = 1 << 24


def frame(channel: int, kind: bytes, payload: bytes) -> bytes:
    """One frame, as either side writes it."""
    return HEADER.pack(len(payload), channel, kind) + payload


MARKER = struct.Struct("<IIB")
MARKER_ID_BYTES = 1024
STATUS = struct.Struct("<Bi")
STATUS_OFFSET = 2048

HELLO = struct.Struct("<I")
# SO_PEERCRED's answer: pid, uid, gid.
PEER = struct.Struct("3i")
