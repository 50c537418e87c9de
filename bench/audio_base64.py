"""Benchmark: the audio field's base64, the standard library vs pybase64, side by side.

Every 80 ms of audio is one `audio` message whose payload is base64 in JSON: the
server encodes it (`messages.encode`) and the client decodes it, strictly
(`messages.decode_server`). This times the same calls twice per round, interleaved:
with pybase64 (what the package uses) and with `protocol/audio_base64.py` set to
the standard library (what it falls back to without pybase64), for each format's
80 ms chunk; medians and ratios.

    .venv/bin/python bench/audio_base64.py
    .venv/bin/python bench/audio_base64.py --rounds 15 --count 2000
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

from benchlib import machine, median, table

from gradium_cli.protocol import audio_base64
from gradium_cli.protocol import messages as m
from gradium_cli.protocol.formats import lookup_format

FORMATS = ("pcm", "pcm_24000", "ulaw_8000")


def per_call_us(func: Callable[[], object], count: int, *, standard: bool) -> float:
    fast = audio_base64.fast
    if standard:
        audio_base64.fast = None
    try:
        start = time.perf_counter()
        for _ in range(count):
            func()
        return (time.perf_counter() - start) / count * 1e6
    finally:
        audio_base64.fast = fast


def calls(payload: bytes) -> dict[str, Callable[[], object]]:
    message = m.Audio(payload, 1.04, 1.12)
    frame = m.encode(message)
    text = audio_base64.encode_audio(payload)
    return {
        "encode": lambda: audio_base64.encode_audio(payload),
        "decode (strict)": lambda: audio_base64.decode_audio(text),
        "server: message to JSON": lambda: m.encode(message),
        "client: JSON to message": lambda: m.decode_server(frame),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--count", type=int, default=1000, help="calls per round and side")
    args = parser.parse_args()
    print(machine())
    if audio_base64.fast is None:
        raise SystemExit("pybase64 is not installed here: both sides would be the standard library")
    rows = []
    for label in FORMATS:
        fmt = lookup_format(label)
        assert fmt is not None
        for name, call in calls(os.urandom(fmt.chunk_samples * fmt.bytes_per_sample)).items():
            standard: list[float] = []
            ours: list[float] = []
            per_call_us(call, args.count, standard=True)  # warm-up, not counted
            per_call_us(call, args.count, standard=False)
            for _ in range(args.rounds):
                standard.append(per_call_us(call, args.count, standard=True))
                ours.append(per_call_us(call, args.count, standard=False))
            before, after = median(standard), median(ours)
            rows.append([label, name, f"{before:.1f}", f"{after:.1f}", f"{before / after:.1f}x"])
    table(["format", "per audio message", "stdlib µs", "pybase64 µs", "speed-up"], rows)
    print("(medians over rounds; each round times both sides back to back)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
