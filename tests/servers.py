"""Fixtures that run a real `gradium serve` on 127.0.0.1 for tests.

`local_server` runs the app in a thread of the test process (fast, one per
session); `server_factory` starts servers with other options; `serve_process`
runs `gradium serve` as a real subprocess, as a user would.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gradium_cli.server.app import RunningServer, start_in_thread
from gradium_cli.server.state import ServerOptions

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_in_thread(ServerOptions(data_dir=tmp_path_factory.mktemp("serve-data"), quiet=True))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def realtime_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that paces audio at real time, like the live service (`gradium serve --realtime`)."""
    server = start_in_thread(ServerOptions(data_dir=tmp_path_factory.mktemp("realtime"), realtime=True, quiet=True))
    yield server
    server.stop()


@pytest.fixture()
def server_factory(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(**options: Any) -> RunningServer:
        options.setdefault("data_dir", tmp_path / f"data{len(started)}")
        options.setdefault("quiet", True)
        server = start_in_thread(ServerOptions(**options))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def children(pid: int) -> list[int]:
    """Live child processes of `pid`, whichever of its threads started them."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
            found += [int(child) for child in (task / "children").read_text().split()]
    return sorted(found)


def engine_processes(pid: int) -> list[int]:
    """The engine processes under `gradium serve` (or one of its server processes): its children
    with one server process, its grandchildren with several. A child forked a moment ago runs its
    parent's program until it execs the worker module, and is not one yet."""
    found, pending = [], children(pid)
    while pending:
        each = pending.pop()
        with contextlib.suppress(FileNotFoundError):
            if "gradium_cli.server.workers" in Path(f"/proc/{each}/cmdline").read_text():
                found.append(each)
            else:
                pending += children(each)
    return sorted(found)


def started_engines(pid: int, count: int, timeout: float = 20.0) -> list[int]:
    """`engine_processes(pid)` once `count` have started (each server process starts its own
    after the port already answers), or as many as there are at the deadline."""
    deadline = time.monotonic() + timeout
    while len(found := engine_processes(pid)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def gradium_exe() -> str:
    return str(Path(sys.executable).with_name("gradium"))


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {port}")


@pytest.fixture()
def serve_process(tmp_path: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, max_open_files: int | None = None) -> tuple[subprocess.Popen[str], str]:
        """`max_open_files` lowers the server's descriptor limit, e.g. to the common 1024."""
        port = free_port()
        env = {**os.environ, "GRADIUM_DATA_DIR": str(tmp_path / "serve-data")}

        def limit_files() -> None:
            if max_open_files is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))

        proc = subprocess.Popen(
            [gradium_exe(), "serve", "--port", str(port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=limit_files if max_open_files is not None else None,
        )
        procs.append(proc)
        wait_for_port(port)
        return proc, f"http://127.0.0.1:{port}/api/"

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
