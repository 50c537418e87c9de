"""Benchmark: `gradium say` with no API key (the built-in engine) vs the same command against `gradium serve`.

All run as fresh processes, as a user types them, alternating round by round so
machine noise hits all alike:

* offline  - `gradium say TEXT -o x.wav` with no key and no base URL: served by a
             fork of the resident engine (server/resident.py), which the warm-up
             round started (issue 14: at most 1.3x served).
* offline, engine starting - the same in a fresh runtime dir each round: the
             command finds no resident engine and starts one (a user's first
             command, or the first after 120 s idle); killed after the round.
* offline, per-command child - `GRADIUM_ENGINE_LINGER_S=0`: the engine in a child
             process of the command over a pipe (the path before the resident engine).
* served   - `gradium say TEXT --base-url URL -o x.wav` against a `gradium serve`
             subprocess started once before the rounds (also already running).
* offline / served, say --voice Jack and voices list - the same two ways: a voice
             by name is resolved with a REST call, and `voices list` is one; the
             built-in engine answers them on its own stream (no HTTP server).

It reports medians of wall time (spawn to exit) and of CPU time: the command and
all its children (`RUSAGE_CHILDREN`), plus what the resident engine and its fork
spent for it (its /proc counters before and after). CPU time moves less than wall
time on a shared machine, and shows what each path costs in total.

    .venv/bin/python bench/offline_default.py                 # 15 rounds, ~40 s
    .venv/bin/python bench/offline_default.py --rounds 31

--baseline DIR adds a command in the same rounds: the offline `say` of another
checkout's `gradium_cli` (DIR holds its `gradium_cli` folder, e.g. from
`git archive OLD gradium_cli | tar -x -C DIR`), run as its console script would
(`gradium_cli.cli.app:main`), for a before/after measured side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import console_script, local_server, machine, median, table

TEXT = "Hello there, this is the first thing a new user says."
TARGET = 1.3
NAMED = {
    "say --voice Jack": ["say", TEXT, "--voice", "Jack", "-o", "v.wav", "--force"],
    "voices list": ["voices", "list"],
}


def become_subreaper() -> None:
    """Orphans below this process become its children (PR_SET_CHILD_SUBREAPER), so the
    engine process a command leaves to exit on its own is reaped here and its CPU counted."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER) failed: CPU time would miss the engine process")


def residents(run: Path) -> list[int]:
    """PIDs of the resident engines whose socket directory is under `run`."""
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if b"gradium_cli.server.resident" in argv and any(a.startswith(os.fsencode(run)) for a in argv):
                found.append(int(entry.name))
    return found


def process_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes and of their reaped children (/proc/PID/stat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return total / os.sysconf("SC_CLK_TCK")


def reap_orphans(keep: set[int]) -> None:
    """Wait for every child of this process except `keep` (the server, resident engines)."""
    while True:
        orphans = [
            int(pid)
            for task in Path(f"/proc/{os.getpid()}/task").iterdir()
            for pid in (task / "children").read_text().split()
            if int(pid) not in keep
        ]
        if not orphans:
            return
        for pid in orphans:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


BASELINE_CODE = "import sys; from gradium_cli.cli.app import main; sys.exit(main())"


def run(argv: list[str], env: dict[str, str], cwd: Path, server_pid: int) -> tuple[float, float]:
    """Wall seconds of one command (spawn to exit), and CPU seconds with all its descendants
    and what the resident engine spent for it. A resident engine the command started (in a
    runtime dir of its own, `fresh`) is killed afterwards, its CPU counted."""
    run_dir = Path(env["XDG_RUNTIME_DIR"])
    kept = residents(run_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    resident_before = process_cpu(kept)
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
    wall = time.perf_counter() - started
    time.sleep(0.05)  # the fork exits once the command's socket closes, then the resident reaps it
    resident_cpu = process_cpu(kept) - resident_before
    if env.get("FRESH_RUN_DIR"):
        for pid in residents(run_dir):
            os.kill(pid, signal.SIGKILL)
    reap_orphans(keep={server_pid, *residents(run_dir.parent)})  # the bench's lingering resident stays
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + resident_cpu
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
        env["XDG_RUNTIME_DIR"] = str(work / "run")
        (work / "run").mkdir(mode=0o700)
        with local_server("process", work / "serve-data", args=["--workers", "1"]) as base_url:
            server_pid = int(Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()[0])
            offline = [gradium, "say", TEXT, "-o", "x.wav", "--force"]
            commands = {
                "offline": (offline, env),
                "offline, engine starting": (offline, {**env, "FRESH_RUN_DIR": "1"}),
                "offline, per-command child": (offline, {**env, "GRADIUM_ENGINE_LINGER_S": "0"}),
                "served": ([gradium, "say", TEXT, "--base-url", base_url, "-o", "y.wav", "--force"], env),
            }
            # With a voice by name (resolved with a REST call) and a REST-only command.
            for label, words in NAMED.items():
                commands[f"offline, {label}"] = ([gradium, *words], env)
                commands[f"served, {label}"] = ([gradium, *words, "--base-url", base_url], env)
            if args.baseline is not None:
                old_env = {**env, "PYTHONPATH": str(args.baseline.resolve())}
                old = [sys.executable, "-c", BASELINE_CODE]
                commands["offline (baseline)"] = ([*old, "say", TEXT, "-o", "z.wav", "--force"], old_env)
                for label, words in NAMED.items():
                    commands[f"offline, {label} (baseline)"] = ([*old, *words], old_env)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
            for round_number in range(args.rounds + 1):  # round 0 warms the page cache and .pyc files
                for name, (argv, command_env) in commands.items():
                    if "FRESH_RUN_DIR" in command_env:
                        fresh = work / f"run-{round_number}"
                        fresh.mkdir(mode=0o700)
                        command_env = {**command_env, "XDG_RUNTIME_DIR": str(fresh)}
                    measured = run(argv, command_env, work, server_pid)
                    if round_number:
                        times[name].append(measured)
            for pid in residents(work):
                os.kill(pid, signal.SIGKILL)
            reap_orphans(keep={server_pid})
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
    for name in commands:
        if name in ("offline", "served") or name.startswith("served, "):
            continue
        label = next((label for label in NAMED if f", {label}" in name), None)
        served = "served" if label is None else f"served, {label}"
        print(f"{name} / {served}: wall {walls[name] / walls[served]:.2f}x, CPU {cpus[name] / cpus[served]:.2f}x")


if __name__ == "__main__":
    main()
