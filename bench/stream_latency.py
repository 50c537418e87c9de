"""Latency added by `gradium stream` itself, from its own --json events.

Two figures, medians over every event of several runs against a local server:
  * input -> wire: a fragment read from stdin until its text frame is sent
    (text events: t - input_t);
  * wire -> sinks: an audio frame off the socket until its samples are handed to
    the sinks (audio events: t - arrived_t); with --play the sink is the sound device.
Target: both under 5 ms median. The baseline printed beside them is the same
stdin->stdout hop through `cat` in the same pipeline shape, timed per run.

Then, against a `gradium serve` subprocess (issue 16):
  * line end -> first audio: this script writes a finished sentence and its newline
    to `gradium stream`'s stdin once the request is ready, and times the event of its
    last word, which comes just before that word's audio (target < 150 ms). Baseline, side by side in the same run: a
    raw WebSocket client sending the same sentence to the same server (the server's
    own time to first audio). Also an unfinished line (no sentence end), heard only
    through the idle flush (--flush-after, default 0.5 s): what the default costs.
  * an LLM-like producer (a markdown answer, one 3-character token every 30 ms):
    words on the wire before the first audio arrived, and time from the first token.

    .venv/bin/python bench/stream_latency.py [--runs 5] [--play] [--first-audio-runs 9]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gradium_cli.server.app import start_in_thread  # noqa: E402
from gradium_cli.server.state import ServerOptions  # noqa: E402

WORDS = ("The quick brown fox jumps over the lazy dog. " * 6).split()
PRODUCER = (
    f"import sys, time\nfor w in {WORDS!r}:\n    sys.stdout.write(w + ' '); sys.stdout.flush(); time.sleep(0.02)\n"
)


def one_run(base_url: str, play: bool, workdir: Path) -> tuple[list[float], list[float]]:
    gradium = str(Path(sys.executable).with_name("gradium"))
    output = (
        ["--play", "-o", str(workdir / "out.pcm"), "--force"] if play else ["-o", str(workdir / "out.pcm"), "--force"]
    )
    producer = subprocess.Popen([sys.executable, "-c", PRODUCER], stdout=subprocess.PIPE)
    result = subprocess.run(
        [gradium, "stream", "--base-url", base_url, "--json", *output],
        stdin=producer.stdout,
        capture_output=True,
        timeout=120,
        check=True,
    )
    producer.wait()
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    to_wire = [(e["t"] - e["input_t"]) * 1000 for e in events if e["event"] == "text"]
    to_sinks = [(e["t"] - e["arrived_t"]) * 1000 for e in events if e["event"] == "audio"]
    return to_wire, to_sinks


SENTENCE = "This line is spoken as soon as it ends."
UNFINISHED = "No end in sight"  # four words: no unit ends until the idle flush
LLM_ANSWER = (
    "## Three tips\n\nHere are **three** tips from [the guide](https://example.com/guide) that help:\n\n"
    "- Drink `water` often during the day\n- Sleep well every night\n"
    "- Read https://docs.example.org/start daily\n\n```python\nprint('never spoken')\n```\n\n"
    "That is *all* for today, and I hope it helps you.\n"
)


class Stream:
    """`gradium stream --json` fed by this script; events stamped on this clock as they arrive."""

    def __init__(self, base_url: str, workdir: Path, *args: str) -> None:
        gradium = str(Path(sys.executable).with_name("gradium"))
        self.proc = subprocess.Popen(
            [gradium, "stream", "--base-url", base_url, "--json", "-o", str(workdir / "fa.pcm"), "--force", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.events: queue.Queue[tuple[float, dict[str, Any]] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.until("ready")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put((time.monotonic(), json.loads(line)))
        self.events.put(None)

    def write(self, text: str) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()
        return time.monotonic()

    def until(self, kind: str) -> tuple[float, dict[str, Any]]:
        while True:
            item = self.events.get(timeout=30)
            assert item is not None, "gradium stream ended early"
            if item[1]["event"] == kind and (kind != "audio" or item[1]["stop_s"] > item[1]["start_s"]):
                return item

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(60)


async def raw_first_audio(ws_url: str, text: str) -> float:
    """Baseline: the server's own time from `text` to its last word's timestamp, from a bare client."""
    from websockets.asyncio.client import connect

    last = text.split()[-1]
    async with connect(ws_url) as ws:
        await ws.send(json.dumps({"type": "setup", "voice_id": "YTpq7expH9539ERJ", "output_format": "pcm"}))
        json.loads(await ws.recv())
        start = time.monotonic()
        await ws.send(json.dumps({"type": "text", "text": text}))
        while True:
            message = json.loads(await ws.recv())
            if message["type"] == "text" and message["text"] == last:
                elapsed = time.monotonic() - start
                break
        await ws.send(json.dumps({"type": "end_of_stream"}))
        async for _ in ws:
            pass
    return elapsed


def line_end_to_audio(base_url: str, workdir: Path, line: str) -> float:
    """From the newline until the timestamp of the line's last word (sent just before its audio)."""
    stream = Stream(base_url, workdir)
    written = stream.write(line + "\n")
    last = line.split()[-1]
    while True:
        heard, event = stream.until("word")
        if event["text"] == last:
            break
    stream.close()
    return heard - written


