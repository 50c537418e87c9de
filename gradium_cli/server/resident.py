"""The resident built-in engine: one warm process per user that forks a copy of itself per command.

A command with no key needs the engine: Python, numpy, soxr, the server's modules
and eSpeak NG, about 370 ms of CPU to start, which on a busy machine is most of
what the command costs. The first such command starts this process on a
listening Unix socket in a private per-user directory
(`transport/engine_process.py`); it starts up once, then each command connects,
hands over its crash-marker and stderr files (SCM_RIGHTS), and is served by a
`fork()` of this warm process, running the same `pipe.serve` as the per-command
child. A fork per command keeps what the per-command child gave:

- an engine crash (eSpeak NG has known memory-safety bugs) kills one fork: that
  command's request fails with one line, this process and other commands go on;
- each command's data dir and environment (voice store, pronunciation
  dictionaries) are read fresh by its fork, nothing is cached across commands.

When a fork ends, its exit code goes into the command's marker file (pipe.STATUS)
before this process lets go of the connection, so the command reads how it ended
as it would a child's. With no command for `linger` seconds, the process removes
its socket, serves whoever had already connected, and exits.

The parent never runs asyncio or threads: a fork copies one thread only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["HELLO", "main"]

# A command's first message: the length of its JSON ({"data_dir", "env"}), then the JSON;
# the marker and stderr file descriptors ride on the first byte.
HELLO = struct.Struct("<I")
_HELLO_MAX = 1 << 20
_HELLO_TIMEOUT_S = 5.0


@dataclass
class _Command:
    """A forked copy serving one command: what the parent keeps until it ends."""

    pid: int
    pidfd: int
    conn: socket.socket
    marker_fd: int


def _warm() -> None:
    """Import and initialise everything a command's fork uses, so the fork starts hot."""
    import asyncio  # noqa: F401  (imported for the forks)

    from gradium_cli.server import pipe, synth, ws  # noqa: F401
    from gradium_cli.server.catalog import DEFAULT_VOICE, Catalog
    from gradium_cli.server.engine import get_engine

    engine = get_engine()
    Catalog(engine)  # the engine caches its voice list
    # Loads the voice, synthesises nothing: every fork starts where a fresh engine would
    # (eSpeak's pitch-flutter phase carries over between calls), so commands render alike.
    engine.preload(DEFAULT_VOICE.engine_voice)


def _hello(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    """Read a command's hello: its JSON and the file descriptors that came with it."""
    conn.settimeout(_HELLO_TIMEOUT_S)
    head, fds, _, _ = socket.recv_fds(conn, HELLO.size, 2)
    try:
        if len(head) != HELLO.size or len(fds) != 2:
            raise ValueError("malformed hello")
        (length,) = HELLO.unpack(head)
        if length > _HELLO_MAX:
            raise ValueError("hello too long")
        body = b""
        while len(body) < length:
            chunk = conn.recv(length - len(body))
            if not chunk:
                raise ValueError("cut hello")
            body += chunk
        hello = json.loads(body)
        if not isinstance(hello, dict):
            raise ValueError("malformed hello")
    except (ValueError, OSError):
        for fd in fds:
            os.close(fd)
        raise
    return hello, fds


def _serve_in_fork(conn: socket.socket, hello: dict[str, object], marker_fd: int, log_fd: int) -> None:
    """In the fork: become the command's engine process, as `pipe.main` would be."""
    import asyncio

    from gradium_cli.server.pipe import FRAME_LIMIT, serve

    os.dup2(log_fd, 2)
    os.close(log_fd)
    env = hello.get("env")
    if isinstance(env, dict):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    os.environ["LIBC_FATAL_STDERR_"] = "1"  # see EngineProcess: a smashed stack goes to the log
    data_dir = Path(str(hello["data_dir"]))
    conn.settimeout(None)

    async def run() -> None:
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=FRAME_LIMIT)
        await serve(data_dir, marker_fd, reader, writer, preload=False)

    asyncio.run(run())


class Resident:
    def __init__(self, listener: socket.socket, linger_s: float, lock_path: Path) -> None:
        self.listener = listener
        self.linger_s = linger_s
        self.lock_path = lock_path
        self.path = listener.getsockname()
        self.inode = os.stat(self.path).st_ino
        self.commands: dict[int, _Command] = {}  # by pidfd

    def run(self) -> None:
        last_seen = time.monotonic()
        while True:
            wait = None if self.commands else max(0.0, last_seen + self.linger_s - time.monotonic())
            ready, _, _ = select.select([self.listener.fileno(), *self.commands], [], [], wait)
            for fd in ready:
                if fd == self.listener.fileno():
                    self._accept()
                else:
                    self._reap(self.commands.pop(fd))
            if self.commands or ready:
                last_seen = time.monotonic()
            elif time.monotonic() >= last_seen + self.linger_s:
                self._leave()
                return

    def _accept(self) -> bool:
        """Take one connection from the backlog and serve it; False when there was none."""
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False
        try:
            hello, (marker_fd, log_fd) = _hello(conn)
        except (ValueError, OSError):
            conn.close()  # not one of our commands, or one that died while saying hello
            return True
        pid = os.fork()
        if pid == 0:  # the command's own engine process from here on
            code = 1
            try:
                self.listener.close()
                for other in self.commands.values():
                    other.conn.close()
                    os.close(other.pidfd)
                    os.close(other.marker_fd)
                _serve_in_fork(conn, hello, marker_fd, log_fd)
                code = 0
            finally:
                os._exit(code)  # no interpreter shutdown: nothing of it is ours to tidy
        os.close(log_fd)
        command = _Command(pid, -1, conn, marker_fd)
        try:
            command.pidfd = os.pidfd_open(pid)
        except OSError:  # a kernel before 5.3: serve this command to its end, then the next
            self._reap(command)
            return True
        self.commands[command.pidfd] = command
        return True

    def _reap(self, command: _Command) -> None:
        from gradium_cli.server.pipe import STATUS, STATUS_OFFSET

        _, status = os.waitpid(command.pid, 0)
        with contextlib.suppress(OSError):
            os.pwrite(command.marker_fd, STATUS.pack(1, os.waitstatus_to_exitcode(status)), STATUS_OFFSET)
        # Only now may the command see its end of the connection close.
        if command.pidfd >= 0:
            os.close(command.pidfd)
        os.close(command.marker_fd)
        command.conn.close()

    def _leave(self) -> None:
        """Stop taking commands: the socket goes (under the lock commands take to start
        one), those already in the backlog are served, then the process exits."""
        with open(self.lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)
        self.listener.setblocking(False)
        while self._accept():
            pass
        self.listener.close()
        for command in list(self.commands.values()):
            self._reap(command)


def main() -> None:
    # A crash is expected to happen in a fork, and must not leave a core file behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # its own session: no terminal sends it one
    listen_fd, linger_s, lock_path = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    listener = socket.socket(fileno=listen_fd)
    _warm()
    Resident(listener, linger_s, lock_path).run()


if __name__ == "__main__":
    main()
