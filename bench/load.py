"""Load on loopback: 200 concurrent WebSocket sessions plus multiplexed requests, all at once.

Starts `gradium serve` as a subprocess (so its memory is its own), then per
round opens every connection at the same time from one asyncio loop:

* `--sessions` sockets, each: setup (pcm), one short sentence, end_of_stream;
* `--mux-sockets` sockets carrying `--mux-requests` requests each (client_req_id,
  close_ws_on_eos false), all set up back to back, then every text and eos.

TTFA runs from sending a request's text to its first `audio` frame with
stop_s > start_s. Reports p50/p99 TTFA, p99/p50, wall time, errors (any
`error` frame, close code other than 1000, missing end_of_stream, exception or
timeout: must be 0), and the server's VmRSS before and after each round, its
peak (VmHWM) and open file descriptors. Bounded: `--cap-s` per round. Not a
test: figures go in bench/README.md.

    .venv/bin/python bench/load.py                 # 3 rounds, ~1 min on 2 cores
    .venv/bin/python bench/load.py --rounds 1 --sessions 50 --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import console_script, free_port, machine, stop_process, wait_for_port, ws_url
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

SENTENCE = "The quick brown fox jumps over the lazy dog."
FRAME_TIMEOUT_S = 60.0


@dataclass
class Round:
    ttfa_session_s: list[float] = field(default_factory=list)
    ttfa_mux_s: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    requests_ok: int = 0
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0

    @property
    def ttfa_s(self) -> list[float]:
        return self.ttfa_session_s + self.ttfa_mux_s


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB, open file descriptors, and CPU time (user + system) in ms."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out = {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_ms": (int(stat[11]) + int(stat[12])) * 1000 // ticks,  # utime, stime (fields 14, 15)
    }
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def is_first_audio(frame: str | bytes) -> bool:
    """An audio frame that carries samples (the WAV/priming frame has start_s == stop_s)."""
    if not isinstance(frame, str) or not frame.startswith('{"type":"audio"'):
        return False
    message = json.loads(frame)
    return bool(message["stop_s"] > message["start_s"])


async def frames(ws: ClientConnection) -> AsyncIterator[str]:
    """Text frames until the server closes (each read bounded by FRAME_TIMEOUT_S)."""
    while True:
        try:
            frame = await asyncio.wait_for(ws.recv(), FRAME_TIMEOUT_S)
        except ConnectionClosed:
            return
        if not isinstance(frame, str):
            raise ValueError("binary frame from the server")
        yield frame


async def send_all(ws: ClientConnection, messages: list[dict[str, Any]]) -> None:
    # A server that refuses the socket (e.g. the connection limit) closes it while we
    # send: its error frame is still there to read.
    with contextlib.suppress(ConnectionClosed):
        for message in messages:
            await ws.send(json.dumps(message))


def failure(ws: ClientConnection, error: str | None) -> str | None:
    """Why a connection failed, counted once: the server's error frame, else its close code."""
    if error is not None:
        return error
    if ws.close_code != 1000:
        return f"close {ws.close_code} {ws.close_reason}".strip()
    return None


async def one_session(url: str, result: Round) -> None:
    try:
        async with connect(url, open_timeout=FRAME_TIMEOUT_S, max_size=None) as ws:
            await send_all(ws, [{"type": "setup", "output_format": "pcm"}, {"type": "text", "text": SENTENCE}])
            sent = time.perf_counter()
            await send_all(ws, [{"type": "end_of_stream"}])
            ttfa: float | None = None
            error: str | None = None
            ended = False
            async for frame in frames(ws):
                if ttfa is None and is_first_audio(frame):
                    ttfa = time.perf_counter() - sent
                elif frame.startswith('{"type":"error"'):
                    error = error or json.loads(frame)["message"]
                elif frame.startswith('{"type":"end_of_stream"'):
                    ended = True
            problem = failure(ws, error) or (None if ended and ttfa is not None else "no audio or no end_of_stream")
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        problem = f"session: {type(exc).__name__}: {exc}"
    if problem is None and ttfa is not None:
        result.ttfa_session_s.append(ttfa)
        result.requests_ok += 1
    else:
        result.errors[problem or "?"] += 1


