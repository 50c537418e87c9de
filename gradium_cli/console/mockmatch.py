"""The rule by which `gradium ws-raw --mock` decides that a client follows a recording.

Pure: no I/O. A `Follower` walks one recorded connection: `due()` gives the
recorded server events that may go now, `feed()` takes each client frame and
says how it departs from the recording (or None). What varies between two runs
of a client, or between two clients, is not compared:

- JSON is compared parsed: key order, spacing and ASCII escapes do not matter.
- `client_req_id` is never compared; the recorded server frames get the
  client's own id in its place.
- `setup`: every other field must equal, `json_config` compared as the object it
  holds (a string or an object), a missing `model_name` counting as "default".
- `text`: the text of consecutive text frames is compared as one string with
  all whitespace removed, so a client may split it into any frames (one frame,
  sentences, words). Recorded server frames that came after the first N
  characters of text go once the client has sent those N characters.
- `end_of_stream` and other types: the type, and every field but client_req_id.
- Binary frames: byte for byte.

The first client frame that breaks the rule gets an explanation naming the
frame's number and where it differs.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

EXCERPT = 40  # characters of text quoted around a difference


def _squeeze(text: str) -> str:
    return "".join(text.split())


def _time(event: dict[str, Any], default: float) -> float:
    t = event.get("t")
    return float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) else default


def _load(frame: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(frame)
    except (json.JSONDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _kind(obj: dict[str, Any] | None, binary: bool) -> str:
    if binary:
        return "binary frame"
    if obj is None:
        return "non-JSON frame"
    return str(obj.get("type"))


def _is_text(obj: dict[str, Any] | None) -> bool:
    return obj is not None and obj.get("type") == "text" and isinstance(obj.get("text"), str)


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The fields of a client frame that count (see the module docstring)."""
    out = {k: v for k, v in obj.items() if k != "client_req_id"}
    if out.get("type") == "setup":
        out.setdefault("model_name", "default")
        config = out.get("json_config")
        if isinstance(config, str):
            loaded = _load(config)
            out["json_config"] = loaded if loaded is not None else config
    return out


def _excerpt(text: str, at: int) -> str:
    start = max(0, at - 10)
    piece = text[start : start + EXCERPT]
    return ("…" if start else "") + piece + ("…" if start + EXCERPT < len(text) else "")


