"""The built-in engine's process for one command: found or started, and told how it ended.

Standard library only (no asyncio, no websockets): `gradium say` starts it
before the CLI's own imports (cli/entry.py), so nothing may stand between the
command's start and reaching it. `transport/local.py` drives the stream.

Two ways to reach it, the same framing (server/pipe.py) on both:

- **The resident engine** (server/resident.py), the default: a warm process per
  user, reached on a Unix socket in a private directory and started by the
  first command that finds none; each command is served by a fork of it. It
  exits after `GRADIUM_ENGINE_LINGER_S` seconds (default 120) without a command.
- **A child process of the command** (`python -m gradium_cli.server.pipe`) on
  its stdin and stdout: with `GRADIUM_ENGINE_LINGER_S=0`, or where no private
  socket directory can be had.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gradium_cli.server.crash import describe_death
from gradium_cli.server.engine_wire import HELLO, MARKER, MARKER_ID_BYTES, PEER, STATUS, STATUS_OFFSET

__all__ = [
    "LINGER_ENV",
    "EngineProcess",
    "SettingError",
    "linger_seconds",
    "resident_engine",
    "runtime_dir",
]

LINGER_ENV = "GRADIUM_ENGINE_LINGER_S"
DEFAULT_LINGER_S = 120.0
READY_ENV = "GRADIUM_ENGINE_READY_S"
DEFAULT_READY_S = 3.0
# Settings the engine reads when it starts (as opposed to per command): a resident
# engine started with other values is not the one to use. (READY_ENV is the command's.)
_ENGINE_SETTINGS_PREFIX = "GRADIUM_ENGINE_"


class SettingError(ValueError):
    """A bad `GRADIUM_ENGINE_*_S` value: the message says which and what it must be."""

    def __init__(self, message: str, name: str, default: float) -> None:
        super().__init__(message)
        self.name = name
        self.default = default


def _seconds_setting(name: str, default: float, *, zero_allowed: bool, most: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    above_floor = value >= 0 if zero_allowed else value > 0
    if not (above_floor and value <= most):  # nan fails both
        bounds = f"from 0 to {most:g}" if zero_allowed else f"above 0, at most {most:g}"
        raise SettingError(f"{name} must be a number of seconds {bounds}, not {raw!r}", name, default)
    return value


def linger_seconds() -> float:
    """`GRADIUM_ENGINE_LINGER_S`: how long the resident engine waits for the next command
    (0: none, each command starts its own). Raises SettingError on a bad value."""
    return _seconds_setting(LINGER_ENV, DEFAULT_LINGER_S, zero_allowed=True, most=86400)


def runtime_dir() -> Path | None:
    """The user's private directory for the resident engine's socket, created; None when
    there is none to be had safely (then each command starts its own engine).

    `$XDG_RUNTIME_DIR/gradium`, else `gradium-UID` in the temp dir. It must be a real
    directory (not a link) owned by this user and closed to everyone else, and so must
    the way to it: every directory above it owned by this user or root and, if others
    may write to it, sticky (like /tmp), so that no one else can swap it for their own
    between this check and its use. Anyone who could would answer in the engine's place
    and read the command's text and environment.
    """
    if not hasattr(os, "pidfd_open") or not hasattr(socket, "AF_UNIX"):  # Linux only
        return None
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(base):
        path = Path(os.path.realpath(base)) / "gradium"
    else:
        path = Path(os.path.realpath(tempfile.gettempdir())) / f"gradium-{os.getuid()}"
    if not all(_only_ours_or_sticky(ancestor) for ancestor in path.parents):
        return None
    try:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def _only_ours_or_sticky(folder: Path) -> bool:
    """Only this user or root can rename what is in `folder`."""
    try:
        info = os.lstat(folder)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (0, os.getuid()):
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or bool(info.st_mode & stat.S_ISVTX)


def _resident_key() -> str:
    """Which resident engine this command may use: the same interpreter, the same code
    (its files' newest mtime: an edited or reinstalled package starts a new one) and the
    same start-up settings."""
    package = Path(__file__).resolve().parent.parent
    newest = _newest_source_mtime(str(package))
    settings = sorted(
        f"{k}={v}" for k, v in os.environ.items() if k.startswith(_ENGINE_SETTINGS_PREFIX) and k != READY_ENV
    )
    # A fork keeps the engine's priority, and only root may raise it again: `nice gradium ...`
    # gets an engine of its own niceness.
    niceness = str(os.getpriority(os.PRIO_PROCESS, 0))
    text = "\0".join([sys.executable, str(package), str(newest), niceness, *settings])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _newest_source_mtime(folder: str) -> int:
    """The newest mtime of the .py files below `folder`. With os.scandir, not Path.rglob:
    every command with no key computes it before its own imports (3.3 ms vs 1.1 ms)."""
    newest = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir() and entry.name != "__pycache__":
                newest = max(newest, _newest_source_mtime(entry.path))
            elif entry.name.endswith(".py"):
                newest = max(newest, entry.stat().st_mtime_ns)
    return newest


def resident_engine() -> tuple[str, Path | None, int | None]:
    """Whether commands with no key reach a resident engine: ("running", its socket, its pid
    or None if it cannot be told),
    ("stopped", its socket, its pid) when it is stopped (SIGSTOP) and commands wait
    `ready_timeout_s()` for it before starting their own, ("idle", its socket, None) when the
    next such command will start one, ("off", None, None) or ("unavailable", None, None)."""
    try:
        linger_s = linger_seconds()
    except ValueError:
        return "off", None, None
    if not linger_s:
        return "off", None, None
    folder = runtime_dir()
    if folder is None:
        return "unavailable", None, None
    key = _resident_key()
    path = folder / f"engine-{key}.sock"
    sock = _connect(path)
    if sock is None:
        return "idle", path, None
    sock.close()  # it drops a connection that says nothing
    # Not the socket's peer credentials: they name the command that bound it for the engine.
    pid = _resident_pid(folder / f"engine-{key}.lock")
    return ("stopped" if pid is not None and _is_stopped(pid) else "running"), path, pid


def _resident_pid(lock_path: Path) -> int | None:
    """The resident engine started with this lock path (its command line names it; so do its
    forks, which copy it: the one whose parent is not one of them)."""
    wanted = os.fsencode(lock_path)
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            if b"gradium_cli.server.resident" not in argv or wanted not in argv:
                continue
            if entry.stat().st_uid != os.getuid():
                continue
            stat_line = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat_line.rsplit(")", 1)[1].split()[1])
    return next((pid for pid, parent in parents.items() if parent not in parents), None)


def _is_stopped(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("T", "t")


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
        _, uid, _ = PEER.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEER.size))
    except OSError:  # none there, or one that is gone (a stale socket file)
        sock.close()
        return None
    if uid != os.getuid():  # not our engine: not told a word
        sock.close()
        return None
    return sock


def _open_private(path: Path, flags: int) -> int:
    """A file in the runtime dir, never through a link put in its place."""
    return os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def _engine_env() -> dict[str, str]:
    return {
        **os.environ,
        # glibc reports a smashed stack on the terminal by default; this sends it
        # to the process's stderr (our log), so users see our one line instead.
        "LIBC_FATAL_STDERR_": "1",
    }


def _resident(folder: Path, linger_s: float) -> tuple[socket.socket | None, bool]:
    """A connection to the resident engine, started first if there is none, and whether
    it was running already."""
    key = _resident_key()
    path = folder / f"engine-{key}.sock"
    if len(os.fsencode(path)) > 107:  # sun_path: 108 bytes with the NUL
        return None, False
    sock = _connect(path)
    if sock is not None:
        return sock, True
    lock_path = folder / f"engine-{key}.lock"
    with open(_open_private(lock_path, os.O_WRONLY), "wb") as lock:
        # Two commands starting at once start one engine; an engine that is leaving
        # removes its socket under the same lock.
        fcntl.flock(lock, fcntl.LOCK_EX)
        sock = _connect(path)
        if sock is not None:
            return sock, True
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        # Bound and listening before the engine starts: this command connects at once
        # and is served as soon as the engine is warm.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(str(path))
            listener.listen(64)
            with open(_open_private(folder / f"engine-{key}.log", os.O_WRONLY | os.O_TRUNC), "wb") as log:
                argv = ["-m", "gradium_cli.server.resident", str(listener.fileno()), str(linger_s), str(lock_path)]
                subprocess.Popen(
                    [sys.executable, *argv],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,  # never the command's stdout: a pipe would stay open
                    stderr=log,
                    env={**_engine_env(), "OPENBLAS_NUM_THREADS": "1"},  # no thread pool to fork
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,  # outlives the command; no terminal's Ctrl-C
                )
            return _connect(path), False


def ready_timeout_s() -> float:
    """How long a command waits for a resident engine that was running already to answer
    (`READY`, sent as its fork starts: milliseconds) before it starts an engine of its own:
    a stopped (SIGSTOP) or wedged resident engine still accepts connections.
    `GRADIUM_ENGINE_READY_S`, default 3. Raises SettingError on a bad value."""
    return _seconds_setting(READY_ENV, DEFAULT_READY_S, zero_allowed=False, most=3600)


class EngineProcess:
    """The engine process serving this command: a fork of the resident engine or a child.

    `resident=False`: a child, whatever the settings (the fallback from a resident engine
    that does not answer). `ready_by`: for a resident engine that was running already, the
    `time.monotonic()` by which it must have answered; None otherwise (a child, or an engine
    this command started, which answers once warm or dies).
    """

    def __init__(self, data_dir: Path, *, resident: bool = True) -> None:
        # The engine's stderr and its marker (which channel is in the engine, then how the
        # process ended); both read if it dies, closed in stop(), so no `with`.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.marker = tempfile.TemporaryFile()  # noqa: SIM115
        self.marker.write(MARKER.pack(0, 0, 0))
        self.marker.flush()
        self.sock: socket.socket | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.ready_by: float | None = None
        try:
            linger_s = linger_seconds() if resident else 0
        except ValueError:
            linger_s = 0  # the command reports it (backend.local_engine_endpoint); no resident meanwhile
        folder = runtime_dir() if linger_s else None
        running = False
        if folder is not None:
            with contextlib.suppress(OSError):
                self.sock, running = _resident(folder, linger_s)
        if self.sock is not None and not self._hello(data_dir):
            self.sock.close()
            self.sock = None
        if self.sock is not None and running:
            try:
                wait_s = ready_timeout_s()
            except ValueError:
                wait_s = DEFAULT_READY_S  # the command reports it (backend.local_engine_endpoint)
            self.ready_by = time.monotonic() + wait_s
        if self.sock is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gradium_cli.server.pipe", str(data_dir), str(self.marker.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.log,
                env=_engine_env(),
                pass_fds=(self.marker.fileno(),),
                start_new_session=True,  # Ctrl-C is the command's to handle; the child ends with its stdin
            )

    def _hello(self, data_dir: Path) -> bool:
        """Tell the resident engine whom it serves: data dir, environment, working dir, umask,
        marker and log (the fork takes them on, as a child would have them)."""
        assert self.sock is not None
        umask = os.umask(0o077)
        os.umask(umask)
        try:
            cwd = os.getcwd()
            hello = {"data_dir": str(data_dir.absolute()), "env": dict(os.environ), "cwd": cwd, "umask": umask}
            body = json.dumps(hello).encode()
            message = HELLO.pack(len(body)) + body
            sent = socket.send_fds(self.sock, [message], [self.marker.fileno(), self.log.fileno()])
            self.sock.sendall(message[sent:])
        except OSError:
            return False
        return True

    def death(self) -> tuple[str, int, str | None]:
        """How the engine process ended, and the channel and client_req_id it was rendering (blocking)."""
        code: int | None = None
        if self.process is not None:
            try:
                code = self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                code = self.process.wait()
        else:
            # The resident engine writes it before it lets go of the connection.
            with contextlib.suppress(OSError, struct.error):
                known, status = STATUS.unpack(os.pread(self.marker.fileno(), STATUS.size, STATUS_OFFSET))
                code = status if known else None
        culprit, culprit_id = 0, None
        with contextlib.suppress(OSError, struct.error):
            record = os.pread(self.marker.fileno(), MARKER.size + MARKER_ID_BYTES, 0)
            culprit, length, has_id = MARKER.unpack_from(record)
            if has_id:
                culprit_id = record[MARKER.size : MARKER.size + length].decode("utf-8", "replace")
        return describe_death(code, self.log), culprit, culprit_id

    def stop(self) -> None:
        """Close the stream: at its end the engine process ends its loop and exits on its own.

        Not waited for: its shutdown is no part of the command's time.
        """
        streams = (self.process.stdin, self.process.stdout) if self.process is not None else ()
        for stream in (*streams, self.sock, self.log, self.marker):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
