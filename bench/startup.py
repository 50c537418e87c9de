"""Start-up time of the CLI against bare Python and the official SDK's CLI.

    .venv/bin/python bench/startup.py              # 15 rounds, ~1 min
    .venv/bin/python bench/startup.py --runs 30 --imports

Each round runs every command once, in turn (interleaved, so machine noise hits
all of them alike); the table shows medians of wall time (spawn → exit) and of
CPU time (user + sys of the child, steadier on a loaded machine), the
difference from `python -c pass`, and the ratio to the SDK CLI's `--help`.
`voices list --json` talks to a `gradium serve` subprocess on 127.0.0.1.
Targets: `gradium --help` within 120 ms of bare Python, and faster than the SDK.
`import typer` is the floor any Typer CLI pays. Compiled modules are cached in a
temporary PYTHONPYCACHEPREFIX, as after `pip install`. `--imports` adds the
slowest imports of `gradium --help` (`python -X importtime`, minimum over the rounds).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchlib import console_script, local_server, machine, median, table

TARGET_OVER_PYTHON_MS = 120.0
SDK = "SDK: python -m gradium.cli --help"


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, child CPU ms) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')[-400:]}")
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu


def slowest_imports(argv: Sequence[str], env: dict[str, str], runs: int, count: int = 15) -> list[tuple[str, int]]:
    """Modules with the largest own import time (µs), minimum over `runs`."""
    best: dict[str, int] = {}
    for _ in range(runs):
        err = subprocess.run(
            [sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True
        ).stderr
        for line in err.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
            if match:
                name, own = match.group(2), int(match.group(1))
                best[name] = min(best.get(name, own), own)
    return sorted(best.items(), key=lambda item: -item[1])[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--imports", action="store_true", help="also list the slowest imports of `gradium --help`")
    args = parser.parse_args()
    gradium = console_script()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIUM_")}
        env.update(GRADIUM_CONFIG_DIR=f"{tmp}/config", GRADIUM_DATA_DIR=f"{tmp}/data", NO_COLOR="1")
        # As installed: compiled modules cached (pip writes .pyc files at install time). Without
        # this, PYTHONDONTWRITEBYTECODE=1 would have every run compile our modules from source.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"
        with local_server("process", Path(tmp) / "serve") as base_url:
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "python -c 'import typer'": [sys.executable, "-c", "import typer"],
                "gradium --help": [gradium, "--help"],
                "gradium say --help": [gradium, "say", "--help"],
                "gradium voices list --json": [gradium, "voices", "list", "--json", "--base-url", base_url],
                SDK: [sys.executable, "-m", "gradium.cli", "--help"],
            }
            for argv in commands.values():  # warm the page cache and .pyc files
                timed(argv, env)
            walls: dict[str, list[float]] = {name: [] for name in commands}
            cpus: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(max(1, args.runs)):
                for name, argv in commands.items():
                    wall, cpu = timed(argv, env)
                    walls[name].append(wall)
                    cpus[name].append(cpu)
        print(f"start-up, {args.runs} interleaved rounds, medians; {machine()}, load {os.getloadavg()[0]:.1f}")
        base_wall, base_cpu = median(walls["python -c pass"]), median(cpus["python -c pass"])
        sdk_wall, sdk_cpu = median(walls[SDK]), median(cpus[SDK])
        rows = []
        for name in commands:
            wall, cpu = median(walls[name]), median(cpus[name])
            rows.append(
                [
                    name,
                    f"{wall:.1f}",
                    f"+{wall - base_wall:.1f}",
                    f"{wall / sdk_wall:.2f}",
                    f"{cpu:.1f}",
                    f"+{cpu - base_cpu:.1f}",
                    f"{cpu / sdk_cpu:.2f}",
                ]
            )
        table(["command", "wall ms", "vs python", "/ SDK", "cpu ms", "vs python", "/ SDK"], rows)
        help_wall = median(walls["gradium --help"])
        over = help_wall - base_wall
        verdict = "PASS" if over <= TARGET_OVER_PYTHON_MS else "FAIL"
        print(f"gradium --help: +{over:.0f} ms over bare Python (target <= {TARGET_OVER_PYTHON_MS:.0f}): {verdict}")
        faster = "PASS" if help_wall < sdk_wall else "FAIL"
        print(f"gradium --help / SDK --help = {help_wall / sdk_wall:.2f} (target < 1): {faster}")
        if args.imports:
            print("\nslowest imports of `gradium --help` (own time, min over rounds):")
            for module, micros in slowest_imports([gradium, "--help"], env, args.runs):
                print(f"  {micros / 1000:6.1f} ms  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