def llm_first_audio(base_url: str, workdir: Path) -> tuple[int, float, int]:
    """(words on the wire before the first audio arrived, seconds from the first token, flushes)."""
    stream = Stream(base_url, workdir)
    tokens = [LLM_ANSWER[i : i + 3] for i in range(0, len(LLM_ANSWER), 3)]
    first = stream.write(tokens[0])
    for token in tokens[1:]:
        time.sleep(0.03)
        stream.write(token)
    stream.close()
    words, heard, flushes = 0, float("nan"), 0
    while (item := stream.events.get(timeout=30)) is not None:
        arrived, event = item
        if event["event"] == "flush":
            flushes += 1
        if event["event"] == "text" and heard != heard:  # NaN: no audio yet
            words += len(event["text"].split())
        if event["event"] == "audio" and event["stop_s"] > event["start_s"] and heard != heard:
            heard = arrived - first
    return words, heard, flushes


def first_audio_figures(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env = {**os.environ, "GRADIUM_DATA_DIR": str(workdir / "serve")}
        gradium = str(Path(sys.executable).with_name("gradium"))
        serve = subprocess.Popen([gradium, "serve", "--port", str(port)], env=env, stderr=subprocess.DEVNULL)
        base_url = f"http://127.0.0.1:{port}/api/"
        try:
            for _ in range(100):
                try:
                    asyncio.run(raw_first_audio(base_url.replace("http", "ws") + "speech/tts", "Warm up."))
                    break
                except OSError:
                    time.sleep(0.1)
            raw, stream, idle, llm_words, llm_s, llm_flushes = [], [], [], [], [], []
            for _ in range(runs):
                raw.append(asyncio.run(raw_first_audio(base_url.replace("http", "ws") + "speech/tts", SENTENCE)))
                stream.append(line_end_to_audio(base_url, workdir, SENTENCE))
                idle.append(line_end_to_audio(base_url, workdir, UNFINISHED))
                words, seconds, flushes = llm_first_audio(base_url, workdir)
                llm_words.append(words)
                llm_s.append(seconds)
                llm_flushes.append(flushes)
        finally:
            serve.terminate()
            serve.wait(10)
    ms = lambda values: statistics.median(values) * 1000  # noqa: E731
    verdict = "PASS" if ms(stream) < 150 else "FAIL"
    print(f"line end -> its last word (stream) median {ms(stream):6.1f} ms  {verdict} (< 150 ms)  n={runs}")
    print(f"baseline: raw client, same sentence median {ms(raw):6.1f} ms  ratio {ms(stream) / ms(raw):.2f}x")
    print(f"unfinished line -> its last word   median {ms(idle):6.1f} ms  (idle flush after 0.5 s)")
    print(
        f"LLM-like producer: words before first audio median {statistics.median(llm_words):.0f}"
        f" (min {min(llm_words)}, max {max(llm_words)}), first token -> audio {statistics.median(llm_s):.2f} s,"
        f" flushes per answer {statistics.median(llm_flushes):.0f} (one per blank line between blocks: 3)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--play", action="store_true", help="hand audio to the default sound device too")
    parser.add_argument("--first-audio-runs", type=int, default=9, help="runs of the first-audio figures (0: skip)")
    args = parser.parse_args()
    if args.first_audio_runs:
        first_audio_figures(args.first_audio_runs)
    with tempfile.TemporaryDirectory() as tmp:
        server = start_in_thread(ServerOptions(data_dir=Path(tmp) / "data", quiet=True))
        try:
            wire: list[float] = []
            sinks: list[float] = []
            for _ in range(args.runs):
                a, b = one_run(server.base_url, args.play, Path(tmp))
                wire += a
                sinks += b
        finally:
            server.stop()
    for name, values in (("input -> wire", wire), ("wire -> sinks" + (" (device)" if args.play else " (file)"), sinks)):
        values.sort()
        p90 = values[int(len(values) * 0.9)]
        verdict = "PASS" if statistics.median(values) < 5 else "FAIL"
        median = statistics.median(values)
        print(f"{name:26s} median {median:6.3f} ms  p90 {p90:6.3f} ms  n={len(values)}  {verdict} (< 5 ms)")


if __name__ == "__main__":
    main()
