"""Benchmark: what text sent past a request's limit costs `gradium serve`, this tree against another.

Each tree's server (`--realtime --workers 1`, its own `.venv`) gets the same load, one tree
after the other: --sockets sockets, each with 64 multiplexed requests pacing out ~15 words of
speech, then one --frame-chars text frame per request (past the 100,000-character limit).
Reported per tree: the server's resident memory before, its peak (VmHWM) after the frames, and
the peak of a run without them, for the frames' own share; and this tree's share over the
baseline's. A tree that holds each frame whole until its request reaches it grows by all of
them; one that keeps only what crosses the limit, within one budget for the server, does not.

    .venv/bin/python bench/held_text.py --baseline ../other-tree
    .venv/bin/python bench/held_text.py --baseline ../other-tree --sockets 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from benchlib import baseline_tree, machine, serve_process, table, ws_url
from websockets.asyncio.client import connect

REQUESTS_PER_SOCKET = 64
SPEECH = "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen."


def memory_mb(pid: int, field: str) -> float:
    """A VmRSS or VmHWM line of /proc/PID/status, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


async def load(url: str, sockets: int, frame_chars: int) -> None:
    frame = "a " * (frame_chars // 2)

    async def one_socket() -> None:
        async with connect(url, max_size=None) as ws:
            ids = [f"r{index}" for index in range(REQUESTS_PER_SOCKET)]
            for req in ids:
                setup = {"type": "setup", "output_format": "pcm", "client_req_id": req, "close_ws_on_eos": False}
                await ws.send(json.dumps(setup))
                await ws.send(json.dumps({"type": "text", "text": SPEECH, "client_req_id": req}))
            if frame:
                for req in ids:
                    await ws.send(json.dumps({"type": "text", "text": frame, "client_req_id": req}))
            await asyncio.sleep(3)  # the requests pace their audio out meanwhile

    await asyncio.gather(*(one_socket() for _ in range(sockets)))


def measure(tree: Path | None, sockets: int, frame_chars: int) -> tuple[float, float]:
    """(RSS before, peak after) of a fresh server of `tree` (None: this one) under the load."""
    with (
        tempfile.TemporaryDirectory() as data,
        serve_process(Path(data), args=("--realtime", "--workers", "1", "-q"), tree=tree) as (base_url, pid),
    ):
        before = memory_mb(pid, "VmRSS")
        asyncio.run(load(ws_url(base_url), sockets, frame_chars))
        return before, memory_mb(pid, "VmHWM")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path, help="the other tree (with its own .venv)")
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--frame-chars", type=int, default=1_000_000)
    args = parser.parse_args()
    baseline = baseline_tree(args.baseline)
    print(machine())
    rows, shares = [], {}
    for name, tree in (("this tree", None), ("baseline", baseline)):
        before, peak = measure(tree, args.sockets, args.frame_chars)
        _, quiet_peak = measure(tree, args.sockets, 0)
        shares[name] = peak - quiet_peak
        rows.append([name, f"{before:.0f}", f"{quiet_peak:.0f}", f"{peak:.0f}", f"{shares[name]:.0f}"])
    table(["tree", "RSS at start MB", "peak, no frames MB", "peak MB", "frames' share MB"], rows)
    ratio = shares["this tree"] / shares["baseline"] if shares["baseline"] > 0 else float("nan")
    print(f"frames' share, this tree / baseline: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
