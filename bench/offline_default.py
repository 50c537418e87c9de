"""Benchmark: `gradium say` with no API key (the built-in engine) vs the same command against `gradium serve`.

Both run as fresh processes, as a user types them, alternating round by round so
machine noise hits both alike:

* offline - `gradium say TEXT -o x.wav` with no key and no base URL: the built-in
            engine in a child process over a pipe (issue 14: at most 1.3x served).
* served  - `gradium say TEXT --base-url URL -o x.wav` against a `gradium serve`
            subprocess started once before the rounds.

It reports medians of wall time (spawn to exit) and of CPU time (the command and
all its children, from `os.wait4`/`RUSAGE_CHILDREN`), and their ratios. CPU time
moves less than wall time on a shared machine, and shows what the offline path
costs in total: it starts two Python processes more than the served path.

    .venv/bin/python bench/offline_default.py                 # 15 rounds, ~20 s
    .venv/bin/python bench/offline_default.py --rounds 31

--baseline DIR adds a third command in the same rounds: the offline `say` of
another checkout's `gradium_cli` (DIR holds its `gradium_cli` folder, e.g. from
`git archive OLD gradium_cli | tar -x -C DIR`), run as its console script would
(`gradium_cli.cli.app:main`), for a before/after measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import console_script, local_server, machine, median, table

TEXT = "Hello there, this is the first thing a new user says."
TARGET = 1.3


def become_subreaper() -> None:
    """Orphans below this process become its children (PR_SET_CHILD_SUBREAPER), so the
    engine process a command leaves to exit on its own is reaped here and its CPU counted."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed: CPU time would miss the engine process")


def reap_orphans(keep: int) -> None:
    """Wait for every child of this process except `keep` (the server)."""
    while True:
        orphans = [
            int(pid)
            for task in Path(f"/proc/{os.getpid()}/task").iterdir()
            for pid in (task / "children").read_text().split()
            if int(pid) != keep
        ]
        if not orphans:
            return
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


BASELINE_CODE = "import sys; from gradium_cli.cli.app import main; sys.exit(main())"


def run(argv: list[str], env: dict[str, str], cwd: Path, server_pid: int) -> tuple[float, float]:
    """Wall seconds of one command (spawn to exit), and CPU seconds with all its descendants."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    wall = time.perf_counter() - started
    reap_orphans(keep=server_pid)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--baseline", type=Path, help="another checkout's gradium_cli parent folder")
    args = parser.parse_args()
    gradium = console_script()
    become_subreaper()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRADIUM_")}
        env.update(
            GRADIUM_CONFIG_DIR=str(work / "config"),
            GRADIUM_DATA_DIR=str(work / "data"),
            # As after `pip install`: modules load from cached .pyc files (see startup.py).
            PYTHONDONTWRITEBYTECODE="",
        )
        env.pop("PYTHONDONTWRITEBYTECODE")
        with local_server("process", work / "serve-data", args=["--workers", "1"]) as base_url:
            server_pid = int(Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()[0])
            commands = {
                "offline": ([gradium, "say", TEXT, "-o", "x.wav", "--force"], env),
                "served": ([gradium, "say", TEXT, "--base-url", base_url, "-o", "y.wav", "--force"], env),
            }
            if args.baseline is not None:
                old_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
                old_argv = [sys.executable, "-c", BASELINE_CODE, "say", TEXT, "-o", "z.wav", "--force"]
                commands["offline (baseline)"] = (old_argv, old_env)
            for argv, command_env in commands.values():  # warm the page cache and .pyc files
                run(argv, command_env, work, server_pid)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for _ in range(args.rounds):
                for name, (argv, command_env) in commands.items():
                    times[name].append(run(argv, command_env, work, server_pid))
    print(f"{machine()}; load average {os.getloadavg()[0]:.1f} at the end; {args.rounds} rounds, medians")
    walls = {name: median([w for w, _ in values]) for name, values in times.items()}
    cpus = {name: median([c for _, c in values]) for name, values in times.items()}
    table(
        ["command", "wall ms", "CPU ms"],
        [[name, f"{walls[name] * 1000:.0f}", f"{cpus[name] * 1000:.0f}"] for name in commands],
    )
    ratio = walls["offline"] / walls["served"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    cpu_ratio = cpus["offline"] / cpus["served"]
    print(f"offline / served: wall {ratio:.2f}x ({verdict}, target <= {TARGET}x), CPU {cpu_ratio:.2f}x")
    if "offline (baseline)" in walls:
        old_ratio = walls["offline (baseline)"] / walls["served"]
        old_cpu = cpus["offline (baseline)"] / cpus["served"]
        print(f"offline (baseline) / served: wall {old_ratio:.2f}x, CPU {old_cpu:.2f}x")


if __name__ == "__main__":
    main()
