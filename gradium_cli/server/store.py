"""Persistent local store for custom voices and pronunciation dictionaries.

One JSON file per collection under the server's data dir, replaced atomically
on every change, plus the uploaded voice samples. Locks serialise writers: the
threads of a process, and the processes that share the data dir (`Collection`).

No request ever names a path here: a sample's file name is a server-generated
uid plus an extension from `SAMPLE_EXTENSIONS`, both checked again on every
write and delete, so no field of a request can reach outside the data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import stat
import string
import tempfile
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

UID_ALPHABET = string.ascii_letters + string.digits + "_-"
UID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16}")
LOCAL_ORG_UID = "00000000-0000-4000-8000-000000000001"
# The collections in the data dir.
VOICES_FILE = "voices.json"
DICTIONARIES_FILE = "pronunciations.json"
DRAFTS_FILE = "voice-drafts.json"  # the voice designer's drafts (server/drafts.py)
# The containers a stored voice sample may have, as file extensions.
SAMPLE_EXTENSIONS = ("wav", "flac", "ogg", "mp3", "aiff")


def new_uid() -> str:
    """16 characters of [A-Za-z0-9_-], the shape of the service's ids (§8)."""
    return "".join(secrets.choice(UID_ALPHABET) for _ in range(16))


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CorruptStore(ValueError):
    """A collection's file is not what the store writes (edited by hand, cut short)."""


