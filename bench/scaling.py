"""Benchmark: `gradium serve` throughput against its worker count (issue 14).

For 1, 2, 4, ... workers up to the cores available (the last step is always the
core count), it starts `gradium serve --workers N` as a subprocess and measures
(with `--baseline DIR`, another tree's `gradium serve` too, right after this one's,
for each N):

* audio s/s  - seconds of audio served per wall second. Load generators run in
               their own processes (`--clients`, default: half the cores, at
               least 1), each an asyncio loop keeping its share of 2 x N
               connections busy for `--seconds`: setup (pcm_16000), one
               20-word text (`--words`), end_of_stream, again. Audio is counted from the
               base64 length, so the clients do not decode it.
* lines/s    - `gradium batch` over 40 x N short lines (--jobs 2 x N, pcm_16000),
               spawn to exit, every output checked to be there.
* server CPU - CPU seconds per wall second used by the server and its workers
               during the audio phase (from /proc): how many cores it kept busy.
* loops      - the share of that CPU outside the eSpeak NG engine processes: the
               server processes' event loops and threads (handshakes, text,
               resampling, JSON, framing). With one event loop for all engine
               processes (the design before the seventh sitting), 1 / share
               bounded what any number of cores could give.

Ratios are against one worker in the same run. Run it standalone from a fresh
venv (`pip install -e .`), nothing else needed:

    python bench/scaling.py                       # ~20 s per worker count
    python bench/scaling.py --seconds 20 --workers 1,8,16
    python bench/scaling.py --baseline ../other-tree   # the same N, side by side
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import baseline_tree, console_script, machine, process_tree_cpu_split, serve_process, table

TEXT = (
    "Scientists announced on Tuesday that the new telescope had captured detailed "
    "images of distant galaxies, far beyond what anyone expected."
)
PCM16_BYTES_PER_S = 16_000 * 2


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_counts(limit: int) -> list[int]:
    counts, n = [], 1
    while n < limit:
        counts.append(n)
        n *= 2
    return [*counts, limit]


# ------------------------------------------------------------ load generator


async def _client_loop(url: str, text: str, deadline: float) -> tuple[float, int, int]:
    from websockets.asyncio.client import connect

    audio_bytes, requests, errors = 0, 0, 0
    while time.monotonic() < deadline:
        try:
            async with connect(url, max_size=None, compression=None, open_timeout=30) as ws:
                await ws.send(json.dumps({"type": "setup", "output_format": "pcm_16000"}))
                await ws.send(json.dumps({"type": "text", "text": text}))
                await ws.send(json.dumps({"type": "end_of_stream"}))
                async for frame in ws:
                    message = json.loads(frame)
                    if message["type"] == "audio":
                        encoded = message["audio"]
                        audio_bytes += len(encoded) * 3 // 4 - encoded[-2:].count("=")
                    elif message["type"] == "end_of_stream":
                        requests += 1
                        break
                    elif message["type"] == "error":
                        errors += 1
                        break
        except (OSError, asyncio.TimeoutError):
            errors += 1
    return audio_bytes / PCM16_BYTES_PER_S, requests, errors


def _generator(
    url: str,
    text: str,
    connections: int,
    start_at: float,
    seconds: float,
    out: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    async def run() -> list[tuple[float, int, int]]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        deadline = time.monotonic() + seconds
        return list(await asyncio.gather(*(_client_loop(url, text, deadline) for _ in range(connections))))

    results = asyncio.run(run())
    out.put((sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results)))


def audio_phase(url: str, text: str, server_pid: int, workers: int, clients: int, seconds: float) -> dict[str, float]:
    connections = 2 * workers
    shares = [connections // clients + (1 if i < connections % clients else 0) for i in range(clients)]
    shares = [share for share in shares if share]
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 1.0  # every generator is up before the clock starts
    procs = [
        multiprocessing.Process(target=_generator, args=(url, text, share, start_at, seconds, out)) for share in shares
    ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before, wall_before = process_tree_cpu_split(server_pid), time.monotonic()
    results = [out.get() for _ in procs]
    wall = time.monotonic() - wall_before
    loops_after, engines_after = process_tree_cpu_split(server_pid)
    loops, engines = loops_after - cpu_before[0], engines_after - cpu_before[1]
    for proc in procs:
        proc.join()
    audio = sum(r[0] for r in results)
    return {
        "audio_per_s": audio / wall,
        "requests": sum(r[1] for r in results),
        "errors": sum(r[2] for r in results),
        "server_cores": (loops + engines) / wall,
        "loop_share": loops / (loops + engines) if loops + engines else float("nan"),
    }


def batch_phase(base_url: str, workers: int, work: Path) -> float:
    lines = 40 * workers
    manifest = work / f"lines-{workers}.txt"
    manifest.write_text("".join(f"Line {i}: the quick brown fox, hotel alpha.\n" for i in range(1, lines + 1)))
    out = work / f"out-{workers}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIUM_")}
    env["GRADIUM_CONFIG_DIR"] = str(work / "config")
    argv = [console_script(), "-q", "batch", str(manifest), "--out-dir", str(out)]
    argv += ["--jobs", str(max(4, 2 * workers)), "-F", "pcm_16000", "--base-url", base_url]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - started
    made = len(list(out.glob("*.pcm")))
    if proc.returncode != 0 or made != lines:
        sys.exit(f"batch failed ({proc.returncode}, {made}/{lines} files): {proc.stderr.decode()[-600:]}")
    return lines / wall


def measure(tree: Path | None, text: str, workers: int, clients: int, seconds: float, work: Path) -> dict[str, float]:
    """Both phases against `gradium serve --workers N` of `tree` (None: this one)."""
    with serve_process(work / "data", args=("--workers", str(workers)), tree=tree) as (base_url, pid):
        url = base_url.replace("http://", "ws://") + "speech/tts"
        audio_phase(url, text, pid, workers, clients, 2.0)  # warm-up: each process's first renders
        audio = audio_phase(url, text, pid, workers, clients, seconds)
        audio["lines_per_s"] = batch_phase(base_url, workers, work)
    return audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", help="worker counts, comma-separated (default: 1, 2, 4, ... up to the cores)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each audio phase (default 10)")
    parser.add_argument("--clients", type=int, default=max(1, cores() // 2), help="load generator processes")
    parser.add_argument("--baseline", type=Path, help="another tree (with its own .venv) measured beside this one")
    parser.add_argument(
        "--words", type=int, default=20, help="words per request (long ones leave the load generator less to do)"
    )
    args = parser.parse_args()
    words = TEXT.split()
    text = " ".join(words[i % len(words)] for i in range(args.words))
    counts = [int(n) for n in args.workers.split(",")] if args.workers else worker_counts(cores())
    trees: dict[str, Path | None] = {"this tree": None}
    if args.baseline:
        trees["baseline"] = baseline_tree(args.baseline)
    print(f"# gradium serve scaling: {machine()}; load average {os.getloadavg()[0]:.1f} at start")
    print(
        f"# {args.clients} load generator process(es), 2 connections per worker, "
        f"{args.words}-word requests, {args.seconds:.0f} s per phase"
    )
    rows: list[list[str]] = []
    first: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in counts:
            this_n: dict[str, dict[str, float]] = {}
            for name, tree in trees.items():
                result = this_n[name] = measure(tree, text, workers, args.clients, args.seconds, Path(tmp) / name)
                base = first.setdefault(name, result)
                beside = this_n["this tree"]
                rows.append(
                    [
                        name,
                        str(workers),
                        f"{result['audio_per_s']:.0f}",
                        f"{result['audio_per_s'] / base['audio_per_s']:.2f}x",
                        f"{result['lines_per_s']:.1f}",
                        f"{result['lines_per_s'] / base['lines_per_s']:.2f}x",
                        f"{beside['audio_per_s'] / result['audio_per_s']:.2f}x",
                        f"{result['server_cores']:.2f}",
                        f"{result['loop_share']:.2f}",
                        f"{result['requests']:.0f}",
                        f"{result['errors']:.0f}",
                    ]
                )
            print(f"  {workers} worker(s) done", file=sys.stderr)
    headers = ["tree", "workers", "audio s/s", "vs 1", "batch lines/s", "vs 1", "this tree / it (audio)"]
    table([*headers, "server cores busy", "loops' share", "requests", "errors"], rows)
    print(f"# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
