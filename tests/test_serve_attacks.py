"""`gradium serve` under memory and connection attacks, with a real `gradium say` served meanwhile.

The server runs as a subprocess with the common limit of 1024 open files. While
~1,100 connections sit on half-sent headers, four 200 MB voice uploads and a
200 MB JSON body stream in (chunked, so only counting while reading can stop
them; and with Content-Length, as curl sends them), `gradium say` must succeed,
and the server's peak resident memory (VmHWM from /proc, server and its engine
worker together) must stay below 200 MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import resource
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.servers import gradium_exe

ATTACK_BYTES = 200 * 1024 * 1024
HALF_SENT_HEADERS = 1100
RSS_LIMIT_KB = 200 * 1024
CHUNK = b"\0" * (1 << 20)


def peak_rss_kb(pid: int) -> int:
    """VmHWM of a process and its children (the engine workers), in kB."""
    total = 0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    for each in pids:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total


class LoggedServer:
    """A `gradium serve` subprocess whose log is collected as it runs."""

    def __init__(self, proc: Any, base_url: str) -> None:
        self.proc, self.base_url = proc, base_url
        self.port = int(base_url.rsplit(":", 1)[1].split("/")[0])
        self.log: list[str] = []
        self._drain = threading.Thread(target=lambda: self.log.extend(proc.stderr), daemon=True)
        self._drain.start()

    def still_serves_then_stops_cleanly(self, tmp_path: Path) -> None:
        """A normal `say` succeeds afterwards, and the log holds no traceback."""
        again = subprocess.run(
            [gradium_exe(), "say", "Still here.", "--base-url", self.base_url, "-o", str(tmp_path / "after.wav")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 0, again.stderr
        self.proc.terminate()
        self.proc.wait(15)
        self._drain.join(5)
        assert not any("Traceback" in line for line in self.log), "".join(self.log)[-2000:]


def stream_body(port: int, path: str, content_type: str, prefix: bytes, *, chunked: bool) -> None:
    """Send ATTACK_BYTES of body until done or the server hangs up."""
    framing = "transfer-encoding: chunked" if chunked else f"content-length: {ATTACK_BYTES}"
    head = f"POST /api/{path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\n{framing}\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        try:
            sock.sendall(head.encode())
            sent = 0
            while sent < ATTACK_BYTES:
                piece = prefix if sent == 0 else CHUNK
                sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n" if chunked else piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return  # cut off by the server: what the limit is for


def test_memory_and_connection_attacks_leave_the_server_small_and_serving(
    tmp_path: Path, serve_process: Callable[..., tuple[Any, str]]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HALF_SENT_HEADERS + 200:  # this process holds the attacking sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    server = LoggedServer(*serve_process("--workers", "1", max_open_files=1024))
    port = server.port

    half_sent = []
    for _ in range(HALF_SENT_HEADERS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"POST /api/voices/ HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        half_sent.append(sock)

    boundary = "b0undary"
    upload_prefix = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio_file"; filename="s.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\nRIFF"
    ).encode()
    attacks = [
        (port, "voices/", f"multipart/form-data; boundary={boundary}", upload_prefix, chunked)
        for chunked in (True, True, True, True, False)
    ] + [
        (port, "post/speech/tts", "application/json", b'{"text": "' + b"a" * 1000, chunked) for chunked in (True, False)
    ]
    attackers = [threading.Thread(target=stream_body, args=args[:4], kwargs={"chunked": args[4]}) for args in attacks]
    for attacker in attackers:
        attacker.start()
    time.sleep(0.3)  # the uploads are streaming in

    out = tmp_path / "meanwhile.wav"
    started = time.monotonic()
    say = subprocess.run(
        [gradium_exe(), "say", "Served while under attack.", "--base-url", server.base_url, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    say_s = time.monotonic() - started
    for attacker in attackers:
        attacker.join(60)
    peak_kb = peak_rss_kb(server.proc.pid)
    for sock in half_sent:
        sock.close()

    print(f"peak RSS {peak_kb / 1024:.0f} MB; say took {say_s:.2f} s under attack")
    assert say.returncode == 0, say.stderr
    audio, rate = sf.read(out)
    assert len(audio) / rate > 1.0
    assert say_s < 20, say_s
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb / 1024:.0f} MB"
    assert not any(attacker.is_alive() for attacker in attackers)
    # The attacks left nothing in the data dir, and the server is still up and answering.
    assert list((tmp_path / "serve-data" / "uploads").iterdir()) == []
    server.still_serves_then_stops_cleanly(tmp_path)


def test_connections_beyond_the_descriptor_budget_are_told_503_and_the_server_recovers(
    tmp_path: Path, serve_process: Callable[..., tuple[Any, str]]
) -> None:
    """With 600 open files the server may hold 600 - 448 = 152 connections (server/descriptors.py).

    152 connections that finished their headers but hold their body back are not
    mid-headers, so nothing can be dropped for a newcomer: each newcomer is answered
    503 and closed, the server's descriptors stay under its limit, the holders are
    still served, and once they go the server serves everyone again.
    """
    server = LoggedServer(*serve_process("--workers", "1", max_open_files=600))
    port = server.port
    body = b'{"text": "Held back.", "output_format": "pcm_16000"}'
    head = (
        b"POST /api/post/speech/tts HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    holders: list[socket.socket] = []
    while len(holders) < 152:  # in batches: no more than the 64 allowed are mid-headers at once
        batch = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(38)]
        for sock in batch:
            sock.sendall(head)
        for sock in batch:  # the server has read the headers and waits for the body
            assert sock.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        holders += batch

    def ask() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /api/voices/ HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
            answer = b""
            while piece := sock.recv(65536):
                answer += piece
            return answer

    refused = [ask() for _ in range(8)]
    descriptors = len(list(Path(f"/proc/{server.proc.pid}/fd").iterdir()))
    # The holders fit the budget: their requests are answered once their bodies come.
    for sock in holders[-2:]:
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK\r\n")
    for sock in holders:
        sock.close()

    for answer in refused:
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer[:80]
        assert answer.endswith(b"\r\n\r\ntoo many connections; try again later\n")
    assert descriptors < 600
    server.still_serves_then_stops_cleanly(tmp_path)


def test_text_sent_while_a_request_renders_is_not_queued_past_the_text_limit(
    tmp_path: Path, serve_process: Callable[..., tuple[Any, str]]
) -> None:
    """The request reads its queue only between units, and --realtime keeps it pacing one out:
    200 frames of 1,000,000 characters sent meanwhile used to be held whole (peak RSS over
    250 MB). Text past the 100,000-character limit is now dropped as it arrives, and the
    request still fails with `text too long` once it reaches the text that crossed it."""
    server = LoggedServer(*serve_process("--workers", "1", "--realtime"))
    url = server.base_url.replace("http://", "ws://") + "speech/tts"
    frame = json.dumps({"type": "text", "text": "a" * 1_000_000})

    async def attack() -> tuple[list[dict[str, Any]], int | None]:
        async with connect(url, max_size=None) as ws:
            await ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
            # About 10 s of speech, paced out at real time while the flood arrives.
            await ws.send(json.dumps({"type": "text", "text": "One two three four five six seven eight. " * 4}))
            assert json.loads(await ws.recv())["type"] == "ready"
            for _ in range(200):
                await ws.send(frame)
            received = []
            with contextlib.suppress(ConnectionClosed):
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if message["type"] not in ("audio", "text"):
                        received.append(message)
            return received, ws.close_code

    received, close_code = asyncio.run(attack())
    peak_kb = peak_rss_kb(server.proc.pid)
    print(f"peak RSS {peak_kb / 1024:.0f} MB")
    assert received == [
        {"type": "error", "message": "text too long: at most 100000 characters per request", "code": 1008}
    ]
    assert close_code == 1008
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb / 1024:.0f} MB"
    server.still_serves_then_stops_cleanly(tmp_path)


def test_a_voice_sample_with_many_channels_or_a_huge_rate_costs_little(
    tmp_path: Path, serve_process: Callable[..., tuple[Any, str]]
) -> None:
    """12 s of Ogg Vorbis silence in 255 channels is ~23 kB, and was decoded whole into a
    10 s x 255-channel float window (peak RSS 540 MB); it is now mixed down block by block.
    A header claiming 2 MHz made the pitch estimate (its work grows with the square of the
    rate) hold the event loop for minutes: rates above 192 kHz are refused."""
    server = LoggedServer(*serve_process("--workers", "1"))
    many = tmp_path / "many.ogg"
    with sf.SoundFile(many, "w", 48000, 255, subtype="VORBIS", format="OGG") as out:
        for _ in range(12):
            out.write(np.zeros((48000, 255), dtype="float32"))
    fast = io.BytesIO()
    sf.write(fast, np.random.default_rng(0).uniform(-0.5, 0.5, 2_000_000), 2_000_000, format="WAV", subtype="PCM_16")
    with httpx.Client(base_url=server.base_url, timeout=30) as api:
        made = api.post("voices/", files={"audio_file": ("many.ogg", many.read_bytes())}, data={"name": "Many"})
        assert made.status_code == 201, made.text
        fast_up = api.post("voices/", files={"audio_file": ("fast.wav", fast.getvalue())}, data={"name": "Fast"})
        message = "audio_file is not a readable audio file (sample rate 2000000 Hz is above 192000 Hz)"
        expected = {"detail": [{"loc": ["body", "audio_file"], "msg": message, "type": "value_error"}]}
        assert (fast_up.status_code, fast_up.json()) == (422, expected)
        assert api.get("usages/credits").status_code == 200
    peak_kb = peak_rss_kb(server.proc.pid)
    print(f"peak RSS {peak_kb / 1024:.0f} MB")
    assert peak_kb < RSS_LIMIT_KB, f"peak RSS {peak_kb / 1024:.0f} MB"
    server.still_serves_then_stops_cleanly(tmp_path)