class Collection:
    """A uid → record mapping kept in one JSON file, which several processes may share.

    `gradium serve --workers N` runs N server processes, and offline commands (the
    built-in engine's processes) use the same data dir: a change made by one must be
    seen by the others at once, and two changes at once must not lose either. So
    every read first checks whether the file was replaced since it was loaded (the
    file is only ever replaced, never written in place: it is a new inode, and the
    one loaded cannot be reused while it is held open here), and every change is
    made under a record lock on a lock file beside it, on the records read again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Reentrant: a change (put, delete) within `exclusive()` is made under the locks it holds.
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, Any]] = {}
        self._loaded: IO[bytes] | None = None  # the file the records were read from, held open
        self._lock_file: IO[bytes] | None = None  # open while this process holds the lock file's lock
        with self._lock:
            self._refresh()

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            self._refresh()
            return [dict(r) for r in self._records.values()]

    def count(self) -> int:
        with self._lock:
            self._refresh()
            return len(self._records)

    def get(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            self._refresh()
            record = self._records.get(uid)
            return dict(record) if record is not None else None

    def put(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._changing():
            self._records[record["uid"]] = record
            self._save()
            return dict(record)

    def delete(self, uid: str) -> bool:
        with self._changing():
            if self._records.pop(uid, None) is None:
                return False
            self._save()
            return True

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """No other thread or process changes the collection meanwhile: for a check and the
        change it allows (a name not taken, a quota, a draft not promoted yet). In one process
        a check and a put with no await between were enough; the server's processes share the
        file, so without this two of them could both pass the check and both put."""
        return self._changing()

    @contextlib.contextmanager
    def _changing(self) -> Iterator[None]:
        """Hold this process's lock and the lock file's, with the records as they are now."""
        with self._lock:
            if self._lock_file is not None:  # within exclusive(), in this thread: held already
                self._refresh()
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # A record lock is the process's, not a descriptor's: it is taken once per process
            # (closing any descriptor of the file would drop it), hence the check above.
            with open(self.path.with_name(f".{self.path.name}.lock"), "ab") as lock:
                fcntl.lockf(lock, fcntl.LOCK_EX)  # released when closed, or when this process dies
                self._lock_file = lock
                try:
                    self._refresh()
                    yield
                finally:
                    self._lock_file = None

    def _refresh(self) -> None:
        """Read the file again if it was replaced (or removed) since it was loaded."""
        try:
            current = os.stat(self.path)
            if self._loaded is not None and os.fstat(self._loaded.fileno()).st_ino == current.st_ino:
                return
            self._forget()
            handle = open(self.path, "rb")  # noqa: SIM115 (held until the file is replaced)
            try:
                self._records = _parse_records(self.path, handle.read())
            except BaseException:
                handle.close()
                raise
            self._hold(handle)
        except FileNotFoundError:
            self._forget()
        except OSError as exc:  # a directory in its place, no permission: one line, not a traceback
            raise CorruptStore(f"{self.path} cannot be read ({exc.strerror}); fix or move it away") from None

    def _hold(self, handle: IO[bytes]) -> None:
        """Keep `handle` (the file the records were read from or written to) open, in place of the last."""
        if self._loaded is not None:
            self._loaded.close()
        self._loaded = handle

    def _forget(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None
        self._records = {}

    def _save(self) -> None:
        data = json.dumps(self._records, indent=1, ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.path, data)
        # The file just written (under the lock: nobody replaced it since), so that the next
        # replacement is seen; the records are what was written.
        self._hold(open(self.path, "rb"))  # noqa: SIM115 (held until the file is replaced)


def _parse_records(path: Path, data: bytes) -> dict[str, dict[str, Any]]:
    """A collection file's records; CorruptStore, in one sentence naming it, when it is not
    what the store writes."""
    try:
        records = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptStore(f"{path} is not valid JSON ({exc}); fix or move it away") from None
    # Every record is used as a dict (dict(record), record["uid"]): a file whose records are not
    # objects would fail each request that lists the collection, with a traceback, not the start.
    if not isinstance(records, dict) or not all(isinstance(record, dict) for record in records.values()):
        raise CorruptStore(f"{path} does not hold an object of records; fix or move it away")
    return records


def check_data_dir(data_dir: Path) -> None:
    """Raise CorruptStore when a collection in the data dir cannot be read; changes nothing.
    `serve` checks before its processes start (one line, not one per process), and a client
    whose built-in engine died as it started checks why."""
    for name in (VOICES_FILE, DICTIONARIES_FILE, DRAFTS_FILE):
        Collection(data_dir / name)


def remove_dead_uploads(uploads_dir: Path) -> None:
    """Remove the spool files of uploads whose process died mid-way: those nobody holds a
    lock on (server/uploads.py locks each while its form is read and handled). Another
    process on the same data dir may be receiving one right now."""
    if not uploads_dir.is_dir():
        return
    for leftover in uploads_dir.glob(".upload-*"):
        try:
            # O_NONBLOCK: a FIFO by that name would otherwise hold the server's start for good.
            fd = os.open(leftover, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue  # gone meanwhile, or not a file of ours
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            continue  # not a spool file: none of ours to remove
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Removed while locked: a writer that created it just now sees, once it has the
            # lock, that the path is no longer its file, and makes another.
            leftover.unlink(missing_ok=True)
        except BlockingIOError:
            pass  # an upload in progress
        finally:
            os.close(fd)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.voices = Collection(root / VOICES_FILE)
        self.dictionaries = Collection(root / DICTIONARIES_FILE)
        self.samples_dir = root / "voice-samples"
        # Uploads arrive here while they are read (server/uploads.py), then move into samples_dir.
        self.uploads_dir = root / "uploads"
        remove_dead_uploads(self.uploads_dir)

    def sample_path(self, uid: str, extension: str) -> Path:
        """Where the sample of voice `uid` lives; refuses anything but a uid and an allowed extension."""
        if not UID_PATTERN.fullmatch(uid) or extension not in SAMPLE_EXTENSIONS:
            raise ValueError(f"not a stored sample name: {uid!r}.{extension!r}")
        return self.samples_dir / f"{uid}.{extension}"

    def keep_sample(self, uid: str, extension: str, upload: Path) -> Path:
        """Move an upload (a file in uploads_dir) into place as voice `uid`'s sample."""
        if upload.parent != self.uploads_dir:
            raise ValueError(f"not an upload: {upload}")
        path = self.sample_path(uid, extension)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload, path)
        return path

    def delete_sample(self, uid: str) -> None:
        """Remove voice `uid`'s sample, whatever its container.

        The path is rebuilt from the uid, never read from the record: records written
        before names were checked may hold a path outside the data dir.
        """
        if not UID_PATTERN.fullmatch(uid):
            return
        for extension in SAMPLE_EXTENSIONS:
            self.sample_path(uid, extension).unlink(missing_ok=True)
