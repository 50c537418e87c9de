"""How `gradium ws-raw` shows frames: one line each, arrow, relative time, colour by type.

`→` is a frame sent, `←` one received, `!` a warning, `·` a note, `×` a close.
Audio is summarised (`audio 7680 B (80 ms) seq 12 +0.96 s`), word timestamps
show the word and its span, errors are red with their code. Everything that
came from the peer passes `escape_control` first: a hostile server cannot drive
the terminal. The line texts come from pure functions, so tests read them
without a terminal.
"""

from __future__ import annotations

import json
from typing import Any

from gradium_cli.console.recorder import event_record
from gradium_cli.protocol.audio_base64 import decoded_size
from gradium_cli.ui.env import Env
from gradium_cli.ui.wirelog import escape_control, summarise_frame

SENT, RECEIVED, NOTE, WARNING, CLOSED = "→", "←", "·", "!", "×"

STYLES = {
    "setup": "cyan",
    "ready": "bold green",
    "audio": "blue",
    "end_of_stream": "magenta",
    "error": "bold red",
    "need_more_text": "yellow",
}
SENT_TEXT_STYLE = "bold"
RECEIVED_TEXT_STYLE = "green"


def _load(frame: str | bytes) -> dict[str, Any] | None:
    if isinstance(frame, bytes):
        return None
    try:
        obj = json.loads(frame)
    except (json.JSONDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) and isinstance(obj.get("type"), str) else None


def _rest(obj: dict[str, Any]) -> str:
    rest = {k: v for k, v in obj.items() if k != "type"}
    return " " + json.dumps(rest, ensure_ascii=False, separators=(",", ":")) if rest else ""


def _req(obj: dict[str, Any]) -> str:
    return f" [{obj['client_req_id']}]" if obj.get("client_req_id") else ""


HEX_SHOWN = 16  # bytes of a binary frame shown in hex


def describe_binary(frame: bytes) -> str:
    """`binary 9 B: 00 01 02 …`: the length, then the first bytes in hex."""
    more = " …" if len(frame) > HEX_SHOWN else ""
    return f"binary {len(frame)} B" + (f": {frame[:HEX_SHOWN].hex(' ')}{more}" if frame else "")


def describe_sent(frame: str | bytes) -> tuple[str, str]:
    """(line text, style) for a frame sent."""
    if isinstance(frame, bytes):
        return describe_binary(frame), "yellow"
    obj = _load(frame)
    if obj is None:
        return summarise_frame(frame), "yellow"
    kind = obj["type"]
    if kind == "text" and isinstance(obj.get("text"), str) and set(obj) <= {"type", "text", "client_req_id"}:
        return escape_control(f"text {obj['text']!r}{_req(obj)}"), SENT_TEXT_STYLE
    if kind == "end_of_stream" and set(obj) <= {"type", "client_req_id"}:
        return escape_control(f"end_of_stream{_req(obj)}"), STYLES[kind]
    return escape_control(f"{kind}{_rest(obj)}"), STYLES.get(kind, "")


def describe_received(frame: str | bytes, output_format: str | None = None, seq: int | None = None) -> tuple[str, str]:
    """(line text, style) for a frame received; `seq` numbers audio frames within a request."""
    if isinstance(frame, bytes):
        return describe_binary(frame), "yellow"
    obj = _load(frame)
    if obj is None:
        return summarise_frame(frame), "yellow"
    kind = obj["type"]
    if kind == "audio":
        return summarise_frame(frame, output_format, seq), STYLES[kind]
    if kind == "text" and "start_s" in obj:
        return summarise_frame(frame), RECEIVED_TEXT_STYLE
    if kind == "error":
        code = obj.get("code")
        rest = {k: v for k, v in obj.items() if k not in ("type", "code", "message", "client_req_id")}
        extra = " " + json.dumps(rest, ensure_ascii=False) if rest else ""
        text = f"error{'' if code is None else f' {code}'}: {obj.get('message')}{_req(obj)}{extra}"
        return escape_control(text), STYLES[kind]
    if kind == "end_of_stream" and set(obj) <= {"type", "client_req_id"}:
        return escape_control(f"end_of_stream{_req(obj)}"), STYLES[kind]
    return escape_control(f"{kind}{_rest(obj)}"), STYLES.get(kind, "yellow")


def pretty(frame: str | bytes) -> str:
    """The whole frame as indented JSON, the audio payload replaced by its size."""
    obj = _load(frame)
    if obj is None:
        return summarise_frame(frame)
    if obj.get("type") == "audio" and isinstance(obj.get("audio"), str):
        size = decoded_size(obj["audio"])
        obj = {**obj, "audio": f"<{size} bytes, base64>"}
    # Split on "\n" only: json.dumps leaves U+2028 and U+0085 raw, and escape_control must see them.
    return "\n".join(escape_control(row) for row in json.dumps(obj, ensure_ascii=False, indent=2).split("\n"))


