"""Persistent local store for custom voices and pronunciation dictionaries.

One JSON file per collection under the server's data dir, replaced atomically
on every change, plus the uploaded voice samples. A lock serialises writers:
the ASGI app calls in from one event loop but request handlers interleave.

No request ever names a path here: a sample's file name is a server-generated
uid plus an extension from `SAMPLE_EXTENSIONS`, both checked again on every
write and delete, so no field of a request can reach outside the data dir.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import string
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

UID_ALPHABET = string.ascii_letters + string.digits + "_-"
UID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16}")
LOCAL_ORG_UID = "00000000-0000-4000-8000-000000000001"
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


class Collection:
    """A uid → record mapping kept in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._records = json.loads(path.read_text("utf-8"))

    def all(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._records.values()]

    def count(self) -> int:
        with self._lock:
            return len(self._records)

    def get(self, uid: str) -> dict[str, Any] | None:
        with self._lock:
            record = self._records.get(uid)
            return dict(record) if record is not None else None

    def put(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._records[record["uid"]] = record
            self._save()
            return dict(record)

    def delete(self, uid: str) -> bool:
        with self._lock:
            if self._records.pop(uid, None) is None:
                return False
            self._save()
            return True

    def _save(self) -> None:
        data = json.dumps(self._records, indent=1, ensure_ascii=False).encode("utf-8")
        atomic_write_bytes(self.path, data)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.voices = Collection(root / "voices.json")
        self.dictionaries = Collection(root / "pronunciations.json")
        self.samples_dir = root / "voice-samples"
        # Uploads arrive here while they are read (server/uploads.py), then move into samples_dir.
        self.uploads_dir = root / "uploads"
        if self.uploads_dir.is_dir():
            for leftover in self.uploads_dir.glob(".upload-*"):  # from a server that was killed
                leftover.unlink(missing_ok=True)

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
