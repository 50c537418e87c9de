"""Atomic output files: written to a temp file beside the target, renamed on success.

A failed, interrupted or killed run never leaves a half file under the real
name: at worst a `.NAME.*.part` temp file, removed on any handled failure.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from gradium_cli.errors import OutputError


def output_error(path: Path, exc: OSError) -> OutputError:
    if exc.errno == errno.ENOSPC:
        return OutputError(f"disk full while writing {path}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(f"cannot write {path}: permission denied")
    if exc.errno == errno.ENOENT:
        return OutputError(f"cannot write {path}: directory does not exist")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


class AtomicFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or Path("."))
        except OSError as exc:
            raise output_error(path, exc) from None
        self.tmp_path = Path(tmp)
        self.handle: BinaryIO = os.fdopen(fd, "w+b")

    def write(self, data: bytes) -> None:
        try:
            self.handle.write(data)
        except OSError as exc:
            self.abort()
            raise output_error(self.path, exc) from None

    def commit(self) -> None:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.chmod(self.tmp_path, 0o644 & ~_umask())
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            self.abort()
            raise output_error(self.path, exc) from None

    def abort(self) -> None:
        if not self.handle.closed:
            self.handle.close()
        self.tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes) -> None:
    out = AtomicFile(path)
    out.write(data)
    out.commit()
