"""Benchmark: the ~40 ms stall of short requests (issue 14), before and after the fix, side by side.

`gradium serve` used to listen on a socket made with proto 0. asyncio sets
TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and accepted sockets
inherit it, so every connection ran with Nagle's algorithm: a small frame after
a large one waited for the client's delayed ACK (40 ms on Linux). `bind_socket`
now asks for IPPROTO_TCP.

Two servers run as subprocesses, identical but for that socket ("nagle": the old
proto-0 socket; "nodelay": `bind_socket` as shipped), and one client alternates
between them: connect, setup, a 10-word text, end_of_stream, until end_of_stream.
It reports medians of the whole request and how many requests had a gap over
20 ms between consecutive frames, and whether the server's accepted socket has
TCP_NODELAY.

    .venv/bin/python bench/stall.py            # 40 rounds, ~15 s
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import free_port, machine, median, stop_process, table, wait_for_port
from websockets.asyncio.client import connect

TEXT = "The quick brown fox jumps over the lazy dog near the river."
AUDIO_S = 3.0  # about what those ten words last

SERVER = """
import socket, sys, time
from pathlib import Path
import gradium_cli.server.app as app
from gradium_cli.server.state import ServerOptions
if sys.argv[2] == "nagle":
    def bind_socket(host, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # proto 0, as before the fix
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return sock
    app.bind_socket = bind_socket
app.start_in_thread(ServerOptions(data_dir=Path(sys.argv[3]), quiet=True, workers=1), port=int(sys.argv[1]))
time.sleep(3600)
"""


async def request(url: str) -> tuple[float, float]:
    """Whole request (connect to end_of_stream) and the longest gap between frames, seconds."""
    started = time.perf_counter()
    async with connect(url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"type": "setup", "output_format": "pcm"}))
        await ws.send(json.dumps({"type": "text", "text": TEXT}))
        await ws.send(json.dumps({"type": "end_of_stream"}))
        arrivals = []
        async for frame in ws:
            arrivals.append(time.perf_counter())
            if json.loads(frame)["type"] == "end_of_stream":
                break
    # From the first frame after `ready` on: the wait for the render before it is not a stall.
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[1:])]
    return arrivals[-1] - started, max(gaps, default=0.0)


async def rounds(urls: dict[str, str], count: int) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
    for url in urls.values():  # warm-up: the worker's first render pays lazy imports
        await request(url)
    for _ in range(count):
        for name, url in urls.items():
            results[name].append(await request(url))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in ("nagle", "nodelay"):
                port = free_port()
                argv = [sys.executable, "-c", SERVER, str(port), name, str(Path(tmp) / name)]
                procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_for_port(port, procs[-1])
                urls[name] = f"ws://127.0.0.1:{port}/api/speech/tts"
            results = asyncio.run(rounds(urls, args.rounds))
        finally:
            for proc in procs:
                stop_process(proc)
    print(f"{machine()}; {args.rounds} rounds, alternating; 10 words (~{AUDIO_S:.0f} s of audio), pcm 48 kHz")
    rows = []
    for name, values in results.items():
        whole = median([w for w, _ in values])
        stalled = sum(1 for _, gap in values if gap > 0.020)
        rows.append([name, f"{whole * 1000:.1f}", f"{AUDIO_S / whole:.0f}x", f"{stalled}/{len(values)}"])
    table(["server socket", "request ms (median)", "real-time factor", "requests with a gap > 20 ms"], rows)
    ratio = median([w for w, _ in results["nagle"]]) / median([w for w, _ in results["nodelay"]])
    print(f"nagle / nodelay: {ratio:.2f}x the time per request")


if __name__ == "__main__":
    main()