async def one_mux_socket(url: str, requests: int, result: Round) -> None:
    ids = [f"r{index}" for index in range(requests)]
    first: dict[str, float] = {}
    sent: dict[str, float] = {}
    ended: set[str] = set()
    problem: str | None = None
    try:
        async with connect(url, open_timeout=FRAME_TIMEOUT_S, max_size=None) as ws:
            setups = [
                {"type": "setup", "output_format": "pcm", "client_req_id": req, "close_ws_on_eos": False} for req in ids
            ]
            await send_all(ws, setups)
            for req in ids:
                await send_all(ws, [{"type": "text", "text": SENTENCE, "client_req_id": req}])
                sent[req] = time.perf_counter()
                await send_all(ws, [{"type": "end_of_stream", "client_req_id": req}])
            error: str | None = None
            async for frame in frames(ws):
                if frame.startswith('{"type":"audio"'):
                    if len(first) < requests:
                        message = json.loads(frame)
                        if message["client_req_id"] not in first and message["stop_s"] > message["start_s"]:
                            first[message["client_req_id"]] = time.perf_counter()
                elif frame.startswith('{"type":"error"'):
                    error = error or json.loads(frame)["message"]
                elif frame.startswith('{"type":"end_of_stream"'):
                    ended.add(json.loads(frame)["client_req_id"])
                    if len(ended) == requests:
                        await send_all(ws, [{"type": "end_of_stream"}])  # unscoped: closes the reusable socket
            problem = failure(ws, error)
    except (OSError, asyncio.TimeoutError, ValueError) as exc:
        problem = f"mux socket: {type(exc).__name__}: {exc}"
    for req in ids:
        if problem is None and req in first and req in ended:
            result.ttfa_mux_s.append(first[req] - sent[req])
            result.requests_ok += 1
        else:
            result.errors[problem or "multiplexed request without audio or end_of_stream"] += 1


async def run_round(url: str, args: argparse.Namespace) -> Round:
    result = Round()
    jobs = [one_session(url, result) for _ in range(args.sessions)]
    jobs += [one_mux_socket(url, args.mux_requests, result) for _ in range(args.mux_sockets)]
    started = time.perf_counter()
    tasks = [asyncio.ensure_future(job) for job in jobs]
    _done, pending = await asyncio.wait(tasks, timeout=args.cap_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        result.errors[f"round cap of {args.cap_s:g} s hit"] += len(pending)
    result.wall_s = time.perf_counter() - started
    return result


async def warm_up(url: str) -> None:
    result = Round()
    await one_session(url, result)
    if result.errors:
        raise SystemExit(f"warm-up request failed: {dict(result.errors)}")


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.0f} ms"


def cell(milliseconds: float) -> str:
    return "n/a" if milliseconds != milliseconds else f"{milliseconds:.0f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=200, help="concurrent one-request sessions (200)")
    parser.add_argument("--mux-sockets", type=int, default=10, help="multiplexed sockets (10)")
    parser.add_argument("--mux-requests", type=int, default=20, help="requests per multiplexed socket (20)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each with every connection at once (3)")
    parser.add_argument("--cap-s", type=float, default=120.0, help="time cap per round (120 s)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of a table")
    args = parser.parse_args()

    # Each socket is one descriptor here and one in the server: make sure both fit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = args.sessions + args.mux_sockets + 64
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed * 2), hard))

    with tempfile.TemporaryDirectory(prefix="gradium-load-") as tmp:
        port = free_port()
        log_path = Path(tmp) / "serve.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [console_script(), "serve", "--port", str(port), "--data-dir", str(Path(tmp) / "data")],
                stdout=subprocess.DEVNULL,
                stderr=log,  # a file, not a pipe: hundreds of request lines would fill a pipe and stall the server
            )
        try:
            wait_for_port(port, proc)
            url = ws_url(f"http://127.0.0.1:{port}/api/")
            asyncio.run(warm_up(url))
            time.sleep(0.5)
            before = proc_status(proc.pid)
            rounds: list[tuple[Round, dict[str, int]]] = []
            for _ in range(args.rounds):
                server_cpu = proc_status(proc.pid)["cpu_ms"]
                client_cpu = time.process_time()
                result = asyncio.run(run_round(url, args))
                result.client_cpu_s = time.process_time() - client_cpu
                time.sleep(0.5)  # let closing sockets and finished tasks be released
                status = proc_status(proc.pid)
                result.server_cpu_s = (status["cpu_ms"] - server_cpu) / 1000
                rounds.append((result, status))
            alive = proc.poll() is None
        finally:
            stop_process(proc)
        server_log = log_path.read_text(errors="replace")

    report(args, before, rounds, alive, server_log)
    total_errors = sum(sum(r.errors.values()) for r, _ in rounds)
    sys.exit(0 if total_errors == 0 and alive else 1)