def close_text(code: int | None, reason: str, by: str | None) -> str:
    why = f" {reason!r}" if reason else ""
    if by is None:
        return f"connection lost ({code or 1006}){why}"
    return f"closed {code}{why} by the {by}"


class Display:
    """Prints lines to stdout: rich on a terminal, plain text in a pipe, JSON lines with --json."""

    def __init__(self, env: Env, pretty: bool = False, json_lines: bool = False) -> None:
        from rich.console import Console

        self.env = env
        self.pretty = pretty
        self.json_lines = json_lines
        # file=None: rich writes to whatever sys.stdout is now, so output keeps
        # flowing above the prompt while prompt-toolkit's patch_stdout is active.
        self.console = Console(
            highlight=False,
            markup=False,
            emoji=False,
            soft_wrap=True,
            no_color=env.no_color,
            force_terminal=env.stdout_isatty or None,
        )
        self._seq: dict[tuple[str, str | None], int] = {}
        self.last_received: str | bytes | None = None

    # ------------------------------------------------------------------ lines

    def line(self, arrow: str, t: float | None, text: str, style: str = "", tag: str = "") -> None:
        from rich.text import Text

        from gradium_cli.ui.redact import redact

        when = f"{t * 1000:9.1f} ms " if t is not None else " " * 13
        prefix = f"{tag} " if tag else ""
        # A server may echo the key in a frame: mask it as every other line for people is.
        self.console.print(Text(redact(f"{prefix}{arrow} {when} {text}"), style=style))

    def record(self, record: dict[str, Any]) -> None:
        """One JSON line (--json)."""
        self.console.out(json.dumps(record, ensure_ascii=False), highlight=False)

    def sent(self, frame: str | bytes, t: float, tag: str = "", conn: int | None = None) -> None:
        if self.json_lines:
            self.record(event_record("send", t, frame=frame, conn=conn))
            return
        text, style = describe_sent(frame)
        self.line(SENT, t, text, style, tag)
        if self.pretty:
            self._pretty(frame)

    def received(
        self, frame: str | bytes, t: float, output_format: str | None, tag: str = "", conn: int | None = None
    ) -> None:
        self.last_received = frame
        obj = _load(frame) or {}
        key = (tag, obj.get("client_req_id") if isinstance(obj.get("client_req_id"), str) else None)
        seq = None
        if obj.get("type") == "ready":
            self._seq[key] = 0
        elif obj.get("type") == "audio":
            seq = self._seq[key] = self._seq.get(key, 0) + 1
        if self.json_lines:
            self.record(event_record("recv", t, frame=frame, conn=conn))
            return
        text, style = describe_received(frame, output_format, seq)
        self.line(RECEIVED, t, text, style, tag)
        if self.pretty:
            self._pretty(frame)

    def _pretty(self, frame: str | bytes) -> None:
        from rich.text import Text

        indented = "\n".join(" " * 16 + row for row in pretty(frame).splitlines())
        self.console.print(Text(indented, style="dim"))

    def show_last(self) -> None:
        from rich.text import Text

        if self.last_received is None:
            self.note("nothing received yet")
        else:
            self.console.print(Text(pretty(self.last_received)))

    def closed(
        self, code: int | None, reason: str, by: str | None, t: float, tag: str = "", conn: int | None = None
    ) -> None:
        if self.json_lines:
            self.record(event_record("close", t, conn=conn, code=code, reason=reason, by=by))
            return
        normal = code == 1000 and by is not None
        self.line(CLOSED, t, escape_control(close_text(code, reason, by)), "dim" if normal else "bold red", tag)

    def control(self, arrow: str, t: float, text: str, event: str, **fields: Any) -> None:
        """A ping or pong, dim: they are the connection's, not the protocol's."""
        if self.json_lines:
            self.record({"event": event, "t": round(t, 6), "dir": "send" if arrow == SENT else "recv", **fields})
            return
        self.line(arrow, t, text, "dim")

    def note(self, text: str, t: float | None = None, tag: str = "") -> None:
        if self.json_lines:
            self.record({"event": "note", "text": text})
            return
        self.line(NOTE, t, text, "dim", tag)

    def warning(self, text: str, t: float | None = None, tag: str = "", blocked: bool = False) -> None:
        if self.json_lines:
            self.record({"event": "warning", "text": text, "sent": not blocked})
            return
        self.line(WARNING, t, text, "bold red" if blocked else "yellow", tag)

    def text(self, text: str) -> None:
        """A block of plain text (help, the replay report)."""
        from rich.text import Text

        self.console.print(Text(text))
