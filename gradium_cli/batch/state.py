"""What a batch has finished: the `.gradium-batch.jsonl` state file beside the outputs.

Append-only, one JSON line per finished item, each written with one write() on
an O_APPEND descriptor and fsync'd, and only after the item's files were
renamed into place (gradium_cli/audio/atomic.py). An item is done when its
line is there, the line's key matches the row (same text, voice, settings and
format), and its files still have the recorded size and SHA-256. A run killed
at any point therefore loses at most the items in flight: a file renamed but
not yet recorded is made again, a temp file is never mistaken for an output,
and a line cut short by a crash is ignored. Later lines win, so `--force` runs
simply append.

A shard (`--shard I/N`) appends to its own `.gradium-batch.shard-I-of-N.jsonl`,
so shards sharing a directory (even over NFS, where O_APPEND is not atomic
between clients) never write the same file; every run reads all of them, so
a set made with one sharding resumes under any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from gradium_cli.audio.atomic import output_error
from gradium_cli.batch.manifest import STATE_GLOB, STATE_NAME, Item, Shard

PART_SUFFIX = ".part"  # AtomicFile's temp files: .NAME.RANDOM.part


class Record(NamedTuple):
    key: str
    size: int
    sha256: str
    audio_s: float
    timestamps_size: int | None
    timestamps_sha256: str | None
    flags: tuple[dict[str, Any], ...] = ()  # what the quality checks found (--redo-flagged redoes these)


def file_digest(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            size += len(block)
            digest.update(block)
    return size, digest.hexdigest()


def _matches(path: Path | None, size: int | None, sha256: str | None) -> bool:
    if path is None:
        return size is None
    try:
        if size is None or path.stat().st_size != size:
            return False
        return file_digest(path) == (size, sha256)
    except OSError:
        return False


def _record(obj: Any) -> tuple[str, Record] | None:
    if not isinstance(obj, dict):
        return None
    try:
        ts_size = obj.get("timestamps_size")
        return str(obj["output"]), Record(
            key=str(obj["key"]),
            size=int(obj["size"]),
            sha256=str(obj["sha256"]),
            audio_s=float(obj.get("audio_s") or 0.0),
            timestamps_size=None if ts_size is None else int(ts_size),
            timestamps_sha256=obj.get("timestamps_sha256"),
            flags=tuple(flag for flag in obj.get("flags") or () if _well_formed_flag(flag)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _well_formed_flag(flag: Any) -> bool:
    """A quality flag as the checks write it (quality.Flag): one edited by hand without its
    reason, value or limit made the end of a later run's report a traceback. It is ignored."""
    if not isinstance(flag, dict) or not isinstance(flag.get("reason"), str):
        return False
    return all(
        isinstance(flag.get(key), int | float) and not isinstance(flag.get(key), bool) for key in ("value", "limit")
    )


class StateFile:
    def __init__(self, out_dir: Path, shard: Shard | None = None) -> None:
        self.out_dir = out_dir
        if shard is None or shard.count == 1:
            self.path = out_dir / STATE_NAME
        else:
            self.path = out_dir / f".gradium-batch.shard-{shard.index}-of-{shard.count}.jsonl"
        self.records: dict[str, Record] = {}
        self._fd: int | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        """Create the output directory, read what earlier runs finished, open for appending."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.load()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # A crash mid-line must not glue that fragment onto our first record.
            if os.fstat(self._fd).st_size and not self._ends_with_newline():
                os.write(self._fd, b"\n")
        except OSError as exc:
            raise output_error(self.path, exc) from None

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def load(self) -> None:
        """Every state file in the directory, any shard's, oldest first so that newer lines win."""
        for path in sorted(self.out_dir.glob(STATE_GLOB), key=lambda p: p.stat().st_mtime_ns):
            with path.open("rb") as handle:
                for raw in handle:
                    try:
                        parsed = _record(json.loads(raw))
                    except ValueError:
                        continue  # a line cut short by a crash: that item is simply made again
                    if parsed is not None:
                        self.records[parsed[0]] = parsed[1]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def lookup(self, item: Item) -> Record | None:
        """The record that vouches for this very row, if any (not yet checked against the files)."""
        record = self.records.get(item.state_name)
        return record if record is not None and record.key == item.key else None

    def verify(self, item: Item, record: Record) -> bool:
        """The item's files are still exactly what was recorded (blocking: reads them)."""
        return _matches(item.output, record.size, record.sha256) and _matches(
            item.timestamps, record.timestamps_size, record.timestamps_sha256
        )

    def add(self, item: Item, audio_s: float, request_id: Any, flags: list[dict[str, Any]] | None = None) -> Record:
        """Record a finished item: its files are in place. Blocking (fsync); thread-safe."""
        size, sha256 = file_digest(item.output)
        ts_size, ts_sha256 = file_digest(item.timestamps) if item.timestamps else (None, None)
        record = Record(item.key, size, sha256, round(audio_s, 3), ts_size, ts_sha256, tuple(flags or ()))
        line = {
            "output": item.state_name,
            "key": item.key,
            "size": size,
            "sha256": sha256,
            "audio_s": record.audio_s,
            "timestamps_size": ts_size,
            "timestamps_sha256": ts_sha256,
            "index": item.index,
            "line": item.line,
            "request_id": request_id,
            "at": round(time.time(), 3),
        }
        if flags:
            line["flags"] = flags
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        assert self._fd is not None, "state file not open"
        with self._lock:
            try:
                os.write(self._fd, data)
                os.fsync(self._fd)
            except OSError as exc:
                raise output_error(self.path, exc) from None
        return record  # not kept in `records`: each item is looked up once, before it is made


class StaleParts:
    """Temp files a killed run left beside the outputs, removed as their items come up.

    Each directory is listed once, when the first item in it comes up and
    before this run has started writing there, so only leftovers are found.
    Only the names of this run's own items are cleaned: another shard's
    temp files in a shared directory are never touched.
    """

    def __init__(self) -> None:
        self._dirs: dict[Path, dict[str, list[Path]]] = {}

    def _index(self, directory: Path) -> dict[str, list[Path]]:
        index = self._dirs.get(directory)
        if index is None:
            index = {}
            with contextlib.suppress(OSError), os.scandir(directory) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") and name.endswith(PART_SUFFIX):
                        target = name[1 : -len(PART_SUFFIX)].rpartition(".")[0]
                        if target:
                            index.setdefault(target, []).append(Path(entry.path))
            self._dirs[directory] = index
        return index

    def remove_for(self, *paths: Path | None) -> None:
        for path in paths:
            if path is None:
                continue
            for stale in self._index(path.parent).pop(path.name, []):
                with contextlib.suppress(OSError):
                    stale.unlink()
