"""Long inputs: peak memory of `say` and `stream` against the length of the text, and real-time factor.

Each run is `gradium say -f TEXT -o out.ulaw --timestamps out.jsonl --json` (or
`gradium stream` with the text piped in) as a subprocess against a `gradium
serve` subprocess on 127.0.0.1; peak RSS is the client's own (`wait4`'s
ru_maxrss), so the server's memory is not counted. 8 kHz µ-law keeps the
audio small; `--speed 2` halves the engine's work. Flat memory means the
1 MB run peaks no higher than the 100 KB run (target: ratio ≤ 1.2).

    .venv/bin/python bench/long_input.py                 # ~10 min on 2 busy cores: 1 MB once
    .venv/bin/python bench/long_input.py --skip-1mb      # ~5 min
    .venv/bin/python bench/long_input.py --skip-say      # ~3 min: the stream runs only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import console_script, local_server, machine, median, table

WORDS = "the quick brown fox jumps over a lazy dog while river stones glow under pale evening light".split()  # noqa: SIM905


def prose(chars: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    sentences: list[str] = []
    total = 0
    while total < chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 12))]
        sentence = f"Part{len(sentences)} " + " ".join(words) + rng.choice([".", ".", "!", "?"])
        sentences.append(sentence)
        total += len(sentence) + 1
    return " ".join(sentences)[:chars]


def run(argv: list[str], stdin_path: Path | None, cwd: Path) -> tuple[float, float, dict[str, object]]:
    """(peak RSS in MB, wall s, the --json result or end event) of one client process."""
    env = {**os.environ, "GRADIUM_CONFIG_DIR": str(cwd / "config"), "NO_COLOR": "1"}
    started = time.monotonic()
    with open(stdin_path or os.devnull, "rb") as stdin, open(cwd / "stdout", "wb") as out:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=out, stderr=subprocess.PIPE, cwd=cwd, env=env)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[1]} failed ({proc.returncode}): {stderr.decode().strip()}")
    lines = (cwd / "stdout").read_text().splitlines()
    return usage.ru_maxrss / 1024, wall, json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--skip-1mb", action="store_true", help="leave out the 1 MB say run (minutes)")
    parser.add_argument("--small-runs", type=int, default=3, help="runs of the 1 KB say (median)")
    parser.add_argument("--skip-say", action="store_true", help="only the stream runs")
    args = parser.parse_args()
    gradium = console_script()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp, local_server("process", Path(tmp) / "data") as base_url:
        work = Path(tmp)
        say_rows: list[list[str]] = []
        peaks: dict[int, float] = {}
        sizes = [] if args.skip_say else [1_000, 100_000] + ([] if args.skip_1mb else [1_000_000])
        for size in sizes:
            text = work / f"say-{size}.txt"
            text.write_text(prose(size, seed=size))
            argv = [gradium, "say", "-f", str(text), "--base-url", base_url, "-o", "out.ulaw"]
            argv += ["--timestamps", "out.jsonl", "--speed", "2", "--force", "--json"]
            results = [run(argv, None, work) for _ in range(args.small_runs if size < 10_000 else 1)]
            peak = median([r[0] for r in results])
            peaks[size] = peak
            rtf = median([float(r[2]["audio_s"]) / r[1] for r in results])  # type: ignore[arg-type]
            audio = median([float(r[2]["audio_s"]) for r in results])  # type: ignore[arg-type]
            requests = results[0][2]["request_id"]
            count = len(requests) if isinstance(requests, list) else 1
            wall = median([r[1] for r in results])
            runs = str(len(results))
            row = [f"{size:,}", runs, str(count), f"{audio:.0f}", f"{wall:.1f}", f"{rtf:.1f}x", f"{peak:.1f}"]
            say_rows.append(row)
        if say_rows:
            print("\nsay -f TEXT -o out.ulaw --timestamps out.jsonl --speed 2")
            table(["chars", "runs", "requests", "audio s", "wall s", "RTF", "peak RSS MB"], say_rows)
        if 1_000_000 in peaks:
            print(f"peak RSS 1 MB / 100 KB: {peaks[1_000_000] / peaks[100_000]:.2f} (target <= 1.2)")

        stream_rows: list[list[str]] = []
        stream_peaks: dict[int, float] = {}
        for size in (10_000, 200_000):
            text = work / f"stream-{size}.txt"
            text.write_text(prose(size, seed=size))
            argv = [gradium, "stream", "--base-url", base_url, "-o", "s.ulaw", "--timestamps", "s.jsonl"]
            argv += ["--speed", "2", "--force", "--json"]
            peak, wall, end = run(argv, text, work)
            stream_peaks[size] = peak
            requests = end["request_id"]
            count = len(requests) if isinstance(requests, list) else 1
            audio = float(end["audio_s"])  # type: ignore[arg-type]
            stream_rows.append([f"{size:,}", str(count), f"{audio:.0f}", f"{wall:.1f}", f"{peak:.1f}"])
        print("\ntext piped | stream -o s.ulaw --timestamps s.jsonl --speed 2")
        table(["chars", "requests", "audio s", "wall s", "peak RSS MB"], stream_rows)
        print(f"peak RSS 200k / 10k: {stream_peaks[200_000] / stream_peaks[10_000]:.2f} (target <= 1.2)")


if __name__ == "__main__":
    sys.exit(main())
