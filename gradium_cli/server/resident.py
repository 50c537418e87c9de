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

When a fork ends, its exit code goes into the command's marker file (engine_wire.STATUS)
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
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gradium_cli.server.engine_wire import HELLO, PEER, STATUS, STATUS_OFFSET, STREAM_BUFFER

__all__ = ["main"]

# The hello's JSON: {"data_dir", "env", "cwd", "umask"} (transport/engine_process.py).
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


def _warm_rest() -> None:
    """Import what a fork answers REST calls with (server/pipe.py: RestCalls): not before the
    first command, whose fork would wait for it, but while that fork serves it."""
    from gradium_cli.server import app  # noqa: F401  (imported for the forks)


class _Greeting:
    """A connection whose hello is still arriving: read as it comes, never waited for,
    so a command that is slow to say it (or stopped with Ctrl-Z) holds up no other."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.deadline = time.monotonic() + _HELLO_TIMEOUT_S
        self.fds: list[int] = []
        self.length: int | None = None
        self.body = b""

    def read(self) -> dict[str, object] | None:
        """Read what has come; the hello once complete. Raises ValueError or OSError on
        what is not one (the connection is then dropped)."""
        if self.length is None:
            head, fds, _, _ = socket.recv_fds(self.conn, HELLO.size, 2)
            self.fds += fds
            if len(head) != HELLO.size or len(self.fds) != 2:
                raise ValueError("malformed hello")
            (self.length,) = HELLO.unpack(head)
            if self.length > _HELLO_MAX:
                raise ValueError("hello too long")
            return None
        # Exactly the hello's length: what follows it is the command's, for the fork.
        chunk = self.conn.recv(self.length - len(self.body))
        if not chunk:
            raise ValueError("cut hello")
        self.body += chunk
        if len(self.body) < self.length:
            return None
        hello = json.loads(self.body)
        if not isinstance(hello, dict) or not isinstance(hello.get("data_dir"), str):
            raise ValueError("malformed hello")
        return hello

    def drop(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.conn.close()


def _serve_in_fork(conn: socket.socket, hello: dict[str, object], marker_fd: int, log_fd: int) -> None:
    """In the fork: become the command's engine process, as `pipe.main` would be."""
    import asyncio

    from gradium_cli.server.pipe import serve

    os.dup2(log_fd, 2)
    os.close(log_fd)
    env = hello.get("env")
    if isinstance(env, dict):
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in env.items()})
    os.environ["LIBC_FATAL_STDERR_"] = "1"  # see EngineProcess: a smashed stack goes to the log
    umask = hello.get("umask")
    if isinstance(umask, int):
        os.umask(umask & 0o777)
    with contextlib.suppress(OSError, TypeError, ValueError):
        os.chdir(str(hello.get("cwd")))  # as a child of the command would be; "/" if it is gone
    data_dir = Path(str(hello["data_dir"]))
    conn.setblocking(True)

    async def run() -> None:
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=STREAM_BUFFER)
        await serve(data_dir, marker_fd, reader, writer, preload=False)

    asyncio.run(run())


class Resident:
    def __init__(self, listener: socket.socket, linger_s: float, lock_path: Path) -> None:
        self.listener = listener
        listener.setblocking(False)  # the backlog is drained until it is empty
        self.linger_s = linger_s
        self.lock_path = lock_path
        self.path = listener.getsockname()
        self.inode = os.stat(self.path).st_ino
        self.greetings: dict[int, _Greeting] = {}  # by connection fd
        self.commands: dict[int, _Command] = {}  # by pidfd
        self.rest_warm = False

    def run(self) -> None:
        last_seen = time.monotonic()
        listening = True
        while listening or self.greetings or self.commands:
            now = time.monotonic()
            waits = [greeting.deadline - now for greeting in self.greetings.values()]
            if listening and not self.commands:
                waits.append(last_seen + self.linger_s - now)
            watched = [*self.greetings, *self.commands, *([self.listener.fileno()] if listening else [])]
            ready, _, _ = select.select(watched, [], [], max(0.0, min(waits)) if waits else None)
            for fd in ready:
                if listening and fd == self.listener.fileno():
                    while self._accept():
                        pass
                elif fd in self.greetings:
                    self._greet(fd)
                else:
                    self._reap(self.commands.pop(fd))
            now = time.monotonic()
            for fd, greeting in list(self.greetings.items()):
                if now >= greeting.deadline:
                    del self.greetings[fd]
                    greeting.drop()
            if self.commands and not self.rest_warm:
                self.rest_warm = True
                _warm_rest()
            if self.commands or self.greetings or ready:
                last_seen = now
            elif listening and now >= last_seen + self.linger_s:
                self._stop_listening()
                listening = False

    def _accept(self) -> bool:
        """Take one connection from the backlog; False when there was none."""
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False
        _, uid, _ = PEER.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER.size))
        if uid != os.getuid():  # the directory is private; this is only in case it was not
            conn.close()
            return True
        conn.setblocking(False)
        self.greetings[conn.fileno()] = _Greeting(conn)
        return True

    def _greet(self, fd: int) -> None:
        greeting = self.greetings[fd]
        try:
            hello = greeting.read()
        except BlockingIOError:
            return
        except (ValueError, OSError):
            del self.greetings[fd]
            greeting.drop()  # not one of our commands, or one that died while saying hello
            return
        if hello is None:
            return
        del self.greetings[fd]
        conn, (marker_fd, log_fd) = greeting.conn, greeting.fds
        pid = os.fork()
        if pid == 0:  # the command's own engine process from here on
            code = 1
            try:
                self.listener.close()
                for other in self.greetings.values():
                    other.drop()
                for command in self.commands.values():
                    command.conn.close()
                    os.close(command.pidfd)
                    os.close(command.marker_fd)
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
            return
        self.commands[command.pidfd] = command

    def _reap(self, command: _Command) -> None:
        _, status = os.waitpid(command.pid, 0)
        with contextlib.suppress(OSError):
            os.pwrite(command.marker_fd, STATUS.pack(1, os.waitstatus_to_exitcode(status)), STATUS_OFFSET)
        # Only now may the command see its end of the connection close.
        if command.pidfd >= 0:
            os.close(command.pidfd)
        os.close(command.marker_fd)
        command.conn.close()

    def _stop_listening(self) -> None:
        """Idle for the linger time: the socket goes (under the lock commands take to start
        an engine), those already in the backlog are still greeted and served, then
        `run` returns once they are done."""
        fd = os.open(self.lock_path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self.inode:
                    os.unlink(self.path)
        finally:
            os.close(fd)
        while self._accept():
            pass
        self.listener.close()


def main() -> None:
    # A crash is expected to happen in a fork, and must not leave a core file behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # its own session: no terminal sends it one
    listen_fd, linger_s, lock_path = int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
    listener = socket.socket(fileno=listen_fd)
    os.chdir("/")  # holds no directory of the command's (a mount point could not be unmounted)
    _warm()
    Resident(listener, linger_s, lock_path).run()


if __name__ == "__main__":
    main()
