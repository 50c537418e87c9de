"""Minimal Gradium TTS WebSocket client: the baseline `gradium say` is compared with.

Connects, sends setup + text + end_of_stream, writes every audio payload to a
file as it arrives (the server's streamed WAV header included, unpatched), and
prints one JSON object:

    first_audio_s / total_s        since just before connecting (perf_counter)
    first_audio_since_start_s      since $GRADIUM_BENCH_T0 (a time.time() the
    total_since_start_s            harness sets just before spawning us), so
                                   interpreter start-up and imports count
    audio_bytes

Only the standard library and `websockets` are imported.

    GRADIUM_BENCH_T0=$(date +%s.%N) .venv/bin/python bench/raw_client.py \\
        "Hello there." --url ws://127.0.0.1:8765/api/speech/tts -o /tmp/raw.wav
"""

from __future__ import annotations

import time

_WALL_AT_IMPORT = time.time()

import argparse  # noqa: E402 - the timestamp above must come first
import asyncio  # noqa: E402
import base64  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from websockets.asyncio.client import connect  # noqa: E402


def since_start(wall: float) -> float | None:
    t0 = os.environ.get("GRADIUM_BENCH_T0")
    return round(wall - float(t0), 4) if t0 else None


async def speak(url: str, text: str, output: str, output_format: str) -> dict[str, float | int | None]:
    start = time.perf_counter()
    first: float | None = None
    first_wall: float | None = None
    audio_bytes = 0
    with open(output, "wb") as sink:
        async with connect(url, max_size=None, compression=None, ping_interval=None, open_timeout=30) as ws:
            await ws.send(json.dumps({"type": "setup", "output_format": output_format}))
            await ws.send(json.dumps({"type": "text", "text": text}))
            await ws.send(json.dumps({"type": "end_of_stream"}))
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "audio":
                    payload = base64.b64decode(frame["audio"])
                    sink.write(payload)
                    audio_bytes += len(payload)
                    if first is None and frame["stop_s"] > frame["start_s"]:
                        first, first_wall = time.perf_counter() - start, time.time()
                elif kind == "end_of_stream":
                    break
                elif kind == "error":
                    raise SystemExit(f"server error: {frame.get('message')}")
    total = time.perf_counter() - start
    return {
        "first_audio_s": None if first is None else round(first, 4),
        "total_s": round(total, 4),
        "first_audio_since_start_s": None if first_wall is None else since_start(first_wall),
        "total_since_start_s": since_start(time.time()),
        "imported_since_start_s": since_start(_WALL_AT_IMPORT),
        "audio_bytes": audio_bytes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="Minimal raw-WebSocket TTS client (bench baseline).")
    parser.add_argument("text")
    parser.add_argument("--url", required=True, help="ws://127.0.0.1:PORT/api/speech/tts")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--format", default="wav", help="output_format to request (default wav)")
    args = parser.parse_args()
    result = asyncio.run(speak(args.url, args.text, args.output, args.format))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