@dataclass
class Follower:
    """One recorded connection played against one client."""

    events: list[dict[str, Any]]
    pos: int = 0
    frames: int = 0  # client frames seen
    text: str = ""  # the client's text in the current run of text frames, whitespace removed
    ids: dict[str, str] = field(default_factory=dict)  # recorded client_req_id -> the client's
    matched_t: float = 0.0  # recorded time of the last client frame followed
    _run_totals: dict[int, tuple[int, str]] = field(default_factory=dict)  # event -> (chars through it, run)

    def __post_init__(self) -> None:
        self.events = [e for e in self.events if e.get("event") in ("send", "recv", "close")]
        run: tuple[int, str] | None = None  # (characters so far, the whole run's text)
        for index, event in enumerate(self.events):
            if event["event"] != "send":
                continue
            obj = _load(event["frame"]) if "frame" in event else None
            if not _is_text(obj):
                run = None
                continue
            assert obj is not None
            through, total = run if run is not None else (0, self._run_text(index))
            run = (through + len(_squeeze(obj["text"])), total)
            self._run_totals[index] = run

    def _run_text(self, start: int) -> str:
        texts = []
        for event in self.events[start:]:
            if event["event"] != "send":
                continue
            obj = _load(event.get("frame", ""))
            if not _is_text(obj):
                break
            assert obj is not None
            texts.append(obj["text"])
        return _squeeze("".join(texts))

    # ------------------------------------------------------------------ playing

    @property
    def finished(self) -> bool:
        return self.pos >= len(self.events)

    def expects_client_close(self) -> bool:
        return (
            not self.finished
            and self.events[self.pos]["event"] == "close"
            and self.events[self.pos].get("by") == "client"
        )

    def due(self) -> list[tuple[dict[str, Any], float]]:
        """Recorded server events (frames, and its close) that may go now, in order, each with the
        recorded time of the client frame it follows (for original timing)."""
        out = []
        while not self.finished:
            event = self.events[self.pos]
            if event["event"] == "recv" or (event["event"] == "close" and event.get("by") != "client"):
                out.append((self._for_client(event), self.matched_t))
                self.pos += 1
            elif (
                event["event"] == "send"
                and self.pos in self._run_totals
                and self._run_totals[self.pos][0] <= len(self.text)
            ):
                self.matched_t = _time(event, self.matched_t)
                self.pos += 1  # text the client has already sent (maybe in a bigger frame)
            else:
                break
        return out

    def _for_client(self, event: dict[str, Any]) -> dict[str, Any]:
        """A recorded server event with the client's client_req_id in place of the recorded one."""
        if "frame" not in event or not self.ids:
            return event
        obj = _load(event["frame"])
        req = obj.get("client_req_id") if obj is not None else None
        if obj is None or not isinstance(req, str) or self.ids.get(req, req) == req:
            return event
        return {**event, "frame": json.dumps({**obj, "client_req_id": self.ids[req]}, ensure_ascii=False)}

    def feed(self, frame: str | bytes) -> str | None:
        """Take one client frame; the departure, said for people, or None when it follows the recording."""
        self.frames += 1
        where = f"client frame #{self.frames}"
        binary = isinstance(frame, bytes)
        obj = None if isinstance(frame, bytes) else _load(frame)
        got = _kind(obj, binary)
        if self.finished or self.events[self.pos]["event"] != "send":
            return f"{where} ({got}) comes after the recording's last client frame"
        expected = self.events[self.pos]
        want_binary = "binary" in expected
        want_obj = None if want_binary else _load(expected.get("frame", ""))
        want = _kind(want_obj, want_binary)
        if _is_text(obj) and self.pos in self._run_totals:
            assert obj is not None
            return self._feed_text(where, obj["text"])
        if self.pos in self._run_totals:
            rest = self._run_totals[self.pos][1][len(self.text) :]
            return f"{where} is {got}, but the recorded text goes on: '{_excerpt(rest, 0)}' (whitespace ignored)"
        if want != got:
            return f"{where} is {got}; the recording has {want} here"
        if want_binary:
            if isinstance(frame, bytes) and base64.b64decode(expected["binary"]) != frame:
                return f"{where}: binary frame of {len(frame)} B differs from the recorded one"
        elif want_obj is None or obj is None:
            if frame != expected.get("frame"):
                return f"{where}: non-JSON frame differs from the recorded one"
        else:
            mine, theirs = _comparable(obj), _comparable(want_obj)
            if mine != theirs:
                return f"{where} ({got}) differs from the recording: {_field_diff(theirs, mine)}"
            recorded_id, client_id = want_obj.get("client_req_id"), obj.get("client_req_id")
            if isinstance(recorded_id, str) and isinstance(client_id, str):
                self.ids[recorded_id] = client_id
        self.matched_t = _time(expected, self.matched_t)
        self.pos += 1
        self.text = ""
        return None

    def _feed_text(self, where: str, text: str) -> str | None:
        total = self._run_totals[self.pos][1]
        joined = self.text + _squeeze(text)
        if not total.startswith(joined):
            at = next((i for i, (a, b) in enumerate(zip(joined, total, strict=False)) if a != b), len(total))
            if at >= len(total):
                return f"{where}: text goes on past the recorded text ('{_excerpt(joined, at)}' after it)"
            return (
                f"{where}: text differs at character {at + 1} (whitespace ignored): "
                f"recorded '{_excerpt(total, at)}', got '{_excerpt(joined, at)}'"
            )
        self.text = joined
        return None


def _field_diff(want: dict[str, Any], got: dict[str, Any]) -> str:
    def shown(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    parts = []
    for key in sorted(set(want) | set(got)):
        if key not in got:
            parts.append(f"{key} missing (recorded {shown(want[key])})")
        elif key not in want:
            parts.append(f"{key} not in the recording (got {shown(got[key])})")
        elif want[key] != got[key]:
            parts.append(f"{key} {shown(got[key])}, recorded {shown(want[key])}")
    return "; ".join(parts)
