"""Session transcripts for `gradium ws-raw --record` / `--replay`, and the diff of replies.

A recording is JSON Lines: one `start` record (URL and headers, secrets
masked: the API key is never written), then one record per event with `t`,
seconds since the connection opened:

    {"event": "send", "t": 0.0012, "frame": "{\\"type\\":\\"setup\\"}"}
    {"event": "recv", "t": 0.0101, "frame": "{\\"type\\":\\"ready\\", ...}"}
    {"event": "close", "t": 1.2, "code": 1000, "reason": "", "by": "server"}

Frames are kept as the exact strings that crossed the wire, so a replay sends
the same bytes. A proxy recording adds `conn` (1, 2, ...) to each record.
"""

from __future__ import annotations

import base64
import datetime
import difflib
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from gradium_cli.audio.atomic import output_error
from gradium_cli.errors import OutputError, UsageError
from gradium_cli.ui.wirelog import summarise_frame

FORMAT_VERSION = 1
DEFAULT_IGNORED = ("request_id",)


def event_record(
    event: str, t: float, frame: str | bytes | None = None, conn: int | None = None, **fields: Any
) -> dict[str, Any]:
    record: dict[str, Any] = {"event": event, "t": round(t, 6)}
    if conn is not None:
        record["conn"] = conn
    if isinstance(frame, bytes):
        record["binary"] = base64.b64encode(frame).decode("ascii")
    elif frame is not None:
        record["frame"] = frame
    record.update(fields)
    return record


class Recorder:
    """Appends records as they happen, flushed per line, so an interrupted session keeps its transcript."""

    def __init__(self, path: Path, force: bool = False) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o644)
        except FileExistsError:
            raise OutputError(f"{path} exists", hint="use --force to replace it") from None
        except OSError as exc:
            raise output_error(path, exc) from None
        self.handle: IO[str] = os.fdopen(fd, "w", encoding="utf-8")

    def start(self, url: str, headers: dict[str, str], conn: int | None = None, **fields: Any) -> None:
        """The session's first record; `headers` must already be masked."""
        record: dict[str, Any] = {"event": "start", "version": FORMAT_VERSION}
        if conn is not None:
            record["conn"] = conn
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
        record.update(url=url, headers=headers, time=now, **fields)
        self._write(record)

    def event(
        self, event: str, t: float, frame: str | bytes | None = None, conn: int | None = None, **fields: Any
    ) -> None:
        self._write(event_record(event, t, frame, conn, **fields))

    def _write(self, record: dict[str, Any]) -> None:
        try:
            self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self.handle.flush()
        except OSError as exc:
            raise output_error(self.path, exc) from None

    def close(self) -> None:
        self.handle.close()


# ---------------------------------------------------------------------- reading


@dataclass
class Session:
    """One connection of a recording."""

    start: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def replies(self) -> list[str]:
        """What the server said: its frames, then how the connection closed."""
        return replies_of(self.events)


