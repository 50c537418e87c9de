"""Benchmark: this tree's `gradium serve` against another tree's, side by side.

Both servers run at once, each a subprocess of its own tree's venv (`DIR/.venv`,
made with `pip install -e .` in DIR), on the same --server-cores cores (default
1, with as many engine workers) while this process, the client, runs on the
others. Requests alternate between the two, one at a time, so that machine noise
hits both alike: per size and round, `max(1, 200 // words)` requests each. Every
request is the one `server_engine.py` times (a fresh connection; setup pcm, the
text, end_of_stream; its lean client, audio decoded). Reported per size: medians
of the real-time factor of each tree and their ratio, and the server's CPU per
request (its process and engine workers, from /proc) with that ratio.

    .venv/bin/python bench/serve_ab.py --baseline ../other-tree
    .venv/bin/python bench/serve_ab.py --baseline ../other-tree --sizes 10,800 --rounds 9
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

from benchlib import baseline_tree, machine, median, pin_apart, process_tree_cpu, serve_process, table, ws_url
from server_engine import make_text, ws_request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, type=Path, help="the other tree (with its own .venv)")
    parser.add_argument("--sizes", default="10,50,800", help="word counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--server-cores", type=int, default=1, help="the servers' cores; 0: nothing pinned")
    args = parser.parse_args()
    baseline = baseline_tree(args.baseline)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(machine())
    server_cpus, serve_args = pin_apart(args.server_cores)
    trees: dict[str, Path | None] = {"this tree": None, "baseline": baseline}
    rtf: dict[tuple[str, int], list[float]] = {(tree, n): [] for tree in trees for n in sizes}
    cpu: dict[tuple[str, int], list[float]] = {(tree, n): [] for tree in trees for n in sizes}
    with tempfile.TemporaryDirectory(prefix="gradium-ab-") as tmp, contextlib.ExitStack() as stack:
        servers = {
            tree: stack.enter_context(
                serve_process(Path(tmp) / str(index), args=serve_args, cpus=server_cpus, tree=path)
            )
            for index, (tree, path) in enumerate(trees.items())
        }
        for base_url, _ in servers.values():
            ws_request(ws_url(base_url), "Warm up.")
        for _ in range(max(1, args.rounds)):
            for n in sizes:
                text = make_text(n)
                for _ in range(max(1, 200 // n)):
                    for tree, (base_url, pid) in servers.items():
                        before = process_tree_cpu(pid)
                        result = ws_request(ws_url(base_url), text)
                        cpu[tree, n].append(process_tree_cpu(pid) - before)
                        rtf[tree, n].append(result.audio_s / result.wall_s)
    rows = []
    for n in sizes:
        mine, theirs = median(rtf["this tree", n]), median(rtf["baseline", n])
        # Mean, not median: /proc counts CPU in clock ticks (10 ms), coarser than a short request.
        cpu_mine = sum(cpu["this tree", n]) / len(cpu["this tree", n])
        cpu_theirs = sum(cpu["baseline", n]) / len(cpu["baseline", n])
        rows.append(
            [
                str(n),
                f"{mine:,.0f}x",
                f"{theirs:,.0f}x",
                f"{mine / theirs:.2f}",
                f"{cpu_mine * 1000:,.1f}",
                f"{cpu_theirs * 1000:,.1f}",
                f"{cpu_mine / cpu_theirs:.2f}",
                str(len(rtf["this tree", n])),
            ]
        )
    headers = ["words", "this tree", "baseline", "ratio", "CPU ms", "baseline CPU ms", "CPU ratio", "requests each"]
    table(headers, rows)
    print("(real-time factor: median; CPU per request: the server and its engine workers, mean)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
