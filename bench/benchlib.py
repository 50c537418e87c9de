"""Helpers shared by the bench scripts: local servers, medians, tables.

Not a benchmark itself. The scripts import it as a sibling module (running
`python bench/<name>.py` puts bench/ first on sys.path).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

SERVE_CODE = "from gradium_cli.cli.app import main; main()"


def median(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]  # drop NaN
    return statistics.median(clean) if clean else float("nan")


def console_script(name: str = "gradium") -> str:
    """The venv's console script next to this interpreter (ours, not the SDK's)."""
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        raise SystemExit(f"{path} not found: run with the project's .venv/bin/python")
    return str(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gradium serve exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("gradium serve did not start listening in time")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT (uvicorn's graceful stop), then kill this one process if it lingers."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@contextlib.contextmanager
def local_server(
    mode: str,
    data_dir: Path,
    code: str = SERVE_CODE,
    args: Sequence[str] = (),
    cpus: Collection[int] | None = None,
) -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT/api/) of a server on 127.0.0.1 that lives for the block.

    mode "thread": `start_in_thread` in this process. mode "process": `gradium
    serve` in a subprocess (see `serve_process`).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if mode == "thread":
        from gradium_cli.server.app import start_in_thread
        from gradium_cli.server.state import ServerOptions

        running = start_in_thread(ServerOptions(data_dir=data_dir, quiet=True))
        try:
            yield running.base_url
        finally:
            running.stop()
        return
    with serve_process(data_dir, code, args, cpus) as (base_url, _):
        yield base_url


@contextlib.contextmanager
def serve_process(
    data_dir: Path,
    code: str = SERVE_CODE,
    args: Sequence[str] = (),
    cpus: Collection[int] | None = None,
    tree: Path | None = None,
) -> Iterator[tuple[str, int]]:
    """(base URL, pid) of `gradium serve` in a subprocess for the block: `code` replaces
    its -c program (e.g. to profile it), `args` are more `serve` options (e.g. --workers);
    on `cpus` only when given (its engine workers too: they inherit it); from another
    tree (its own `.venv`, started in it, since `-c` imports from the current directory
    first) when given."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    python = sys.executable if tree is None else str(tree / ".venv" / "bin" / "python")
    argv = [python, "-c", code, "serve", "--port", str(port), "--data-dir", str(data_dir), *args]
    pin = None if cpus is None else functools.partial(os.sched_setaffinity, 0, set(cpus))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin, cwd=tree)
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/api/", proc.pid
    finally:
        stop_process(proc)


ENGINE_MODULE = "gradium_cli.server.workers"  # an engine process's command line names it


def process_tree_cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds of `pid` and its live descendants, as (server processes, engine processes):
    the event loops and their threads, and eSpeak NG's worker processes."""
    tick = os.sysconf("SC_CLK_TCK")
    server = engine = 0.0
    pending = [pid]
    while pending:
        each = pending.pop()
        try:
            for task in Path(f"/proc/{each}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            is_engine = ENGINE_MODULE in Path(f"/proc/{each}/cmdline").read_text()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if is_engine:
            engine += seconds
        else:
            server += seconds
    return server, engine


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its live descendants (server processes and their engine workers)."""
    return sum(process_tree_cpu_split(pid))


def baseline_tree(path: Path) -> Path:
    """`--baseline DIR`, checked: another tree of the project, with its own `.venv`."""
    tree = path.resolve()
    if not (tree / ".venv" / "bin" / "python").exists():
        raise SystemExit(f"{tree}/.venv/bin/python not found: make the baseline's venv first")
    return tree


def pin_apart(server_cores: int) -> tuple[set[int] | None, list[str]]:
    """Put this process (the client) on all but the first `server_cores` of its cores and say so:
    (those cores for the servers, their `serve` arguments: as many engine workers); (None, [])
    with nothing pinned when `server_cores` is 0 or leaves the client no core."""
    mine = sorted(os.sched_getaffinity(0))
    if server_cores <= 0 or server_cores >= len(mine):
        print("servers and client unpinned")
        return None, []
    server, client = set(mine[:server_cores]), set(mine[server_cores:])
    os.sched_setaffinity(0, client)
    print(f"servers on cores {sorted(server)} (--workers {len(server)}), client on {sorted(client)}")
    return server, ["--workers", str(len(server))]


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "speech/tts"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for row in rows:
        print("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)))


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"python {platform.python_version()}, nproc {cores}, {platform.machine()} {platform.system()}"