def replies_of(events: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for event in events:
        if event["event"] == "recv":
            out.append(event["frame"] if "frame" in event else "binary:" + event.get("binary", ""))
        elif event["event"] == "close":
            out.append(close_marker(event.get("code"), event.get("by")))
    return out


def close_marker(code: int | None, by: str | None) -> str:
    return f"close {code} by the {by}" if by else f"connection lost ({code})"


MAX_RECORDED_S = 86400  # a day: no real session is longer


def load_recording(path: Path) -> list[Session]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not a ws-raw recording (not UTF-8)") from None
    sessions: dict[int | None, Session] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            raise UsageError(f"{path} line {number} is not JSON: not a ws-raw recording") from None
        if not isinstance(record, dict) or not isinstance(record.get("event"), str):
            raise UsageError(f"{path} line {number} has no event: not a ws-raw recording")
        conn = record.get("conn")
        if record["event"] == "start":
            sessions[conn] = Session(record)
            continue
        if conn not in sessions:
            raise UsageError(f"{path} line {number}: event before the start record")
        t = record.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            raise UsageError(f"{path} line {number}: missing time 't'")
        # A replay waits until each event's time: a NaN or a year would hang it.
        if not math.isfinite(t) or not 0 <= t <= MAX_RECORDED_S:
            raise UsageError(f"{path} line {number}: time 't' must be 0 to {MAX_RECORDED_S} seconds, not {t}")
        sessions[conn].events.append(record)
    if not sessions:
        raise UsageError(f"{path} is empty: not a ws-raw recording")
    return list(sessions.values())


# ---------------------------------------------------------------------- diff

# What varies between two runs of the same session on a sampling model: the
# request id, the audio samples, the timings, and so the number of audio frames.
# Strict comparison keeps all of it but the request id (for deterministic servers).
LOOSE_IGNORED = ("audio", "start_s", "stop_s")


def normalise(reply: str, ignore: tuple[str, ...] | list[str]) -> str:
    """A reply for comparison: ignored fields dropped, keys sorted, audio as size and digest."""
    try:
        obj = json.loads(reply)
    except (json.JSONDecodeError, RecursionError):
        return reply
    if not isinstance(obj, dict):
        return reply
    obj = {k: v for k, v in obj.items() if k not in ignore}
    if isinstance(obj.get("audio"), str):
        payload = obj["audio"].encode("ascii", "replace")
        obj["audio"] = f"{len(obj['audio'])} chars sha256:{hashlib.sha256(payload).hexdigest()[:16]}"
    return json.dumps(obj, sort_keys=True, ensure_ascii=False)


@dataclass(frozen=True)
class _Entry:
    key: str
    first: int
    count: int


def _entries(replies: list[str], ignore: tuple[str, ...] | list[str], collapse: bool) -> list[_Entry]:
    entries: list[_Entry] = []
    for index, reply in enumerate(replies):
        key = normalise(reply, ignore)
        if collapse and entries and entries[-1].key == key:
            entries[-1] = _Entry(key, entries[-1].first, entries[-1].count + 1)
        else:
            entries.append(_Entry(key, index, 1))
    return entries


def _describe(sign: str, entry: _Entry, replies: list[str]) -> str:
    reply = replies[entry.first]
    summary = reply if reply.startswith(("close ", "connection lost")) else summarise_frame(reply)
    if entry.count == 1:
        return f"{sign} #{entry.first + 1} {summary}"
    return f"{sign} #{entry.first + 1}-#{entry.first + entry.count} {summary} (×{entry.count})"


def ignored_fields(ignore: tuple[str, ...] | list[str], strict: bool) -> list[str]:
    fields = [*DEFAULT_IGNORED, *ignore] if strict else [*DEFAULT_IGNORED, *LOOSE_IGNORED, *ignore]
    return list(dict.fromkeys(fields))


def diff_replies(
    recorded: list[str],
    replayed: list[str],
    ignore: tuple[str, ...] | list[str] = (),
    strict: bool = False,
    limit: int = 20,
) -> list[str]:
    """Lines describing how the replies differ (`-` recorded only, `+` replayed only); empty when equal.

    Loose (default): request_id, audio bytes and timings are ignored, and a run of
    equal frames (the audio frames between two words) counts as one. Strict:
    every frame is compared, only request_id (and `ignore`) left out.
    """
    fields = ignored_fields(ignore, strict)
    a = _entries(recorded, fields, collapse=not strict)
    b = _entries(replayed, fields, collapse=not strict)
    lines: list[str] = []
    matcher = difflib.SequenceMatcher(None, [e.key for e in a], [e.key for e in b], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        lines += [_describe("-", entry, recorded) for entry in a[i1:i2]]
        lines += [_describe("+", entry, replayed) for entry in b[j1:j2]]
    if len(lines) > limit:
        lines = [*lines[:limit], f"… and {len(lines) - limit} more"]
    return lines