def report(
    args: argparse.Namespace,
    before: dict[str, int],
    rounds: list[tuple[Round, dict[str, int]]],
    alive: bool,
    server_log: str,
) -> None:
    every = [t for r, _ in rounds for t in r.ttfa_s]
    p50, p99 = percentile(every, 50), percentile(every, 99)
    errors: Counter[str] = Counter()
    for result, _ in rounds:
        errors.update(result.errors)
    server_problems = server_log.count("Traceback") + server_log.count("status=error")
    # The server logs one line per request with its audio length (warm-up included).
    audio_s = sum(float(x) for x in re.findall(r"\baudio_s=([0-9.]+)", server_log))
    wall_s = sum(r.wall_s for r, _ in rounds)
    summary: dict[str, Any] = {
        "machine": machine(),
        "load_average": os.getloadavg(),
        "sessions": args.sessions,
        "mux": f"{args.mux_sockets}x{args.mux_requests}",
        "rounds": [
            {
                "wall_s": round(r.wall_s, 2),
                "requests_ok": r.requests_ok,
                "ttfa_p50_ms": round(percentile(r.ttfa_s, 50) * 1000, 1),
                "ttfa_p99_ms": round(percentile(r.ttfa_s, 99) * 1000, 1),
                "ttfa_session_p50_ms": round(percentile(r.ttfa_session_s, 50) * 1000, 1),
                "ttfa_mux_p50_ms": round(percentile(r.ttfa_mux_s, 50) * 1000, 1),
                "errors": sum(r.errors.values()),
                "rss_after_kib": status["VmRSS"],
                "fds_after": status["fds"],
                "server_cpu_s": round(r.server_cpu_s, 2),
                "client_cpu_s": round(r.client_cpu_s, 2),
            }
            for r, status in rounds
        ],
        "ttfa_p50_ms": round(p50 * 1000, 1),
        "ttfa_p99_ms": round(p99 * 1000, 1),
        "p99_over_p50": round(p99 / p50, 2) if p50 else None,
        "errors": dict(errors),
        "rss_before_kib": before["VmRSS"],
        "rss_after_kib": rounds[-1][1]["VmRSS"] if rounds else None,
        "rss_peak_kib": rounds[-1][1]["VmHWM"] if rounds else None,
        "fds_before": before["fds"],
        "server_alive": alive,
        "server_log_problems": server_problems,
        "audio_s_total": round(audio_s, 1),
        "audio_s_per_wall_s": round(audio_s / wall_s, 1) if wall_s else None,
    }
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{summary['machine']}, load average {' '.join(f'{x:.1f}' for x in summary['load_average'])}")
    print(
        f"per round: {args.sessions} sessions + {args.mux_sockets} sockets x {args.mux_requests} multiplexed "
        f"requests = {args.sessions + args.mux_sockets * args.mux_requests} requests, all at once"
    )
    print(
        f"{'round':>5} {'wall':>8} {'ok':>5} {'p50':>8} {'p99':>8} {'sess p50':>9} {'mux p50':>8} "
        f"{'errors':>6} {'RSS after':>10} {'fds':>4} {'srv cpu':>8} {'cli cpu':>8}"
    )
    for index, row in enumerate(summary["rounds"], 1):
        print(
            f"{index:>5} {row['wall_s']:>7.2f}s {row['requests_ok']:>5} {cell(row['ttfa_p50_ms']):>8} "
            f"{cell(row['ttfa_p99_ms']):>8} {cell(row['ttfa_session_p50_ms']):>9} {cell(row['ttfa_mux_p50_ms']):>8} "
            f"{row['errors']:>6} {row['rss_after_kib'] / 1024:>8.1f}MiB {row['fds_after']:>4} "
            f"{row['server_cpu_s']:>7.2f}s {row['client_cpu_s']:>7.2f}s"
        )
    print(f"TTFA over all rounds: p50 {ms(p50)}, p99 {ms(p99)}, p99/p50 {summary['p99_over_p50']}")
    print(
        f"server RSS: before {before['VmRSS'] / 1024:.1f} MiB, after {summary['rss_after_kib'] / 1024:.1f} MiB, "
        f"peak {summary['rss_peak_kib'] / 1024:.1f} MiB; fds before {before['fds']}"
    )
    print(f"errors: {sum(errors.values())} {dict(errors) if errors else ''}".rstrip())
    print(f"server alive: {alive}; tracebacks or failed requests in its log: {server_problems}")
    print(
        f"audio served: {summary['audio_s_total']:.0f} s in {wall_s:.1f} s of rounds "
        f"({summary['audio_s_per_wall_s']}x real time, all requests together)"
    )


if __name__ == "__main__":
    main()
