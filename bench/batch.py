"""Benchmark: `gradium batch` vs shell loops, and its peak memory as the manifest grows.

One `gradium serve` subprocess on 127.0.0.1 serves, in one run:

1. loop-say   a bash loop: `gradium say "$line" -o $i.wav --base-url URL` per line;
2. loop-sdk   a bash loop over the official SDK's CLI (gradium 0.6.4):
              `python -m gradium.cli tts "$line" -o $i.wav --gradium-base-url URL --api-key bench`;
3. batch      `gradium batch lines.txt --jobs 16 --out-dir DIR --base-url URL`.

Each way makes one WAV per line of the same short lines. The loops take
--lines lines (default 500) and batch always takes --batch-lines (default 500):
shrink --lines for a quicker run; the ratios compare seconds per line. Every
output is checked to decode. Then `gradium batch` runs over 1,000 and 10,000
lines (--memory) and its peak RSS is read from os.wait4 for that process alone.

Targets (printed as PASS/FAIL notes, never asserted): batch at least 20x
faster per line than either loop; peak RSS at 10,000 lines within 10 % (or
10 MB) of 1,000 lines.

    .venv/bin/python bench/batch.py                   # the real figures, ~25 min on 2 cores
    .venv/bin/python bench/batch.py --lines 40 --memory 1000,3000   # ~3 min
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import console_script, local_server, machine, table

LOOP_SAY = """
i=0
while IFS= read -r line; do
  i=$((i+1))
  "$GRADIUM" say "$line" -o "$OUT/$i.wav" --base-url "$URL" || exit 1
done < "$LINES"
"""
LOOP_SDK = """
i=0
while IFS= read -r line; do
  i=$((i+1))
  "$PYTHON" -m gradium.cli tts "$line" -o "$OUT/$i.wav" --gradium-base-url "$URL" --api-key bench || exit 1
done < "$LINES"
"""
TIMEOUT_S = 7200


@dataclass
class Way:
    name: str
    lines: int
    seconds: float
    peak_rss_mb: float | None = None

    @property
    def per_line(self) -> float:
        return self.seconds / self.lines


def make_lines(path: Path, count: int) -> None:
    """Short lines of a few words, each different (about 1.5 s of audio)."""
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]
    with path.open("w") as out:
        for i in range(1, count + 1):
            out.write(f"Line {i}: {words[i % 10]} {words[(i * 7) % 10]}.\n")


def isolated_env(work: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIUM_")}
    env.update(GRADIUM_CONFIG_DIR=str(work / "config"), GRADIUM_DATA_DIR=str(work / "data"), NO_COLOR="1")
    env.update(extra)
    return env


def run_timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB of that process alone) of one subprocess."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    errors = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])}... exited {proc.returncode}: {errors[-800:]}")
    return wall, usage.ru_maxrss / 1024  # KB on Linux


def check_outputs(directory: Path, count: int) -> None:
    import soundfile as sf

    files = sorted(p for p in directory.iterdir() if p.suffix == ".wav")
    if len(files) != count:
        raise RuntimeError(f"{directory}: {len(files)} files, expected {count}")
    for path in files:
        samples, rate = sf.read(io.BytesIO(path.read_bytes()))
        if rate != 48000 or len(samples) < rate // 4:
            raise RuntimeError(f"{path}: {len(samples)} samples at {rate} Hz")


def loop(name: str, script: str, lines: Path, count: int, url: str, work: Path) -> Way:
    out = work / name
    out.mkdir()
    env = isolated_env(
        work,
        GRADIUM=console_script(),
        PYTHON=sys.executable,
        URL=url if name == "loop-say" else url.rstrip("/"),
        OUT=str(out),
        LINES=str(lines),
    )
    seconds, _ = run_timed(["bash", "-c", script], env)
    check_outputs(out, count)
    return Way(name, count, seconds)


def batch(lines: Path, count: int, url: str, work: Path, jobs: int, name: str = "batch") -> Way:
    out = work / name
    argv = [console_script(), "-q", "batch", str(lines), "--out-dir", str(out), "--jobs", str(jobs), "--base-url", url]
    seconds, rss = run_timed(argv, isolated_env(work))
    check_outputs(out, count)
    return Way(name, count, seconds, rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500, help="lines for each shell loop (default 500)")
    parser.add_argument("--batch-lines", type=int, default=500, help="lines for gradium batch (default 500)")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--memory", default="1000,10000", help="manifest sizes for peak memory ('' to skip)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    if shutil.which("bash") is None:
        raise SystemExit("bash is needed for the shell loops")

    work = Path(tempfile.mkdtemp(prefix="gradium-bench-batch-"))
    print(f"# gradium batch vs shell loops ({machine()}); work dir {work}")
    try:
        with local_server("process", work / "serve-data") as url:
            loop_lines, batch_lines = work / "loop.txt", work / "batch.txt"
            make_lines(loop_lines, args.lines)
            make_lines(batch_lines, args.batch_lines)
            # Warm the server (engine, voice) so that no way pays for it.
            batch(loop_lines, args.lines, url, work, args.jobs, name="warm-up")
            ways = [
                batch(batch_lines, args.batch_lines, url, work, args.jobs),
                loop("loop-say", LOOP_SAY, loop_lines, args.lines, url, work),
                loop("loop-sdk", LOOP_SDK, loop_lines, args.lines, url, work),
            ]
            fast = ways[0]
            print()
            table(
                ["way", "lines", "wall s", "s/line", "lines/s", "batch speed-up"],
                [
                    [
                        w.name,
                        str(w.lines),
                        f"{w.seconds:.1f}",
                        f"{w.per_line:.4f}",
                        f"{1 / w.per_line:.1f}",
                        f"{w.per_line / fast.per_line:.1f}x",
                    ]
                    for w in ways
                ],
            )
            notes = []
            for way in ways[1:]:
                ratio = way.per_line / fast.per_line
                notes.append(f"{'PASS' if ratio >= 20 else 'FAIL'}: batch is {ratio:.1f}x faster than {way.name}")

            sizes = [int(s) for s in args.memory.split(",") if s.strip()]
            memory: list[Way] = []
            for size in sizes:
                lines = work / f"mem-{size}.txt"
                make_lines(lines, size)
                memory.append(batch(lines, size, url, work, args.jobs, name=f"mem-{size}"))
                shutil.rmtree(work / f"mem-{size}")
            if memory:
                print()
                table(
                    ["lines", "wall s", "lines/s", "peak RSS MB"],
                    [
                        [str(w.lines), f"{w.seconds:.1f}", f"{1 / w.per_line:.1f}", f"{w.peak_rss_mb:.1f}"]
                        for w in memory
                    ],
                )
                low, high = memory[0].peak_rss_mb or 0.0, memory[-1].peak_rss_mb or 0.0
                flat = high <= max(low * 1.10, low + 10)
                notes.append(
                    f"{'PASS' if flat else 'FAIL'}: peak RSS {low:.1f} MB at {memory[0].lines} lines, "
                    f"{high:.1f} MB at {memory[-1].lines} lines"
                )
        print()
        for note in notes:
            print(note)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
