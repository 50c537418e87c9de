"""Atomic output files: written to a temp file beside the target, renamed on success.

A failed, interrupted or killed run never leaves a half file under the real
name: at worst a `.NAME.*.part` temp file, removed on any handled failure.

A target that exists and is not a regular file (a device such as /dev/null, a FIFO,
a Unix socket) is never replaced: it is opened and written as a stream (`StreamTarget`).
A symlink to a regular file keeps its link: the file it points to is replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from gradium_cli.errors import DiskFull, OutputError


def output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(f"disk full while writing {path}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: permission denied")
    if exc.errno == errno.ENOENT:
        return OutputError(f"cannot write {path}: directory does not exist")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def is_stream_target(path: Path) -> bool:
    """Whether `path` exists and is something to write into rather than replace."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


class StreamTarget:
    """A device, FIFO or Unix socket written in place: bytes go out as they come, nothing is replaced.

    Opening a FIFO waits for its reader, as `> fifo` does in a shell.
    """

    seekable = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._socket: socket.socket | None = None
        try:
            if stat.S_ISSOCK(path.stat().st_mode):
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._socket.connect(str(path))
                self.handle: BinaryIO = self._socket.makefile("wb")
            else:
                self.handle = open(path, "wb")  # noqa: SIM115 - closed in commit/abort
        except OSError as exc:
            if self._socket is not None:
                self._socket.close()
            raise output_error(path, exc) from None

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as exc:
            self.abort()
            raise output_error(self.path, exc) from None

    def commit(self) -> None:
        try:
            self.handle.close()
        except OSError as exc:
            raise output_error(self.path, exc) from None
        finally:
            self.abort()

    def abort(self) -> None:
        if not self.handle.closed:
            # The reader may have gone: nothing more to say than the error already raised.
            with contextlib.suppress(OSError):
                self.handle.close()
        if self._socket is not None:
            self._socket.close()


def open_output(path: Path) -> AtomicFile | StreamTarget:
    """The writer for an output path: atomic for files, in place for devices, FIFOs and sockets."""
    return StreamTarget(path) if is_stream_target(path) else AtomicFile(path)


class AtomicFile:
    seekable = True

    def __init__(self, path: Path) -> None:
        try:
            # Through a symlink, replace the file it points to and keep the link.
            path = Path(os.path.realpath(path)) if path.is_symlink() else path
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or Path("."))
        except OSError as exc:
            raise output_error(path, exc) from None
        self.path = path
        self.tmp_path = Path(tmp)
        self.handle: BinaryIO = os.fdopen(fd, "w+b")

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as exc:
            self.abort()
            raise output_error(self.path, exc) from None

    def commit(self, target: Path | None = None) -> None:
        """Move the finished file to its name (or to `target`: a partial result's name)."""
        target = target or self.path
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.chmod(self.tmp_path, 0o644 & ~_umask())
            os.replace(self.tmp_path, target)
        except OSError as exc:
            self.abort()
            raise output_error(target, exc) from None

    def abort(self) -> None:
        if not self.handle.closed:
            # Closing flushes the buffer, which fails again on a full disk: the file goes anyway.
            with contextlib.suppress(OSError):
                self.handle.close()
        self.tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    """Write a whole file at once: atomically, or in place for a device, FIFO or socket."""
    out = open_output(path)
    out.write(data)
    out.commit()
